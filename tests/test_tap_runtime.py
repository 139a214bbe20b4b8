"""The tap's settings and runtime on their own: defaults as declared, parsed once, nothing opened early."""

from __future__ import annotations

import datetime as dt

import closum_api
from tap_closum.runtime import TapSettings
from tap_closum.tap import TapClosum

CREDENTIALS = {"api_username": "someone", "api_pw": "something"}


def test_settings_left_out_take_the_defaults_the_settings_declare():
    declared = TapClosum.config_jsonschema["properties"]
    settings = TapSettings.from_config(CREDENTIALS)
    connection = settings.shared.connection
    assert settings.page_size == declared["page_size"]["default"]
    assert settings.shared.max_parallel_requests == declared["max_parallel_requests"]["default"]
    assert settings.shared.max_retries == declared["max_retries"]["default"]
    assert connection.max_tries == declared["max_retries"]["default"] + 1
    assert connection.timeout == declared["request_timeout"]["default"]
    assert connection.backoff_base == declared["backoff_base_seconds"]["default"]
    assert connection.api_url == declared["api_url"]["default"]
    assert connection.user_agent == f"tap-closum/{closum_api.__version__}"
    assert settings.start_date is None


def test_given_settings_win_and_start_date_becomes_an_aware_instant():
    settings = TapSettings.from_config(
        CREDENTIALS
        | {"page_size": 7, "max_parallel_requests": 3, "user_agent": "mine/1", "start_date": "2024-03-01T10:00:00Z"}
    )
    assert settings.page_size == 7
    assert settings.shared.max_parallel_requests == 3
    assert settings.shared.connection.user_agent == "mine/1"
    assert settings.start_date == dt.datetime(2024, 3, 1, 10, tzinfo=dt.timezone.utc)
    naive = TapSettings.from_config(CREDENTIALS | {"start_date": "2024-03-01T10:00:00"})
    assert naive.start_date == dt.datetime(2024, 3, 1, 10, tzinfo=dt.timezone.utc)


def test_discovery_needs_no_credentials_and_every_stream_shares_one_runtime():
    tap = TapClosum(config={}, validate_config=False, setup_mapper=False)
    streams = list(tap.streams.values())
    assert {s["tap_stream_id"] for s in tap.catalog_dict["streams"]} == {s.name for s in streams}
    assert all(stream.runtime is tap.runtime for stream in streams)
