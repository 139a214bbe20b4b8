"""Where one Closum account is, how patiently to talk to it, and the HTTP session that does.

Every session made here bounds a request as a whole, not only the silences
between its bytes: connecting gives up after :data:`CONNECT_TIMEOUT`, and the
whole request (headers and body) after its timeout (``request_timeout``), however
slowly the server trickles its answer. A :class:`_Watchdog` thread shuts the
socket of a request past its deadline, which ends the blocked read at once; the
try then fails with :class:`~closum_api.retry.DeadlineExceeded` (a read timeout).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import sys
import threading
import time
import typing as t
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from closum_api.retry import DeadlineExceeded

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    import urllib3

DEFAULT_API_URL = "https://api.closum.com/api"
#: the base of Closum's V2 API ("CLOSUM V2.0": ``POST /v2/lead/add/?api-key=…``)
DEFAULT_API_V2_URL = "https://api.closum.com/v2"
#: seconds a try waits for the connection to be set up (at most ``request_timeout``): a host that
#: drops packets (a firewall, a wrong address) fails a try in seconds, not after ``request_timeout``
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Connection:
    """Everything the auths and the client need to reach an account, through either API.

    Attributes:
        api_url: base URL of the V1 API, up to and including ``/api``.
        username: the account's ``api_username`` (V1); None when only an api-key is given.
        password: the account's ``api_pw`` (V1); kept out of ``repr``.
        timeout: seconds to wait for each answer.
        max_tries: attempts per request on transient failures (1 = no retry).
        backoff_base: first wait between attempts, in seconds (doubles).
        user_agent: the User-Agent header, if any.
        api_key: the account's V2 ``api-key``, if given; kept out of ``repr``.
        api_v2_url: base URL of the V2 API, up to and including ``/v2``.
    """

    api_url: str
    username: str | None
    password: str | None = field(repr=False)
    # No defaults here: they are the settings' (closum_api.config), written once there.
    timeout: float = field(kw_only=True)
    max_tries: int = field(kw_only=True)
    backoff_base: float = field(kw_only=True)
    user_agent: str | None = field(default=None, kw_only=True)
    api_key: str | None = field(default=None, repr=False, kw_only=True)
    api_v2_url: str = field(default=DEFAULT_API_V2_URL, kw_only=True)

    def __post_init__(self) -> None:
        """Normalise: no trailing slash on the base URLs, at least one try."""
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
        object.__setattr__(self, "api_v2_url", self.api_v2_url.rstrip("/"))
        object.__setattr__(self, "max_tries", max(1, self.max_tries))

    @property
    def has_v1_credentials(self) -> bool:
        """Whether ``api_username`` and ``api_pw`` are given (the V1 API can be reached)."""
        return bool(self.username) and bool(self.password)


class _Deadline:
    """When one request must be over, and the socket to shut if it is not."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._finished = False
        self._shut: t.Callable[[int], None] | None = None

    def attach(self, shut: t.Callable[[int], None] | None) -> None:
        """The request's socket is now known: ``shut`` ends its reads (``socket.shutdown``)."""
        with self._lock:
            self._shut = shut
            late = self.expired and not self._finished
        if late and shut is not None:
            _shut_quietly(shut)

    def expire(self) -> None:
        """Past the deadline: shut the socket, unless the request is over."""
        with self._lock:
            if self._finished:
                return
            self.expired = True
            shut = self._shut
        if shut is not None:
            _shut_quietly(shut)

    @property
    def finished(self) -> bool:
        """Whether the request is over."""
        return self._finished

    def finish(self) -> None:
        """The request is over (answered or failed): the deadline no longer applies."""
        with self._lock:
            self._finished = True
            self._shut = None


def _shut_quietly(shut: t.Callable[[int], None]) -> None:
    with contextlib.suppress(OSError):  # already closed: the read it would end is over
        shut(socket.SHUT_RDWR)


class _Watchdog:
    """One thread for the whole process: expires the deadlines that pass.

    A request that ends in time leaves its entry behind; once most entries are
    such, :meth:`arm` drops them, so the heap holds about the requests in
    flight, not every request of the last ``request_timeout``.
    """

    #: finished entries tolerated before a clean-up (and at most half the heap)
    STALE = 256

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stale = 0

    def arm(self, deadline: _Deadline) -> None:
        with self._wake:
            if self._stale > self.STALE and self._stale * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if not entry[2].finished]
                heapq.heapify(self._heap)
                self._stale = 0
            heapq.heappush(self._heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="request-deadlines", daemon=True)
                self._thread.start()
            if self._heap[0][2] is deadline:
                self._wake.notify()

    def finished(self) -> None:
        """A deadline armed here is over (its entry stays until popped or cleaned up)."""
        with self._wake:
            self._stale += 1

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, deadline = heapq.heappop(self._heap)
                if deadline.finished:
                    self._stale = max(0, self._stale - 1)
            deadline.expire()


_WATCHDOG = _Watchdog()
# The deadline of the request this thread is sending, for the connection that carries it.
_CURRENT = threading.local()


class _BoundedHTTPConnection(HTTPConnection):
    """Hands its socket to the deadline of the request it carries before waiting for the answer."""

    def getresponse(self) -> urllib3.response.HTTPResponse:  # type: ignore[override]  # urllib3's own signature
        deadline: _Deadline | None = getattr(_CURRENT, "deadline", None)
        if deadline is not None and self.sock is not None:
            deadline.attach(self.sock.shutdown)
        return super().getresponse()


class _BoundedHTTPSConnection(HTTPSConnection, _BoundedHTTPConnection):
    """The same for HTTPS."""


class _BoundedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _BoundedHTTPConnection


class _BoundedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _BoundedHTTPSConnection


class TimeoutAdapter(HTTPAdapter):
    """Bounds a request: connecting after :data:`CONNECT_TIMEOUT`, the whole request after its timeout.

    A single number of seconds becomes ``(connect, read)``; the answer, headers
    and body, is read here under a deadline of that many seconds from the send.
    """

    @override
    def init_poolmanager(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _BoundedHTTPConnectionPool,
            "https": _BoundedHTTPSConnectionPool,
        }

    @override
    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send as requests does (same parameters); without ``stream``, the body is read within the deadline.

        Raises:
            DeadlineExceeded: the whole request took longer than its timeout.
        """
        if not isinstance(timeout, (int, float)):
            return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)
        deadline = _Deadline(float(timeout))
        _CURRENT.deadline = deadline
        _WATCHDOG.arm(deadline)
        try:
            response = super().send(
                request,
                stream=stream,
                timeout=(min(CONNECT_TIMEOUT, timeout), timeout),
                verify=verify,
                cert=cert,
                proxies=proxies,
            )
            if not stream:
                _ = response.content  # read here, while the deadline holds
        except (requests.exceptions.RequestException, OSError) as exc:
            if deadline.expired:
                raise DeadlineExceeded(_deadline_message(deadline), request=request) from exc
            raise
        finally:
            _CURRENT.deadline = None
            deadline.finish()
            if not deadline.expired:  # an expired one has left the heap
                _WATCHDOG.finished()
        if deadline.expired:  # the shut socket read as the end of a short answer
            raise DeadlineExceeded(_deadline_message(deadline), request=request)
        return response


def _deadline_message(deadline: _Deadline) -> str:
    return f"timed out (the answer was not complete within request_timeout, {deadline.seconds:g} s)"


def new_session(pool_size: int) -> requests.Session:
    """A session whose connection pool holds ``pool_size`` connections per host.

    Args:
        pool_size: connections kept open per host, at least 1.

    Returns:
        The session; it never retries on its own, asks for JSON, and gives up
        connecting after :data:`CONNECT_TIMEOUT` seconds.
    """
    session = requests.Session()
    adapter = TimeoutAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"Accept": "application/json"})
    return session
