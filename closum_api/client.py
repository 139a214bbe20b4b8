"""A small Closum client: one session, one token, one pace, one retry budget per operation.

The tap reads through the Singer SDK's request loop and borrows this client's
session, token, pace and :meth:`ClosumClient.retrying`; the target writes
through :meth:`ClosumClient.create` / :meth:`ClosumClient.update`. Every try
takes a slot from the run's :class:`~closum_api.pace.Pace` first and reports its
answer to it. Reads and updates (``PUT`` is idempotent) are retried on every
transient failure. A create is retried only when it surely did not happen
(429, 503, a refused connection); when it may have happened (500, 502, 504, a
timeout, or a connection dropped after sending or cut during the answer) the
client raises :class:`ClosumOutcomeUnknown` and leaves the decision to the
caller, who checks the server within the same budget. A 2xx that is not the
envelope is never retried: on a create it is an unknown outcome that ends the
run (``ClosumOutcomeUnknown`` with ``final`` set).
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass
from http import HTTPStatus

import requests
import urllib3

from closum_api import retry
from closum_api.auth import ClosumTokenAuth
from closum_api.connection import Connection, new_session
from closum_api.errors import (
    ENDPOINT_MISSING,
    UNKNOWN_OUTCOME_STATUSES,
    ClosumBadResponse,
    ClosumEndpointError,
    ClosumFatalError,
    ClosumNotFoundError,
    ClosumOutcomeUnknown,
    ClosumRetriableError,
    check_response,
    retry_after_seconds,
)
from closum_api.pace import Pace
from closum_api.retry import CONNECTION_FAILURES, Attempts, RetryPolicy

if t.TYPE_CHECKING:
    from closum_api.registry import Resource

LOGGER = logging.getLogger("closum_api.client")
__all__ = ["CONNECTION_FAILURES", "ClosumClient", "Connection"]
P = t.ParamSpec("P")
R = t.TypeVar("R")


def surely_not_sent(exc: BaseException) -> bool:
    """Whether a connection error happened before the request reached the server.

    Args:
        exc: what the request raised.

    Returns:
        True when the request surely never reached the server (the connection
        was refused or never established), so repeating it cannot duplicate it.
    """
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if isinstance(exc, requests.exceptions.ConnectionError):
        reason = exc.args[0] if exc.args else None
        if isinstance(reason, urllib3.exceptions.MaxRetryError):
            reason = reason.reason
        return isinstance(reason, (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError))
    return False


class ClosumClient:
    """Talks to one Closum account.

    Attributes:
        connection: the account and the retry settings.
        api_url: the base URL, up to and including ``/api``.
        timeout: seconds to wait for each answer.
        session: the HTTP session, shared by every thread.
        auth: the token holder.
        pace: the run's request rate.
        policy: the retry budget of each operation.
    """

    def __init__(self, connection: Connection, *, pool_size: int = 8, pace: Pace | None = None) -> None:
        """Open a session; the token is fetched with the first request.

        Args:
            connection: the account and the retry settings.
            pool_size: connections kept open, at least the writes in flight.
            pace: the run's request rate (an adaptive one of its own if not given).
        """
        self.connection = connection
        self.api_url = connection.api_url
        self.timeout = connection.timeout
        self.session = new_session(pool_size)
        if connection.user_agent:
            self.session.headers["User-Agent"] = connection.user_agent
        self.pace = pace if pace is not None else Pace()
        self.policy = RetryPolicy(connection.api_url, connection.max_tries, connection.backoff_base)
        self.auth = ClosumTokenAuth(connection, self.pace, self.policy)

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()

    # -- reads ---------------------------------------------------------------
    def attempts(self) -> Attempts:
        """A fresh retry budget, for an operation of several requests (a create and its check)."""
        return self.policy.attempts()

    def retrying(self, func: t.Callable[P, R], what: str = "") -> t.Callable[P, R]:
        """``func`` tried within one budget: transient failures wait and try again, others end it.

        The budget is the thread's current one (:data:`closum_api.retry.current`)
        or a fresh one, and stays current while ``func`` runs, so a token fetch
        inside draws from it. The tap wraps each page in it.

        Args:
            func: one try (it takes its own pace slot).
            what: the request (``GET /lead``), for the give-up line.

        Returns:
            The wrapped call; it raises :class:`~closum_api.retry.ClosumGaveUp`
            when the budget is spent.
        """

        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            attempts = retry.current.get() or self.attempts()
            with retry.using(attempts):
                return retry.call(lambda: func(*args, **kwargs), attempts, what, _log_retry)

        return wrapped

    def get(self, path: str, params: t.Mapping[str, t.Any] | None = None) -> dict[str, t.Any]:
        """GET with every transient failure retried, within the thread's budget (a fresh one if none).

        Args:
            path: the API path (``/lead``).
            params: the query string.

        Returns:
            The decoded envelope.
        """
        return self.send(Call("GET", path, safe=True, params=params))

    def list_page(
        self,
        resource: Resource,
        *,
        page: int = 1,
        limit: int = 100,
        sort: str = "id",
        direction: str = "asc",
    ) -> dict[str, t.Any]:
        """One page of a resource's list.

        Args:
            resource: the resource to list.
            page: the page number, from 1.
            limit: records per page.
            sort: the field to sort on.
            direction: ``asc`` or ``desc``.

        Returns:
            The decoded envelope.
        """
        params = {"limit": limit, "page": page, "sort": sort, "direction": direction}
        return self.get(resource.list_path, params)

    # -- writes --------------------------------------------------------------
    def create(
        self,
        resource: Resource,
        payload: t.Mapping[str, t.Any],
        *,
        attempts: Attempts | None = None,
        on_sending: t.Callable[[], None] | None = None,
    ) -> int:
        """POST a record.

        Args:
            resource: the resource to create a record of.
            payload: the request body.
            attempts: the budget to draw from (a fresh one if not given).
            on_sending: called before each try, once the token is held and the
                pace slot taken, just before the bytes go out (the target marks
                its intent pending there, so a create never sent is never pending).

        Returns:
            The new record's id.

        Raises:
            ClosumOutcomeUnknown: the request may have created the record
                (``final`` when the answer was a 2xx that is not the envelope).
            ClosumEndpointError: the collection answered 404 or 405: there is nothing to create in.
        """
        with retry.using(attempts or retry.current.get() or self.attempts()):
            try:
                envelope = self.send(Call("POST", f"/{resource.path}", safe=False, json=payload), on_sending=on_sending)
            except ClosumFatalError as exc:
                if exc.response is None or not self._no_collection(resource, exc):
                    raise
                raise ClosumEndpointError.for_write(exc.response, self.api_url) from None
        data = envelope.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("id"), int):
            msg = f"POST /{resource.path} answered without data.id: {str(data)[:200]}"
            raise ClosumOutcomeUnknown(msg, final=True)
        return int(data["id"])

    def _no_collection(self, resource: Resource, exc: ClosumFatalError) -> bool:
        """Whether a refused create means the resource's collection is not there (not a refused record).

        A 405 says so; a 404 may also be a record the body refers to: the collection's
        list (one record, within the create's budget) tells them apart.
        """
        if isinstance(exc, ClosumEndpointError) or exc.status not in ENDPOINT_MISSING:
            return False
        if exc.status == HTTPStatus.METHOD_NOT_ALLOWED:
            return True
        try:
            self.list_page(resource, limit=1)
        except ClosumNotFoundError:
            return True
        return False

    def update(self, resource: Resource, record_id: int, payload: t.Mapping[str, t.Any]) -> None:
        """PUT a record; idempotent, so every transient failure is retried.

        Args:
            resource: the resource the record belongs to.
            record_id: the record's id.
            payload: the request body.
        """
        self.send(Call("PUT", resource.item_path(record_id), safe=True, json=payload))

    # -- plumbing ------------------------------------------------------------
    def send(self, call: Call, *, on_sending: t.Callable[[], None] | None = None) -> dict[str, t.Any]:
        """Send a request within the thread's budget (a fresh one if none); the decoded envelope.

        Args:
            call: the request.
            on_sending: called just before each try's bytes go out.

        Returns:
            The JSON envelope.

        Raises:
            ClosumOutcomeUnknown: an unsafe request may have happened.
            ClosumBadResponse: a safe request was answered 2xx without the envelope.
        """
        return self.retrying(lambda: self._try(call, on_sending), f"{call.method} {call.path}")()

    def _try(self, call: Call, on_sending: t.Callable[[], None] | None) -> dict[str, t.Any]:
        """One try: token, pace slot, send, then decode the answer or raise what it means."""
        method, path, safe = call.method, call.path, call.safe
        request = self.session.prepare_request(
            requests.Request(method, self.api_url + path, params=call.params, json=call.json, auth=self.auth)
        )
        self.pace.acquire()
        try:
            if on_sending is not None:
                on_sending()
            settings = self.session.merge_environment_settings(request.url, {}, None, None, None)
            response = self.session.send(request, timeout=self.timeout, **settings)
        except CONNECTION_FAILURES as exc:
            if safe or surely_not_sent(exc):
                raise
            msg = f"{method} {path}: the connection failed after sending ({retry.connection_reason(exc)})"
            raise ClosumOutcomeUnknown(msg) from None
        finally:
            self.pace.release()
        self.pace.observe(response.status_code, retry_after_seconds(response))
        try:
            return check_response(method, path, response)
        except ClosumBadResponse as exc:
            if safe:
                raise
            # A 2xx that is not the envelope (an HTML page from a proxy) may follow a
            # write that happened, and asking again will not tell: the run must stop.
            raise ClosumOutcomeUnknown(str(exc), exc.status, final=True) from None
        except ClosumRetriableError as exc:
            # A 500/502/504 may follow a write that happened: never repeat it blindly.
            if not safe and exc.status in UNKNOWN_OUTCOME_STATUSES:
                raise ClosumOutcomeUnknown(str(exc), exc.status) from None
            raise


@dataclass(frozen=True)
class Call:
    """One request to send.

    Attributes:
        method: the HTTP verb.
        path: the API path (``/lead``).
        safe: whether repeating it is harmless (everything but a create).
        params: the query string.
        json: the request body.
    """

    method: str
    path: str
    safe: bool
    params: t.Mapping[str, t.Any] | None = None
    json: t.Mapping[str, t.Any] | None = None


def _log_retry(wait: float, tries: int, exc: BaseException) -> None:
    LOGGER.warning("Retrying in %.1f s after try %d: %s", wait, tries, retry.failure_reason(exc))
