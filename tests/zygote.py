"""A process that has imported tap-closum and target-closum once, and forks a copy to run each of them.

Starting either program costs about half a second of CPU, most of it importing
singer-sdk; the tests start about 130 of them. :mod:`launcher` starts one of
these per test process and asks it for each run: the fork starts from a
process that has imported the program and done nothing else, then runs it as
its console script does (``TapClosum.cli()``), with its own argv, working
directory, environment and standard streams, and exits as that script would
(signal handlers, threads, exit status, ``atexit``). Only the start is shared.

Protocol (one Unix stream socket, its descriptor the one argument): a request
is its length (4 bytes, big-endian) then JSON ``{"program", "argv", "cwd",
"env", "constants"}``, sent with four descriptors: stdin, stdout, stderr and the
writing end of a pipe where the exit status (``subprocess`` style: ``-N`` for
signal N) is written once the run has ended. The answer is a line of JSON,
``{"pid": ...}``. The socket's end (the tests are gone) ends this process.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import sys
import typing as t
from pathlib import Path

# The programs import as their console scripts do, from the installed packages: not from tests/.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

# What a fork starts from: both programs imported, nothing run.
import tap_closum.tap  # after the path is set
import target_closum.target  # after the path is set

#: Each console script's entry point.
PROGRAMS: dict[str, t.Any] = {
    "tap-closum": tap_closum.tap.TapClosum,
    "target-closum": target_closum.target.TargetClosum,
}


def _reap(statuses: dict[int, int]) -> None:
    """Write the exit status of every ended run to its pipe."""
    while statuses:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid)
        os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
        os.close(fd)


def _read(control: socket.socket, size: int, start: bytes = b"") -> bytes:
    """``size`` bytes from ``control`` (``start``: those already read); the socket's end ends this process."""
    data = start
    while len(data) < size:
        chunk = control.recv(size - len(data))
        if not chunk:
            os._exit(0)  # the tests are gone; runs still going finish on their own
        data += chunk
    return data


def serve(control: socket.socket) -> dict[str, t.Any]:
    """Fork a run per request; answer the request in the fork (the parent never returns)."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # its wake-up byte is what select sees
    statuses: dict[int, int] = {}
    while True:
        ready, _, _ = select.select([control, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            _reap(statuses)
        if control not in ready:
            continue
        header, fds, _, _ = socket.recv_fds(control, 4, 4)  # the descriptors come with the first bytes
        request = json.loads(_read(control, int.from_bytes(_read(control, 4, header), "big")))
        pid = os.fork()
        if pid == 0:  # the run: its own streams, nothing of the server's
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (control.detach(), wake_r, wake_w, fds[3], *statuses.values()):
                os.close(fd)
            for standard, fd in enumerate(fds[:3]):
                os.dup2(fd, standard)
                os.close(fd)
            return t.cast("dict[str, t.Any]", request)
        for fd in fds[:3]:
            os.close(fd)
        statuses[pid] = fds[3]
        control.sendall(json.dumps({"pid": pid}).encode() + b"\n")


def main() -> None:
    """Serve; in each fork, run the program asked for as its console script would."""
    request = serve(socket.socket(fileno=int(sys.argv[1])))
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for name, value in request["constants"].items():  # a wait of the product's a test needs shorter
        module, attribute = name.rsplit(".", 1)
        setattr(importlib.import_module(module), attribute, value)
    sys.argv = [request["program"], *request["argv"]]
    sys.exit(PROGRAMS[request["program"]].cli())


if __name__ == "__main__":
    main()
