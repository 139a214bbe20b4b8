"""The SDK's standard target tests that apply to a Closum target.

Most of the SDK's generic cases feed streams (``test_camelcase``,
``test_array_data``...) with fields no Closum resource accepts; this target
refuses such streams at their SCHEMA message by design, so those cases do not
apply. ``TargetMultipleStateMessages`` is left out as the SDK itself leaves it
out of its suite: it compares parsed states to strings and expects a STATE per
checkpoint, which the SDK's drain logic does not emit (our own test
``test_state_is_emitted_only_after_the_records_before_it_are_written`` covers
STATE). The ones kept: printing version/about, and a RECORD before its SCHEMA.
"""

from __future__ import annotations

from singer_sdk.testing import get_target_test_class
from singer_sdk.testing.suites import SingerTestSuite
from singer_sdk.testing.target_tests import (
    TargetCliPrintsTest,
    TargetRecordBeforeSchemaTest,
)

from target_closum.target import TargetClosum

CONFIG = {
    "api_url": "http://127.0.0.1:9/api",  # never contacted: dry run
    "api_username": "sdk-tests",
    "api_pw": "sdk-tests",
    "dry_run": True,
}

TestTargetClosumStandard = get_target_test_class(
    TargetClosum,
    config=CONFIG,
    include_target_tests=False,
    custom_suites=[
        SingerTestSuite(
            kind="target",
            tests=[TargetCliPrintsTest, TargetRecordBeforeSchemaTest],
        )
    ],
)
