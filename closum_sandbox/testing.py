"""Sandbox servers to test, benchmark and demonstrate against.

- :class:`SandboxServer` runs in this process, in a background thread (tests):

      with SandboxServer(seed=25) as sb:
          requests.post(sb.api_url + "/token", json={...})
          sb.script_faults([{"method": "POST", "path": "/api/lead", "status": 503}])

- :class:`SandboxProcess` runs ``closum-sandbox serve`` as a child process
  (benchmarks and the demo, where the server must not share our CPU or GIL).

Both start on a free loopback port, wait until the server answers, and share
the helpers of :class:`SandboxAdmin`, which call the admin API over HTTP.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

import requests
import uvicorn

from closum_sandbox.app import create_app
from closum_sandbox.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path


class _QuickServer(uvicorn.Server):
    """uvicorn, but noticing ``should_exit`` within milliseconds (tests start and stop many)."""

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.005)

    async def shutdown(self, sockets=None) -> None:
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


class SandboxAdmin:
    """Addresses and admin helpers of a started sandbox (``port``, ``username``,
    ``password`` and an HTTP session ``_http`` come from the subclass).
    """

    port: int
    username: str
    password: str
    _http: requests.Session

    def _wait_until_healthy(self, timeout: float, died: Callable[[], str | None], interval: float) -> None:
        """Poll ``/_admin/health`` until it answers 200; ``died()`` says why the server is gone."""
        deadline = time.monotonic() + timeout
        while True:
            reason = died()
            if reason is not None:
                raise RuntimeError(reason)
            try:
                if self._http.get(self.url + "/_admin/health", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                msg = f"the sandbox did not answer within {timeout:.0f} s"
                raise RuntimeError(msg)
            time.sleep(interval)

    def stop(self) -> None:
        raise NotImplementedError

    # ---- addresses ----------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api"

    def config(self, **overrides: Any) -> dict[str, Any]:
        """What a tap or target config needs to reach this server."""
        return {"api_url": self.api_url, "api_username": self.username, "api_pw": self.password} | overrides

    # ---- admin helpers ------------------------------------------------
    def _admin(self, method: str, path: str, **kwargs) -> Any:
        r = self._http.request(method, f"{self.url}/_admin{path}", timeout=120, **kwargs)
        r.raise_for_status()
        return r.json()

    def token(self) -> str:
        r = self._http.post(
            self.api_url + "/token", timeout=30, json={"api_username": self.username, "api_pw": self.password}
        )
        r.raise_for_status()
        return r.json()["data"]["token"]

    def requests_log(self, path_prefix: str | None = None) -> list[dict]:
        return self._admin("GET", "/requests", params={"path_prefix": path_prefix} if path_prefix else None)

    def clear_log(self) -> None:
        self._admin("DELETE", "/requests")

    def reset(self, seed: int | None = None) -> None:
        self._admin("POST", "/reset", json={} if seed is None else {"seed": seed})

    def configure(self, **knobs: Any) -> dict:
        return self._admin("PATCH", "/config", json=knobs)

    def script_faults(self, faults: list[dict]) -> None:
        self._admin("POST", "/faults", json={"faults": list(faults)})

    def clear_faults(self) -> None:
        self._admin("DELETE", "/faults")

    def revoke_tokens(self) -> None:
        self._admin("POST", "/tokens/revoke")

    def add_records(self, resource_name: str, count: int) -> list[int]:
        return self._admin("POST", f"/records/{resource_name}", json={"count": count})["ids"]

    def records(self, resource_name: str) -> list[dict]:
        return self._admin("GET", f"/records/{resource_name}")


class SandboxServer(SandboxAdmin):
    """A sandbox served on ``127.0.0.1`` in a background thread."""

    def __init__(
        self,
        seed: int = 25,
        revision: str = "both",
        username: str = "sandbox",
        password: str = "sandbox",
        token_ttl: float = 3600,
        latency_ms: float = 0,
        fail_rate: float = 0.0,
        rate_limit: float = 0,
        max_page_size: int = 1000,
        db: str | None = None,
        fault_seed: int = 0,
    ) -> None:
        self.settings = Settings(
            host="127.0.0.1",
            port=0,
            db=None if db is None else str(db),
            seed=seed,
            revision=str(revision),
            username=username,
            password=password,
            token_ttl=token_ttl,
            latency_ms=latency_ms,
            fail_rate=fail_rate,
            rate_limit=rate_limit,
            max_page_size=max_page_size,
            fault_seed=fault_seed,
        )
        self.app = None
        self._server: _QuickServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None
        self._http = requests.Session()

    # ---- lifecycle ----------------------------------------------------
    def start(self, timeout: float = 30) -> SandboxServer:
        if self._thread is not None:
            return self
        self.app = create_app(self.settings)
        # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on such sockets.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
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
        if self._thread is None:
            return
        self._http.close()
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
        self.app.state.sandbox.store.close()
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox server is not started")
        return self._port

    @property
    def username(self) -> str:
        return self.settings.username

    @property
    def password(self) -> str:
        return self.settings.password


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SandboxProcess(SandboxAdmin):
    """``closum-sandbox serve`` as a child process on a free 127.0.0.1 port.

    Args:
        seed, revision, username, password, latency_ms, token_ttl, max_page_size, db:
            the ``serve`` options of the same names.
        port: the port to serve on (default: a free one).
        log: a file for the server's output (default: discarded).
    """

    def __init__(
        self,
        *,
        seed: int = 25,
        revision: str = "both",
        port: int | None = None,
        username: str = "sandbox",
        password: str = "sandbox",
        latency_ms: float = 0,
        token_ttl: float = 3600,
        max_page_size: int = 1000,
        db: str | Path | None = None,
        log: IO[str] | None = None,
    ) -> None:
        self.username, self.password = username, password
        self.port = port or free_port()
        self._args = [
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--seed",
            str(seed),
            "--revision",
            revision,
            "--username",
            username,
            "--password",
            password,
            "--latency-ms",
            str(latency_ms),
            "--token-ttl",
            str(token_ttl),
            "--max-page-size",
            str(max_page_size),
            *(["--db", str(db)] if db is not None else []),
        ]
        self._log = log
        self._http = requests.Session()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> SandboxProcess:
        self.proc = subprocess.Popen(
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
        self._http.close()
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> SandboxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
