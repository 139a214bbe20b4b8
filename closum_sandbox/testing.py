"""Sandbox servers to test, benchmark and demonstrate against.

- :class:`SandboxServer` runs in this process, in a background thread (tests):

      with SandboxServer(seed=25) as sb:
          requests.post(sb.api_url + "/token", json={...})
          sb.script_faults([{"method": "POST", "path": "/api/lead", "status": 503}])

- :class:`SandboxProcess` runs ``closum-sandbox serve`` as a child process
  (benchmarks and the demo, where the server must not share our CPU or GIL).

Both start on a free loopback port, wait until the server answers, and share
the helpers of :class:`SandboxAdmin`, which call the admin API over HTTP.

:func:`wait_until` is the one way a test (or a server starting) waits: for a
condition it can observe, with a deadline, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import requests
import uvicorn

from closum_sandbox.app import create_app
from closum_sandbox.cli import serve_argv
from closum_sandbox.guard import ADMIN_HEADER
from closum_sandbox.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path
    from types import TracebackType

    from fastapi import FastAPI
    from typing_extensions import Self, Unpack

    from closum_sandbox.settings import Knobs

#: Where the test servers listen: loopback only.
LOOPBACK = "127.0.0.1"

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    what: str,
    *,
    timeout: float = 30,
    interval: float = 0.01,
    gone: Callable[[], str | None] | None = None,
) -> T:
    """Poll ``condition`` until it answers something true; answer that.

    Args:
        condition: what to look at (a request log, a file, a process's output...).
        what: what is awaited, for the error (``"the tap to ask for a page"``).
        timeout: seconds until giving up.
        interval: seconds between two looks.
        gone: says why waiting is pointless (a process that ended, a server that stopped), or None.

    Returns:
        The condition's first true answer.

    Raises:
        RuntimeError: ``gone`` said why, before the condition held.
        TimeoutError: the condition did not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = condition()
        if answer:
            return answer
        reason = gone() if gone is not None else None
        if reason is not None:
            msg = f"{reason} while waiting for {what}"
            raise RuntimeError(msg)
        if time.monotonic() > deadline:
            msg = f"gave up waiting {timeout:g} s for {what}"
            raise TimeoutError(msg)
        time.sleep(interval)


class _QuickServer(uvicorn.Server):
    """uvicorn, but noticing ``should_exit`` within milliseconds (tests start and stop many)."""

    async def main_loop(self) -> None:
        """Tick every 5 ms until told to exit."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.005)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Close the listeners and connections at once; give requests in flight a second.

        Args:
            sockets: passed on to uvicorn's own shutdown when this is another uvicorn.
        """
        wait_tasks = getattr(self, "_wait_tasks_to_complete", None)
        if wait_tasks is None:  # another uvicorn: take its own path
            await super().shutdown(sockets)
            return
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        await asyncio.sleep(0.005)
        try:
            await asyncio.wait_for(wait_tasks(), timeout=self.config.timeout_graceful_shutdown)
        except asyncio.TimeoutError:
            for task in self.server_state.tasks:
                task.cancel()


def _admin_session() -> requests.Session:
    """The HTTP session of the admin helpers: a new connection per call.

    The server closes a connection idle for its keep-alive timeout (5 s); a call
    reusing one just as the server closes it would fail with "Remote end closed
    connection without response", typically after a test's long Meltano run.
    """
    session = requests.Session()
    session.headers["Connection"] = "close"
    return session


class SandboxAdmin:
    """Addresses and admin helpers of a started sandbox.

    ``settings``, ``port`` and the HTTP session ``_http`` come from the subclass.
    """

    settings: Settings
    _http: requests.Session

    def _wait_until_healthy(self, timeout: float, died: Callable[[], str | None], interval: float) -> None:
        """Poll ``/_admin/health`` until it answers 200; ``died()`` says why the server is gone."""

        def healthy() -> bool:
            try:
                return self._http.get(self.url + "/_admin/health", timeout=2).ok
            except requests.ConnectionError:
                return False

        try:
            wait_until(healthy, "the sandbox to answer", timeout=timeout, interval=interval, gone=died)
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(str(exc)) from None

    def stop(self) -> None:
        """Stop the server (the subclass knows how)."""
        raise NotImplementedError

    # ---- addresses ----------------------------------------------------
    @property
    def port(self) -> int:
        """The port the server listens on (the subclass knows it)."""
        raise NotImplementedError

    @property
    def username(self) -> str:
        """The ``api_username`` the server accepts."""
        return self.settings.username

    @property
    def password(self) -> str:
        """The ``api_pw`` the server accepts."""
        return self.settings.password

    @property
    def url(self) -> str:
        """The server's root URL."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def api_url(self) -> str:
        """The API's base URL (``.../api``), as a tap or target config takes it."""
        return self.url + "/api"

    @property
    def api_v2_url(self) -> str:
        """The V2 API's base URL (``.../v2``), as the target's ``api_v2_url`` takes it."""
        return self.url + "/v2"

    @property
    def api_key(self) -> str:
        """The ``api_key`` the server's V2 API accepts."""
        return self.settings.api_key

    def key_config(self, **overrides: Any) -> dict[str, Any]:
        """What a target config needs to write to this server's V2 API only (no V1 credentials).

        Args:
            overrides: more settings of the config.

        Returns:
            ``api_url``, ``api_v2_url``, ``api_key`` and the overrides.
        """
        return {"api_url": self.api_url, "api_v2_url": self.api_v2_url, "api_key": self.api_key} | overrides

    def v2_leads(self) -> list[dict[str, Any]]:
        """Every lead as the V2 list serves it (``GET /v2/lead/``, page by page), oldest first."""
        leads: list[dict[str, Any]] = []
        page = 1
        while True:
            params: dict[str, str | int] = {"api-key": self.api_key, "page": page, "limit": 1000}
            r = self._http.get(self.api_v2_url + "/lead/", params=params, timeout=60)
            r.raise_for_status()
            answer = r.json()
            leads += answer["data"]
            if not answer["pagination"]["has_next_page"]:
                return leads
            page += 1

    def config(self, **overrides: Any) -> dict[str, Any]:
        """What a tap or target config needs to reach this server.

        Args:
            overrides: more settings of the config.

        Returns:
            ``api_url``, ``api_username``, ``api_pw`` and the overrides.
        """
        return {"api_url": self.api_url, "api_username": self.username, "api_pw": self.password} | overrides

    # ---- admin helpers ------------------------------------------------
    def _admin(self, method: str, path: str, **kwargs: Any) -> object:
        """Call the admin API; answers its JSON (raises for an error status)."""
        if self.settings.admin_token:
            kwargs["headers"] = {ADMIN_HEADER: self.settings.admin_token} | kwargs.get("headers", {})
        r = self._http.request(method, f"{self.url}/_admin{path}", timeout=120, **kwargs)
        r.raise_for_status()
        return r.json()

    def token(self) -> str:
        """A fresh bearer token for the server's credentials."""
        r = self._http.post(
            self.api_url + "/token", timeout=30, json={"api_username": self.username, "api_pw": self.password}
        )
        r.raise_for_status()
        return cast("str", r.json()["data"]["token"])

    def requests_log(self, path_prefix: str | None = None) -> list[dict[str, Any]]:
        """The recorded ``/api`` calls, those under ``path_prefix`` when given."""
        params = {"path_prefix": path_prefix} if path_prefix else None
        return cast("list[dict[str, Any]]", self._admin("GET", "/requests", params=params))

    def clear_log(self) -> None:
        """Forget the recorded ``/api`` calls."""
        self._admin("DELETE", "/requests")

    def reset(self, seed: int | None = None) -> None:
        """Wipe every record and seed again (``seed`` default: the server's)."""
        self._admin("POST", "/reset", json={} if seed is None else {"seed": seed})

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change runtime knobs (``latency_ms``, ``fail_rate``, ...); answers the server's settings."""
        return cast("dict[str, Any]", self._admin("PATCH", "/config", json=knobs))

    def script_faults(self, faults: list[dict[str, Any]]) -> None:
        """Queue scripted faults (see :mod:`closum_sandbox.faults`)."""
        self._admin("POST", "/faults", json={"faults": list(faults)})

    def clear_faults(self) -> None:
        """Drop every queued scripted fault."""
        self._admin("DELETE", "/faults")

    def revoke_tokens(self) -> None:
        """Invalidate every bearer token issued."""
        self._admin("POST", "/tokens/revoke")

    def add_records(self, resource_name: str, count: int) -> list[int]:
        """Generate ``count`` more records of a resource; answers their ids."""
        answer = cast("dict[str, list[int]]", self._admin("POST", f"/records/{resource_name}", json={"count": count}))
        return answer["ids"]

    def records(self, resource_name: str, *, listed: bool = False) -> list[dict[str, Any]]:
        """Every stored record of a resource, as retrieve serves it (``listed``: as a list serves it)."""
        params = {"shape": "list"} if listed else {}
        return cast("list[dict[str, Any]]", self._admin("GET", f"/records/{resource_name}", params=params))

    def edit_record(self, resource_name: str, record_id: int, **fields: Any) -> dict[str, Any]:
        """Edit a record as a person does in Closum's UI; answers it as retrieve serves it.

        Args:
            resource_name: the resource (``lead``).
            record_id: the record's id.
            fields: the fields to change: ``contact_lifecycle_stage_id=3``, ``custom_data='{"score": 9}'``,
                ``email={"email": "x@y.pt"}``, ``lead_opt_in={"sms": False}`` (``None``: withdrawn entirely)...

        Returns:
            The record after the edit.
        """
        return cast("dict[str, Any]", self._admin("PATCH", f"/records/{resource_name}/{record_id}", json=fields))

    def set_opt_in(self, resource_name: str, record_id: int, opt_in: dict[str, Any] | None) -> dict[str, Any]:
        """Change a contact's consent (merged into the stored one; ``None`` removes it); answers the contact."""
        return self.edit_record(resource_name, record_id, **{f"{resource_name}_opt_in": opt_in})

    def delete_record(self, resource_name: str, record_id: int) -> None:
        """Delete a record as a person does in Closum's UI (its retrieve then answers 404)."""
        self._admin("DELETE", f"/records/{resource_name}/{record_id}")


class SandboxServer(SandboxAdmin):
    """A sandbox served on ``127.0.0.1`` in a background thread.

    Its keyword arguments are :class:`~closum_sandbox.settings.Knobs`: the
    :class:`~closum_sandbox.settings.Settings` fields of the same names, with
    their defaults.
    """

    def __init__(self, *, db: str | Path | None = None, **knobs: Unpack[Knobs]) -> None:
        """Set the server up; :meth:`start` (or ``with``) starts it.

        Args:
            db: the SQLite file (default: in memory).
            knobs: the server's other settings, each defaulting to the :class:`Settings` default.
        """
        self.settings = Settings(host=LOOPBACK, port=0, db=None if db is None else str(db), **knobs)
        self._app: FastAPI | None = None
        self._server: _QuickServer | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._port: int | None = None
        self._http = _admin_session()

    # ---- lifecycle ----------------------------------------------------
    def start(self, timeout: float = 30) -> Self:
        """Serve in a background thread and wait until the server answers.

        Args:
            timeout: seconds to wait for the server.

        Returns:
            This server.
        """
        if self._thread is not None:
            return self
        self._app = create_app(self.settings)
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((LOOPBACK, 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=5,
        )
        self._server = _QuickServer(config)
        self._sock = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"closum-sandbox-{self._port}"
        )
        self._thread.start()
        thread = self._thread
        self._wait_until_healthy(
            timeout, lambda: None if thread.is_alive() else "the sandbox server stopped while starting", 0.002
        )
        return self

    def stop(self) -> None:
        """Stop serving and close the store; a stopped server stays stopped."""
        if self._thread is None or self._server is None or self._sock is None or self._app is None:
            return
        self._http.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
        self._app.state.sandbox.store.close()
        self._thread = None

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self.stop()

    def requests_in_flight(self) -> int:
        """How many requests the server is serving right now (those of clients gone included)."""
        return 0 if self._server is None else len(self._server.server_state.tasks)

    @property
    def app(self) -> FastAPI | None:
        """The application served (``None`` until started)."""
        return self._app

    @property
    def port(self) -> int:
        """The port the server listens on.

        Raises:
            RuntimeError: the server is not started.
        """
        if self._port is None:
            msg = "the sandbox server is not started"
            raise RuntimeError(msg)
        return self._port


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class SandboxProcess(SandboxAdmin):
    """``closum-sandbox serve`` as a child process on a free 127.0.0.1 port.

    Its keyword arguments are :class:`~closum_sandbox.settings.Knobs`, passed
    as the ``serve`` options of the same names (those left out keep the
    :class:`~closum_sandbox.settings.Settings` defaults), plus ``port`` and ``log``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        db: str | Path | None = None,
        log: IO[str] | None = None,
        **knobs: Unpack[Knobs],
    ) -> None:
        """Set the process up; :meth:`start` (or ``with``) starts it.

        Args:
            port: the port to serve on (default: a free one).
            db: the SQLite file (default: in memory).
            log: a file for the server's output (default: discarded).
            knobs: the server's other settings, each defaulting to the :class:`Settings` default.
        """
        # What serve will run with (Settings checks the knobs here already).
        self.settings = Settings(host=LOOPBACK, port=port or free_port(), db=None if db is None else str(db), **knobs)
        where = {"host": LOOPBACK, "port": self.settings.port} | ({} if db is None else {"db": str(db)})
        self._args = serve_argv(**where, **knobs)
        self._log = log
        self._http = _admin_session()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return self.settings.port

    def start(self, timeout: float = 60) -> Self:
        """Start ``closum-sandbox serve`` and wait until it answers.

        Args:
            timeout: seconds to wait for the server.

        Returns:
            This server.
        """
        self.proc = subprocess.Popen(  # noqa: S603  # our own interpreter and arguments, no shell
            [sys.executable, "-m", "closum_sandbox.cli", *self._args],
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        proc = self.proc

        def died() -> str | None:
            code = proc.poll()
            return None if code is None else f"closum-sandbox exited while starting (code {code})"

        self._wait_until_healthy(timeout, died, 0.05)
        return self

    def stop(self) -> None:
        """Stop the process (terminate, then kill after 10 s)."""
        self._http.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Stop the server."""
        self.stop()
