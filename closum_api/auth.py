"""How a request proves who sends it: a bearer token (V1 API) or the api-key (V2 API).

``POST /token`` trades ``api_username``/``api_pw`` for a token with a lifetime.
:class:`ClosumTokenAuth` holds one token and renews it shortly before it
expires; the client asks it for the token before each try, and after a 401 (a
token revoked early) forgets it and asks again (:meth:`ClosumTokenAuth.invalidate`).
It is safe to share between threads, so one token serves every stream of a run.

A token fetch takes its tries from the budget of the operation that needs the
token (passed to :meth:`ClosumTokenAuth.token`), never a budget of its own on
top, and its ``POST /token`` goes through the run's pace like every other
request (but holds no place in flight: a request that renews the token after a
401 holds one already). An answer that can never succeed (credentials refused,
a 200 that is not the envelope, no token endpoint at all: a 404 or 405,
``api_url`` is wrong) is kept: every later request fails with the same line at once.

:class:`ApiKeyAuth` is the V2 API's: the key travels as the ``api-key`` query
parameter of every request (:meth:`ApiKeyAuth.sign`), nothing is fetched or
renewed, and a 401 means the key is refused (:meth:`ApiKeyAuth.refused`). The
key is remembered by :mod:`closum_api.redact`, so no message or log line shows it.
Both auths offer the client the same four steps: ``token`` (the credential of a
try), ``sign`` (where it travels), ``renews`` (a 401 renews it and resends once)
and ``invalidate``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import threading
import time
import typing as t

from closum_api import redact, retry
from closum_api.connection import new_session
from closum_api.errors import (
    ENDPOINT_MISSING,
    ClosumAuthError,
    ClosumBadResponse,
    ClosumEndpointError,
    ClosumError,
    answer_line,
    check_response,
    retry_after_seconds,
)

if t.TYPE_CHECKING:
    import requests

    from closum_api.connection import Connection
    from closum_api.pace import Pace
    from closum_api.stop import StopEvent

LOGGER = logging.getLogger("closum_api.auth")
#: the endpoint that trades the credentials for a token
AUTH_PATH = "/token"
# Renew this long before expiry: a tenth of the lifetime, at most a minute.
MAX_RENEW_MARGIN = 60.0


class ClosumTokenAuth:
    """Holds a Closum bearer token and renews it on demand (the V1 API).

    Attributes:
        connection: the account.
        tokens_issued: tokens fetched so far.
        renews: a 401 renews the token and the request is sent once more.
    """

    renews = True

    def __init__(
        self,
        connection: Connection,
        pace: Pace | None = None,
        policy: retry.RetryPolicy | None = None,
        *,
        stop: StopEvent,
    ) -> None:
        """Hold no token yet: the first request fetches one.

        Args:
            connection: the account; its password is never logged or shown.
            pace: the run's request rate, which ``POST /token`` follows too.
            policy: the retry limits (the client's); from ``connection`` when not given.
            stop: the run's stop event: a wait between two tries of ``POST /token`` ends on it.
        """
        self.connection = connection
        self.pace = pace
        self.stop = stop
        self.policy = policy or retry.RetryPolicy(connection.api_url, connection.max_tries, connection.backoff_base)
        self._fatal: ClosumError | None = None
        self._last_failure: ClosumError | None = None
        self._fetches = 0
        # A session of its own: a shared one may carry this very auth object.
        self._session = new_session(1)
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self.tokens_issued = 0

    def __repr__(self) -> str:
        """Where and who, never the password or the token."""
        return f"ClosumTokenAuth(api_url={self.connection.api_url!r}, username={self.connection.username!r})"

    def token(self, budget: retry.Budget | None = None) -> str:
        """The current token, fetched or renewed first when needed.

        Args:
            budget: the budget of the operation that needs the token (a fresh one if not given).

        Returns:
            The bearer token.
        """
        seen = self._fetches
        with self._lock:
            token = self._token
            if token is None or time.monotonic() >= self._renew_at:
                if self._fetches != seen and self._last_failure is not None:
                    # A fetch ran and failed while this thread waited: its budget is
                    # spent for everyone, no second round of tries on top.
                    raise self._last_failure
                token = self._fetch_counted(budget or self.policy.budget())
            return token

    @staticmethod
    def sign(token: str) -> tuple[dict[str, str], dict[str, str]]:
        """Where the token travels: the query parameters and headers of a request (``Authorization: Bearer``)."""
        return {}, {"Authorization": f"Bearer {token}"}

    def prefetch(self) -> None:
        """Fetch the token ahead of the first request, with one try; a failure is left for that request."""
        once = dataclasses.replace(self.policy, max_tries=1).budget()
        with self._lock, contextlib.suppress(Exception):
            if self._token is None:
                self._fetch(once)

    def _fetch_counted(self, budget: retry.Budget) -> str:
        """:meth:`_fetch`, remembering its failure for the threads that waited on it."""
        try:
            token = self._fetch(budget)
        except ClosumError as exc:
            self._last_failure = exc
            raise
        else:
            self._last_failure = None
            return token
        finally:
            self._fetches += 1

    def invalidate(self, token: str | None = None) -> None:
        """Forget the token, so the next request fetches a new one.

        Args:
            token: forget only if the held token is still this one (another
                thread may have renewed it already).
        """
        with self._lock:
            if token is None or token == self._token:
                self._token = None

    def _fetch(self, budget: retry.Budget) -> str:
        """Fetch a new token and hold it; called with the lock held."""
        if self._fatal is not None:
            raise self._fatal
        if not self.connection.has_v1_credentials:
            msg = (
                "this needs Closum's V1 API, which takes api_username and api_pw; only api_key is set, and it "
                "reaches the V2 API only (resource contact): set api_username and api_pw too"
            )
            self._fatal = ClosumAuthError(msg)
            raise self._fatal
        try:
            envelope = retry.call(self._post_token, budget, f"POST {AUTH_PATH}", _log_retry, stop=self.stop)
        except (ClosumAuthError, ClosumBadResponse, ClosumEndpointError) as exc:
            self._fatal = exc  # it will never work: every request gets this line at once
            raise
        data = envelope.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("token"), str) or not data["token"]:
            msg = "POST /token answered without data.token — is api_url a Closum API?"
            self._fatal = ClosumBadResponse(msg)
            raise self._fatal
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
        if self.pace is not None:
            self.pace.acquire(windowed=False)
        response = self._session.post(
            conn.api_url + AUTH_PATH,
            json={"api_username": conn.username, "api_pw": conn.password},
            headers=headers,
            timeout=conn.timeout,
        )
        if self.pace is not None:
            self.pace.observe(response.status_code, retry_after_seconds(response))
        if response.status_code in {400, 401, 403}:
            msg = (
                f"Closum refused the credentials of api_username {conn.username!r} "
                f"(POST /token answered {response.status_code}); check api_username and api_pw"
            )
            raise ClosumAuthError(msg, response)
        if response.status_code in ENDPOINT_MISSING:
            raise ClosumEndpointError.for_token(conn.api_url + AUTH_PATH, conn.api_url, response)
        return check_response("POST", AUTH_PATH, response)


class ApiKeyAuth:
    """The V2 API's api-key: the ``api-key`` query parameter of every request; nothing to fetch or renew.

    Attributes:
        connection: the account.
        renews: False: a refused key stays refused.
    """

    renews = False

    def __init__(self, connection: Connection) -> None:
        """Hold the connection's key; remember it as a secret and guard the logs (:mod:`closum_api.redact`).

        Args:
            connection: the account; its ``api_key`` is never logged or shown.
        """
        self.connection = connection
        if connection.api_key:
            redact.remember(connection.api_key)
            redact.guard_logs()

    def __repr__(self) -> str:
        """Where, never the key."""
        return f"ApiKeyAuth(api_v2_url={self.connection.api_v2_url!r})"

    def token(self, budget: retry.Budget | None = None) -> str:
        """The key.

        Args:
            budget: unused: nothing is fetched.

        Returns:
            The api-key.

        Raises:
            ClosumAuthError: no ``api_key`` is set.
        """
        _ = budget
        if not self.connection.api_key:
            msg = (
                "this needs Closum's V2 API, which takes an api_key "
                "(created in Closum: Settings → Integrations → API Keys); set api_key"
            )
            raise ClosumAuthError(msg)
        return self.connection.api_key

    @staticmethod
    def sign(token: str) -> tuple[dict[str, str], dict[str, str]]:
        """Where the key travels: the ``api-key`` query parameter."""
        return {redact.KEY_PARAM: token}, {}

    def invalidate(self, token: str | None = None) -> None:
        """Nothing to forget: a key is not renewed."""

    @staticmethod
    def refused(method: str, path: str, response: requests.Response) -> ClosumAuthError:
        """The error of a 401: Closum refused the key.

        Args:
            method: the request's verb.
            path: its path below ``api_v2_url``.
            response: the answer.

        Returns:
            The error, its line saying what to check.
        """
        msg = f"Closum refused the api_key ({answer_line(method, path, response)}); check api_key and api_v2_url"
        return ClosumAuthError(msg, response)


def _log_retry(wait: float, _tries: int, exc: BaseException) -> None:
    LOGGER.warning("POST %s failed (%s); retrying in %.1f s", AUTH_PATH, retry.failure_reason(exc), wait)


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
