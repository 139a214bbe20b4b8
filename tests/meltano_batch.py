"""Run ``meltano`` commands one after the other in one process, each as its own ``meltano ...`` would run.

``python meltano_batch.py <commands.json> <results.json>``, in the project:
``commands.json`` holds ``{"commands": [[argv...], ...], "answer": "y\\n"}``;
``results.json`` gets ``[{"code", "stdout", "stderr"}, ...]``. Each command goes
through Meltano's own entry point (``meltano.cli.main``) with its argv, a
project found afresh (Meltano keeps the one it found for the process), the
answer on its input, and descriptors 1 and 2 on files of its own (what the
plugins it starts print is its output too). Meltano's start (its import, over
a second of CPU) is paid once instead of once per command.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

from meltano.cli import main as meltano_main
from meltano.core.project import Project


def _run(argv: list[str], answer: str) -> dict[str, object]:
    """``meltano argv``: its exit status and what it printed."""
    Project.deactivate()  # found again, as a new process would (its .env and meltano.yml as they are now)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        sys.stdin = io.StringIO(answer)
        sys.argv = ["meltano", *argv]
        code = 0
        try:
            meltano_main()
        except SystemExit as ended:
            code = ended.code if isinstance(ended.code, int) else int(ended.code is not None)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        out.seek(0)
        err.seek(0)
        return {"code": code, "stdout": out.read().decode(), "stderr": err.read().decode()}


def main() -> None:
    """Run the commands of ``argv[1]``; their results to ``argv[2]``."""
    commands, results = Path(sys.argv[1]), Path(sys.argv[2])  # sys.argv is each command's next
    given = json.loads(commands.read_text(encoding="utf-8"))
    results.write_text(json.dumps([_run(argv, given["answer"]) for argv in given["commands"]]), encoding="utf-8")


if __name__ == "__main__":
    main()
