#!/usr/bin/env python3
"""What one RECORD crosses in target-closum: our files and functions, counted.

    .venv/bin/python scripts/record_path.py

Runs the target in this process against a seeded sandbox twice: a SCHEMA and a
STATE, then the same with one RECORD between them (a lead created). A hook on
every thread counts the calls of our functions (``closum_api``,
``target_closum``); the record's path is what the second run calls more than
the first. It prints the count of files, functions and calls, then each file
with its functions. ``tests/test_record_path.py`` checks that docs/development.md
("Through the target") names every module on that path.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import sys
import tempfile
import threading
import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    import types

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from closum_sandbox.testing import SandboxServer  # noqa: E402  # the repository's packages, first on the path
from target_closum.target import TargetClosum  # noqa: E402  # the same

#: The packages whose functions are counted.
OURS = ("closum_api/", "target_closum/")
#: The record: a lead that the sandbox does not hold, so the target creates it.
RECORD = {"email": "path.walker@example.pt", "name": "Path Walker"}
SCHEMA = {"type": "object", "properties": {"email": {"type": "string"}, "name": {"type": "string"}}}

Calls = collections.Counter[tuple[str, str]]


def _calls(sandbox: SandboxServer, records: list[dict[str, t.Any]], folder: Path) -> Calls:
    """Our functions called by one run of the target on ``records``, with how often."""
    lines = [{"type": "SCHEMA", "stream": "leads", "schema": SCHEMA, "key_properties": []}]
    lines += [{"type": "RECORD", "stream": "leads", "record": record} for record in records]
    lines += [{"type": "STATE", "value": {"bookmarks": {"leads": {"read": len(records)}}}}]
    config = sandbox.config(ledger_path=str(folder / "ledger.sqlite"), rejects_path=str(folder / "rejects.jsonl"))
    target = TargetClosum(config=config)
    counts: Calls = collections.Counter()
    lock = threading.Lock()

    def hook(frame: types.FrameType, event: str, _: object) -> None:
        if event == "call":
            file = frame.f_code.co_filename.replace("\\", "/")
            for package in OURS:
                if package in file:
                    with lock:
                        counts[package + file.rsplit(package, 1)[1], frame.f_code.co_name] += 1

    threading.setprofile(hook)
    sys.setprofile(hook)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            target.listen(io.StringIO("".join(json.dumps(line) + "\n" for line in lines)))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return counts


def record_path() -> Calls:
    """The calls one RECORD adds to a run: ``(file, function) -> calls``."""
    with tempfile.TemporaryDirectory() as empty, tempfile.TemporaryDirectory() as one:
        sandbox = SandboxServer(seed=3).start()
        try:
            without = _calls(sandbox, [], Path(empty))
            with_one = _calls(sandbox, [RECORD], Path(one))
        finally:
            sandbox.stop()
    return with_one - without


def main() -> None:
    """Print the record's path."""
    path = record_path()
    files = sorted({file for file, _ in path})
    print(f"files {len(files)}, functions {len(path)}, calls {sum(path.values())}")
    for file in files:
        print(f"  {file}: {', '.join(sorted(name for f, name in path if f == file))}")


if __name__ == "__main__":
    main()
