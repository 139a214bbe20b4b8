#!/usr/bin/env python3
"""The one-command demo (`make demo`): both pipelines through Meltano on a local sandbox.

1. start a seeded closum-sandbox on a free port (data in output/demo/, wiped first);
2. `meltano --environment=dev run tap-closum target-duckdb`, then print every
   DuckDB table with its row count;
3. `meltano --environment=dev run tap-jsonl target-closum` with demo/leads.jsonl
   (a few bad rows on purpose), then print created / rejected (from the
   target's ``closum_load_summary`` METRIC log line) and why;
4. run the tap again: Meltano passes the saved state, so only the new leads arrive;
   then change Closum as a person does in its UI (a lead moved to another
   lifecycle stage, an SMS consent withdrawn, a lead deleted) and run it once
   more: the sweep brings all three into DuckDB (the demo sets
   ``sweep_cycle_runs`` to 1 so one run re-reads its small history);
5. `meltano --environment=dev run tap-spreadsheets target-closum` with
   demo/crm_contacts.csv, a CRM export (names, not ids; a few contacts the
   sandbox already holds; a few bad rows), shaped by the SDK stream maps of
   meltano.yml: print created / matched existing / rejected per stream and why;
6. the same export again with another ledger file, as a second machine would:
   everything matches, nothing is created;
7. `meltano --environment=dev run tap-spreadsheets-contacts target-closum`: the
   export once more, as contacts of Closum's V2 API (lead/add with an api_key),
   their lists as tags: the contacts step 5 wrote are updated (update_enabled),
   not added twice; then again with another ledger: nothing new;
8. stop the sandbox (also on Ctrl-C or an error).

Everything the demo writes lives in output/demo/ (sandbox SQLite file, DuckDB
file, target ledger and rejects, Meltano's own system database holding the
state), recreated on each run, so running it twice gives the same result and
never touches the state of your own `meltano run`s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import duckdb

from closum_sandbox.testing import SandboxProcess

if TYPE_CHECKING:
    import datetime as dt
    from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORK = ROOT / "output" / "demo"
SEED = 25
LEADS_FILE = ROOT / "demo" / "leads.jsonl"
CRM_EXPORT = ROOT / "demo" / "crm_contacts.csv"
DUCK = WORK / "warehouse.duckdb"
REJECTS = WORK / "closum-rejects.jsonl"
PLUGIN_EXECUTABLES = [
    ".meltano/extractors/tap-closum/venv/bin/tap-closum",
    ".meltano/extractors/tap-jsonl/venv/bin/tap-jsonl",
    ".meltano/extractors/tap-spreadsheets/venv/bin/tap-spreadsheets",
    ".meltano/loaders/target-closum/venv/bin/target-closum",
    ".meltano/loaders/target-duckdb/venv/bin/target-duckdb",
]
#: The metric target-closum logs once per stream at the end of a run: ``METRIC: {"metric": ..., "value": {...}}``.
SUMMARY_METRIC = "closum_load_summary"


def say(text: str = "") -> None:
    """Print one line of the demo's narration."""
    print(text, flush=True)


def step(text: str) -> None:
    """Announce a step."""
    say(f"\n==> {text}")


def count(sandbox: SandboxProcess, resource: str) -> int:
    """How many records of ``resource`` the sandbox holds."""
    return len(sandbox.records(resource))


def meltano(env: dict[str, str], log: Path, *args: str) -> str:
    """Run ``meltano *args``, its output in ``log``; stop the demo with its last lines if it fails."""
    say("$ meltano " + " ".join(args))
    started = time.monotonic()
    proc = subprocess.run(  # argv is ours: Meltano from this venv, fixed arguments, no shell
        [str(BIN / "meltano"), *args],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    log.write_text(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        msg = f"meltano {' '.join(args)} failed (exit {proc.returncode}); last lines:\n{tail}\nfull log: {log}"
        raise SystemExit(msg)
    say(f"   ok in {time.monotonic() - started:.1f} s (log: {log.relative_to(ROOT)})")
    return proc.stdout


def load_summaries(output: str) -> list[dict[str, Any]]:
    """The value of every ``closum_load_summary`` METRIC line in a run's output, one per stream.

    Meltano prefixes each line of a plugin's log with its own fields; the metric
    is the JSON object that follows ``METRIC: `` on the line.
    """
    decoder = json.JSONDecoder()
    summaries = []
    for line in output.splitlines():
        _, found, rest = line.partition("METRIC: ")
        if not found:
            continue
        try:
            metric, _ = decoder.raw_decode(rest)
        except ValueError:
            continue
        if isinstance(metric, dict) and metric.get("metric") == SUMMARY_METRIC:
            summaries.append(metric["value"])
    return summaries


def duckdb_query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query on the DuckDB file, opened read-only."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql, params).fetchall()
    finally:
        con.close()


def duckdb_counts(path: Path) -> dict[str, int]:
    """Row count of every table of the DuckDB file, as ``schema.table``."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute(
            "select table_catalog, table_schema, table_name from information_schema.tables"
            " where table_catalog = current_database() order by 2, 3"
        ).fetchall()
        return {
            f"{s}.{t}": con.execute(f'select count(*) from "{c}"."{s}"."{t}"').fetchall()[0][0]  # noqa: S608  # names from information_schema; identifiers cannot be bound
            for c, s, t in tables
        }
    finally:
        con.close()


def install_plugins() -> None:
    """``meltano install`` when a plugin of the demo is missing (``make demo`` did it already)."""
    missing = [p for p in PLUGIN_EXECUTABLES if not (ROOT / p).exists()]
    if not missing:
        return
    step("meltano install (plugins missing: " + ", ".join(Path(p).name for p in missing) + ")")
    subprocess.run(  # argv is ours: Meltano from this venv, no shell
        [str(BIN / "meltano"), "install"],
        cwd=ROOT,
        check=True,
        env=os.environ | {"MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )


def closum_to_duckdb(env: dict[str, str]) -> dict[str, int]:
    """Step 1: every Closum stream into DuckDB; print and return the row counts."""
    step("1. Closum → DuckDB")
    meltano(env, WORK / "run1-tap-closum-target-duckdb.log", "--environment=dev", "run", "tap-closum", "target-duckdb")
    counts = duckdb_counts(DUCK)
    say(f"   {DUCK.relative_to(ROOT)}:")
    for table, n in counts.items():
        say(f"   {table:<36} {n:>6} rows")
    return counts


def leads_file_to_closum(env: dict[str, str], sandbox: SandboxProcess) -> None:
    """Step 2: demo/leads.jsonl into Closum; print the target's summary and each reject's reason."""
    step(f"2. {LEADS_FILE.relative_to(ROOT)} → Closum (target-closum)")
    with LEADS_FILE.open() as f:
        say(f"   {sum(1 for line in f if line.strip())} rows in the file")
    out = meltano(
        env, WORK / "run2-tap-jsonl-target-closum.log", "--environment=dev", "run", "tap-jsonl", "target-closum"
    )
    summaries = load_summaries(out)
    if not summaries:
        msg = f"target-closum logged no {SUMMARY_METRIC} metric; see the log above"
        raise SystemExit(msg)
    for s in summaries:
        say(
            f"   stream {s['stream']} → {s['resource']} ({s['action']}): created {s['created']}, "
            f"updated {s['updated']}, skipped as already loaded {s['skipped']}, rejected {s['rejected']}"
        )
    if REJECTS.exists():
        say(f"   rejected rows ({REJECTS.relative_to(ROOT)}):")
        for line in REJECTS.read_text().splitlines():
            r = json.loads(line)
            who = r["record"].get("external_id") or r["record"].get("name")
            status = "before sending" if r["status"] is None else f"HTTP {r['status']}"
            say(f"     {who}: {status}: {r['message']}")
    say(f"   the sandbox now has {count(sandbox, 'lead')} leads")


def closum_to_duckdb_again(env: dict[str, str], first: dict[str, int], last_batch: dt.datetime | None) -> None:
    """Step 3: the first pipeline again; print what this run added and the leads bookmark."""
    step("3. Closum → DuckDB again: Meltano passes the saved state, only new leads arrive")
    meltano(env, WORK / "run3-tap-closum-target-duckdb.log", "--environment=dev", "run", "tap-closum", "target-duckdb")
    second = duckdb_counts(DUCK)
    new_ids = [
        row[0]
        for row in duckdb_query(
            DUCK, "select id from closum.leads where _sdc_batched_at > ? order by id", (last_batch,)
        )
    ]
    for table, n in second.items():
        delta = n - first.get(table, 0)
        say(f"   {table:<36} {n:>6} rows" + (f"  (+{delta})" if delta else ""))
    ids = f"ids {new_ids[0]}..{new_ids[-1]}" if new_ids else "none"
    say(
        f"   leads rows written by this run: {len(new_ids)} ({ids}); the incremental streams "
        "read only past their bookmark (plus the sweep of their history, which emits only what changed), "
        "the consent ones (lead_opt_ins, unqualified_lead_opt_ins) retrieve the leads read (plus the consent "
        "sweep), the FULL_TABLE reference lists are read whole and upserted"
    )
    state = subprocess.run(  # argv is ours: Meltano from this venv, fixed arguments, no shell
        [str(BIN / "meltano"), "--environment=dev", "state", "get", "dev:tap-closum-to-target-duckdb"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if state.returncode == 0:
        try:
            bookmark = json.loads(state.stdout)["singer_state"]["bookmarks"]["leads"]["replication_key_value"]
        except (ValueError, KeyError, TypeError):
            return
        say(f"   Meltano's state for dev:tap-closum-to-target-duckdb: leads bookmark id {bookmark}")


def closum_changes_to_duckdb(env: dict[str, str], sandbox: SandboxProcess) -> None:
    """Step 3b: edit, withdraw a consent, delete, as in Closum's UI; the next run brings all three."""
    step("3b. Changes made in Closum's UI reach DuckDB: a lifecycle stage, a consent, a deletion")
    leads = sorted(sandbox.records("lead"), key=lambda r: r["id"])
    moved = leads[0]
    stage = 2 if moved.get("contact_lifecycle_stage_id") != 2 else 3  # noqa: PLR2004  # another stage of the seed's nine
    consenting = next(r for r in leads[1:] if (r.get("lead_opt_in") or {}).get("sms"))
    deleted = next(r for r in leads[1:] if r["id"] != consenting["id"])
    sandbox.edit_record("lead", moved["id"], contact_lifecycle_stage_id=stage)
    sandbox.set_opt_in("lead", consenting["id"], {"sms": False})
    sandbox.delete_record("lead", deleted["id"])
    say(
        f"   in Closum: lead {moved['id']} moved to lifecycle stage {stage}, lead {consenting['id']} withdrew its "
        f"SMS consent, lead {deleted['id']} deleted"
    )

    def show(when: str) -> None:
        stage_now = duckdb_query(
            DUCK, "select contact_lifecycle_stage_id from closum.leads where id = ?", (moved["id"],)
        )
        sms = duckdb_query(DUCK, "select sms from closum.lead_opt_ins where lead_id = ?", (consenting["id"],))
        present = duckdb_query(DUCK, "select count(*) from closum.leads where id = ?", (deleted["id"],))[0][0]
        say(
            f"   DuckDB {when}: lead {moved['id']} stage {stage_now[0][0] if stage_now else None}, "
            f"lead {consenting['id']} sms {sms[0][0] if sms else None}, "
            f"lead {deleted['id']} {'present' if present else 'gone'}"
        )

    show("before")
    meltano(env, WORK / "run3b-tap-closum-target-duckdb.log", "--environment=dev", "run", "tap-closum", "target-duckdb")
    show("after ")
    say(
        "   the sweep re-read the history, emitted only the records that changed and a tombstone "
        "(id and _sdc_deleted_at) for the deleted lead, which target-duckdb deleted (hard_delete: true)"
    )


def print_crm_summaries(summaries: list[dict[str, Any]]) -> None:
    """One line per stream of a CRM load: created, matched existing, rejected, references created."""
    for s in summaries:
        say(
            f"   stream {s['stream']} → {s['resource']}: created {s['created']}, matched existing {s['matched']}, "
            f"rejected {s['rejected']}, references created {s['references_created']}"
        )


def crm_export_to_closum(env: dict[str, str], sandbox: SandboxProcess) -> None:
    """Step 4: the CRM export into Closum through tap-spreadsheets and stream maps; print counts and reasons."""
    step(f"4. {CRM_EXPORT.relative_to(ROOT)} → Closum (tap-spreadsheets, stream maps, target-closum matching on email)")
    with CRM_EXPORT.open(encoding="utf-8") as f:
        say(f"   {sum(1 for line in f if line.strip()) - 1} rows in the export (city, stage, type and lists by name)")
    out = meltano(
        env,
        WORK / "run4-tap-spreadsheets-target-closum.log",
        "--environment=dev",
        "run",
        "tap-spreadsheets",
        "target-closum",
    )
    summaries = load_summaries(out)
    if not summaries:
        msg = f"target-closum logged no {SUMMARY_METRIC} metric; see the log above"
        raise SystemExit(msg)
    print_crm_summaries(summaries)
    crm_rejects = [r for r in map(json.loads, REJECTS.read_text().splitlines()) if r["stream"].startswith("crm_")]
    if crm_rejects:
        say(f"   rejected rows ({REJECTS.relative_to(ROOT)}):")
        for r in crm_rejects:
            say(f"     {r['record']['record_id']}: {r['message']}")
    say(
        f"   the sandbox now has {count(sandbox, 'lead')} leads, {count(sandbox, 'unqualified_lead')} unqualified "
        f"leads, {count(sandbox, 'lead_audience_list')} list memberships"
    )


def crm_export_again(env: dict[str, str], sandbox: SandboxProcess) -> None:
    """Step 5: the same export with a fresh ledger, as another machine would load it: nothing is created."""
    step("5. the same export again, with another ledger file (a second machine): everything matches, nothing is new")
    before = {name: count(sandbox, name) for name in ("lead", "unqualified_lead", "lead_audience_list")}
    out = meltano(
        env
        | {
            "TARGET_CLOSUM_LEDGER_PATH": str(WORK / "closum-ledger-second-machine.sqlite"),
            "TARGET_CLOSUM_REJECTS_PATH": str(WORK / "closum-rejects-second-machine.jsonl"),
        },
        WORK / "run5-tap-spreadsheets-target-closum.log",
        "--environment=dev",
        "run",
        "--full-refresh",
        "tap-spreadsheets",
        "target-closum",
    )
    summaries = load_summaries(out)
    print_crm_summaries(summaries)
    after = {name: count(sandbox, name) for name in before}
    created = sum(s["created"] for s in summaries)
    if created or after != before:
        msg = f"the second load created {created} records (sandbox before {before}, after {after})"
        raise SystemExit(msg)
    say("   created nothing: the ledger was new, the matches were found on the server")


def crm_export_as_v2_contacts(env: dict[str, str], sandbox: SandboxProcess) -> None:
    """Step 6: the export through the V2 API (contacts, tags); then again from a second machine: nothing new."""
    step(
        f"6. {CRM_EXPORT.relative_to(ROOT)} → Closum's V2 API (tap-spreadsheets-contacts: one stream, contacts, "
        "lists as tags; target-closum with api_key, lead/add)"
    )
    before = {lead["id"] for lead in sandbox.v2_leads()}
    for n, ledger in enumerate(("closum-ledger-v2.sqlite", "closum-ledger-v2-second-machine.sqlite"), 1):
        out = meltano(
            env | {"TARGET_CLOSUM_LEDGER_PATH": str(WORK / ledger)},
            WORK / f"run6{'ab'[n - 1]}-tap-spreadsheets-contacts-target-closum.log",
            "--environment=dev",
            "run",
            "--full-refresh",
            "tap-spreadsheets-contacts",
            "target-closum",
        )
        for s in load_summaries(out):
            say(
                f"   stream {s['stream']} → {s['resource']}: adds sent {s['created']}, "
                f"rejected {s['rejected']} ({'first machine' if n == 1 else 'a second machine, its own ledger'})"
            )
        leads = sandbox.v2_leads()
        new = [lead for lead in leads if lead["id"] not in before]
        say(f"   the V2 lead list holds {len(leads)} leads: {len(new)} added since step 6 began")
        if n == 1:
            tagged = [lead for lead in leads if lead["tags"]]
            for lead in tagged[:3]:
                say(f"     {lead['email'] or lead['mobile_number']}: tags {lead['tags']}")
            say(
                f"   {len(tagged)} leads carry tags; the contacts that step 4 created as leads (same email) were "
                "updated, not added again (update_enabled); the unqualified leads' rows became new leads"
            )
            added = len(new)
        elif len(new) != added:
            msg = f"the second machine's V2 load added {len(new) - added} leads"
            raise SystemExit(msg)
    v2_rejects = [r for r in map(json.loads, REJECTS.read_text().splitlines()) if r["stream"] == "contacts"]
    if v2_rejects:
        say(f"   rejected rows ({REJECTS.relative_to(ROOT)}):")
        for r in v2_rejects:
            say(f"     {r['record'].get('record_id')}: {r['message']}")
    say("   the second machine added nothing: each add updated the contact Closum had")


def on_signal(signum: int, _frame: FrameType | None) -> NoReturn:
    """SIGTERM/SIGHUP end the demo like Ctrl-C: through ``finally``, stopping the sandbox."""
    raise SystemExit(128 + signum)


def main() -> int:
    """Run the demo; everything it writes goes to output/demo/."""
    install_plugins()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    sandbox_log = (WORK / "sandbox.log").open("w")
    sandbox = SandboxProcess(seed=SEED, db=WORK / "sandbox.sqlite", log=sandbox_log)
    env = os.environ | {
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        # The demo's own Meltano system database: its state never mixes with yours.
        "MELTANO_DATABASE_URI": f"sqlite:///{WORK / 'meltano.db'}",
        "TAP_CLOSUM_API_URL": f"http://127.0.0.1:{sandbox.port}/api",
        "TARGET_CLOSUM_API_URL": f"http://127.0.0.1:{sandbox.port}/api",
        "TARGET_CLOSUM_API_V2_URL": f"http://127.0.0.1:{sandbox.port}/v2",
        "TARGET_DUCKDB_PATH": str(DUCK),
        "TARGET_CLOSUM_REJECTS_PATH": str(REJECTS),
        "TARGET_CLOSUM_LEDGER_PATH": str(WORK / "closum-ledger.sqlite"),
        "TAP_JSONL_PATH": str(LEADS_FILE),
        # A demo account is small: let one run re-read its whole history (the default spreads it over 24 runs).
        "TAP_CLOSUM_SWEEP_CYCLE_RUNS": "1",
    }
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    started = time.monotonic()
    try:
        step(f"starting closum-sandbox on {sandbox.url} (seed {SEED}, data in {WORK.relative_to(ROOT)}/)")
        sandbox.start()
        say(f"   {count(sandbox, 'lead')} leads, {count(sandbox, 'email')} emails, {count(sandbox, 'phone')} phones")
        first = closum_to_duckdb(env)
        last_batch = duckdb_query(DUCK, "select max(_sdc_batched_at) from closum.leads")[0][0]
        leads_file_to_closum(env, sandbox)
        closum_to_duckdb_again(env, first, last_batch)
        closum_changes_to_duckdb(env, sandbox)
        crm_export_to_closum(env, sandbox)
        crm_export_again(env, sandbox)
        crm_export_as_v2_contacts(env, sandbox)
    finally:
        sandbox.stop()
        sandbox_log.close()
        say(f"\n==> sandbox stopped; demo took {time.monotonic() - started:.0f} s. Files in {WORK.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
