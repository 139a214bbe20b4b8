"""Benchmark target-closum against a plain sequential write loop, in one run.

Starts ``closum-sandbox serve`` on a free 127.0.0.1 port with ``--latency-ms 50``, then:

(a) baseline: a sequential ``requests`` loop: POST /api/token, then POST /api/lead
    for each of 300 leads;
(b) ``target-closum`` as a whole process (Singer messages on stdin, a fresh
    ledger) creating 300 other leads;

and prints wall times and the ratio as JSON (goal >= 5). It checks that the
sandbox gained exactly the leads each side wrote.

``--memory`` also measures the peak RSS of the target process (``os.wait4``
rusage of that very child) at 10,000 and 100,000 records, on a second sandbox
with no latency. ``--memory-mode dry`` (default) runs them as dry runs (every
record mapped, validated and tallied, the ledger read; nothing sent);
``--memory-mode real`` really creates them (slower: minutes for 100,000).

    python benchmarks/bench_target.py [--leads 300] [--latency-ms 50] [--memory [--memory-mode dry|real]]

Only 127.0.0.1 is ever contacted; every process is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests
from bench_common import BIN, PASSWORD, REPO, USER, write_config

from closum_sandbox.testing import SandboxProcess


@dataclass(frozen=True)
class TargetRun:
    """One run of the target process.

    Attributes:
        wall_s: wall seconds.
        peak_rss_mib: peak RSS of that very process, in MiB.
        exit_code: its exit status.
        summary: the tallies of its ``leads`` summary line, if it printed one.
    """

    wall_s: float
    peak_rss_mib: float
    exit_code: int
    summary: str | None


def sandbox(latency_ms: float) -> SandboxProcess:
    """A started sandbox answering after ``latency_ms``."""
    return SandboxProcess(seed=5, latency_ms=latency_ms, username=USER, password=PASSWORD).start()


def lead_count(server: SandboxProcess) -> int:
    """How many leads the sandbox holds."""
    return len(server.records("lead"))


def lead(n: int, tag: str) -> dict[str, object]:
    """The ``n``-th generated lead record; ``tag`` keeps the runs' emails apart."""
    return {
        "id": n,
        "name": f"Bench {tag} {n}",
        "email": {"email": f"{tag}.{n}@bench.example.com"},
        "phone": {"extension": "001", "number": f"555-{n:07d}"},
        "lead_opt_in": {"sms": True, "email": False, "enviroment": {"REMOTE_ADDR": "127.0.0.1"}},
    }


def baseline(api_url: str, count: int) -> float:
    """Sequential loop: token, then one POST per lead. Wall seconds."""
    start = time.perf_counter()
    with requests.Session() as http:
        answer = http.post(api_url + "/token", json={"api_username": USER, "api_pw": PASSWORD}, timeout=30)
        answer.raise_for_status()
        headers = {"Authorization": f"Bearer {answer.json()['data']['token']}"}
        for n in range(count):
            answer = http.post(api_url + "/lead", json=_payload(lead(n, "loop")), headers=headers, timeout=30)
            answer.raise_for_status()
    return time.perf_counter() - start


def _payload(record: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in record.items() if k != "id"}


def write_input(path: Path, count: int, tag: str) -> None:
    """Write the Singer input: a SCHEMA, ``count`` lead RECORDs, a STATE every 5,000 and at the end."""
    schema = {"type": "object", "properties": {k: {} for k in lead(0, tag)}}
    with path.open("w") as fh:
        fh.write(json.dumps({"type": "SCHEMA", "stream": "leads", "schema": schema, "key_properties": ["id"]}) + "\n")
        for n in range(count):
            fh.write(json.dumps({"type": "RECORD", "stream": "leads", "record": lead(n, tag)}) + "\n")
            if (n + 1) % 5000 == 0:
                fh.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"leads": n + 1}}}) + "\n")
        fh.write(json.dumps({"type": "STATE", "value": {"bookmarks": {"leads": count}}}) + "\n")


def run_target(api_url: str, workdir: Path, input_path: Path, **settings: object) -> TargetRun:
    """The target as a process; wall seconds, peak RSS (MiB) of that process, exit code."""
    files = {"ledger_path": str(workdir / "ledger.sqlite"), "rejects_path": str(workdir / "rejects.jsonl")}
    config_path = write_config(workdir, api_url, **(files | settings))
    start = time.perf_counter()
    with input_path.open() as stdin, (workdir / "stderr.log").open("w") as stderr:
        proc = subprocess.Popen(
            [str(BIN / "target-closum"), "--config", str(config_path)],
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            cwd=workdir,
            env=os.environ | {"PYTHONPATH": str(REPO)},
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    summary = [line for line in (workdir / "stderr.log").read_text().splitlines() if "stream leads →" in line]
    return TargetRun(
        wall_s=round(wall, 3),
        peak_rss_mib=round(usage.ru_maxrss / 1024, 1),
        exit_code=proc.returncode,
        summary=summary[-1].split("| ")[-1] if summary else None,
    )


def main() -> None:
    """Run the speed comparison (and the memory runs when asked) and print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--memory", action="store_true", help="also measure peak RSS at 10,000 and 100,000 records")
    parser.add_argument("--memory-mode", choices=("dry", "real"), default="dry")
    parser.add_argument("--memory-sizes", default="10000,100000")
    args = parser.parse_args()

    result: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="bench-target-") as tmp:
        tmp_path = Path(tmp)
        server = sandbox(args.latency_ms)
        try:
            before = lead_count(server)
            loop_s = baseline(server.api_url, args.leads)
            after_loop = lead_count(server)
            input_path = tmp_path / "speed.singer"
            write_input(input_path, args.leads, "target")
            work = tmp_path / "speed"
            work.mkdir()
            target = run_target(server.api_url, work, input_path)
            after_target = lead_count(server)
        finally:
            server.stop()
        if target.exit_code != 0:
            msg = f"target-closum failed: {(work / 'stderr.log').read_text()[-2000:]}"
            raise SystemExit(msg)
        result["speed"] = {
            "latency_ms": args.latency_ms,
            "leads": args.leads,
            "baseline_loop_s": round(loop_s, 3),
            "target_s": target.wall_s,
            "ratio": round(loop_s / target.wall_s, 2),
            "goal_ratio": 5,
            "baseline_created": after_loop - before,
            "target_created": after_target - after_loop,
            "target_summary": target.summary,
        }

        if args.memory:
            server = sandbox(0)
            try:
                memory: dict[str, object] = {"mode": args.memory_mode}
                for size in (int(s) for s in args.memory_sizes.split(",")):
                    input_path = tmp_path / f"mem-{size}.singer"
                    write_input(input_path, size, f"mem{size}")
                    work = tmp_path / f"mem-{size}"
                    work.mkdir()
                    run = run_target(server.api_url, work, input_path, dry_run=args.memory_mode == "dry")
                    input_path.unlink()
                    if run.exit_code != 0:
                        msg = f"target-closum failed: {(work / 'stderr.log').read_text()[-2000:]}"
                        raise SystemExit(msg)
                    memory[str(size)] = asdict(run)
            finally:
                server.stop()
            result["memory"] = memory
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
