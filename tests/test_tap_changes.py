"""Edits, deletions and shifting pages reach the warehouse: the sweep, the ledger, tombstones.

A warehouse here is what a target builds from the tap's output: upsert on the
key, delete on ``_sdc_deleted_at``. After a change made as in Closum's UI
(the sandbox's admin edit and delete), it must equal Closum within the runs
the sweep's cycle promises, and a run over an unchanged account emits nothing.
"""

from __future__ import annotations

import copy
import json
import typing as t

import pytest
from tap_run import run_tap

from closum_sandbox.testing import SandboxServer
from tap_closum import sweep
from tap_closum.ledger import BLOCK, SLOTS, Ledger

CYCLE = 4


class Warehouse:
    """Tables built by upserting on the key and deleting on _sdc_deleted_at."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[int, dict[str, t.Any]]] = {}
        self.emitted: dict[str, int] = {}

    def load(self, out: t.Any, keys: dict[str, str] | None = None) -> None:
        for stream, records in out.records.items():
            key = (keys or {}).get(stream, "id")
            table = self.tables.setdefault(stream, {})
            self.emitted[stream] = self.emitted.get(stream, 0) + len(records)
            for record in records:
                if record.get("_sdc_deleted_at"):
                    table.pop(record[key], None)
                else:
                    table[record[key]] = record


def closum(sandbox, resource: str) -> dict[int, dict[str, t.Any]]:
    return {r["id"]: r for r in sandbox.records(resource, listed=True)}


def runs_until_equal(synced, state, *, streams: dict[str, str], most: int) -> tuple[int, dict]:
    """Run the tap until every stream's table equals Closum; how many runs it took, and the state."""
    sandbox, config, _, warehouse = synced
    for run in range(1, most + 1):
        out = run_tap(config, state=state, streams=set(streams))
        state = out.state
        warehouse.load(out)
        if all(warehouse.tables.get(stream, {}) == closum(sandbox, name) for stream, name in streams.items()):
            return run, state
    return most + 1, state


STREAMS = {"leads": "lead", "emails": "email", "phones": "phone", "contact_types": "contact_type"}


#: A 2019 account of 600 leads: the seed makes the same records every time.
ACCOUNT = {"seed": 600, "revision": "2019"}


def _config(sandbox: t.Any) -> dict[str, t.Any]:
    """A small page and a sweep cycle of CYCLE runs."""
    return sandbox.config(page_size=25, sweep_cycle_runs=CYCLE)


@pytest.fixture(scope="module")
def first_sync() -> t.Any:
    """The first sync of ACCOUNT: the same for every test, so run once (each test gets a copy)."""
    with SandboxServer(**ACCOUNT) as sandbox:
        return run_tap(_config(sandbox), streams=set(STREAMS))


@pytest.fixture
def synced(sandbox_factory, first_sync):
    """ACCOUNT synced once (a fresh server, the first sync's output and state), a config, the warehouse."""
    sandbox = sandbox_factory(**ACCOUNT)
    out = copy.deepcopy(first_sync)
    warehouse = Warehouse()
    warehouse.load(out)
    return sandbox, _config(sandbox), out.state, warehouse


def test_edits_and_deletions_reach_the_warehouse_within_the_cycle(synced):
    sandbox, config, state, warehouse = synced
    assert all(warehouse.tables[s] == closum(sandbox, n) for s, n in STREAMS.items())  # the first sync's copy holds
    leads = sorted(closum(sandbox, "lead"))
    for lead_id in leads[5:25]:
        sandbox.edit_record("lead", lead_id, name="Nome Editado", custom_data=json.dumps({"score": lead_id}))
    for lead_id in (leads[0], leads[300], leads[-1], leads[-2], leads[-3]):
        sandbox.delete_record("lead", lead_id)
    emails = sorted(closum(sandbox, "email"))
    sandbox.edit_record("email", emails[3], email="mudou@example.pt")
    sandbox.delete_record("email", emails[100])
    phones = sorted(closum(sandbox, "phone"))
    sandbox.edit_record("phone", phones[7], number="910 000 000")
    sandbox.delete_record("phone", phones[8])
    sandbox.delete_record("contact_type", max(closum(sandbox, "contact_type")))
    added = sandbox.add_records("lead", 7)

    emitted_before = dict(warehouse.emitted)
    runs, state = runs_until_equal(synced, state, streams=STREAMS, most=CYCLE)
    assert runs <= CYCLE
    assert set(added) <= warehouse.tables["leads"].keys()
    # Only what changed came again: at most the slot (BLOCK // SLOTS records) of each change, and the new leads.
    again = warehouse.emitted["leads"] - emitted_before["leads"]
    assert again <= (20 + 5) * (BLOCK // SLOTS) + len(added)
    assert warehouse.emitted["emails"] - emitted_before["emails"] <= 2 * (BLOCK // SLOTS) + len(added)

    # Once equal, a whole cycle over the unchanged account emits nothing at all.
    emitted = dict(warehouse.emitted)
    for _ in range(CYCLE + 1):
        out = run_tap(config, state=state, streams=set(STREAMS))
        state = out.state
        assert out.records == {}
    assert warehouse.emitted == emitted
    ledger = Ledger.decode(state["bookmarks"]["leads"]["ledger"])
    assert ledger.cycles >= 2
    assert len(ledger) == len(closum(sandbox, "lead"))


def test_a_deletion_is_one_tombstone_of_key_and_time(synced):
    sandbox, config, state, _ = synced
    gone = sorted(closum(sandbox, "lead"))[42]
    sandbox.delete_record("lead", gone)
    tombstones = []
    for _ in range(CYCLE + CYCLE):
        out = run_tap(config, state=state, streams={"leads"})
        state = out.state
        tombstones += [r for r in out.records.get("leads", []) if r.get("_sdc_deleted_at")]
    assert [set(r) for r in tombstones] == [{"id", "_sdc_deleted_at"}]
    assert tombstones[0]["id"] == gone
    assert tombstones[0]["_sdc_deleted_at"].endswith("+00:00")


def test_an_unchanged_small_account_costs_a_few_requests_per_run(synced):
    sandbox, config, state, _ = synced
    config = config | {"page_size": 100, "sweep_cycle_runs": 24}
    counts = []
    for _ in range(24):
        sandbox.clear_log()
        out = run_tap(config, state=state, streams={"leads"})
        state = out.state
        assert out.records == {}
        counts.append(len([r for r in sandbox.requests_log("/api/lead") if r["method"] == "GET"]))
    # 600 leads are 6 pages: one for the new records each run, the sweep's pages every few runs.
    assert sum(counts) / len(counts) < 2
    assert Ledger.decode(state["bookmarks"]["leads"]["ledger"]).cycles >= 1


def test_deleting_the_newest_leads_while_they_are_read_loses_no_survivor(synced, monkeypatch):
    """Issue 15, 5(a): pages shift up under a newest-first read when newer records are deleted."""
    sandbox, config, state, _ = synced
    added = sandbox.add_records("lead", 150)
    newest = sorted(added)[-100:]
    original = sweep.SweptStream._fetch
    done = []

    def fetch_then_delete(self, number, context):
        page = original(self, number, context)
        if self.name == "leads" and number == 1 and not done:
            done.append(True)
            for lead_id in newest:
                sandbox.delete_record("lead", lead_id)
        return page

    monkeypatch.setattr(sweep.SweptStream, "_fetch", fetch_then_delete)
    out = run_tap(config | {"sweep_requests_per_run": 0}, state=state, streams={"leads"})
    survivors = set(added) - set(newest)
    assert survivors <= set(out.ids("leads"))
    assert out.state["bookmarks"]["leads"]["replication_key_value"] == max(added)


def test_an_interrupted_sweep_resumes_without_losing_a_change(synced, monkeypatch):
    sandbox, config, state, _ = synced
    leads = sorted(closum(sandbox, "lead"))
    for lead_id in leads[::50]:
        sandbox.edit_record("lead", lead_id, custom_data='{"v": 2}')
    sandbox.delete_record("lead", leads[-1])
    # The run dies on its sweep's third page: what it emitted is out, its state never saved.
    original = sweep._Sweep._fetch
    pages = []

    def dies(self, number):
        pages.append(number)
        if len(pages) == 3:
            msg = "killed"
            raise RuntimeError(msg)
        return original(self, number)

    monkeypatch.setattr(sweep._Sweep, "_fetch", dies)
    with pytest.raises(RuntimeError, match="killed"):
        run_tap(config, state=state, streams={"leads"})
    assert len(pages) == 3
    monkeypatch.setattr(sweep._Sweep, "_fetch", original)
    runs, state = runs_until_equal(synced, state, streams={"leads": "lead"}, most=CYCLE)
    assert runs <= CYCLE


def test_full_refresh_emits_everything_and_starts_the_sweep_afresh(synced):
    sandbox, config, _, _ = synced
    out = run_tap(config, state={}, streams={"leads"})
    assert sorted(out.ids("leads")) == sorted(closum(sandbox, "lead"))
    ledger = Ledger.decode(out.state["bookmarks"]["leads"]["ledger"])
    assert ledger.next is None
    assert len(ledger) == len(closum(sandbox, "lead"))
    assert len(ledger.blocks) == -(-len(ledger) // BLOCK)


def test_a_bookmark_in_the_future_or_of_the_wrong_type_is_warned_of(synced, caplog):
    sandbox, config, state, _ = synced
    future = json.loads(json.dumps(state))
    future["bookmarks"]["leads"]["replication_key_value"] = 10**9
    future["bookmarks"]["leads"].pop("ledger")
    with caplog.at_level("WARNING"):
        run_tap(config, state=future, streams={"leads"})
    assert "above the newest id" in caplog.text
    caplog.clear()
    wrong = {"bookmarks": {"leads": {"replication_key": "id", "replication_key_value": "2024-01-01"}}}
    with caplog.at_level("WARNING"):
        out = run_tap(config, state=wrong, streams={"leads"})
    assert "is not an id" in caplog.text
    assert sorted(out.ids("leads")) == sorted(closum(sandbox, "lead"))


def _opt_ins_in_closum(sandbox) -> dict[int, dict[str, t.Any]]:
    return {r["id"]: r["lead_opt_in"] | {"lead_id": r["id"]} for r in sandbox.records("lead") if r.get("lead_opt_in")}


def _consent_runs(sandbox, config, state, warehouse, most):
    for run in range(1, most + 1):
        out = run_tap(config, state=state, streams={"leads", "lead_opt_ins"})
        state = out.state
        warehouse.load(out, keys={"lead_opt_ins": "lead_id"})
        if warehouse.tables.get("lead_opt_ins", {}) == _opt_ins_in_closum(sandbox):
            return run, state
    return most + 1, state


def test_consent_changes_withdrawals_and_deletions_reach_the_warehouse(sandbox_factory):
    sandbox = sandbox_factory(seed=600, revision="2019")
    config = sandbox.config(page_size=25, sweep_cycle_runs=CYCLE, consent_sweep_retrieves_per_run=300)
    warehouse = Warehouse()
    out = run_tap(config, streams={"leads", "lead_opt_ins"})
    warehouse.load(out, keys={"lead_opt_ins": "lead_id"})
    assert warehouse.tables["lead_opt_ins"] == _opt_ins_in_closum(sandbox)
    given = [r for r in sandbox.records("lead") if r.get("lead_opt_in")]
    changed, withdrawn, deleted = given[5], given[150], given[-3]
    sandbox.set_opt_in("lead", changed["id"], {"sms": not changed["lead_opt_in"]["sms"]})
    sandbox.set_opt_in("lead", withdrawn["id"], None)
    sandbox.delete_record("lead", deleted["id"])
    without = next(r for r in sandbox.records("lead") if not r.get("lead_opt_in"))
    sandbox.set_opt_in("lead", without["id"], {"sms": True, "email": True})
    emitted = warehouse.emitted["lead_opt_ins"]

    # The consent sweep goes round within the sweep's cycle.
    runs, state = _consent_runs(sandbox, config, out.state, warehouse, CYCLE)
    assert runs <= CYCLE
    assert warehouse.emitted["lead_opt_ins"] - emitted <= 4 * (BLOCK // SLOTS) * 2
    # Unchanged since: a whole consent cycle emits nothing.
    for _ in range(CYCLE):
        out = run_tap(config, state=state, streams={"leads", "lead_opt_ins"})
        state = out.state
        assert out.records == {}


def test_opt_ins_the_probe_skipped_are_read_by_the_consent_sweep(sandbox_factory):
    """Issue 15, 5(b): the newest 50 leads carry no opt-in; the opt-ins of older leads still arrive."""
    sandbox = sandbox_factory(seed=300, revision="2019")
    for lead in sorted(sandbox.records("lead"), key=lambda r: r["id"])[-60:]:
        sandbox.set_opt_in("lead", lead["id"], None)
    assert _opt_ins_in_closum(sandbox)
    config = sandbox.config(page_size=25, sweep_cycle_runs=1, consent_sweep_retrieves_per_run=300)
    warehouse = Warehouse()
    out = run_tap(config, streams={"leads", "lead_opt_ins"})
    warehouse.load(out, keys={"lead_opt_ins": "lead_id"})
    assert "lead_opt_ins" not in out.records  # the probe gave up for this run...
    runs, _ = _consent_runs(sandbox, config, out.state, warehouse, 1)
    assert runs == 1  # ...and the next run's consent sweep brought every opt-in
