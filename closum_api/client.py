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
    with_retries,
)

if t.TYPE_CHECKING:
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
    """A session whose connection pool holds ``pool_size`` connections per host."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"Accept": "application/json"})
    return session


def surely_not_sent(exc: BaseException) -> bool:
    """True when a connection error happened before the request reached the server."""
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

    Args:
        connection: the account and the retry settings.
        pool_size: connections kept open, at least the writes in flight.
    """

    def __init__(self, connection: Connection, *, pool_size: int = 8) -> None:
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
        self.session.close()

    # -- reads ---------------------------------------------------------------
    def get(self, path: str, params: t.Mapping[str, t.Any] | None = None) -> dict[str, t.Any]:
        """GET with every transient failure retried; the decoded envelope."""
        return self._retrying(self._send, safe=True)("GET", path, params=params)

    def list_page(
        self,
        resource: Resource,
        *,
        page: int = 1,
        limit: int = 100,
        sort: str = "id",
        direction: str = "asc",
    ) -> dict[str, t.Any]:
        """One page of a resource's list, as the envelope."""
        params = {"limit": limit, "page": page, "sort": sort, "direction": direction}
        return self.get(resource.list_path, params)

    # -- writes --------------------------------------------------------------
    def create(self, resource: Resource, payload: t.Mapping[str, t.Any]) -> int:
        """POST a record; its new id.

        Raises:
            ClosumOutcomeUnknown: the request may have created the record.
        """
        envelope = self._retrying(self._send, safe=False)("POST", f"/{resource.path}", json=payload)
        data = envelope.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("id"), int):
            msg = f"POST /{resource.path} answered without data.id: {str(data)[:200]}"
            raise ClosumOutcomeUnknown(msg)
        return int(data["id"])

    def update(self, resource: Resource, record_id: int, payload: t.Mapping[str, t.Any]) -> None:
        """PUT a record; idempotent, so every transient failure is retried."""
        self._retrying(self._send, safe=True)("PUT", resource.item_path(record_id), json=payload)

    # -- plumbing ------------------------------------------------------------
    def _send(
        self,
        method: str,
        path: str,
        *,
        params: t.Mapping[str, t.Any] | None = None,
        json: t.Any = None,
        safe: bool,
    ) -> dict[str, t.Any]:
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

    def _retrying(self, func: t.Callable[..., t.Any], *, safe: bool) -> t.Callable[..., t.Any]:
        def call(*args: t.Any, **kwargs: t.Any) -> t.Any:
            return func(*args, safe=safe, **kwargs)

        return with_retries(
            call,
            retry_on=(ClosumRetriableError, *CONNECTION_FAILURES),
            max_tries=self.max_tries,
            backoff_base=self.backoff_base,
            on_backoff=_log_backoff,
        )


def _log_backoff(details: t.Mapping[str, t.Any]) -> None:
    exc = details.get("exception")
    LOGGER.warning(
        "Retrying in %.1f s after try %d: %s",
        details.get("wait", 0.0),
        details.get("tries", 0),
        exc if isinstance(exc, ClosumRetriableError) else type(exc).__name__,
    )
