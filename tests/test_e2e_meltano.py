"""End to end: the pipelines of meltano.yml through Meltano itself, against a sandbox.

Each test runs ``meltano --environment=dev run ...`` as a subprocess in a copy
of the repository's meltano.yml that shares the plugins ``make test`` installed
in ``.meltano/``, pointed at an in-process :class:`SandboxServer` on a free port
through environment variables (``TAP_CLOSUM_API_URL``...), with its own Meltano
system database (``MELTANO_DATABASE_URI``) so the state Meltano keeps between
runs belongs to the test alone.

- tap-closum → target-duckdb: every table matches the sandbox row for row,
  the consent tables (``lead_opt_ins``...) included; after
  ``sandbox.add_records("lead", 5)`` the second run moves exactly those 5
  leads (Meltano passed the saved state) with at most 2 list requests and
  exactly 5 retrieves (their opt-ins); a third moves nothing; after an edit, a
  consent withdrawn and deletions in Closum, the next run brings them.
- tap-jsonl → target-closum with the shipped demo/leads.jsonl: the good rows
  are created in the sandbox, the bad rows land in the rejects file with their
  reasons; a full-refresh rerun writes nothing twice (the ledger).
- tap-closum → target-jsonl: one file per stream, the sandbox's records.
- refused credentials: the run fails with the tap's one line.
- the prod environment takes the credentials from the environment.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING

import duckdb
import pytest
from meltano_project import ROOT, TABLE_KEYS, expected_keys, meltano_env, project_copy, require_plugins, run_meltano

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

DEMO_LEADS = ROOT / "demo" / "leads.jsonl"
PLUGINS = ("tap-closum", "tap-jsonl", "target-closum", "target-duckdb")
SUMMARY = re.compile(
    r"stream leads → lead \(create\): created (?P<created>\d+), updated (?P<updated>\d+), "
    r"skipped as already loaded (?P<skipped>\d+), rejected (?P<rejected>\d+)"
)
# Rows of demo/leads.jsonl that must be refused, and why (status None = before sending).
BAD_ROWS = {
    "crm-0007": (None, "email"),  # invalid email
    "crm-0009": (None, "email, phone"),  # no contact at all
    "crm-0011": (None, "favourite_colour"),  # a field Closum does not know
    "crm-0015": (None, "phone.number"),  # not a phone number
    "crm-0021": (400, "custom_data"),  # refused by the server: custom_data is not JSON
}


pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def meltano(sandbox, tmp_path):
    """Run ``meltano <args>`` in a copy of the project, against ``sandbox``, with state in ``tmp_path``.

    Meltano and the plugins must be installed (``make test`` does it): else the test fails, never skips.
    """
    require_plugins(*PLUGINS)
    project = project_copy(tmp_path / "project")
    env = meltano_env(sandbox, tmp_path / "meltano.db") | {
        "TARGET_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "TARGET_CLOSUM_REJECTS_PATH": str(tmp_path / "rejects.jsonl"),
        "TARGET_CLOSUM_LEDGER_PATH": str(tmp_path / "ledger.sqlite"),
        "TAP_JSONL_PATH": str(DEMO_LEADS),
    }

    def run(
        *args: str,
        check: bool = True,
        extra_env: dict | None = None,
        environment: str = "dev",
        unset: tuple[str, ...] = (),
    ) -> subprocess.CompletedProcess:
        run_env = {k: v for k, v in (env | (extra_env or {})).items() if k not in unset}
        return run_meltano(project, args, run_env, environment=environment, check=check)

    def run_pipeline(*blocks: str, **kwargs) -> subprocess.CompletedProcess:
        # --no-install: a missing plugin fails here, it is never fetched mid-test.
        return run("run", "--no-install", *blocks, **kwargs)

    run.pipeline = run_pipeline
    run.tmp = tmp_path
    return run


def _tables(path: Path) -> dict[str, list[int]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [
            r[0]
            for r in con.execute(
                "select table_name from information_schema.tables where table_schema = 'closum'"
                " and table_catalog = current_database()"
            ).fetchall()
        ]
        db = con.execute("select current_database()").fetchone()[0]
        key = TABLE_KEYS.get
        return {
            n: sorted(r[0] for r in con.execute(f'select {key(n, "id")} from "{db}".closum."{n}"').fetchall())  # noqa: S608  # table names from information_schema; identifiers cannot be bound
            for n in names
        }
    finally:
        con.close()


def _query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(
            sql.replace("closum.", f'"{con.execute("select current_database()").fetchone()[0]}".closum.'), params
        ).fetchall()
    finally:
        con.close()


def _state(meltano, state_id: str) -> dict:
    proc = meltano("state", "get", state_id)
    return json.loads(proc.stdout)["singer_state"]


def test_closum_to_duckdb_then_only_new_leads_then_edits_and_deletions(meltano, sandbox):
    duck = meltano.tmp / "warehouse.duckdb"
    # New records only: the consent sweep's retrieves of the history have tests of their own (test_tap_changes.py).
    new_only = {"TAP_CLOSUM_CONSENT_SWEEP_RETRIEVES_PER_RUN": "0"}
    meltano.pipeline("tap-closum", "target-duckdb", extra_env=new_only)

    # Every stream of the registry (resources and opt-ins) is a table holding exactly the sandbox's records.
    tables = _tables(duck)
    assert tables == expected_keys(sandbox)
    assert tables["lead_opt_ins"], "the sandbox serves opt-ins: the consent table is not empty"
    leads_before = tables["leads"]
    assert len(leads_before) == 25

    # Values arrive intact (nested objects as JSON, leading zeros kept).
    by_id = {rec["id"]: rec for rec in sandbox.records("lead")}
    rows = _query(duck, "select id, name, email, phone from closum.leads")
    for lead_id, name, email, phone in rows:
        assert name == by_id[lead_id].get("name")
        if by_id[lead_id].get("email"):
            assert json.loads(email)["email"] == by_id[lead_id]["email"]["email"]
        if by_id[lead_id].get("phone"):
            assert json.loads(phone)["extension"] == by_id[lead_id]["phone"]["extension"]

    # Meltano saved the tap's state: the leads bookmark is the newest id.
    state = _state(meltano, "dev:tap-closum-to-target-duckdb")
    assert state["bookmarks"]["leads"]["replication_key_value"] == max(leads_before)
    first_batch_end = _query(duck, "select max(_sdc_batched_at) from closum.leads")[0][0]

    new_ids = sandbox.add_records("lead", 5)
    sandbox.clear_log()
    meltano.pipeline("tap-closum", "target-duckdb", extra_env=new_only)

    # Exactly the 5 new leads moved, and cheaply: newest first, stopping at the bookmark.
    moved = [r[0] for r in _query(duck, "select id from closum.leads where _sdc_batched_at > ?", (first_batch_end,))]
    assert sorted(moved) == sorted(new_ids)
    lead_lists = [r for r in sandbox.requests_log("/api/lead") if r["path"] == "/api/lead" and r["method"] == "GET"]
    assert 1 <= len(lead_lists) <= math.ceil(5 / 100) + 1
    assert all(r["query"].get("sort") == "id" and r["query"].get("direction") == "desc" for r in lead_lists)
    # One retrieve per new lead, for its opt-in; none for the history.
    retrieves = [r["path"] for r in sandbox.requests_log("/api/lead/") if r["method"] == "GET"]
    assert sorted(retrieves) == sorted(f"/api/lead/{i}" for i in new_ids)
    assert _tables(duck) == expected_keys(sandbox)
    assert _state(meltano, "dev:tap-closum-to-target-duckdb")["bookmarks"]["leads"]["replication_key_value"] == max(
        new_ids
    )

    # A third run with nothing new moves no lead at all.
    second_batch_end = _query(duck, "select max(_sdc_batched_at) from closum.leads")[0][0]
    sandbox.clear_log()
    meltano.pipeline("tap-closum", "target-duckdb", extra_env=new_only)
    assert sandbox.requests_log("/api/lead/") == []
    assert _query(duck, "select count(*) from closum.leads where _sdc_batched_at > ?", (second_batch_end,))[0][0] == 0

    # A lead moved to another stage, a consent withdrawn, a lead and an email deleted: one run later, DuckDB has it.
    _edits_reach_duckdb(meltano, sandbox)


def _edits_reach_duckdb(meltano, sandbox) -> None:
    """Edit, withdraw a consent, delete a lead and an email; one run (with the whole sweep) later, DuckDB has it."""
    duck = meltano.tmp / "warehouse.duckdb"
    one_cycle = {"TAP_CLOSUM_SWEEP_CYCLE_RUNS": "1"}  # 30 leads: one run re-reads the whole history
    leads = sorted(sandbox.records("lead"), key=lambda r: r["id"])
    moved, consenting = leads[0], next(r for r in leads[1:] if (r.get("lead_opt_in") or {}).get("sms"))
    gone = next(r for r in leads[1:] if r["id"] != consenting["id"])
    stage = 2 if moved.get("contact_lifecycle_stage_id") != 2 else 3
    sandbox.edit_record("lead", moved["id"], contact_lifecycle_stage_id=stage)
    sandbox.set_opt_in("lead", consenting["id"], {"sms": False})
    sandbox.delete_record("lead", gone["id"])
    email = sandbox.records("email")[-1]["id"]
    sandbox.delete_record("email", email)

    meltano.pipeline("tap-closum", "target-duckdb", extra_env=one_cycle)
    assert _query(duck, "select contact_lifecycle_stage_id from closum.leads where id = ?", (moved["id"],)) == [
        (stage,)
    ]
    assert _query(duck, "select sms from closum.lead_opt_ins where lead_id = ?", (consenting["id"],)) == [(False,)]
    assert _query(duck, "select count(*) from closum.leads where id = ?", (gone["id"],)) == [(0,)]
    assert _query(duck, "select count(*) from closum.emails where id = ?", (email,)) == [(0,)]
    assert _tables(duck) == expected_keys(sandbox)


def test_leads_file_to_closum_creates_good_rows_and_rejects_bad_ones(meltano, sandbox):
    rows = [json.loads(line) for line in DEMO_LEADS.read_text().splitlines() if line.strip()]
    good = [r for r in rows if r["external_id"] not in BAD_ROWS]
    assert 15 <= len(rows) <= 30
    assert len(good) == len(rows) - len(BAD_ROWS)
    before = {rec["id"] for rec in sandbox.records("lead")}

    proc = meltano.pipeline("tap-jsonl", "target-closum")
    summary = SUMMARY.search(proc.stdout + proc.stderr)
    assert summary, "no target-closum summary line in the meltano output"
    assert summary.groupdict() == {
        "created": str(len(good)),
        "updated": "0",
        "skipped": "0",
        "rejected": str(len(BAD_ROWS)),
    }

    # The good rows are now leads in Closum, as given (name, email, phone with its zeros, custom_data).
    created = [rec for rec in sandbox.records("lead") if rec["id"] not in before]
    assert len(created) == len(good)
    by_name = {rec["name"]: rec for rec in created}
    for row in good:
        lead = by_name[row["name"]]
        if "email" in row:
            assert lead["email"]["email"] == row["email"]
        if "phone" in row:
            assert (lead["phone"]["extension"], lead["phone"]["number"]) == (
                row["phone"]["extension"],
                row["phone"]["number"],
            )
        if "custom_data" in row:
            assert json.loads(lead["custom_data"]) == json.loads(row["custom_data"])
        assert "external_id" not in lead
        assert "_sdc_filename" not in lead

    # The bad rows are in the rejects file with the reason.
    rejects = [json.loads(line) for line in (meltano.tmp / "rejects.jsonl").read_text().splitlines()]
    assert {r["record"]["external_id"] for r in rejects} == set(BAD_ROWS)
    for r in rejects:
        status, reason = BAD_ROWS[r["record"]["external_id"]]
        assert r["stream"] == "leads"
        assert r["status"] == status
        assert reason in r["message"]

    # Meltano keeps the file tap's state; a full refresh re-reads the file and
    # the target's ledger writes nothing twice.
    assert _state(meltano, "dev:tap-jsonl-to-target-closum")["bookmarks"]["leads"]
    proc = meltano.pipeline("--full-refresh", "tap-jsonl", "target-closum")
    summary = SUMMARY.search(proc.stdout + proc.stderr)
    assert summary
    assert summary["created"] == "0"
    assert summary["skipped"] == str(len(good))
    assert len(sandbox.records("lead")) == len(before) + len(good)


def test_refused_credentials_fail_the_run_with_one_line(meltano):
    proc = meltano.pipeline("tap-closum", "target-duckdb", check=False, extra_env={"TAP_CLOSUM_API_PW": "pw-N0t-R1ght"})
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Closum refused the credentials of api_username 'sandbox'" in out
    assert "pw-N0t-R1ght" not in out  # the password is never echoed
    assert "Traceback" not in out


def test_prod_environment_reads_credentials_from_the_environment(meltano):
    proc = meltano(
        "config",
        "--unsafe",
        "print",
        "tap-closum",
        environment="prod",
        unset=("TAP_CLOSUM_API_URL",),
        extra_env={"TAP_CLOSUM_API_USERNAME": "acme", "TAP_CLOSUM_API_PW": "s3cret"},
    )
    config = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert config["api_url"] == "https://api.closum.com/api"
    assert (config["api_username"], config["api_pw"]) == ("acme", "s3cret")


def test_closum_to_jsonl_files(meltano, sandbox):
    out = meltano.tmp / "jsonl"
    out.mkdir()
    meltano.pipeline("tap-closum", "target-jsonl", extra_env={"TARGET_JSONL_DESTINATION_PATH": str(out)})
    for name, expected in expected_keys(sandbox).items():
        lines = (out / f"{name}.jsonl").read_text().splitlines()
        assert sorted(json.loads(line)[TABLE_KEYS.get(name, "id")] for line in lines) == expected, name
