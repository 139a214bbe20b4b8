"""A small retrying Closum client: one session, one token, shared retry rules.

The tap reads through the Singer SDK's own request loop and only borrows the
authenticator and :func:`closum_api.errors.check_response`; the target writes
through this client. Reads and updates (``PUT`` is idempotent) are retried on
every transient failure. A create is retried only when it surely did not
happen (429, 503, a refused connection); when it may have happened (500, 502,
504, a 2xx that is not the envelope, a timeout, or a connection dropped after
sending or cut during the answer) the client raises
:class:`ClosumOutcomeUnknown` and leaves the decision to the caller.
"""

from __future__ import annotations

import logging
import typing as t

import requests
import urllib3

from closum_api.auth import ClosumTokenAuth
from closum_api.connection import Connection
from closum_api.errors import (
    UNKNOWN_OUTCOME_STATUSES,
    ClosumBadResponse,
    ClosumOutcomeUnknown,
    ClosumRetriableError,
    check_response,
)
from closum_api.retry import with_retries

if t.TYPE_CHECKING:
    from backoff.types import Details

    from closum_api.registry import Resource

LOGGER = logging.getLogger("closum_api.client")
__all__ = ["ClosumClient", "Connection"]
# Failures of the connection rather than answers of the server: a request
# that meets one may or may not have reached it.
CONNECTION_FAILURES = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,  # cut in the middle of the answer
    requests.exceptions.ContentDecodingError,
)


def new_session(pool_size: int = 8) -> requests.Session:
    """A session whose connection pool holds ``pool_size`` connections per host.

    Args:
        pool_size: connections kept open per host, at least 1.

    Returns:
        The session; it never retries on its own and asks for JSON.
    """
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"Accept": "application/json"})
    return session


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
        max_tries: tries per request (1 = no retry).
        backoff_base: the first wait between tries, in seconds.
        session: the HTTP session, shared by every thread.
        auth: the token holder.
    """

    def __init__(self, connection: Connection, *, pool_size: int = 8) -> None:
        """Open a session; the token is fetched with the first request.

        Args:
            connection: the account and the retry settings.
            pool_size: connections kept open, at least the writes in flight.
        """
        self.connection = connection
        self.api_url = connection.api_url
        self.timeout = connection.timeout
        self.max_tries = connection.max_tries
        self.backoff_base = connection.backoff_base
        self.session = new_session(pool_size)
        if connection.user_agent:
            self.session.headers["User-Agent"] = connection.user_agent
        self.auth = ClosumTokenAuth(connection)

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()

    # -- reads ---------------------------------------------------------------
    def get(self, path: str, params: t.Mapping[str, t.Any] | None = None) -> dict[str, t.Any]:
        """GET with every transient failure retried.

        Args:
            path: the API path (``/lead``).
            params: the query string.

        Returns:
            The decoded envelope.
        """
        return self._request("GET", path, params=params, safe=True)

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
    def create(self, resource: Resource, payload: t.Mapping[str, t.Any]) -> int:
        """POST a record.

        Args:
            resource: the resource to create a record of.
            payload: the request body.

        Returns:
            The new record's id.

        Raises:
            ClosumOutcomeUnknown: the request may have created the record.
        """
        envelope = self._request("POST", f"/{resource.path}", json=payload, safe=False)
        data = envelope.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("id"), int):
            msg = f"POST /{resource.path} answered without data.id: {str(data)[:200]}"
            raise ClosumOutcomeUnknown(msg)
        return int(data["id"])

    def update(self, resource: Resource, record_id: int, payload: t.Mapping[str, t.Any]) -> None:
        """PUT a record; idempotent, so every transient failure is retried.

        Args:
            resource: the resource the record belongs to.
            record_id: the record's id.
            payload: the request body.
        """
        self._request("PUT", resource.item_path(record_id), json=payload, safe=True)

    # -- plumbing ------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        params: t.Mapping[str, t.Any] | None = None,
        json: t.Mapping[str, t.Any] | None = None,
        safe: bool,
    ) -> dict[str, t.Any]:
        """One try: send, then decode the answer or raise what it means."""
        try:
            response = self.session.request(
                method,
                self.api_url + path,
                params=params,
                json=json,
                auth=self.auth,
                timeout=self.timeout,
            )
        except CONNECTION_FAILURES as exc:
            if safe or surely_not_sent(exc):
                raise
            msg = f"{method} {path}: the connection failed after sending ({type(exc).__name__})"
            raise ClosumOutcomeUnknown(msg) from None
        try:
            return check_response(method, path, response)
        except ClosumRetriableError as exc:
            # A 2xx that is not the envelope (an HTML page from a proxy) or a
            # 500/502/504 may follow a write that happened: never repeat it blindly.
            if not safe and (isinstance(exc, ClosumBadResponse) or exc.status in UNKNOWN_OUTCOME_STATUSES):
                raise ClosumOutcomeUnknown(str(exc), exc.status) from None
            raise

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: t.Mapping[str, t.Any] | None = None,
        json: t.Mapping[str, t.Any] | None = None,
        safe: bool,
    ) -> dict[str, t.Any]:
        """:meth:`_send`, retried on transient failures with the shared policy."""
        send = with_retries(
            self._send,
            retry_on=(ClosumRetriableError, *CONNECTION_FAILURES),
            max_tries=self.max_tries,
            backoff_base=self.backoff_base,
            on_backoff=_log_backoff,
        )
        return send(method, path, params=params, json=json, safe=safe)


def _log_backoff(details: Details) -> None:
    exc = details.get("exception")
    LOGGER.warning(
        "Retrying in %.1f s after try %d: %s",
        details.get("wait", 0.0),
        details.get("tries", 0),
        exc if isinstance(exc, ClosumRetriableError) else type(exc).__name__,
    )
