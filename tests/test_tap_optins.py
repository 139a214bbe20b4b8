"""The consent streams (lead_opt_ins, unqualified_lead_opt_ins) against the sandbox over real HTTP.

One retrieve per lead the parent emits in this run, concurrent, in the
parent's order; a deleted lead is a warning; an account that serves no
opt-ins on retrieve costs 50 requests, not one per lead.
"""

from __future__ import annotations

import logging
import re

import pytest
from helpers import FAST
from tap_run import run_tap

from closum_api import registry
from tap_closum import optins
from tap_closum.optins import PROBE

LEAD_RETRIEVE = re.compile(r"^/api/lead/(\d+)$")
UNQUALIFIED_RETRIEVE = re.compile(r"^/api/unqualified-lead/(\d+)$")


def retrieved(sandbox, pattern: re.Pattern[str] = LEAD_RETRIEVE) -> list[int]:
    """Ids of the retrieves the sandbox answered 200, in the order they were logged."""
    return [
        int(m.group(1))
        for r in sandbox.requests_log("/api/")
        if r["method"] == "GET" and r["status"] == 200 and (m := pattern.match(r["path"]))
    ]


def served_opt_ins(sandbox, parent: str) -> dict[int, dict]:
    """The opt-in of every contact that has one, by contact id, as the sandbox stores it."""
    return {rec["id"]: rec[f"{parent}_opt_in"] for rec in sandbox.records(parent) if rec.get(f"{parent}_opt_in")}


@pytest.mark.parametrize("opt_in", registry.OPT_INS, ids=lambda o: o.stream_name)
def test_one_record_per_contact_with_an_opt_in_keyed_by_its_id_in_the_parents_order(sandbox_factory, opt_in):
    sandbox = sandbox_factory(seed=40, latency_ms=2)
    parent = opt_in.parent
    out = run_tap(sandbox.config(max_parallel_requests=6, **FAST), streams={parent.stream_name, opt_in.stream_name})

    expected = served_opt_ins(sandbox, parent.name)
    assert 0 < len(expected) < 40  # some contacts have an opt-in, some none
    records = out.records[opt_in.stream_name]
    parent_order = [r["id"] for r in out.records[parent.stream_name]]
    assert [r[opt_in.key] for r in records] == [i for i in parent_order if i in expected]
    for record in records:
        served = expected[record[opt_in.key]]
        assert record == served | {opt_in.key: record[opt_in.key]}
        assert isinstance(record["enviroment"], dict)
        assert set(record["enviroment"]) >= {"REMOTE_ADDR", "HTTP_USER_AGENT"}
    # One retrieve per contact, one SCHEMA message, an id bookmark.
    pattern = LEAD_RETRIEVE if parent.name == "lead" else UNQUALIFIED_RETRIEVE
    assert sorted(retrieved(sandbox, pattern)) == sorted(parent_order)
    schemas = [m for m in out.messages if m["type"] == "SCHEMA" and m["stream"] == opt_in.stream_name]
    assert len(schemas) == 1
    assert schemas[0]["key_properties"] == [opt_in.key]
    assert out.state["bookmarks"][opt_in.stream_name]["replication_key_value"] == max(expected)


def test_an_incremental_run_retrieves_exactly_the_new_leads(sandbox_factory):
    sandbox = sandbox_factory(seed=30)
    # The consent sweep re-reads the history's opt-ins on a budget of its own: tests/test_tap_changes.py.
    config = sandbox.config(max_parallel_requests=4, consent_sweep_retrieves_per_run=0)
    first = run_tap(config, streams={"leads", "lead_opt_ins"})
    assert len(retrieved(sandbox)) == 30

    new_ids = sandbox.add_records("lead", 7)
    sandbox.clear_log()
    second = run_tap(config, state=first.state, streams={"leads", "lead_opt_ins"})

    assert sorted(second.ids("leads")) == sorted(new_ids)
    assert sorted(retrieved(sandbox)) == sorted(new_ids)  # k new leads: k retrieves, no history
    with_opt_in = served_opt_ins(sandbox, "lead")
    assert [r["lead_id"] for r in second.records.get("lead_opt_ins", [])] == sorted(
        (i for i in new_ids if i in with_opt_in), reverse=True
    )

    # Nothing new: no retrieve at all.
    sandbox.clear_log()
    third = run_tap(config, state=second.state, streams={"leads", "lead_opt_ins"})
    assert "lead_opt_ins" not in third.records
    assert retrieved(sandbox) == []


def test_a_lead_deleted_before_its_retrieve_is_a_tombstone_and_the_run_goes_on(sandbox_factory):
    sandbox = sandbox_factory(seed=25)
    with_opt_in = served_opt_ins(sandbox, "lead")
    # A lead with an opt-in whose path is no prefix of another lead's path (the fault matches by prefix).
    gone = next(i for i in sorted(with_opt_in) if not any(str(j).startswith(str(i)) for j in range(1, 26) if j != i))
    sandbox.script_faults([{"method": "GET", "path": f"/api/lead/{gone}", "status": 404}])

    out = run_tap(sandbox.config(max_parallel_requests=4), streams={"leads", "lead_opt_ins"})

    records = out.records["lead_opt_ins"]
    assert [r["lead_id"] for r in records] == sorted(with_opt_in, reverse=True)
    assert [set(r) for r in records if r["lead_id"] == gone] == [{"lead_id", "_sdc_deleted_at"}]
    assert not any(r.get("_sdc_deleted_at") for r in records if r["lead_id"] != gone)
    assert len(out.ids("leads")) == 25


def test_opt_ins_come_out_in_the_parents_order_whatever_order_the_retrieves_finish_in(sandbox_factory):
    sandbox = sandbox_factory(seed=40, latency_ms=3)
    newest = max(served_opt_ins(sandbox, "lead"))
    # The first retrieve is answered last: a 503, retried after a backoff.
    sandbox.script_faults([{"method": "GET", "path": f"/api/lead/{newest}", "status": 503}])
    config = sandbox.config(max_parallel_requests=8, **FAST)
    out = run_tap(config, streams={"leads", "lead_opt_ins"})
    statuses = [r["status"] for r in sandbox.requests_log(f"/api/lead/{newest}")]
    assert statuses == [503, 200]

    expected = sorted(served_opt_ins(sandbox, "lead"), reverse=True)
    assert [r["lead_id"] for r in out.records["lead_opt_ins"]] == expected
    again = run_tap(config, streams={"leads", "lead_opt_ins"})
    assert again.records["lead_opt_ins"] == out.records["lead_opt_ins"]


def test_an_account_without_opt_ins_on_retrieve_costs_50_requests_and_one_warning(sandbox_factory, caplog):
    sandbox = sandbox_factory(seed=120, opt_ins_on_retrieve=False)
    with caplog.at_level(logging.WARNING):
        out = run_tap(sandbox.config(max_parallel_requests=8), streams={"leads", "lead_opt_ins"})

    assert len(out.ids("leads")) == 120
    assert "lead_opt_ins" not in out.records
    lead_retrieves = [r for r in sandbox.requests_log("/api/lead/") if LEAD_RETRIEVE.match(r["path"])]
    assert len(lead_retrieves) == PROBE == 50
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "lead_opt_ins" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert "no lead_opt_in" in warnings[0]


def test_opt_ins_switched_back_on_are_read_again(sandbox_factory):
    sandbox = sandbox_factory(seed=60)
    sandbox.configure(opt_ins_on_retrieve=False)
    run_tap(sandbox.config(), streams={"unqualified_leads", "unqualified_lead_opt_ins"})
    assert len(retrieved(sandbox, UNQUALIFIED_RETRIEVE)) == PROBE
    sandbox.configure(opt_ins_on_retrieve=True)
    sandbox.clear_log()
    out = run_tap(sandbox.config(), streams={"unqualified_leads", "unqualified_lead_opt_ins"})
    assert len(retrieved(sandbox, UNQUALIFIED_RETRIEVE)) == 60
    assert {r["unqualified_lead_id"] for r in out.records["unqualified_lead_opt_ins"]} == set(
        served_opt_ins(sandbox, "unqualified_lead")
    )


def test_deselected_opt_ins_cost_nothing_and_a_deselected_parent_still_feeds_them(sandbox):
    run_tap(sandbox.config(), streams={"leads", "unqualified_leads"})
    assert retrieved(sandbox) == []
    assert retrieved(sandbox, UNQUALIFIED_RETRIEVE) == []

    sandbox.clear_log()
    out = run_tap(sandbox.config(), streams={"lead_opt_ins"})
    assert set(out.records) == {"lead_opt_ins"}
    assert {r["lead_id"] for r in out.records["lead_opt_ins"]} == set(served_opt_ins(sandbox, "lead"))
    assert len(retrieved(sandbox)) == 25


def test_a_start_date_limits_the_retrieves_to_the_leads_it_lets_through(sandbox):
    leads = sorted(sandbox.records("lead"), key=lambda r: r["id"])
    start = leads[15]["creation_date"]
    out = run_tap(sandbox.config(start_date=start), streams={"leads", "lead_opt_ins"})
    assert sorted(retrieved(sandbox)) == sorted(out.ids("leads")) == [r["id"] for r in leads[15:]]


def test_retrieves_and_list_pages_share_max_parallel_requests(sandbox_factory, monkeypatch):
    """At most max_parallel_requests requests of the run in flight, pages and retrieves together, however many threads.

    Every call takes at least the sandbox's latency, so one request slot cannot start two calls
    within a window shorter than it: no window may hold more arrivals than there are slots.
    """
    latency, window, slots = 0.15, 0.1, 3
    monkeypatch.setattr(optins, "BATCH", 10)  # several hand-overs: retrieves read ahead batch after batch
    sandbox = sandbox_factory(seed=40, latency_ms=latency * 1000)
    out = run_tap(sandbox.config(page_size=5, max_parallel_requests=slots), streams={"leads", "lead_opt_ins"})
    assert len(out.ids("leads")) == 40

    calls = [r for r in sandbox.requests_log("/api/lead") if r["method"] == "GET"]
    assert len(calls) == 8 + 40  # 8 pages of 5, 40 retrieves
    times = sorted(r["time"] for r in calls)
    busiest = max(sum(1 for t in times if start <= t < start + window) for start in times)
    assert busiest <= slots
    assert busiest >= 2  # and they do run concurrently
    # Pages and retrieves are each read ahead on many threads: the one limit holds for each kind too.
    for retrieve in (False, True):
        kind = sorted(r["time"] for r in calls if bool(LEAD_RETRIEVE.match(r["path"])) is retrieve)
        assert 2 <= max(sum(1 for t in kind if start <= t < start + window) for start in kind) <= slots
