"""What the tests share: quick retry settings, the console scripts as processes, waiting on what they do.

- :data:`FAST`: retry settings that keep a test's backoff waits short.
- :func:`run` runs ``tap-closum`` or ``target-closum`` to its end (:class:`Ended`);
  :func:`start` starts one (:class:`Program`: its stderr goes to a file, so a test
  can read it while the program runs), :meth:`Program.stop` signals it. Each is a
  process of its own, forked from one that has imported both (:mod:`launcher`).
- :func:`wait_for` waits for a condition a test can observe while a program runs,
  failing at once if the program ends first; it is
  :func:`closum_sandbox.testing.wait_until`, the one poll loop of the tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import launcher

from closum_sandbox.testing import wait_until

if t.TYPE_CHECKING:
    import signal

BIN = Path(sys.executable).parent
#: Retry settings that keep backoff waits short (the defaults wait seconds).
FAST = {"backoff_base_seconds": 0.05, "max_retries": 6}
#: The longest a stop may take, from the signal to the exit.
STOP_SECONDS = 10

T = t.TypeVar("T")


def stored_ids(sandbox: t.Any, resource: str) -> list[int]:
    """The ids of the records the sandbox holds of ``resource``, sorted."""
    return sorted(r["id"] for r in sandbox.records(resource))


def write_json(path: Path, value: t.Any) -> str:
    """``value`` as JSON in ``path``; the path as a string (for a command line)."""
    path.write_text(json.dumps(value))
    return str(path)


class Ended(t.NamedTuple):
    """How a program ended: exit status, stdout, stderr, seconds it took."""

    code: int
    out: str
    err: str
    seconds: float

    def line(self, program: str) -> str:
        """The one failure line; asserts there is exactly one and no traceback."""
        assert "Traceback" not in self.err, self.err[-3000:]
        lines = [line for line in self.err.splitlines() if f"{program} failed: " in line]
        assert len(lines) == 1, self.err[-3000:]
        return lines[0].split(f"{program} failed: ", 1)[1]


def _argv(program: str | list[str]) -> list[str]:
    """A console script of this venv by name, or a command given whole."""
    return [str(BIN / program)] if isinstance(program, str) else list(program)


def run(  # noqa: PLR0913  # what subprocess.run takes for these programs
    program: str | list[str],
    *args: str,
    cwd: Path,
    stdin: str = "",
    env: dict[str, str] | None = None,
    preexec: t.Callable[[], None] | None = None,
    timeout: float = 120,
    constants: dict[str, t.Any] | None = None,
) -> Ended:
    """Run ``program`` (a console script's name, or a command) to its end in ``cwd``, ``stdin`` as its input.

    tap-closum and target-closum are forked ready-imported (:mod:`launcher`; ``constants``: module
    constants set first, see :func:`start`); a ``preexec`` (a resource limit of the child) or any other
    program runs as a new process.
    """
    began = time.monotonic()
    environment = os.environ | (env or {})
    if program not in launcher.PROGRAMS or preexec is not None:
        assert not constants, "constants are set by the launcher"
        proc = subprocess.run(  # argv is ours, no shell
            [*_argv(program), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env=environment,
            check=False,
            preexec_fn=preexec,  # a resource limit of the child, set before it runs
        )
        return Ended(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - began)
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as given,
        tempfile.TemporaryFile("w+", encoding="utf-8") as out,
        tempfile.TemporaryFile("w+", encoding="utf-8") as err,
    ):
        given.write(stdin)
        given.flush()
        given.seek(0)
        ran = launcher.launch(
            str(program), list(args), cwd=cwd, env=environment, stdin=given, stdout=out, stderr=err, constants=constants
        )
        try:
            code = ran.wait(timeout)
        except subprocess.TimeoutExpired:
            ran.kill()
            ran.wait()
            raise
        out.seek(0)
        err.seek(0)
        return Ended(code, out.read(), err.read(), time.monotonic() - began)


class Program(launcher.Run):
    """A program started by :func:`start`: stdout piped, stderr in a file that can be read while it runs."""

    def __init__(self, ran: launcher.Run, err_path: Path) -> None:
        super().__init__(ran.pid, ran.status, ran.stdin, ran.stdout)
        self.err_path = err_path

    def err(self) -> str:
        """What the program wrote on stderr so far."""
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def gone(self) -> str | None:
        """Why waiting on the program is pointless (it ended), or None."""
        code = self.poll()
        return None if code is None else f"the program ended (exit status {code}): {self.err()[-3000:]}"

    def finish(self, timeout: float = 120) -> Ended:
        """Close its input, wait for its end; how it ended."""
        began = time.monotonic()
        out, _ = self.communicate(timeout=timeout)
        return Ended(t.cast("int", self.returncode), out or "", self.err(), time.monotonic() - began)

    def stop(self, sig: signal.Signals, program: str) -> Ended:
        """Send ``sig``; asserts it ended within STOP_SECONDS, with 128 + the signal and one line saying so."""
        self.send_signal(sig)
        ended = self.finish(timeout=60)
        assert ended.seconds < STOP_SECONDS
        assert ended.code == 128 + sig
        assert "stopped by " + sig.name in ended.line(program)
        return ended


def start(  # the program, its options, and where and how it runs
    program: str,
    config: dict[str, t.Any],
    *args: str,
    cwd: Path,
    stdin: t.Any = None,
    constants: dict[str, t.Any] | None = None,
) -> Program:
    """``program --config <config> <args>`` as a process in ``cwd``; its stderr goes to ``cwd/<program>.err``.

    ``constants``: module constants set before it runs (``{"closum_api.stop.STOP_GRACE": 1.0}``), for a
    wait of the product's that a test needs shorter, never for what the test asserts.
    """
    argv = ["--config", write_json(cwd / f"{program}-config.json", config), *args]
    err_path = cwd / f"{program}.err"
    with err_path.open("w") as err:
        ran = launcher.launch(
            program,
            argv,
            cwd=cwd,
            env=dict(os.environ),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=err,
            constants=constants,
        )
    return Program(ran, err_path)


def wait_for(condition: t.Callable[[], T], what: str, program: Program, timeout: float = 30) -> T:
    """Wait until ``condition`` holds while ``program`` runs (a failed test if it ends first); its answer."""
    try:
        return wait_until(condition, what, timeout=timeout, gone=program.gone)
    except (RuntimeError, TimeoutError) as exc:
        raise AssertionError(str(exc)) from None
