"""Overlapping runs of target-closum: never two writers on one ledger, and never a double in silence.

- a second run on a ledger in use is refused at once with one line; the lock goes with its process,
  even after ``kill -9``;
- runs that cannot see each other's ledger (two machines) and create the same match keys: the run
  that finds them doubled when it reads back what it created fails, naming them; the same for the
  references ``create_missing_references`` creates.

Two machines are played by two processes with ledgers of their own, fed through pipes so the test
decides the order: both read Closum first (their first record is written, so their index is read),
then one writes the shared records, then the other, which cannot know of them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import typing as t

import pytest
from helpers import Ended, Program, run, start, wait_for, write_json
from test_target_support import lead, singer, target_config

if t.TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def launch() -> t.Iterator[t.Callable[..., Program]]:
    """``helpers.start`` of target-closum, its processes ended with the test, even a failing one."""
    started: list[Program] = []

    def launch_one(config: dict[str, t.Any], cwd: Path) -> Program:
        proc = start("target-closum", config, cwd=cwd, stdin=subprocess.PIPE)
        started.append(proc)
        return proc

    yield launch_one
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)


def _lines(stream: str, records: list[dict[str, t.Any]]) -> str:
    return "".join(json.dumps({"type": "RECORD", "stream": stream, "record": r}) + "\n" for r in records)


def _emails(sandbox: t.Any) -> list[str]:
    return [r["email"]["email"] for r in sandbox.records("lead")]


def _feed(proc: Program, text: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(text)
    proc.stdin.flush()


def _finish(proc: Program) -> Ended:
    """Close the run's input and wait for its end."""
    return proc.finish(timeout=120)


def test_a_second_run_on_a_ledger_in_use_is_refused_at_once(sandbox, tmp_path, launch):
    config = target_config(sandbox, tmp_path, batch_size_rows=1)
    first = launch(config, tmp_path)
    _feed(first, singer("leads", [lead(1)]))  # its SCHEMA took the ledger; the input stays open
    wait_for(lambda: "lead1@example.com" in _emails(sandbox), "written its first record", first)
    second = run(
        "target-closum", "--config", write_json(tmp_path / "c2.json", config), cwd=tmp_path, stdin=singer("leads", [])
    )
    assert second.code == 1
    line = second.line("target-closum")
    assert line.startswith(f"ledger_path {str(tmp_path / 'ledger.sqlite')!r} is in use by another target-closum run")
    assert f"(pid {first.pid} on " in line
    assert "twice" in line
    _feed(first, _lines("leads", [lead(2)]))
    assert _finish(first).code == 0
    again = run("target-closum", "--config", write_json(tmp_path / "c2.json", config), cwd=tmp_path, stdin="")
    assert again.code == 0, again.err[-3000:]  # the lock went with the first run


def test_the_lock_goes_with_a_run_killed_by_sigkill(sandbox, tmp_path, launch):
    config = target_config(sandbox, tmp_path, batch_size_rows=1)
    first = launch(config, tmp_path)
    _feed(first, singer("leads", [lead(1)]))
    wait_for(lambda: "lead1@example.com" in _emails(sandbox), "written its first record", first)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    assert (tmp_path / "ledger.sqlite.lock").exists()  # left behind, and harmless: no process holds it
    text = singer("leads", [lead(1), lead(2)])
    again = run("target-closum", "--config", write_json(tmp_path / "c2.json", config), cwd=tmp_path, stdin=text)
    assert again.code == 0, again.err[-3000:]
    assert sorted(_emails(sandbox)).count("lead1@example.com") == 1


def _two_machines(
    sandbox: t.Any, tmp_path: Path, launch: t.Callable[..., Program], overrides: dict[str, t.Any]
) -> list[Program]:
    """Two runs with ledgers of their own, each writing every record as it comes (a batch of one)."""
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        config = target_config(sandbox, tmp_path / name, batch_size_rows=1, max_parallel_requests=2) | overrides
        runs.append(launch(config, tmp_path / name))
    return runs


def test_runs_that_cannot_see_each_others_ledger_and_double_a_match_key_fail_naming_it(sandbox, tmp_path, launch):
    before = set(_emails(sandbox))
    leads_map = {"resource_map": {"leads": {"resource": "lead", "match_on": ["email"]}}}
    machine_a, machine_b = _two_machines(sandbox, tmp_path, launch, leads_map)
    for proc, own in ((machine_a, 100), (machine_b, 200)):
        _feed(proc, singer("leads", [lead(own)]))
        wait_for(lambda own=own: f"lead{own}@example.com" in _emails(sandbox), "read Closum and written", proc)
    shared = [lead(n) for n in range(1, 6)]
    _feed(machine_a, _lines("leads", shared))
    ended_a = _finish(machine_a)
    assert ended_a.code == 0, ended_a.err[-3000:]  # nothing doubled yet
    _feed(machine_b, _lines("leads", shared))  # b matched against Closum before a wrote them
    ended_b = _finish(machine_b)
    new = [e for e in _emails(sandbox) if e not in before]
    assert sorted(new).count("lead1@example.com") == 2  # the double exists: it is said, not hidden
    assert ended_b.code == 1
    line = ended_b.line("target-closum")
    assert line.startswith("another run wrote the same records at the same time: 5 leads by email (lead")
    assert "lead1@example.com: ids " in line or "lead2@example.com: ids " in line
    assert "now exist more than once in Closum" in line
    assert "docs/scaling.md" in line
    assert [json.loads(x) for x in ended_b.out.splitlines()] == []  # the input had no STATE


def test_references_two_runs_created_alike_fail_naming_them(sandbox, tmp_path, launch):
    def unqualified(n: int, kind: str) -> dict[str, t.Any]:
        return {"id": n, "name": f"U {n}", "email": f"u{n}@example.com", "contact_type": kind}

    def labels() -> list[str]:
        return [r["label"] for r in sandbox.records("contact_type")]

    overrides = {"create_missing_references": True}
    machine_a, machine_b = _two_machines(sandbox, tmp_path, launch, overrides)
    for proc, own in ((machine_a, "Só de A"), (machine_b, "Só de B")):
        _feed(proc, singer("unqualified_leads", [unqualified(1, own)]))
        wait_for(lambda own=own: own in labels(), "read Closum and created its type", proc)
    shared = _lines("unqualified_leads", [unqualified(2, "Feira 2026"), unqualified(3, "Natal 2026")])
    _feed(machine_a, shared)
    ended_a = _finish(machine_a)
    assert ended_a.code == 0, ended_a.err[-3000:]
    _feed(machine_b, shared)
    ended_b = _finish(machine_b)
    assert labels().count("Feira 2026") == 2
    assert ended_b.code == 1
    line = ended_b.line("target-closum")
    assert line.startswith("another run wrote the same records at the same time: 2 contact types by label (")
    assert "Feira 2026: ids " in line
    assert "Natal 2026: ids " in line
