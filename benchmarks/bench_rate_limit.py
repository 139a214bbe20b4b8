"""Benchmark the request budget against a rate-limited sandbox, in one run.

For each limit R (``closum-sandbox serve --rate-limit R --latency-ms 20``) it
runs, as whole processes:

- the tap over 5,000 leads (``leads`` only, page size 100, 8 requests in flight);
- the target creating 300 leads (a fresh ledger each run);

each in four ways: ``adaptive`` (no ``max_requests_per_second``), ``advised``
(``max_requests_per_second`` set as the adaptive run's closing warning said:
the ``limit_rps`` of its ``closum_request_budget`` metric), ``fixed``
(``max_requests_per_second: R``) and, with ``--today DIR``, ``today``: the code
of an older checkout (``git archive <commit> | tar -x -C DIR``) run the same
way, first on ``PYTHONPATH``. From the sandbox's own request log it reports, per
run: calls, calls answered 429 (and their share), and the throughput: calls
answered otherwise per second between the first and the last call, as a
fraction of R. Goals: adaptive >= 0.8 R with <= 5 % of calls answered 429;
advised >= 0.8 R and fixed >= 0.9 R, both with no 429 at all.

    python benchmarks/bench_rate_limit.py [--limits 10,40] [--today /tmp/today]

Only 127.0.0.1 is ever contacted; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench_common import BIN, PASSWORD, USER, leads_catalog, write_leads_input

from closum_sandbox.testing import SandboxProcess

TOO_MANY = 429
GOALS = {"adaptive": (0.8, 0.05), "advised": (0.8, 0.0), "fixed": (0.9, 0.0)}


def lead(n: int, tag: str) -> dict[str, object]:
    """The ``n``-th generated lead record; ``tag`` keeps the runs' emails apart."""
    return {"id": n, "name": f"Rate {tag} {n}", "email": {"email": f"{tag}.{n}@rate.example.com"}}


def measure(server: SandboxProcess, limit: float, cmd: list[str], env: dict[str, str], stdin: Path | None) -> dict:
    """Run ``cmd`` against a sandbox whose window is empty; what the sandbox saw."""
    time.sleep(1.5)  # let the limiter's window empty
    server.clear_log()
    start = time.perf_counter()
    with (stdin or Path(os.devnull)).open() as fh:
        proc = subprocess.run(cmd, stdin=fh, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - start
    calls = server.requests_log("/api")
    if not calls:
        msg = f"{cmd[0]} sent nothing (exit {proc.returncode}): {proc.stderr[-1500:]}"
        raise SystemExit(msg)
    # A run that failed is a result too (the code before the pace could give up on a 429 storm).
    failure = [line for line in proc.stderr.splitlines() if " failed: " in line]
    times = sorted(c["time"] for c in calls)
    span = times[-1] - times[0]
    refused = sum(1 for c in calls if c["status"] == TOO_MANY)
    late = sum(1 for c in calls if c["status"] == TOO_MANY and c["time"] - times[0] > 1.0)
    answered = len(calls) - refused
    budget = [line for line in proc.stderr.splitlines() if "requests: " in line and "answered 429" in line]
    metrics = [line for line in proc.stderr.splitlines() if "closum_request_budget" in line]
    limit_rps = json.loads(metrics[-1].split("METRIC: ", 1)[1])["tags"].get("limit_rps") if metrics else None
    return {
        "calls": len(calls),
        "http_429": refused,
        "share_429": round(refused / len(calls), 3),
        "http_429_after_1s": late,
        "span_s": round(span, 2),
        "throughput_of_r": round((answered - 1) / span / limit, 3) if span > 0 else None,
        "wall_s": round(wall, 2),
        "log_line": budget[-1].split("| ")[-1] if budget else None,
        "limit_rps": limit_rps,
        "exit": proc.returncode,
        "failure": failure[-1].split("| ")[-1] if proc.returncode and failure else None,
    }


def run_limit(limit: float, leads: int, creates: int, today: Path | None) -> dict[str, dict[str, dict]]:
    """Every mode of tap and target against one sandbox limited to ``limit`` calls per second."""
    server = SandboxProcess(
        seed=0, latency_ms=20, rate_limit=limit, username=USER, password=PASSWORD, token_ttl=86400
    ).start()
    out: dict[str, dict[str, dict]] = {"tap": {}, "target": {}}
    modes: list[tuple[str, dict[str, object], Path | None]] = [
        ("adaptive", {}, None),
        ("advised", {}, None),  # its max_requests_per_second comes from the adaptive run, per program
        ("fixed", {"max_requests_per_second": limit}, None),
    ]
    if today is not None:
        modes.insert(0, ("today", {}, today))
    try:
        server.add_records("lead", leads)
        with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp:
            for mode, settings, code in modes:
                # "advised" follows the adaptive runs' closing warning (they ran just before it).
                advice = {program: runs["adaptive"]["limit_rps"] for program, runs in out.items() if "adaptive" in runs}
                if mode == "advised" and None in advice.values():
                    continue  # the adaptive runs met no limit: there is no advice to follow
                env = os.environ | ({"PYTHONPATH": str(code)} if code else {})
                work = Path(tmp) / f"{limit}-{mode}"
                work.mkdir()
                base = {"api_url": server.api_url, "api_username": USER, "api_pw": PASSWORD} | settings
                tap_config = work / "tap.json"
                tap_settings = base | {"page_size": 100, "max_parallel_requests": 8}
                if mode == "advised":
                    tap_settings["max_requests_per_second"] = advice["tap"]
                tap_config.write_text(json.dumps(tap_settings))
                (work / "catalog.json").write_text(json.dumps(leads_catalog(tap_config, env)))
                tap = [str(BIN / "tap-closum"), "--config", str(tap_config), "--catalog", str(work / "catalog.json")]
                out["tap"][mode] = measure(server, limit, tap, env, None)
                target_config = work / "target.json"
                target_settings = base | {
                    "ledger_path": str(work / "ledger.sqlite"),
                    "rejects_path": str(work / "rejects.jsonl"),
                }
                if mode == "advised":
                    target_settings["max_requests_per_second"] = advice["target"]
                target_config.write_text(json.dumps(target_settings))
                write_leads_input(work / "input.singer", [lead(n, f"{limit}-{mode}") for n in range(creates)])
                target = [str(BIN / "target-closum"), "--config", str(target_config)]
                out["target"][mode] = measure(server, limit, target, env, work / "input.singer")
    finally:
        server.stop()
    return out


def table(results: dict[str, dict[str, dict[str, dict]]]) -> str:
    """The results as a Markdown table."""
    rows = [
        "| R | program | mode | calls | 429 (after 1st s) | share 429 | throughput / R | limit seen | wall s | exit |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for limit, programs in results.items():
        for program, modes in programs.items():
            for mode, r in modes.items():
                rows.append(
                    f"| {limit} | {program} | {mode} | {r['calls']} | {r['http_429']} ({r['http_429_after_1s']}) | "
                    f"{100 * r['share_429']:.1f} % | {100 * r['throughput_of_r']:.0f} % | {r['limit_rps'] or '-'} | "
                    f"{r['wall_s']} | {r['exit']} |"
                )
    return "\n".join(rows)


def main() -> None:
    """Run every limit and print the figures as JSON, then as a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="10,40")
    parser.add_argument("--leads", type=int, default=5000)
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--today", type=Path, help="a checkout of the code to compare with, run from PYTHONPATH")
    args = parser.parse_args()
    results = {limit: run_limit(float(limit), args.leads, args.creates, args.today) for limit in args.limits.split(",")}
    verdicts = {}
    for limit, programs in results.items():
        for program, modes in programs.items():
            for mode, (floor, share) in GOALS.items():
                if mode not in modes:
                    continue
                r = modes[mode]
                ok = r["exit"] == 0 and r["throughput_of_r"] >= floor and r["share_429"] <= share
                verdicts[f"R={limit} {program} {mode}"] = "met" if ok else "MISSED"
    print(json.dumps({"results": results, "goals": verdicts}, indent=2))
    print(table(results))
    for limit, programs in results.items():
        for program, modes in programs.items():
            for mode, r in modes.items():
                if r["exit"]:
                    print(f"R={limit} {program} {mode} exited {r['exit']}: {r['failure']}")


if __name__ == "__main__":
    main()
