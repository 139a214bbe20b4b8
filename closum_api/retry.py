"""One retry budget per logical operation.

A request's retries, the token renewals it triggers and the outcome check of a
create all draw from one :class:`Attempts`: ``max_retries + 1`` failed tries in
all, so no setting multiplies another. The operation that owns the budget sets
it as :data:`current` (a context variable) around its work, so the token fetch
deep inside ``requests`` draws from it too. When the budget is spent,
:meth:`Attempts.next_wait` raises :class:`ClosumGaveUp` with one line:
``cannot reach http://127.0.0.1:8080/api after 6 tries: connection refused``.
"""

from __future__ import annotations

import contextlib
import contextvars
import random
import threading
import typing as t
from dataclasses import dataclass
from http import HTTPStatus

import requests
import urllib3

from closum_api import stop
from closum_api.errors import ClosumError, ClosumRetriableError

if t.TYPE_CHECKING:
    from collections.abc import Callable, Iterator

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
    """The budget of an operation is spent; the last failure is kept.

    Attributes:
        last: the last failure.
        tries: the failed tries counted.
        status: the HTTP status of the last answer, if there was one.
    """

    def __init__(self, msg: str, last: BaseException, tries: int) -> None:
        """One line, plus the last failure.

        Args:
            msg: one line for the user.
            last: the last failure.
            tries: the failed tries counted.
        """
        super().__init__(msg)
        self.last = last
        self.tries = tries
        self.status = getattr(last, "status", None)


@dataclass(frozen=True)
class RetryPolicy:
    """How patiently an operation retries.

    Attributes:
        api_url: the account's base URL, for the give-up line.
        max_tries: failed tries allowed per operation (1 = no retry).
        backoff_base: the first wait, in seconds; it doubles with each retry.
        cap: the longest single wait, in seconds.
    """

    api_url: str
    max_tries: int = 6
    backoff_base: float = 1.0
    cap: float = MAX_WAIT

    def attempts(self) -> Attempts:
        """A fresh budget."""
        return Attempts(self)


class Attempts:
    """The budget of one operation: failed tries counted against ``policy.max_tries``. Thread-safe.

    Args:
        policy: the limits.
    """

    def __init__(self, policy: RetryPolicy) -> None:
        """No failure yet."""
        self.policy = policy
        self.failures = 0
        self._lock = threading.Lock()

    def next_wait(self, exc: BaseException, what: str = "") -> float:
        """Count a failed try; the seconds to wait before the next one.

        Args:
            exc: the failure (its ``retry_after`` is honoured).
            what: the request, for the give-up line (``GET /lead``).

        Returns:
            The wait: a 429's ``Retry-After`` as asked (the pace spreads the
            retries); otherwise exponential from ``backoff_base`` plus up to a
            quarter at random, never shorter than a ``Retry-After``.

        Raises:
            ClosumGaveUp: the budget is spent.
        """
        with self._lock:
            self.failures += 1
            failures = self.failures
        if failures >= self.policy.max_tries:
            raise ClosumGaveUp(give_up_line(self.policy, exc, what, failures), exc, failures) from None
        asked = getattr(exc, "retry_after", None)
        if asked is not None and getattr(exc, "status", None) == HTTPStatus.TOO_MANY_REQUESTS:
            # The server said when: the pace spreads the retries, no backoff on top.
            return min(float(asked), self.policy.cap)
        delay = min(self.policy.cap, self.policy.backoff_base * float(2 ** (failures - 1)))
        spread: float = random.uniform(0, delay / 4)  # noqa: S311  # spreading waits, not cryptography
        delay += spread
        if asked is not None:
            delay = max(delay, min(float(asked), self.policy.cap))
        return delay


def give_up_line(policy: RetryPolicy, exc: BaseException, what: str, tries: int) -> str:
    """The one line that ends an operation whose budget is spent.

    Args:
        policy: the limits (the URL).
        exc: the last failure.
        what: the request (``GET /lead``), if known.
        tries: the failed tries.

    Returns:
        ``cannot reach http://…/api after 6 tries: connection refused`` for a
        connection that failed, else the last answer and the count.
    """
    counted = f"{tries} {'try' if tries == 1 else 'tries'}"
    if isinstance(exc, CONNECTION_FAILURES):
        return f"cannot reach {policy.api_url} after {counted}: {connection_reason(exc)}"
    head = f"{what}: " if what and not str(exc).startswith(what) else ""
    return f"{head}{exc} (gave up after {counted})"


def connection_reason(exc: BaseException) -> str:
    """``connection refused``, ``timed out``... for a failed connection."""
    if isinstance(exc, requests.exceptions.Timeout):
        connecting = isinstance(exc, requests.exceptions.ConnectTimeout)
        return "timed out connecting (the host does not answer)" if connecting else _NO_ANSWER
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
    attempts: Attempts,
    what: str,
    on_retry: Callable[[float, int, BaseException], None],
) -> R:
    """Try ``func`` until it succeeds, fails for good, or the budget is spent.

    Args:
        func: one try.
        attempts: the budget.
        what: the request (``GET /lead``), for the give-up line.
        on_retry: told the wait, the failures so far and the failure before each wait.

    Returns:
        What ``func`` returned.

    Raises:
        ClosumGaveUp: the budget is spent.
        ClosumStopped: the run was asked to stop during a wait.
    """
    while True:
        try:
            return func()
        except TRANSIENT as exc:
            wait = attempts.next_wait(exc, what)
            on_retry(wait, attempts.failures, exc)
        stop.sleep(wait)


#: the budget of the operation running in this thread, if any
current: contextvars.ContextVar[Attempts | None] = contextvars.ContextVar("closum_attempts", default=None)


@contextlib.contextmanager
def using(attempts: Attempts) -> Iterator[Attempts]:
    """Make ``attempts`` the budget of this thread's operation while the block runs.

    Args:
        attempts: the budget.

    Yields:
        The same budget.
    """
    token = current.set(attempts)
    try:
        yield attempts
    finally:
        current.reset(token)
