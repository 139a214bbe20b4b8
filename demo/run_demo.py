#!/usr/bin/env python3
"""The one-command demo (`make demo`): both pipelines through Meltano on a local sandbox.

1. start a seeded closum-sandbox on a free port (data in output/demo/, wiped first);
2. `meltano --environment=dev run tap-closum target-duckdb`, then print every
   DuckDB table with its row count;
3. `meltano --environment=dev run tap-jsonl target-closum` with demo/leads.jsonl
   (a few bad rows on purpose), then print created / rejected and why;
4. run the tap again: Meltano passes the saved state, so only the new leads arrive;
5. stop the sandbox (also on Ctrl-C or an error).

Everything the demo writes lives in output/demo/ (sandbox SQLite file, DuckDB
file, target ledger and rejects, Meltano's own system database holding the
state), recreated on each run, so running it twice gives the same result and
never touches the state of your own `meltano run`s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from closum_sandbox.testing import SandboxProcess

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WORK = ROOT / "output" / "demo"
SEED = 25
LEADS_FILE = ROOT / "demo" / "leads.jsonl"
PLUGIN_EXECUTABLES = [
    ".meltano/extractors/tap-closum/venv/bin/tap-closum",
    ".meltano/extractors/tap-jsonl/venv/bin/tap-jsonl",
    ".meltano/loaders/target-closum/venv/bin/target-closum",
    ".meltano/loaders/target-duckdb/venv/bin/target-duckdb",
]
SUMMARY = re.compile(
    r"stream (?P<stream>\S+) → (?P<resource>\S+) \((?P<action>\w+)\): created (?P<created>\d+), "
    r"updated (?P<updated>\d+), skipped as already loaded (?P<skipped>\d+), rejected (?P<rejected>\d+)"
)


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n==> {text}")


def count(sandbox: SandboxProcess, resource: str) -> int:
    return len(sandbox.records(resource))


def meltano(env: dict, log: Path, *args: str) -> str:
    cmd = [str(BIN / "meltano"), *args]
    say("$ meltano " + " ".join(args))
    started = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    log.write_text(proc.stdout)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-25:])
        raise SystemExit(
            f"meltano {' '.join(args)} failed (exit {proc.returncode}); last lines:\n{tail}\nfull log: {log}"
        )
    say(f"   ok in {time.monotonic() - started:.1f} s (log: {log.relative_to(ROOT)})")
    return proc.stdout


def duckdb_counts(path: Path) -> dict[str, int]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.execute(
            "select table_catalog, table_schema, table_name from information_schema.tables"
            " where table_catalog = current_database() order by 2, 3"
        ).fetchall()
        return {f"{s}.{t}": con.execute(f'select count(*) from "{c}"."{s}"."{t}"').fetchone()[0] for c, s, t in tables}
    finally:
        con.close()


def duckdb_query(path: Path, sql: str) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def main() -> int:
    missing = [p for p in PLUGIN_EXECUTABLES if not (ROOT / p).exists()]
    if missing:
        step("meltano install (plugins missing: " + ", ".join(Path(p).name for p in missing) + ")")
        subprocess.run(
            [str(BIN / "meltano"), "install"],
            cwd=ROOT,
            check=True,
            env=os.environ | {"MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false"},
        )

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    duck = WORK / "warehouse.duckdb"
    rejects = WORK / "closum-rejects.jsonl"
    sandbox_log = (WORK / "sandbox.log").open("w")
    sandbox = SandboxProcess(seed=SEED, db=WORK / "sandbox.sqlite", log=sandbox_log)
    env = os.environ | {
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        # The demo's own Meltano system database: its state never mixes with yours.
        "MELTANO_DATABASE_URI": f"sqlite:///{WORK / 'meltano.db'}",
        "TAP_CLOSUM_API_URL": f"http://127.0.0.1:{sandbox.port}/api",
        "TARGET_CLOSUM_API_URL": f"http://127.0.0.1:{sandbox.port}/api",
        "TARGET_DUCKDB_PATH": str(duck),
        "TARGET_CLOSUM_REJECTS_PATH": str(rejects),
        "TARGET_CLOSUM_LEDGER_PATH": str(WORK / "closum-ledger.sqlite"),
        "TAP_JSONL_PATH": str(LEADS_FILE),
    }

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    started = time.monotonic()
    try:
        step(f"starting closum-sandbox on {sandbox.url} (seed {SEED}, data in {WORK.relative_to(ROOT)}/)")
        sandbox.start()
        say(f"   {count(sandbox, 'lead')} leads, {count(sandbox, 'email')} emails, {count(sandbox, 'phone')} phones")

        step("1. Closum → DuckDB")
        meltano(
            env, WORK / "run1-tap-closum-target-duckdb.log", "--environment=dev", "run", "tap-closum", "target-duckdb"
        )
        first = duckdb_counts(duck)
        say(f"   {duck.relative_to(ROOT)}:")
        for table, n in first.items():
            say(f"   {table:<36} {n:>6} rows")
        last_batch = duckdb_query(duck, "select max(_sdc_batched_at) from closum.leads")[0][0]

        step(f"2. {LEADS_FILE.relative_to(ROOT)} → Closum (target-closum)")
        with LEADS_FILE.open() as f:
            say(f"   {sum(1 for line in f if line.strip())} rows in the file")
        out = meltano(
            env, WORK / "run2-tap-jsonl-target-closum.log", "--environment=dev", "run", "tap-jsonl", "target-closum"
        )
        summaries = [m.groupdict() for m in SUMMARY.finditer(out)]
        if not summaries:
            raise SystemExit("target-closum printed no summary line; see the log above")
        for s in summaries:
            say(
                f"   stream {s['stream']} → {s['resource']} ({s['action']}): created {s['created']}, "
                f"updated {s['updated']}, skipped as already loaded {s['skipped']}, rejected {s['rejected']}"
            )
        if rejects.exists():
            say(f"   rejected rows ({rejects.relative_to(ROOT)}):")
            for line in rejects.read_text().splitlines():
                r = json.loads(line)
                who = r["record"].get("external_id") or r["record"].get("name")
                status = "before sending" if r["status"] is None else f"HTTP {r['status']}"
                say(f"     {who}: {status}: {r['message']}")
        say(f"   the sandbox now has {count(sandbox, 'lead')} leads")

        step("3. Closum → DuckDB again: Meltano passes the saved state, only new leads arrive")
        meltano(
            env, WORK / "run3-tap-closum-target-duckdb.log", "--environment=dev", "run", "tap-closum", "target-duckdb"
        )
        second = duckdb_counts(duck)
        new_ids = [
            row[0]
            for row in duckdb_query(
                duck, f"select id from closum.leads where _sdc_batched_at > '{last_batch}' order by id"
            )
        ]
        for table, n in second.items():
            delta = n - first.get(table, 0)
            say(f"   {table:<36} {n:>6} rows" + (f"  (+{delta})" if delta else ""))
        ids = f"ids {new_ids[0]}..{new_ids[-1]}" if new_ids else "none"
        say(
            f"   leads rows written by this run: {len(new_ids)} ({ids}); the incremental streams "
            "(leads, unqualified_leads, audience_lists, lead_audience_lists) read only past their bookmark, "
            "the FULL_TABLE ones are read whole and upserted"
        )
        state = subprocess.run(
            [str(BIN / "meltano"), "--environment=dev", "state", "get", "dev:tap-closum-to-target-duckdb"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if state.returncode == 0:
            try:
                bookmark = json.loads(state.stdout)["singer_state"]["bookmarks"]["leads"]["replication_key_value"]
                say(f"   Meltano's state for dev:tap-closum-to-target-duckdb: leads bookmark id {bookmark}")
            except (ValueError, KeyError, TypeError):
                pass
    finally:
        sandbox.stop()
        sandbox_log.close()
        say(f"\n==> sandbox stopped; demo took {time.monotonic() - started:.0f} s. Files in {WORK.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
