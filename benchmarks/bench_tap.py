"""Benchmark tap-closum against a plain sequential read loop, in one run.

Starts ``closum-sandbox`` on a free 127.0.0.1 port, loads leads into it, then
runs each reader as a whole process on the same data, printing figures as JSON:

1. speed: 50 ms latency, 20,000 leads: wall time of the tap (concurrent pages)
   against the baseline loop; goal ratio >= 3.
2. CPU: no latency, same leads: CPU seconds per record, tap / baseline; goal <= 1.5.
   Whole-process figures include each program's start-up (the SDK's imports
   alone cost about 0.4 s); with ``--big`` the marginal cost per record, the
   slope between the two sizes, is reported too.
3. memory: no latency: peak RSS of the tap at 20,000 and at 200,000 leads.

    python benchmarks/bench_tap.py [--leads 20000] [--big 200000] [--latency-ms 50]

Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_common import PASSWORD, USER, add_leads, tap_cmd

from closum_sandbox.testing import SandboxProcess

HERE = Path(__file__).resolve().parent


def measured(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd`` with stdout to /dev/null: wall seconds, CPU seconds, peak RSS MiB, lines."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t0 = time.perf_counter()\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)\n"
        "lines = sum(1 for _ in p.stdout)\n"
        "rc = p.wait()\n"
        "wall = time.perf_counter() - t0\n"
        "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'rc': rc, 'wall_s': wall, 'cpu_s': u.ru_utime + u.ru_stime,"
        " 'peak_rss_mib': u.ru_maxrss / 1024, 'lines': lines}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True, check=True)
    result: dict[str, float] = json.loads(out.stdout)
    if result["rc"] != 0:
        msg = f"{cmd[0]} exited {result['rc']}"
        raise SystemExit(msg)
    return result


def main() -> None:
    """Run the three measurements and print them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=20_000)
    parser.add_argument("--big", type=int, default=200_000, help="leads for the memory check (0 skips it)")
    parser.add_argument("--latency-ms", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    report: dict[str, object] = {"leads": args.leads, "latency_ms": args.latency_ms}
    sandbox = SandboxProcess(
        seed=0, latency_ms=args.latency_ms, username=USER, password=PASSWORD, token_ttl=86400
    ).start()
    try:
        add_leads(sandbox, args.leads)
        api_url = sandbox.api_url
        with tempfile.TemporaryDirectory() as tmp:
            tap = tap_cmd(Path(tmp), api_url, page_size=100, max_parallel_requests=8)
            baseline = [sys.executable, str(HERE / "baseline_read_loop.py"), api_url, USER, PASSWORD, "/lead", "100"]

            base_slow = measured(baseline)
            tap_slow = measured(tap)
            report["latency"] = {
                "baseline_wall_s": round(base_slow["wall_s"], 2),
                "tap_wall_s": round(tap_slow["wall_s"], 2),
                "speedup": round(base_slow["wall_s"] / tap_slow["wall_s"], 2),
                "goal": ">= 3",
            }
            sandbox.configure(latency_ms=0)
            base_fast = measured(baseline)
            tap_fast = measured(tap)
            cpu: dict[str, object] = {
                "baseline_cpu_us_per_record": round(1e6 * base_fast["cpu_s"] / args.leads, 1),
                "tap_cpu_us_per_record": round(1e6 * tap_fast["cpu_s"] / args.leads, 1),
                "ratio": round(tap_fast["cpu_s"] / base_fast["cpu_s"], 2),
                "goal": "<= 1.5",
            }
            report["cpu"] = cpu
            memory: dict[str, object] = {f"tap_peak_rss_mib_at_{args.leads}": round(tap_fast["peak_rss_mib"], 1)}
            if args.big > args.leads:
                add_leads(sandbox, args.big - args.leads)
                base_big = measured(baseline)
                tap_big = measured(tap)
                memory[f"tap_peak_rss_mib_at_{args.big}"] = round(tap_big["peak_rss_mib"], 1)
                memory["ratio"] = round(tap_big["peak_rss_mib"] / tap_fast["peak_rss_mib"], 2)
                memory["records_at_big"] = tap_big["lines"]
                extra = args.big - args.leads
                tap_slope = (tap_big["cpu_s"] - tap_fast["cpu_s"]) / extra
                base_slope = (base_big["cpu_s"] - base_fast["cpu_s"]) / extra
                cpu.update(
                    {
                        "baseline_marginal_cpu_us_per_record": round(1e6 * base_slope, 1),
                        "tap_marginal_cpu_us_per_record": round(1e6 * tap_slope, 1),
                        "marginal_ratio": round(tap_slope / base_slope, 2),
                        f"baseline_cpu_us_per_record_at_{args.big}": round(1e6 * base_big["cpu_s"] / args.big, 1),
                        f"tap_cpu_us_per_record_at_{args.big}": round(1e6 * tap_big["cpu_s"] / args.big, 1),
                        f"ratio_at_{args.big}": round(tap_big["cpu_s"] / base_big["cpu_s"], 2),
                    }
                )
            report["memory"] = memory
    finally:
        sandbox.stop()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
