"""tap-closum and target-closum as processes, started by forking a process that has already imported them.

:func:`launch` asks this test process's :mod:`zygote` (started at the first
launch, ended when this process ends) for a run and answers a :class:`Run`:
the process's pid (signals go to it, as to any process), its exit status once
it ends, and the descriptors the test gave it. Each run is a process of its
own with the console script's argv, working directory, environment and
standard streams; only the import of the program (about half a second of CPU
each, some 130 runs a suite) is done once. The console scripts themselves run
in the end-to-end tests, under Meltano.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import typing as t
from pathlib import Path

if t.TYPE_CHECKING:
    from typing_extensions import Self

#: The programs a zygote runs (what it has imported).
PROGRAMS = ("tap-closum", "target-closum")


class _Zygote:
    """The forking process of this test process, and the socket it is asked through."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.process = subprocess.Popen(  # argv is ours, no shell
            [sys.executable, str(Path(__file__).with_name("zygote.py")), str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        self.socket = ours
        self.answers = ours.makefile("rb")
        self.lock = threading.Lock()
        atexit.register(self.close)

    def fork(self, request: dict[str, t.Any], fds: list[int]) -> int:
        """Ask for a run; its pid."""
        data = json.dumps(request).encode()
        message = len(data).to_bytes(4, "big") + data
        with self.lock:
            sent = socket.send_fds(self.socket, [message], fds)
            self.socket.sendall(message[sent:])
            answer = self.answers.readline()
        if not answer:
            msg = f"the zygote ended (exit status {self.process.wait()})"
            raise RuntimeError(msg)
        return int(json.loads(answer)["pid"])

    def close(self) -> None:
        self.answers.close()
        self.socket.close()
        self.process.wait(timeout=10)


_ZYGOTE: list[_Zygote] = []
_ZYGOTE_LOCK = threading.Lock()


def _zygote() -> _Zygote:
    with _ZYGOTE_LOCK:
        if not _ZYGOTE or _ZYGOTE[0].process.poll() is not None:
            _ZYGOTE[:] = [_Zygote()]
        return _ZYGOTE[0]


class Run:
    """A run started by :func:`launch`: what :class:`subprocess.Popen` offers that the tests use.

    Attributes:
        pid: the process's id.
        returncode: its exit status once it ended (``-N``: ended by signal N), else None.
        stdin: the writing end of its input, when a pipe was asked for.
        stdout: the reading end of its output, when a pipe was asked for.
    """

    def __init__(self, pid: int, status: int, stdin: t.IO[str] | None, stdout: t.IO[str] | None) -> None:
        self.pid = pid
        self.status = status
        self.returncode: int | None = None
        self.stdin = stdin
        self.stdout = stdout

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        """As ``Popen``: close the pipes, wait for the end."""
        for pipe in (self.stdin, self.stdout):
            if pipe is not None:
                pipe.close()
        self.wait()

    def poll(self) -> int | None:
        """Its exit status, or None while it runs."""
        return self.wait(timeout=0) if self.returncode is None and self._ended(0) else self.returncode

    def _ended(self, timeout: float | None) -> bool:
        return bool(select.select([self.status], [], [], timeout)[0])

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status, once it ended.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        if self.returncode is None:
            if not self._ended(timeout):
                raise subprocess.TimeoutExpired(self.pid, timeout or 0)
            with os.fdopen(self.status, "rb") as status:
                self.returncode = int(status.read())
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Send ``sig``, unless it has ended."""
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        """SIGKILL."""
        self.send_signal(9)

    def communicate(self, timeout: float | None = None) -> tuple[str | None, None]:
        """Close its input, read its output to the end, wait for its end; (output, None). Again: (None, None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None and not self.stdin.closed:
            self.stdin.close()
        out = None
        if self.stdout is not None and not self.stdout.closed:
            stdout = self.stdout
            read: list[str] = []
            reader = threading.Thread(target=lambda: read.append(stdout.read()), daemon=True)
            reader.start()
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.pid, timeout or 0)
            stdout.close()
            out = read[0]
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return out, None


def launch(  # noqa: PLR0913  # the program, and each of what a console script gets from its caller
    program: str,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    stdin: t.IO[t.Any] | int | None,
    stdout: t.IO[t.Any] | int,
    stderr: t.IO[t.Any],
    constants: dict[str, t.Any] | None = None,
) -> Run:
    """Run ``program argv`` in ``cwd`` with ``env``; ``subprocess.PIPE`` for stdin or stdout makes a pipe.

    Args:
        program: one of :data:`PROGRAMS`.
        argv: its arguments.
        cwd: its working directory.
        env: its whole environment.
        stdin: a file, ``subprocess.PIPE`` or None (no input).
        stdout: a file or ``subprocess.PIPE``.
        stderr: a file.
        constants: module constants set before it runs (``{"closum_api.stop.STOP_GRACE": 1.0}``).
    """
    ours: list[int] = []  # the ends the run gets and this process closes once it has them
    pipe_in = pipe_out = None
    if stdin == subprocess.PIPE:
        read_end, write_end = os.pipe()
        pipe_in, stdin_fd = os.fdopen(write_end, "w"), read_end
        ours.append(read_end)
    elif stdin is None:
        stdin_fd = os.open(os.devnull, os.O_RDONLY)
        ours.append(stdin_fd)
    else:
        stdin_fd = stdin if isinstance(stdin, int) else stdin.fileno()
    if stdout == subprocess.PIPE:
        read_end, stdout_fd = os.pipe()
        pipe_out = os.fdopen(read_end, "r")
        ours.append(stdout_fd)
    else:
        stdout_fd = stdout if isinstance(stdout, int) else stdout.fileno()
    status_r, status_w = os.pipe()
    ours.append(status_w)
    request = {"program": program, "argv": argv, "cwd": str(cwd), "env": env, "constants": constants or {}}
    try:
        pid = _zygote().fork(request, [stdin_fd, stdout_fd, stderr.fileno(), status_w])
    finally:
        for fd in ours:
            os.close(fd)
    return Run(pid, status_r, pipe_in, pipe_out)
