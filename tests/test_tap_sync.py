"""tap-closum against the sandbox over real HTTP: records, order, state, revisions."""

from __future__ import annotations

import json
import logging
import math
import signal

import pytest
from helpers import FAST, start, stored_ids, wait_for, write_json
from tap_run import TapOutput, catalog_selecting, run_tap

from closum_api import registry


def test_full_sync_emits_every_record_of_every_stream_exactly_once(sandbox):
    out = run_tap(sandbox.config(page_size=7, max_parallel_requests=4, **FAST))
    for resource in registry.RESOURCES:
        ids = out.ids(resource.stream_name)
        assert len(ids) == len(set(ids)), f"{resource.stream_name} has duplicates"
        assert sorted(ids) == stored_ids(sandbox, resource.name), resource.stream_name
        assert ids, f"{resource.stream_name} is empty; the sandbox seeds every resource"


def test_parallel_pages_come_out_in_order(sandbox_factory):
    sandbox = sandbox_factory(seed=60, latency_ms=5)
    out = run_tap(sandbox.config(page_size=4, max_parallel_requests=6), streams={"leads", "emails"})
    leads, emails = out.ids("leads"), out.ids("emails")
    assert leads == sorted(stored_ids(sandbox, "lead"), reverse=True)  # newest first
    assert emails == sorted(stored_ids(sandbox, "email"), reverse=True)  # emails change too: newest first, then swept
    # Every page once: the concurrent fetch neither skips nor repeats a page.
    log = sandbox.requests_log("/api/lead")
    assert len([r for r in log if r["method"] == "GET"]) == math.ceil(len(leads) / 4)


def test_records_match_the_served_shape(sandbox):
    out = run_tap(sandbox.config(), streams={"phones", "emails", "leads"})
    # Phones are served the same way in lists and retrieves: compare whole records.
    assert sorted(out.records["phones"], key=lambda r: r["id"]) == sorted(
        sandbox.records("phone"), key=lambda r: r["id"]
    )
    assert all(isinstance(p["extension"], str) for p in out.records["phones"])
    assert out.records["phones"][0]["is_valid"] == 1
    assert out.records["emails"][0]["status"] == 1
    lead = out.records["leads"][0]
    assert set(lead) >= {"id", "name", "creation_date", "email", "phone"}


def test_page_size_capped_by_the_server_still_reads_everything(sandbox_factory):
    sandbox = sandbox_factory(seed=30, max_page_size=7)
    out = run_tap(sandbox.config(page_size=100), streams={"emails"})
    assert sorted(out.ids("emails")) == sorted(stored_ids(sandbox, "email"))
    gets = sandbox.requests_log("/api/email")
    assert len(gets) >= math.ceil(len(out.ids("emails")) / 7)


@pytest.mark.parametrize(
    ("revision", "skipped", "served"),
    [
        ("2019", {"contact_lifecycle_stages", "audience_lists", "lead_audience_lists"}, {"cities", "contact_types"}),
        ("2021", {"cities", "contact_types", "unqualified_leads"}, {"contact_lifecycle_stages", "audience_lists"}),
    ],
)
def test_streams_of_the_other_revision_are_skipped_with_a_warning(sandbox_factory, caplog, revision, skipped, served):
    sandbox = sandbox_factory(revision=revision)
    with caplog.at_level(logging.WARNING):
        out = run_tap(sandbox.config())
    for stream in skipped:
        assert stream not in out.records
        warnings = [r.getMessage() for r in caplog.records if f"Skipping stream {stream}" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "404" in warnings[0]
    for stream in served | {"leads", "emails", "phones"}:
        assert out.records.get(stream), stream
    if revision == "2021":
        stages = out.records["contact_lifecycle_stages"]
        assert [s["label"] for s in stages][:2] == ["Não Qualificado", "Subscritor"]
        assert len(stages) == 9


def test_incremental_run_reads_only_new_records_with_few_requests(sandbox_factory):
    sandbox = sandbox_factory(seed=40)
    config = sandbox.config(page_size=5, sweep_requests_per_run=0)  # the sweep's own cost: tests/test_tap_changes.py
    first = run_tap(config, streams={"leads"})
    assert sorted(first.ids("leads")) == sorted(stored_ids(sandbox, "lead"))
    bookmark = first.state["bookmarks"]["leads"]["replication_key_value"]
    assert bookmark == max(first.ids("leads"))

    sandbox.clear_log()
    second = run_tap(config, state=first.state, streams={"leads"})
    assert second.ids("leads") == []
    assert len(sandbox.requests_log("/api/lead")) == 1

    new_ids = sandbox.add_records("lead", 7)
    sandbox.clear_log()
    third = run_tap(config, state=second.state, streams={"leads"})
    assert sorted(third.ids("leads")) == sorted(new_ids)
    requests_made = len(sandbox.requests_log("/api/lead"))
    assert requests_made <= math.ceil(7 / 5) + 1
    assert third.state["bookmarks"]["leads"]["replication_key_value"] == max(new_ids)
    for entry in sandbox.requests_log("/api/lead"):
        assert entry["query"].get("sort") == "id"
        assert entry["query"].get("direction") == "desc"


def test_reference_lists_are_read_whole_each_time(sandbox_factory):
    sandbox = sandbox_factory(revision="2019")
    config = sandbox.config()
    first = run_tap(config, streams={"cities"})
    second = run_tap(config, state=first.state, streams={"cities"})
    assert sorted(second.ids("cities")) == sorted(first.ids("cities")) == sorted(stored_ids(sandbox, "city"))
    assert "replication_key_value" not in second.state.get("bookmarks", {}).get("cities", {})


def test_start_date_skips_older_records(sandbox_factory):
    sandbox = sandbox_factory(seed=30)
    leads = sorted(sandbox.records("lead"), key=lambda r: r["id"])
    cut = leads[len(leads) // 2]["creation_date"]
    out = run_tap(sandbox.config(start_date=cut), streams={"leads", "emails"})
    expected = {r["id"] for r in leads if r["creation_date"] >= cut}
    assert set(out.ids("leads")) == expected
    assert 0 < len(expected) < len(leads)
    emails = sandbox.records("email")
    assert set(out.ids("emails")) == {r["id"] for r in emails if r["register_date"] >= cut}


def test_an_interrupted_run_never_moves_the_bookmark_past_unemitted_records(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=20)
    config = sandbox.config(page_size=2, max_parallel_requests=1)
    first = run_tap(config, streams={"leads"})
    bookmark = first.state["bookmarks"]["leads"]["replication_key_value"]
    new_ids = sandbox.add_records("lead", 12)
    sandbox.configure(latency_ms=100)  # six pages of new leads, read one by one behind the bookmark
    sandbox.clear_log()
    state = write_json(tmp_path / "state.json", first.state)
    catalog = write_json(tmp_path / "catalog.json", catalog_selecting(config, {"leads"}))
    proc = start("tap-closum", config, "--state", state, "--catalog", catalog, cwd=tmp_path)
    wait_for(lambda: len(sandbox.requests_log("/api/lead")) >= 3, "the tap to read pages", proc)
    proc.send_signal(signal.SIGTERM)  # stop it half way, as an orchestrator would
    out = proc.finish(timeout=30).out
    broken = TapOutput([json.loads(x) for x in out.splitlines() if x.startswith("{")])
    emitted = broken.ids("leads")
    assert 0 < len(emitted) < 12, "the run was not interrupted half way"
    assert len(emitted) == len(set(emitted))
    states = [m["value"] for m in broken.messages if m["type"] == "STATE"]
    assert states, "the tap wrote no STATE on SIGTERM"
    for state in states:
        assert state["bookmarks"]["leads"].get("replication_key_value") == bookmark
    sandbox.configure(latency_ms=0)
    rerun = run_tap(config, state=states[-1], streams={"leads"})
    assert sorted(rerun.ids("leads")) == sorted(new_ids)
