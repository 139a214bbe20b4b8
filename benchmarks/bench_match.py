"""Benchmark target-closum's ``match_on: email`` against the same load without matching, in one run.

Starts ``closum-sandbox serve`` on a free 127.0.0.1 port with ``--latency-ms 50``
and 20,000 generated leads, then runs, each as a whole process:

1. ``tap-closum`` reading the 20,000 leads (only the ``leads`` stream), as
   ``benchmarks/bench_tap.py`` does: the read the target's index repeats;
2. ``target-closum`` with ``resource_map: {leads: {resource: lead, match_on: [email]}}``
   on 1,000 input leads, 200 of them already on the server (their emails in
   upper case, or with surrounding spaces): it reads the lead list once, then
   creates 800 and matches 200;
3. ``target-closum`` without ``match_on`` on 1,000 other input leads built the
   same way: it creates all 1,000 (the 200 again: duplicates).

The matching run goes before the plain one, so its index reads exactly the
20,000 leads the tap read. From the sandbox's request log it reports, for the
tap and for the matching target alike, how many list pages were read and how
long the read of the list took (first page asked to last page asked, plus one
latency), and how many requests each target run sent of each kind: matching
adds the list pages once per run and no request per record, plus, before the
run reports success, the pages of the leads it created read back newest first
(to see that no other run created them too).

    python benchmarks/bench_match.py [--leads 20000] [--input 1000] [--matching 200] [--latency-ms 50]

Prints the figures as JSON. Only 127.0.0.1 is ever contacted; every process
stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_common import BIN, PASSWORD, REPO, USER, add_leads, tap_cmd, write_config

from closum_sandbox.testing import SandboxProcess

PAGE_SIZE = 100
PARALLEL = 8


def input_leads(existing: list[str], count: int, tag: str) -> list[dict[str, Any]]:
    """``count`` input leads: first one per ``existing`` email (as a CRM would spell it), then new ones."""
    records: list[dict[str, Any]] = []
    for n, email in enumerate(existing):
        spelled = email.upper() if n % 2 else f"  {email} "
        records.append({"crm_id": f"{tag}-{n}", "name": f"Known {n}", "email": spelled})
    records.extend(
        {
            "crm_id": f"{tag}-{n}",
            "name": f"Bench {tag} {n}",
            "email": f"{tag}.{n}@bench.example.com",
            "phone": {"extension": "351", "number": f"91{n:07d}"},
        }
        for n in range(len(existing), count)
    )
    return records


def write_input(path: Path, records: list[dict[str, Any]]) -> None:
    """The Singer input: a SCHEMA, the RECORDs, a final STATE."""
    schema = {"type": "object", "properties": {"crm_id": {"type": "string"}, "name": {}, "email": {}, "phone": {}}}
    with path.open("w") as fh:
        fh.write(json.dumps({"type": "SCHEMA", "stream": "leads", "schema": schema, "key_properties": ["crm_id"]}))
        fh.write("\n")
        for record in records:
            fh.write(json.dumps({"type": "RECORD", "stream": "leads", "record": record}) + "\n")
        fh.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"leads": len(records)}}}) + "\n")


def run_process(cmd: list[str], workdir: Path, stdin_path: Path | None = None) -> float:
    """Run one program to its end (stdout discarded, stderr to workdir/stderr.log); its wall seconds."""
    started = time.perf_counter()
    with (workdir / "stderr.log").open("w") as stderr, (stdin_path or Path(os.devnull)).open() as stdin:
        proc = subprocess.run(
            cmd,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=workdir,
            env=os.environ | {"PYTHONPATH": str(REPO)},
            check=False,
        )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        msg = f"{Path(cmd[0]).name} exited {proc.returncode}: {(workdir / 'stderr.log').read_text()[-2000:]}"
        raise SystemExit(msg)
    return wall


def target_cmd(workdir: Path, api_url: str, *, match: bool) -> list[str]:
    """Write the target's config (a fresh ledger); the command line that runs it."""
    entry: dict[str, Any] = {"resource": "lead", "action": "create"}
    if match:
        entry["match_on"] = ["email"]
    config = write_config(
        workdir,
        api_url,
        max_parallel_requests=PARALLEL,
        ledger_path=str(workdir / "ledger.sqlite"),
        rejects_path=str(workdir / "rejects.jsonl"),
        resource_map={"leads": entry},
    )
    return [str(BIN / "target-closum"), "--config", str(config)]


def summary(workdir: Path) -> dict[str, Any]:
    """The ``closum_load_summary`` metric of the target's ``leads`` stream."""
    decoder = json.JSONDecoder()
    for line in (workdir / "stderr.log").read_text().splitlines():
        _, marker, rest = line.partition("METRIC: ")
        if marker:
            metric, _ = decoder.raw_decode(rest)
            if metric.get("metric") == "closum_load_summary" and metric["value"]["stream"] == "leads":
                return {k: metric["value"][k] for k in ("created", "matched", "rejected")}
    msg = f"no closum_load_summary for leads in {workdir / 'stderr.log'}"
    raise SystemExit(msg)


def list_read(log: list[dict[str, Any]], latency_ms: float, direction: str | None = None) -> dict[str, Any]:
    """The lead-list pages in a request log (those read in ``direction``, if given), and the seconds they took.

    The seconds run from the first page asked to the last answered. A target's index reads
    the list in id order (``asc``); the read-back of what it created before it reports
    success (no other run doubled them) reads newest first (``desc``), as the tap does.
    """
    pages = [
        r
        for r in log
        if r["method"] == "GET"
        and r["path"] == "/api/lead"
        and (direction is None or r.get("query", {}).get("direction", "asc") == direction)
    ]
    if not pages:
        return {"pages": 0, "read_s": 0.0}
    times = [r["time"] for r in pages]
    return {"pages": len(pages), "read_s": round(max(times) - min(times) + latency_ms / 1000, 2)}


def requests_by_kind(log: list[dict[str, Any]]) -> dict[str, int]:
    """How many requests of each ``METHOD /path`` (ids folded to ``{id}``) a log holds."""
    kinds = Counter(
        f"{r['method']} {'/'.join('{id}' if p.isdigit() else p for p in r['path'].split('/'))}" for r in log
    )
    return dict(sorted(kinds.items()))


def target_run(server: SandboxProcess, work: Path, records: list[dict[str, Any]], *, match: bool) -> dict[str, Any]:
    """One target process on ``records``; its wall time, summary, list read and requests."""
    work.mkdir()
    write_input(work / "input.singer", records)
    server.clear_log()
    before = len(server.records("lead"))
    wall = run_process(target_cmd(work, server.api_url, match=match), work, work / "input.singer")
    log = server.requests_log()
    return {
        "wall_s": round(wall, 2),
        "summary": summary(work),
        "leads_added_on_server": len(server.records("lead")) - before,
        "index_read": list_read(log, server.settings.latency_ms, "asc"),
        "read_back": list_read(log, server.settings.latency_ms, "desc"),
        "requests": requests_by_kind(log),
    }


def main() -> None:
    """Run the tap, the matching load and the plain load; print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=20_000, help="leads already on the server")
    parser.add_argument("--input", type=int, default=1_000, help="input leads per target run")
    parser.add_argument("--matching", type=int, default=200, help="of which already on the server")
    parser.add_argument("--latency-ms", type=float, default=50)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "server_leads": args.leads,
        "input_leads": args.input,
        "matching": args.matching,
        "latency_ms": args.latency_ms,
        "max_parallel_requests": PARALLEL,
    }
    server = SandboxProcess(seed=0, latency_ms=args.latency_ms, username=USER, password=PASSWORD, token_ttl=86400)
    server.start()
    try:
        add_leads(server, args.leads)
        emails = [rec["email"]["email"] for rec in server.records("lead") if rec.get("email")]
        existing = emails[:: max(1, len(emails) // max(1, args.matching))][: args.matching]
        with tempfile.TemporaryDirectory(prefix="bench-match-") as tmp_name:
            tmp = Path(tmp_name)
            (tmp / "tap").mkdir()
            tap = tap_cmd(tmp / "tap", server.api_url, page_size=PAGE_SIZE, max_parallel_requests=PARALLEL)
            server.clear_log()
            tap_wall = run_process(tap, tmp / "tap")
            report["tap_read"] = {"wall_s": round(tap_wall, 2), **list_read(server.requests_log(), args.latency_ms)}
            matching = target_run(server, tmp / "match", input_leads(existing, args.input, "m"), match=True)
            plain = target_run(server, tmp / "plain", input_leads(existing, args.input, "p"), match=False)
    finally:
        server.stop()
    expected = (
        {"created": args.input - len(existing), "matched": len(existing), "rejected": 0},
        {"created": args.input, "matched": 0, "rejected": 0},
    )
    if (matching["summary"], plain["summary"]) != expected:
        msg = f"unexpected tallies: {matching['summary']} and {plain['summary']}, not {expected}"
        raise SystemExit(msg)
    report["target_match_on_email"] = matching
    report["target_without_matching"] = plain
    report["comparison"] = {
        "match_over_plain_wall": round(matching["wall_s"] / plain["wall_s"], 2),
        "index_read_over_tap_read": round(matching["index_read"]["read_s"] / report["tap_read"]["read_s"], 2),
        "goal": "index read <= tap read of the same leads; no request per record for matching",
        "list_pages_per_input_record": round(matching["index_read"]["pages"] / args.input, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
