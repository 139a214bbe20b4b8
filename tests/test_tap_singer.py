"""tap-closum as a standard Singer tap: the SDK's own suite, discovery, about,
catalog selection, stream maps, flattening and BATCH messages."""

from __future__ import annotations

import atexit
import contextlib
import gzip
import io
import json

import pytest
from singer_sdk.testing import get_tap_test_class
from tap_run import catalog_selecting, run_tap, run_tap_process

import closum_api
from closum_api import registry
from closum_sandbox.testing import SandboxServer
from tap_closum.tap import TapClosum

# The SDK builds its test class from a fixed config at import time, so this
# module keeps one sandbox of its own for the whole session.
_SUITE_SANDBOX = SandboxServer(seed=12).start()
atexit.register(_SUITE_SANDBOX.stop)

TestTapClosumSDKSuite = get_tap_test_class(TapClosum, config=_SUITE_SANDBOX.config(page_size=5))


def test_discover_lists_every_registry_resource_with_key_and_replication(sandbox, tmp_path):
    out = run_tap_process(sandbox.config(), tmp_path, "--discover")
    assert out.returncode == 0, out.stderr[-2000:]
    catalog = json.loads(out.stdout)
    streams = {s["tap_stream_id"]: s for s in catalog["streams"]}
    opt_ins = {o.stream_name: o for o in registry.OPT_INS}
    assert set(streams) == set(registry.BY_STREAM) | set(opt_ins)
    for name, opt_in in opt_ins.items():
        top = next(m["metadata"] for m in streams[name]["metadata"] if m["breadcrumb"] == [])
        assert top["table-key-properties"] == [opt_in.key]
        assert top["valid-replication-keys"] == [opt_in.key]
        assert streams[name]["replication_method"] == "INCREMENTAL"
    for name, stream in streams.items():
        if name in opt_ins:
            continue
        resource = registry.BY_STREAM[name]
        top = next(m["metadata"] for m in stream["metadata"] if m["breadcrumb"] == [])
        assert top["table-key-properties"] == ["id"]
        if resource.replication is registry.Replication.INCREMENTAL:
            assert top["valid-replication-keys"] == ["id"]
            assert stream["replication_method"] == "INCREMENTAL"
        else:
            assert "valid-replication-keys" not in top
            assert stream["replication_method"] == "FULL_TABLE"


@pytest.mark.parametrize("fmt", [None, "json", "markdown"])
def test_about_in_every_format_lists_the_settings(tmp_path, fmt):
    out = run_tap_process({}, tmp_path, "--about", *(["--format", fmt] if fmt else []))
    assert out.returncode == 0, out.stderr
    if fmt == "json":
        about = json.loads(out.stdout)
        assert about["name"] == "tap-closum"
        assert about["version"] == closum_api.__version__ != "0+unknown"
        assert {"api_username", "api_pw", "page_size", "start_date"} <= set(about["settings"]["properties"])
        assert "stream-maps" in about["capabilities"]
        assert "batch" in about["capabilities"]
    else:
        for setting in ("api_username", "api_pw", "page_size", "max_parallel_requests"):
            assert setting in out.stdout


def test_catalog_selection_syncs_only_the_selected_streams(sandbox):
    out = run_tap(sandbox.config(), streams={"phones"})
    assert set(out.records) == {"phones"}
    schemas = {m["stream"] for m in out.messages if m["type"] == "SCHEMA"}
    assert schemas == {"phones"}


def test_deselected_properties_are_left_out(sandbox):
    config = sandbox.config()
    catalog = catalog_selecting(config, {"phones"})
    phones = next(s for s in catalog["streams"] if s["tap_stream_id"] == "phones")
    for entry in phones["metadata"]:
        if entry["breadcrumb"] == ["properties", "number"]:
            entry["metadata"]["selected"] = False
    tap = TapClosum(config=config, catalog=catalog)
    out = run_tap(config, streams={"phones"})
    assert all("number" in r for r in out.records["phones"])
    buffer = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stdout(buffer):
        tap.sync_all()
    buffer.seek(0)
    records = [json.loads(x)["record"] for x in buffer.read().splitlines() if '"RECORD"' in x]
    assert records
    assert all("number" not in r and "extension" in r for r in records)


def test_stream_maps_and_flattening(sandbox):
    config = sandbox.config(
        stream_maps={"leads": {"name": "__NULL__", "lead_name_upper": "name.upper() if name else None"}},
        flattening_enabled=True,
        flattening_max_depth=1,
    )
    out = run_tap(config, streams={"leads"})
    lead = out.records["leads"][0]
    stored = {r["id"]: r for r in sandbox.records("lead")}[lead["id"]]
    assert "name" not in lead
    assert lead["lead_name_upper"] == stored["name"].upper()
    assert lead["email__email"] == stored["email"]["email"]
    assert "email" not in lead


def test_batch_messages_write_jsonl_gz_files(sandbox, tmp_path):
    config = sandbox.config(
        batch_config={
            "encoding": {"format": "jsonl", "compression": "gzip"},
            "storage": {"root": f"file://{tmp_path}", "prefix": "closum-"},
        }
    )
    out = run_tap(config, streams={"emails"})
    batches = [m for m in out.messages if m["type"] == "BATCH"]
    assert batches
    assert not out.records.get("emails")
    ids = []
    for message in batches:
        assert message["encoding"] == {"format": "jsonl", "compression": "gzip"}
        for uri in message["manifest"]:
            with gzip.open(uri.removeprefix("file://"), "rt") as fh:
                ids += [json.loads(line)["id"] for line in fh]
    assert sorted(ids) == sorted(r["id"] for r in sandbox.records("email"))
