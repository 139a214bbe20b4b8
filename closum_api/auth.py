"""Bearer-token authentication for the Closum API.

``POST /token`` trades ``api_username``/``api_pw`` for a token with a lifetime.
:class:`ClosumTokenAuth` is a ``requests`` auth object that holds one token,
renews it shortly before it expires, and renews it once and resends the
request when the server answers 401 (a token revoked early). It is safe to
share between threads, so one token serves every stream of a run.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import typing as t
import weakref
from http import HTTPStatus

import requests

from closum_api.errors import (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumRetriableError,
    check_response,
)
from closum_api.retry import with_retries

if t.TYPE_CHECKING:
    from backoff.types import Details

    from closum_api.connection import Connection

LOGGER = logging.getLogger("closum_api.auth")
#: the endpoint that trades the credentials for a token
AUTH_PATH = "/token"
# Renew this long before expiry: a tenth of the lifetime, at most a minute.
MAX_RENEW_MARGIN = 60.0


class ClosumTokenAuth(requests.auth.AuthBase):
    """Holds a Closum bearer token and renews it on demand.

    Attributes:
        connection: the account.
        tokens_issued: tokens fetched so far.
    """

    def __init__(self, connection: Connection) -> None:
        """Hold no token yet: the first request fetches one.

        Args:
            connection: the account; its password is never logged or shown.
        """
        self.connection = connection
        # A session of its own: a shared one may carry this very auth object.
        self._session = requests.Session()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.tokens_issued = 0
        # Requests already resent after a 401: they are never renewed a second time.
        self._resent: weakref.WeakSet[requests.PreparedRequest] = weakref.WeakSet()

    def __repr__(self) -> str:
        """Where and who, never the password or the token."""
        return f"ClosumTokenAuth(api_url={self.connection.api_url!r}, username={self.connection.username!r})"

    # requests.auth.AuthBase
    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Sign a request with the token, and renew-and-resend it once on a 401.

        Args:
            request: the request about to be sent.

        Returns:
            The same request, signed.
        """
        request.headers["Authorization"] = f"Bearer {self.token()}"
        request.register_hook("response", self._renew_on_401)
        return request

    def token(self) -> str:
        """The current token, fetched or renewed first when needed.

        Returns:
            The bearer token.
        """
        with self._lock:
            token = self._token
            if token is None or time.monotonic() >= self._renew_at:
                token = self._fetch()
            return token

    def invalidate(self, token: str | None = None) -> None:
        """Forget the token, so the next request fetches a new one.

        Args:
            token: forget only if the held token is still this one (another
                thread may have renewed it already).
        """
        with self._lock:
            if token is None or token == self._token:
                self._token = None

    def _fetch(self) -> str:
        """Fetch a new token and hold it; called with the lock held."""
        envelope = with_retries(
            self._post_token,
            retry_on=(ClosumRetriableError, requests.exceptions.ConnectionError, requests.exceptions.Timeout),
            max_tries=self.connection.max_tries,
            backoff_base=self.connection.backoff_base,
            on_backoff=self._log_backoff,
        )()
        data = envelope.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("token"), str) or not data["token"]:
            msg = "POST /token answered without data.token; is api_url a Closum API?"
            raise ClosumBadResponse(msg)
        lifetime = _lifetime_seconds(data)
        token: str = data["token"]
        self._token = token
        self._renew_at = time.monotonic() + lifetime - min(MAX_RENEW_MARGIN, lifetime / 10)
        self.tokens_issued += 1
        LOGGER.debug("Closum token obtained for %s, valid %.0f s", self.connection.username, lifetime)
        return token

    def _post_token(self) -> dict[str, t.Any]:
        conn = self.connection
        headers = {"Accept": "application/json"}
        if conn.user_agent:
            headers["User-Agent"] = conn.user_agent
        response = self._session.post(
            conn.api_url + AUTH_PATH,
            json={"api_username": conn.username, "api_pw": conn.password},
            headers=headers,
            timeout=conn.timeout,
        )
        if response.status_code in {400, 401, 403}:
            msg = (
                f"Closum refused the credentials of api_username {conn.username!r} "
                f"(POST /token answered {response.status_code}); check api_username and api_pw"
            )
            raise ClosumAuthError(msg, response)
        return check_response("POST", AUTH_PATH, response)

    @staticmethod
    def _log_backoff(details: Details) -> None:
        LOGGER.warning(
            "POST /token failed (%s); retrying in %.1f s",
            details.get("exception"),
            details.get("wait", 0.0),
        )

    def _renew_on_401(self, response: requests.Response, **kwargs: t.Any) -> requests.Response:
        """Response hook: on a 401, renew the token once and resend."""
        with self._lock:
            renewed_once = response.request in self._resent
        if response.status_code != HTTPStatus.UNAUTHORIZED or renewed_once:
            return response
        sent = (response.request.headers.get("Authorization") or "").removeprefix("Bearer ")
        self.invalidate(sent)
        LOGGER.info("Closum answered 401 to %s; renewing the token once", response.request.method)
        _ = response.content  # drain, so the connection can be reused
        response.close()
        retry = response.request.copy()
        with self._lock:
            self._resent.add(retry)
        retry.headers["Authorization"] = f"Bearer {self.token()}"
        new = response.connection.send(retry, **kwargs)
        new.history.append(response)
        new.request = retry
        return new


def _lifetime_seconds(data: t.Mapping[str, t.Any]) -> float:
    """Seconds the token lives: ``expires_in``, else ``expiration_date``."""
    expires_in = data.get("expires_in")
    if isinstance(expires_in, (int, float)) and expires_in > 0:
        return float(expires_in)
    expiration = data.get("expiration_date")
    if isinstance(expiration, str):
        try:
            when = dt.datetime.fromisoformat(expiration)
        except ValueError:
            pass
        else:
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.timezone.utc)
            return max(1.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())
    return 3600.0
