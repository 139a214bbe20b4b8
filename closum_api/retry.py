"""The retry budget: how many failed tries a request gets, and how long to wait between them.

Every request of an operation draws from one :class:`Budget`. A request gives
up after ``max_retries + 1`` *consecutive* failed tries of its own; an answer
to it resets its count, so failures scattered over a long operation (the pages
of an outcome check, a lead's many retrieves) never add up to a give-up while
each request gets through. Nested work shares the operation's budget instead
of opening one of its own (the token fetch a request needs, the search after a
create's lost answer), so no setting multiplies another.

The waits come from :mod:`backoff`'s generators: exponential from
``backoff_base_seconds``, capped at :data:`MAX_WAIT`, with "equal jitter" (half
the step fixed, half at random, so bursts spread without retrying at once). A
``Retry-After`` is honoured: a 429's exactly (the pace spreads the retries),
any other answer's as a floor. The loop around them (:func:`call`) is ours, not
``backoff.on_exception``: a wait must end at once when the run is stopped
(the run's :meth:`~closum_api.stop.StopEvent.sleep`, handed to it), and one
budget spans the nested requests of an operation. When a request's tries are spent, :meth:`Budget.failed` raises
:class:`ClosumGaveUp` with one line:
``cannot reach http://127.0.0.1:8080/api after 6 tries: connection refused``.
"""

from __future__ import annotations

import threading
import typing as t
from dataclasses import dataclass
from http import HTTPStatus

import backoff
import requests
import urllib3

from closum_api.errors import ClosumError, ClosumRetriableError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator

    from closum_api.stop import StopEvent

R = t.TypeVar("R")

#: no single wait between tries is longer than this, in seconds
MAX_WAIT = 60.0

# Failures of the connection rather than answers of the server.
CONNECTION_FAILURES = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,  # cut in the middle of the answer
    requests.exceptions.ContentDecodingError,
)
#: what earns another try
TRANSIENT = (ClosumRetriableError, *CONNECTION_FAILURES)


class ClosumGaveUp(ClosumError):  # noqa: N818  # public name, as ClosumOutcomeUnknown
    """A request's tries are spent; the last failure is kept.

    Attributes:
        last: the last failure.
        tries: the consecutive failed tries of the request that gave up.
        status: the HTTP status of the last answer, if there was one.
    """

    def __init__(self, msg: str, last: BaseException, tries: int) -> None:
        """One line, plus the last failure.

        Args:
            msg: one line for the user.
            last: the last failure.
            tries: the consecutive failed tries counted.
        """
        super().__init__(msg)
        self.last = last
        self.tries = tries
        self.status = getattr(last, "status", None)


@dataclass(frozen=True)
class RetryPolicy:
    """How patiently a request is retried.

    Attributes:
        api_url: the account's base URL, for the give-up line.
        max_tries: consecutive failed tries a request may have (1 = no retry).
        backoff_base: the first wait, in seconds; it doubles with each retry of the same request.
        cap: the longest single wait, in seconds.
    """

    api_url: str
    max_tries: int
    backoff_base: float
    cap: float = MAX_WAIT

    def budget(self) -> Budget:
        """A fresh budget, for one operation."""
        return Budget(self)

    def schedule(self) -> Generator[float, t.Any, None]:
        """The waits before each retry of one request: exponential from ``backoff_base``, capped (no jitter yet)."""
        waits = backoff.expo(base=2, factor=self.backoff_base, max_value=self.cap)
        next(waits)  # backoff's generators are primed with a first next()
        return waits


def equal_jitter(value: float) -> float:
    """``value`` half fixed, half at random: between ``value / 2`` and ``value``.

    Args:
        value: the step of the schedule.

    Returns:
        The wait.
    """
    return value / 2 + backoff.full_jitter(value / 2)


class Budget:
    """The tries of one operation's requests, each counted apart. Thread-safe.

    A request is named by ``what`` (``GET /lead?page=3``): its failed tries
    count until it is answered (:meth:`succeeded`), and :meth:`failed` gives up
    once they reach ``policy.max_tries``.

    Args:
        policy: the limits.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        """No failure yet."""
        self.policy = policy
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}
        self._schedules: dict[str, Generator[float, t.Any, None]] = {}
        self.failures = 0  # failed tries of the whole operation, for the logs

    def tries(self, what: str) -> int:
        """The consecutive failed tries of request ``what`` so far."""
        with self._lock:
            return self._failures.get(what, 0)

    def succeeded(self, what: str) -> None:
        """Request ``what`` was answered: its count starts over.

        Args:
            what: the request.
        """
        with self._lock:
            self._failures.pop(what, None)
            self._schedules.pop(what, None)

    def failed(self, exc: BaseException, what: str = "") -> float:
        """Count a failed try of request ``what``; the seconds to wait before its next one.

        Args:
            exc: the failure (its ``retry_after`` is honoured).
            what: the request (``GET /lead``), also for the give-up line.

        Returns:
            The wait: a 429's ``Retry-After`` as asked (the pace spreads the
            retries); otherwise the request's next step of the schedule, with
            equal jitter, never shorter than a ``Retry-After``.

        Raises:
            ClosumGaveUp: the request's tries are spent.
        """
        with self._lock:
            failures = self._failures.get(what, 0) + 1
            self._failures[what] = failures
            self.failures += 1
            if failures >= self.policy.max_tries:
                self._failures.pop(what, None)
                self._schedules.pop(what, None)
                raise ClosumGaveUp(give_up_line(self.policy, exc, what, failures), exc, failures) from None
            schedule = self._schedules.get(what)
            if schedule is None:
                schedule = self._schedules[what] = self.policy.schedule()
            step = next(schedule)
        asked = getattr(exc, "retry_after", None)
        if asked is not None and getattr(exc, "status", None) == HTTPStatus.TOO_MANY_REQUESTS:
            # The server said when: the pace spreads the retries, no backoff on top.
            return min(float(asked), self.policy.cap)
        delay = equal_jitter(step)
        if asked is not None:
            delay = max(delay, min(float(asked), self.policy.cap))
        return delay


def give_up_line(policy: RetryPolicy, exc: BaseException, what: str, tries: int) -> str:
    """The one line that ends an operation when a request's tries are spent.

    Args:
        policy: the limits (the URL).
        exc: the last failure.
        what: the request (``GET /lead``), if known.
        tries: the request's consecutive failed tries.

    Returns:
        ``cannot reach http://…/api after 6 tries: connection refused`` for a
        connection that failed, else the last answer and the count.
    """
    counted = f"{tries} {'try' if tries == 1 else 'tries'}"
    if isinstance(exc, CONNECTION_FAILURES):
        return f"cannot reach {policy.api_url} after {counted}: {connection_reason(exc)}"
    head = f"{what}: " if what and not str(exc).startswith(what.split("?", maxsplit=1)[0]) else ""
    return f"{head}{exc} (gave up after {counted})"


def connection_reason(exc: BaseException) -> str:
    """``connection refused``, ``timed out``... for a failed connection."""
    if isinstance(exc, requests.exceptions.Timeout):
        return _timeout_reason(exc)
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return "TLS certificate not trusted"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the connection was cut during the answer"
    reason: object = exc.args[0] if exc.args else None
    if isinstance(reason, urllib3.exceptions.MaxRetryError):
        reason = reason.reason
    if isinstance(reason, urllib3.exceptions.NewConnectionError):
        text = str(reason).lower()
        known = [phrase for needle, phrase in _CONNECT_FAILURES if needle in text]
        return known[0] if known else "the connection could not be made"
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        return "the connection was dropped"
    return f"the connection failed ({type(exc).__name__})"


def _timeout_reason(exc: requests.exceptions.Timeout) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "timed out connecting (the host does not answer)"
    return str(exc) if isinstance(exc, DeadlineExceeded) else _NO_ANSWER


class DeadlineExceeded(requests.exceptions.ReadTimeout):
    """The whole answer took longer than ``request_timeout`` (a server trickling it byte by byte)."""


def failure_reason(exc: BaseException) -> str:
    """A transient failure as a short phrase for a retry line, never with the request body.

    Args:
        exc: an answer worth another try, or a failed connection.

    Returns:
        The answer's one line, or :func:`connection_reason`.
    """
    return str(exc) if isinstance(exc, ClosumRetriableError) else connection_reason(exc)


_NO_ANSWER = "timed out (no answer within request_timeout)"

# What a refused or impossible connection says, and how we say it.
_CONNECT_FAILURES = (
    ("refused", "connection refused"),
    ("name or service not known", "the host name does not resolve"),
    ("nodename nor servname", "the host name does not resolve"),
    ("temporary failure in name resolution", "the host name does not resolve"),
)


def call(
    func: Callable[[], R],
    budget: Budget,
    what: str,
    on_retry: Callable[[float, int, BaseException], None],
    *,
    stop: StopEvent,
) -> R:
    """Try ``func`` (one request) until it is answered, fails for good, or its tries are spent.

    Args:
        func: one try.
        budget: the operation's budget.
        what: the request (``GET /lead?page=2``): its tries are counted under this name.
        on_retry: told the wait, the request's failed tries so far and the failure, before each wait.
        stop: the run's stop event: a wait between two tries ends on it.

    Returns:
        What ``func`` returned.

    Raises:
        ClosumGaveUp: the request's tries are spent.
        ClosumStopped: the run was asked to stop during a wait.
    """
    while True:
        try:
            result = func()
        except TRANSIENT as exc:
            wait = budget.failed(exc, what)
            on_retry(wait, budget.tries(what), exc)
        else:
            budget.succeeded(what)
            return result
        stop.sleep(wait)
