"""Edits, deletions and consent changes reaching a warehouse: runs, requests, state bytes, records per change.

Against a sandbox of ``--leads`` leads (child process), the tap (``tap-closum``,
leads and their opt-ins, default settings) syncs once; then 1 % of the leads
are edited (lifecycle stage or custom_data), 0.1 % deleted and 0.5 % have
their consent changed (SMS flipped, or withdrawn), as in Closum's UI. The tap
then runs until a warehouse built from its output (upsert on the key, delete
on ``_sdc_deleted_at``) equals the sandbox, table by table. Printed as JSON:

- runs until each table matches, and requests per run, against the same tap
  with the sweeps off (``sweep_requests_per_run: 0``, ``consent_sweep_retrieves_per_run: 0``:
  today's incremental run, new records only) measured in the same run;
- state bytes (all, and the leads ledger), records emitted per change;
- an unchanged account: records emitted and requests per run, for this
  account and for a small one (``--small`` leads) over a whole cycle.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import tempfile
import typing as t
from pathlib import Path

from bench_common import BIN, PASSWORD, USER, add_leads, leads_catalog, write_config

from closum_sandbox.testing import SandboxProcess

STREAMS = ("leads", "lead_opt_ins")


class Runner:
    """Runs the tap with a state file, loads its output into a warehouse, counts requests."""

    def __init__(self, sandbox: SandboxProcess, workdir: Path, name: str, **settings: object) -> None:
        """A tap config under ``workdir/name`` with ``settings``."""
        self.sandbox = sandbox
        self.dir = workdir / name
        self.dir.mkdir()
        self.config = write_config(self.dir, sandbox.api_url, page_size=100, **settings)
        (self.dir / "catalog.json").write_text(json.dumps(leads_catalog(self.config, streams=frozenset(STREAMS))))
        self.state: dict[str, t.Any] = {}
        self.tables: dict[str, dict[int, dict[str, t.Any]]] = {s: {} for s in STREAMS}

    def run(self) -> dict[str, t.Any]:
        """One run: records emitted per stream, requests sent."""
        (self.dir / "state.json").write_text(json.dumps(self.state))
        self.sandbox.clear_log()
        args = ["--config", str(self.config), "--catalog", str(self.dir / "catalog.json")]
        args += ["--state", str(self.dir / "state.json")]
        out = subprocess.run([str(BIN / "tap-closum"), *args], capture_output=True, text=True, check=True).stdout
        emitted = dict.fromkeys(STREAMS, 0)
        for line in out.splitlines():
            message = json.loads(line)
            if message["type"] == "STATE":
                self.state = message["value"]
            elif message["type"] == "RECORD":
                stream, record = message["stream"], message["record"]
                key = record["lead_id"] if stream == "lead_opt_ins" else record["id"]
                emitted[stream] += 1
                if record.get("_sdc_deleted_at"):
                    self.tables[stream].pop(key, None)
                else:
                    self.tables[stream][key] = record
        requests = len([r for r in self.sandbox.requests_log() if r["path"] != "/api/token"])
        return {"emitted": emitted, "requests": requests}

    def matches(self) -> dict[str, bool]:
        """Which tables equal the sandbox."""
        stored = self.sandbox.records("lead")
        listed = {r["id"]: r for r in self.sandbox.records("lead", listed=True)}
        opt_ins = {r["id"]: r["lead_opt_in"] | {"lead_id": r["id"]} for r in stored if r.get("lead_opt_in")}
        return {"leads": self.tables["leads"] == listed, "lead_opt_ins": self.tables["lead_opt_ins"] == opt_ins}


def change(sandbox: SandboxProcess, rng: random.Random, share: tuple[float, float, float]) -> dict[str, int]:
    """Edit, delete and change the consent of shares of the leads, as in Closum's UI."""
    leads = sandbox.records("lead")
    edited = rng.sample(leads, round(share[0] * len(leads)))
    for lead in edited:
        if rng.random() < 0.5:  # noqa: PLR2004  # half move stage, half edit custom_data
            sandbox.edit_record("lead", lead["id"], custom_data=json.dumps({"score": rng.randint(0, 100)}))
        else:
            sandbox.edit_record("lead", lead["id"], name=lead["name"] + " (editado)")
    with_opt_in = [r for r in leads if r.get("lead_opt_in")]
    consents = rng.sample(with_opt_in, round(share[2] * len(leads)))
    for lead in consents:
        opt_in = lead["lead_opt_in"]
        sandbox.set_opt_in("lead", lead["id"], None if rng.random() < 0.2 else {"sms": not opt_in["sms"]})  # noqa: PLR2004
    taken = {r["id"] for r in edited} | {r["id"] for r in consents}
    deleted = rng.sample([r for r in leads if r["id"] not in taken], round(share[1] * len(leads)))
    for lead in deleted:
        sandbox.delete_record("lead", lead["id"])
    return {"edited": len(edited), "deleted": len(deleted), "consents_changed": len(consents)}


def until_match(runner: Runner, most: int) -> dict[str, t.Any]:
    """Run until every table matches: the run each matched at, requests per run, records emitted."""
    matched: dict[str, int] = {}
    requests: list[int] = []
    emitted = dict.fromkeys(STREAMS, 0)
    for run in range(1, most + 1):
        result = runner.run()
        requests.append(result["requests"])
        for stream in STREAMS:
            emitted[stream] += result["emitted"][stream]
        for stream, ok in runner.matches().items():
            if ok and stream not in matched:
                matched[stream] = run
        if len(matched) == len(STREAMS):
            break
    return {"runs_until_match": matched, "requests_per_run": requests, "emitted": emitted}


def unchanged(runner: Runner, runs: int) -> dict[str, t.Any]:
    """Runs over an unchanged account: records emitted, requests per run."""
    results = [runner.run() for _ in range(runs)]
    requests = [r["requests"] for r in results]
    return {
        "runs": runs,
        "records_emitted": sum(sum(r["emitted"].values()) for r in results),
        "requests_per_run_mean": round(sum(requests) / runs, 2),
        "requests_per_run_max": max(requests),
    }


def main() -> None:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=600)
    parser.add_argument("--most-runs", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(15)  # noqa: S311  # which leads change, not a secret
    report: dict[str, t.Any] = {"leads": args.leads}
    with tempfile.TemporaryDirectory() as tmp:
        small = SandboxProcess(seed=args.small, revision="2019", username=USER, password=PASSWORD, token_ttl=86400)
        with small:
            runner = Runner(small, Path(tmp), "small")
            today = Runner(small, Path(tmp), "small_today", sweep_requests_per_run=0, consent_sweep_retrieves_per_run=0)
            runner.run()
            today.run()
            report["small_unchanged"] = {
                "leads": args.small,
                "tap": unchanged(runner, 24),
                "today": unchanged(today, 24),
            }
        big = SandboxProcess(seed=0, revision="2019", username=USER, password=PASSWORD, token_ttl=86400)
        with big:
            add_leads(big, args.leads)
            runner = Runner(big, Path(tmp), "big")
            today = Runner(big, Path(tmp), "big_today", sweep_requests_per_run=0, consent_sweep_retrieves_per_run=0)
            first = runner.run()
            today.run()
            report["first_run_requests"] = first["requests"]
            report["state_bytes_after_first_run"] = len(json.dumps(runner.state))
            report["changes"] = change(big, rng, (0.01, 0.001, 0.005))
            today_run = today.run()
            report["today"] = {"requests_per_run": today_run["requests"], "matches_after_a_run": today.matches()}
            report["tap"] = until_match(runner, args.most_runs)
            changes = sum(report["changes"].values())
            report["tap"]["records_emitted_per_change"] = round(sum(report["tap"]["emitted"].values()) / changes, 1)
            report["state_bytes"] = len(json.dumps(runner.state))
            report["leads_ledger_bytes"] = len(json.dumps(runner.state["bookmarks"]["leads"]["ledger"]))
            report["opt_in_consent_bytes"] = len(json.dumps(runner.state["bookmarks"]["lead_opt_ins"]["consent"]))
            report["big_unchanged"] = unchanged(runner, 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
