"""Faults of the sandbox: latency, random failures, rate limit, scripted faults.

They apply to ``/api`` and ``/v2`` calls only (never ``/_admin``, ``/docs``,
``/openapi.json``), in this order, by :class:`FaultMiddleware`:

1. ``latency_ms``: ``await asyncio.sleep`` before each call (calls overlap).
2. Scripted faults (``POST /_admin/faults``): the first queued entry whose
   ``method`` and ``path`` prefix match is consumed (``times`` counts down).
   Entry keys: ``method``, ``path``, ``status`` (500), ``body``
   (``json``/``html``/``empty``), ``retry_after`` (seconds, sets
   ``Retry-After``), ``after_write`` (process the call, then answer the fault
   instead of the success: the ambiguous write), ``drop_connection`` (send a
   response head promising a body, then cut the connection), ``delay_ms``
   (delay the answer), ``times`` (1).
3. ``rate_limit``: more than N calls in the last second -> 429 with
   ``Retry-After: 1`` and a JSON error body.
4. ``fail_rate``: that fraction of calls is answered 500 or 503 before doing
   anything, drawn from an RNG seeded by ``fault_seed``; some 503 bodies are an
   HTML maintenance page (as a proxy sends) and some 500 bodies are empty.
   ``fail_every``: every Nth call is answered so too.

Every ``/api`` and ``/v2`` call is also recorded in the :class:`RequestLog` (a V2 call's
``api-key`` as ``***``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any, TypedDict, cast
from urllib.parse import parse_qsl

from closum_api.redact import KEY_PARAM
from closum_sandbox.seed import reproducible_rng

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from closum_sandbox.settings import Settings

MAINTENANCE_HTML = (
    b"<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head>"
    b"<body><h1>Service Unavailable</h1><p>We're temporarily offline for maintenance. "
    b"Please try again later.</p></body></html>"
)

FAULT_KEYS = {
    "method": (str, type(None)),
    "path": (str, type(None)),
    "status": (int,),
    "body": (str,),
    "retry_after": (int, float, type(None)),
    "after_write": (bool,),
    "drop_connection": (bool,),
    "delay_ms": (int, float),
    "trickle_ms": (int, float),
    "times": (int,),
}

_HTTP_STATUSES = range(100, 600)

# Shares of the random failures (each compared with one draw of the fault RNG).
_FAIL_503 = 0.5  # the others are 500s
_HTML_503 = 0.5  # 503s with the maintenance page, the others JSON
_EMPTY_500 = 0.3  # 500s with an empty body, the others JSON

_FAILURE_TEXT = {
    503: "We're temporarily offline for maintenance. Please try again later.",
    500: "We had a problem with our server. Try again later.",
}


class Fault(TypedDict):
    """A scripted fault, with every key (see the module docstring)."""

    method: str | None
    path: str | None
    status: int
    body: str
    retry_after: float | None
    after_write: bool
    drop_connection: bool
    delay_ms: float
    trickle_ms: float
    times: int


class DroppedConnectionError(Exception):
    """Raised after a response head to make the server cut the connection."""


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, DroppedConnectionError):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def quiet_dropped_connections() -> None:
    """Keep uvicorn from logging a traceback for each deliberate drop."""
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _DropFilter) for f in logger.filters):
        logger.addFilter(_DropFilter())


def normalize_fault(entry: object) -> Fault:
    """Validate one scripted fault.

    Args:
        entry: the fault as posted to ``/_admin/faults``.

    Returns:
        The fault, with the defaults of the keys it left out.

    Raises:
        TypeError: it is not an object, or a key's value has the wrong type.
        ValueError: it has an unknown key, or a value out of range.
    """
    if not isinstance(entry, dict):
        msg = "each fault must be a JSON object"
        raise TypeError(msg)
    unknown = set(entry) - set(FAULT_KEYS)
    if unknown:
        msg = f"unknown fault field {', '.join(sorted(unknown))}"
        raise ValueError(msg)
    for key, value in entry.items():
        types = FAULT_KEYS[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            msg = f"fault field {key}: {value!r} has the wrong type"
            raise TypeError(msg)
    fault = cast(
        "Fault",
        {
            "method": None,
            "path": None,
            "status": 500,
            "body": "json",
            "retry_after": None,
            "after_write": False,
            "drop_connection": False,
            "delay_ms": 0,
            "trickle_ms": 0,
            "times": 1,
        }
        | entry,
    )
    problem = None
    if fault["body"] not in ("json", "html", "empty"):
        problem = "fault field body: must be json, html or empty"
    elif fault["status"] not in _HTTP_STATUSES:
        problem = "fault field status: must be an HTTP status code"
    elif fault["times"] < 1:
        problem = "fault field times: must be at least 1"
    if problem is not None:
        raise ValueError(problem)
    if fault["method"]:
        fault["method"] = fault["method"].upper()
    return fault


class RequestLog:
    """The last ``maxlen`` ``/api`` calls, for assertions."""

    def __init__(self, maxlen: int = 200_000) -> None:
        """Keep at most ``maxlen`` calls."""
        self.entries: collections.deque[dict[str, Any]] = collections.deque(maxlen=maxlen)

    def add(self, entry: dict[str, Any]) -> None:
        """Record one call (the middleware fills in its status later)."""
        self.entries.append(entry)

    def list(self, path_prefix: str | None = None) -> list[dict[str, Any]]:
        """The recorded calls, those whose path starts with ``path_prefix`` when given."""
        return [e for e in self.entries if not path_prefix or e["path"].startswith(path_prefix)]

    def clear(self) -> None:
        """Forget every call."""
        self.entries.clear()


class Faults:
    """The fault knobs and queues shared by the middleware and the admin API.

    Attributes:
        settings: the server's settings (``latency_ms``, ``fail_rate`` and ``rate_limit`` are read live).
        rng: the RNG drawing the random failures.
        scripted: the queued scripted faults.
    """

    def __init__(self, settings: Settings) -> None:
        """Start with no scripted faults and the RNG seeded by ``settings.fault_seed``."""
        self.settings = settings
        self.rng = reproducible_rng(settings.fault_seed)
        self.scripted: list[Fault] = []
        self._recent: collections.deque[float] = collections.deque()
        self._calls = 0

    def reseed(self, seed: int) -> None:
        """Seed the random failures' RNG again."""
        self.rng = reproducible_rng(seed)

    def take_scripted(self, method: str, path: str) -> Fault | None:
        """Consume the first queued fault matching a call, if any.

        Args:
            method: the call's HTTP method.
            path: the call's path.

        Returns:
            The fault (its ``times`` counted down), or ``None``.
        """
        for i, fault in enumerate(self.scripted):
            if fault["method"] and fault["method"] != method:
                continue
            if fault["path"] and not path.startswith(fault["path"]):
                continue
            fault["times"] -= 1
            if fault["times"] <= 0:
                del self.scripted[i]
            return fault
        return None

    def rate_limited(self) -> bool:
        """Whether a call now exceeds ``rate_limit`` (calls that pass are counted)."""
        limit = self.settings.rate_limit
        if not limit:
            return False
        now = time.monotonic()
        recent = self._recent
        while recent and recent[0] <= now - 1.0:
            recent.popleft()
        if len(recent) >= limit:
            return True
        recent.append(now)
        return False

    def random_failure(self) -> tuple[int, str] | None:
        """Draw whether a call fails under ``fail_rate``, or is the Nth of ``fail_every``.

        Returns:
            The failure's status and body kind (``json``, ``html``, ``empty``), or ``None``.
        """
        rate, every = self.settings.fail_rate, self.settings.fail_every
        self._calls += 1
        if not (every and self._calls % every == 0) and (not rate or self.rng.random() >= rate):
            return None
        if self.rng.random() < _FAIL_503:
            return 503, ("html" if self.rng.random() < _HTML_503 else "json")
        return 500, ("empty" if self.rng.random() < _EMPTY_500 else "json")


def _error_body(kind: str, message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    if kind == "html":
        return MAINTENANCE_HTML, [(b"content-type", b"text/html; charset=utf-8")]
    if kind == "empty":
        return b"", []
    body = json.dumps({"success": False, "message": message}).encode()
    return body, [(b"content-type", b"application/json")]


async def _send_error(send: Send, status: int, kind: str, message: str, retry_after: float | None = None) -> None:
    body, headers = _error_body(kind, message)
    headers.append((b"content-length", str(len(body)).encode()))
    if retry_after is not None:
        headers.append(
            (b"retry-after", str(int(retry_after) if float(retry_after).is_integer() else retry_after).encode())
        )
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drop(send: Send, status: int) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"512")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"success": ', "more_body": True})
    msg = "scripted drop_connection"
    raise DroppedConnectionError(msg)


async def _trickle(app: ASGIApp, scope: Scope, receive: Receive, send: Send, every: float) -> None:
    """Serve the call, then send its answer's body one byte every ``every`` seconds."""
    start: Message | None = None
    body = bytearray()

    async def keep(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    await app(scope, receive, keep)
    if start is None:
        return
    gone = asyncio.Event()

    async def watch() -> None:  # the request is read: what comes next is the client going away
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()

    watcher = asyncio.ensure_future(watch())
    try:
        await send(start)
        for i in range(len(body)):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), every)
            if gone.is_set():
                return
            await send({"type": "http.response.body", "body": bytes(body[i : i + 1]), "more_body": i < len(body) - 1})
    finally:
        watcher.cancel()


def _is_api(path: str) -> bool:
    """A call of either API (``/api``, ``/v2``): faulted and recorded."""
    return any(path == base or path.startswith(base + "/") for base in ("/api", "/v2"))


class FaultMiddleware:
    """ASGI middleware applying the faults and recording ``/api`` calls."""

    def __init__(self, app: ASGIApp, faults: Faults, log: RequestLog) -> None:
        """Wrap ``app``.

        Args:
            app: the application.
            faults: the faults to apply.
            log: where to record the calls.
        """
        self.app = app
        self.faults = faults
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one call: ``/api`` ones delayed, faulted and recorded, others as they are."""
        if scope["type"] != "http" or not _is_api(scope["path"]):
            await self.app(scope, receive, send)
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True))
        if KEY_PARAM in query:
            query[KEY_PARAM] = "***"  # the log shows that a key came, never the key
        entry: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": query,
            "status": None,
            "after_write_fault": False,
            "fault": None,
            "time": time.time(),
        }
        self.log.add(entry)

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
            await send(message)

        latency = self.faults.settings.latency_ms
        if latency:
            await asyncio.sleep(latency / 1000)
        if not await self._fault(scope, receive, send_logged, entry):
            await self.app(scope, receive, send_logged)

    async def _fault(self, scope: Scope, receive: Receive, send: Send, entry: dict[str, Any]) -> bool:
        """Answer the call with the fault that applies, if any; answers whether one did."""
        faults = self.faults
        fault = faults.take_scripted(scope["method"], scope["path"])
        if fault is not None:
            entry["fault"] = "scripted"
            await self._scripted(fault, scope, receive, send, entry)
            return True
        if faults.rate_limited():
            entry["fault"] = "rate_limit"
            await _send_error(send, 429, "json", "Too many requests; retry after 1 second", 1)
            return True
        failure = faults.random_failure()
        if failure is not None:
            entry["fault"] = "fail_rate"
            status, kind = failure
            await _send_error(send, status, kind, _FAILURE_TEXT[status])
            return True
        return False

    async def _scripted(self, fault: Fault, scope: Scope, receive: Receive, send: Send, entry: dict[str, Any]) -> None:
        if fault["delay_ms"]:
            await asyncio.sleep(fault["delay_ms"] / 1000)
        if fault["trickle_ms"]:
            entry["fault"] = "trickle"
            await _trickle(self.app, scope, receive, send, fault["trickle_ms"] / 1000)
            return
        if fault["after_write"]:

            async def swallow(message: Message) -> None:
                if message["type"] == "http.response.start":
                    entry["processed_status"] = message["status"]

            await self.app(scope, receive, swallow)
            entry["after_write_fault"] = True
        if fault["drop_connection"]:
            entry["fault"] = "drop_connection"
            await _drop(send, fault["status"])
        msg = f"Scripted fault: HTTP {fault['status']}"
        await _send_error(send, fault["status"], fault["body"], msg, fault["retry_after"])
