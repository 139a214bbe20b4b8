"""The sink on its own: built with a LoadContext and no TargetClosum, writing to the sandbox; the write decision."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from test_target_support import REPO, lead, posts, schema_of, target_config

from closum_api import registry
from closum_api.stop import StopEvent
from target_closum.ledger import Entry, Ledger
from target_closum.load import LoadContext
from target_closum.payloads import build_payload, canonical_json, payload_hash
from target_closum.plan import Create, Item, Skip, Update, decide
from target_closum.settings import TargetSettings
from target_closum.sinks import ClosumSink

LEAD_SCHEMA = schema_of("lead")


def _load(config):
    return LoadContext(TargetSettings.from_config(config), StopEvent())


def _sink(config, load, stream="leads"):
    """A sink as the SDK builds one, but its host is a bare stand-in: logger and config, no Target."""
    host = SimpleNamespace(logger=logging.getLogger("sink-test"), initialized_at=int(time.time() * 1000), config=config)
    sink = ClosumSink(host, stream, LEAD_SCHEMA, ["id"], load=load)
    sink.setup()
    return sink


def _write(sink, records):
    batch: dict = {}
    for record in records:
        sink.process_record(record, batch)
    sink.process_batch(batch)


def test_a_sink_writes_with_a_load_context_and_no_target(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path)
    before = len(sandbox.records("lead"))
    load = _load(config)
    try:
        sink = _sink(config, load)
        _write(sink, [lead(1), lead(2), lead(3, email={"email": "not an email"})])
        assert len(sandbox.records("lead")) - before == 2
        assert (load.tallies["leads"].created, load.tallies["leads"].rejected) == (2, 1)
        assert load.ledger.count("done") == 2
        # A second sink of the same run shares the tally, the ledger and the client: a replay sends nothing.
        sandbox.clear_log()
        _write(_sink(config, load), [lead(1), lead(2)])
        assert posts(sandbox, "/api/lead") == []
        assert load.tallies["leads"].skipped == 2
    finally:
        load.close()


def test_a_sink_settles_pending_writes_in_its_setup(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path)
    payload = build_payload(registry.get("lead"), lead(7))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.mark_pending("leads", "pk:[7]", "lead", canonical_json(payload), payload_hash(payload))
    ledger.close()
    before = len(sandbox.records("lead"))
    load = _load(config)
    try:
        _sink(config, load)  # setup alone, no record
        assert len(sandbox.records("lead")) - before == 1
        assert load.ledger.count("pending") == 0
        assert load.tallies["leads"].recovered == 1
        _sink(config, load)  # a second sink of the stream sends nothing more
        assert len(posts(sandbox, "/api/lead")) == 1
    finally:
        load.close()


def test_the_sink_module_does_not_import_the_target():
    code = "import sys, target_closum.sinks; print('target_closum.target' in sys.modules)"
    out = subprocess.run(  # argv is ours, no shell
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    ).stdout
    assert out.strip() == "False"


def _item(p_hash="h1", record_id=None):
    return Item({}, "pk:[1]", {}, p_hash, record_id)


def _done(p_hash="h1", closum_id=42):
    return Entry("s", "pk:[1]", "email", "done", closum_id, p_hash, None)


PENDING = Entry("s", "pk:[1]", "email", "pending", None, "h1", "{}")


@pytest.mark.parametrize(
    ("action", "entry", "item", "expected"),
    [
        ("create", None, _item(), Create()),
        ("create", PENDING, _item(), Create()),
        ("create", _done(), _item(), Skip()),
        ("create", _done(), _item("h2"), Skip(changed=True)),
        ("upsert", None, _item(), Create()),
        ("upsert", None, _item(record_id=5), Update(5)),
        ("upsert", _done(), _item(), Skip()),
        ("upsert", _done(), _item("h2", record_id=5), Update(42)),
        ("upsert", _done(closum_id=None), _item("h2"), Create()),
        ("update", None, _item(record_id=5), Update(5)),
        ("update", _done(closum_id=5), _item(record_id=5), Skip()),
        ("update", _done(closum_id=42), _item(record_id=5), Update(5)),
    ],
)
def test_one_decision_for_dry_run_and_write(action, entry, item, expected):
    assert decide(action, entry, item) == expected
