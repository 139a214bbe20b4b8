"""The one request path of tap and target: one session, one token, one pace, a retry budget per operation.

Every request of a run goes through :meth:`ClosumClient.send`: the tap's list
pages and retrieves, the target's creates, updates and reads. A try is: the
token (fetched within the operation's budget when needed), a place among the
``max_parallel_requests`` in flight and a send slot of the run's
:class:`~closum_api.pace.Pace`, the request (bounded as a whole by
``request_timeout``), its answer checked (:func:`~closum_api.errors.check_response`);
a 401 renews the token and resends once. A request waiting out its backoff
holds no place in flight. Reads and updates (``PUT`` is idempotent) are retried
on every transient failure (408, 429, any 5xx, a timeout, a failed connection).
A create is retried only when it surely did not happen (429, a refused
connection); when it may have happened (408, any other 5xx, a timeout, or a
connection dropped after sending or cut during the answer) the client raises
:class:`ClosumOutcomeUnknown` and leaves the decision to the caller, who checks
the server within the same budget. A 2xx that is not the envelope is never
retried: on a create it is an unknown outcome that ends the run
(``ClosumOutcomeUnknown`` with ``final`` set).

A :class:`Call` names the API it goes to (:class:`~closum_api.registry.Api`):
V1 calls go to ``api_url`` with the bearer token, V2 calls to ``api_v2_url``
with the api-key as a query parameter (:class:`~closum_api.auth.ApiKeyAuth`),
their answers read by :mod:`closum_api.v2`; pace, place in flight and retries
are the same. The key is added to the request as it is prepared, never to the
``Call``, so a request is logged and counted by its method and path alone.
"""

from __future__ import annotations

import logging
import time
import typing as t
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlencode

import requests
import urllib3

from closum_api import retry, v2
from closum_api.auth import ApiKeyAuth, ClosumTokenAuth
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
from closum_api.listing import DEFAULT_PAGE_SIZE
from closum_api.pace import DEFAULT_PARALLEL_REQUESTS, Pace
from closum_api.registry import Api
from closum_api.retry import CONNECTION_FAILURES, Budget, RetryPolicy

if t.TYPE_CHECKING:
    from closum_api.registry import Resource
    from closum_api.stop import StopEvent

LOGGER = logging.getLogger("closum_api.client")
__all__ = ["CONNECTION_FAILURES", "ClosumClient", "Connection"]


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
    """Talks to one Closum account: every request of a run goes through one client.

    Attributes:
        connection: the account and the retry settings.
        api_url: the base URL, up to and including ``/api``.
        timeout: seconds a whole request may take.
        session: the HTTP session, shared by every thread.
        auth: the token holder (V1).
        key_auth: the api-key (V2).
        stop: the run's stop event, handed to the pace, the token holder and the retry loop: every wait ends on it.
        pace: the run's request rate and its limit of requests in flight.
        policy: the retry limits of each request (V1's; each API has its own, naming its URL).
        answers: the reader of V2 answers.
    """

    def __init__(
        self,
        connection: Connection,
        *,
        stop: StopEvent,
        max_parallel: int = DEFAULT_PARALLEL_REQUESTS,
        max_rps: float | None = None,
    ) -> None:
        """Open a session; the token is fetched with the first request.

        Args:
            connection: the account and the retry settings.
            stop: the run's stop event.
            max_parallel: most requests in flight at once (``max_parallel_requests``).
            max_rps: the run's fixed pace (``max_requests_per_second``); None for the adaptive pace.
        """
        self.connection = connection
        self.api_url = connection.api_url
        self.timeout = connection.timeout
        self.stop = stop
        self.session = new_session(max_parallel)
        self.session.headers["User-Agent"] = connection.user_agent or self.session.headers["User-Agent"]
        self.pace = Pace(max_rps, stop=stop, max_in_flight=max_parallel)
        self.policy = RetryPolicy(connection.api_url, connection.max_tries, connection.backoff_base)
        self.auth = ClosumTokenAuth(connection, self.pace, self.policy, stop=stop)
        self.key_auth = ApiKeyAuth(connection)
        self.answers = v2.AnswerReader()
        self._routes = {
            Api.V1: _Route(self.api_url, self.auth, check_response, self.policy),
            Api.V2: _Route(
                connection.api_v2_url,
                self.key_auth,
                v2.check_answer,
                RetryPolicy(connection.api_v2_url, connection.max_tries, connection.backoff_base),
            ),
        }

    def close(self) -> None:
        """Close the session's connections."""
        self.session.close()

    def budget(self, api: Api = Api.V1) -> Budget:
        """A fresh retry budget, for an operation of several requests (a create and its check).

        Args:
            api: the API the operation talks to (its give-up line names that API's URL).
        """
        return self._routes[api].policy.budget()

    # -- reads ---------------------------------------------------------------
    def get(
        self, path: str, params: t.Mapping[str, t.Any] | None = None, *, budget: Budget | None = None
    ) -> dict[str, t.Any]:
        """GET with every transient failure retried.

        Args:
            path: the API path (``/lead``).
            params: the query string.
            budget: the operation's budget (a fresh one if not given).

        Returns:
            The decoded envelope.
        """
        return self.send(Call("GET", path, idempotent=True, params=params), budget=budget)

    def list_page(
        self,
        resource: Resource,
        *,
        page: int = 1,
        limit: int = DEFAULT_PAGE_SIZE,
        direction: str = "asc",
        budget: Budget | None = None,
    ) -> dict[str, t.Any]:
        """One page of a resource's list, sorted on ``id``.

        Args:
            resource: the resource to list.
            page: the page number, from 1.
            limit: records per page.
            direction: ``asc`` or ``desc``.
            budget: the operation's budget (a fresh one if not given).

        Returns:
            The decoded envelope.
        """
        params = {"limit": limit, "page": page, "sort": "id", "direction": direction}
        return self.get(resource.list_path, params, budget=budget)

    # -- writes --------------------------------------------------------------
    def create(
        self,
        resource: Resource,
        payload: t.Mapping[str, t.Any],
        *,
        budget: Budget | None = None,
    ) -> int:
        """POST a record.

        Args:
            resource: the resource to create a record of.
            payload: the request body.
            budget: the operation's budget (a fresh one if not given).

        Returns:
            The new record's id.

        Raises:
            ClosumOutcomeUnknown: the request may have created the record
                (``final`` when the answer was a 2xx that is not the envelope).
            ClosumEndpointError: the collection answered 404 or 405: there is nothing to create in.
        """
        call = Call("POST", f"/{resource.path}", idempotent=False, json=payload)
        try:
            envelope = self.send(call, budget=budget)
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

    def add(
        self,
        resource: Resource,
        payload: t.Mapping[str, t.Any],
        *,
        resend_safe: bool,
        budget: Budget | None = None,
    ) -> v2.Answer:
        """POST a record to the V2 API (``/lead/add/``) and read its answer tolerantly (:mod:`closum_api.v2`).

        Args:
            resource: a V2 resource.
            payload: the request body.
            resend_safe: sending it twice writes it once (``update_enabled``): every transient failure is
                retried; otherwise an answer lost after sending is an unknown outcome.
            budget: the operation's budget (a fresh one if not given).

        Returns:
            What the answer says (the id, if it gave one).

        Raises:
            ClosumEndpointError: the endpoint answered 404 or 405 (``api_v2_url`` is wrong).
        """
        call = Call("POST", resource.create_path, idempotent=resend_safe, json=payload, api=resource.api)
        try:
            answer = self.send(call, budget=budget)
        except ClosumFatalError as exc:
            if exc.response is None or exc.status not in ENDPOINT_MISSING or isinstance(exc, ClosumEndpointError):
                raise
            raise v2.endpoint_error(exc.response, self.connection.api_v2_url) from None
        return self.answers.read(call.what, answer)

    def update(self, resource: Resource, record_id: int, payload: t.Mapping[str, t.Any]) -> None:
        """PUT a record; idempotent, so every transient failure is retried.

        Args:
            resource: the resource the record belongs to.
            record_id: the record's id.
            payload: the request body.
        """
        self.send(Call("PUT", resource.item_path(record_id), idempotent=True, json=payload))

    # -- the one request path ------------------------------------------------
    def send(self, call: Call, *, budget: Budget | None = None) -> dict[str, t.Any]:
        """Send a request, retried within ``budget`` (a fresh one if none); the decoded envelope.

        Args:
            call: the request.
            budget: the operation's budget: the request's failed tries are counted there.

        Returns:
            The JSON envelope.

        Raises:
            ClosumOutcomeUnknown: a create may have happened.
            ClosumBadResponse: a read or update was answered 2xx without the envelope.
        """
        budget = budget if budget is not None else self.budget(call.api)
        return retry.call(lambda: self._try(call, budget), budget, call.what, _log_retry, stop=self.stop)

    def _try(self, call: Call, budget: Budget) -> dict[str, t.Any]:
        """One try: token, a place in flight and a pace slot, send, then decode the answer or raise what it means."""
        route = self._routes[call.api]
        auth = route.auth
        token = auth.token(budget)
        response = self._send_once(call, route.base, auth.sign(token))
        if response.status_code == HTTPStatus.UNAUTHORIZED:
            if not auth.renews:
                raise self.key_auth.refused(call.method, call.path, response)
            # A token revoked early: renew it and resend, once.
            LOGGER.info("Closum answered 401 to %s; renewing the token once", call.what)
            auth.invalidate(token)
            response = self._send_once(call, route.base, auth.sign(auth.token(budget)))
        try:
            return route.check(call.method, call.path, response)
        except ClosumBadResponse as exc:
            if call.idempotent:
                raise
            # A 2xx that is not the envelope (an HTML page from a proxy) may follow a
            # write that happened, and asking again will not tell: the run must stop.
            raise ClosumOutcomeUnknown(str(exc), exc.status, final=True) from None
        except ClosumRetriableError as exc:
            # A 408 or 5xx may follow a write that happened: never repeat it blindly.
            if not call.idempotent and exc.status in UNKNOWN_OUTCOME_STATUSES:
                raise ClosumOutcomeUnknown(str(exc), exc.status) from None
            raise

    def _send_once(self, call: Call, base: str, signed: tuple[dict[str, str], dict[str, str]]) -> requests.Response:
        """The bytes of one try, within the run's limit in flight and pace; the answer, not yet checked.

        ``base`` is the call's API's base URL; ``signed`` what its auth adds: query parameters (the V2 key) and
        headers (the V1 token).
        """
        params, headers = signed
        request = self.session.prepare_request(
            requests.Request(
                call.method,
                base + call.path,
                params={**(call.params or {}), **params},
                json=call.json,
                headers=headers,
            )
        )
        self.pace.acquire()
        started = time.monotonic()
        try:
            settings = self.session.merge_environment_settings(request.url, {}, None, None, None)  # proxies, CA
            response = self.session.send(request, timeout=self.timeout, **settings)
        except CONNECTION_FAILURES as exc:
            LOGGER.debug("%s: %s after %.3f s", call.what, retry.connection_reason(exc), time.monotonic() - started)
            if call.idempotent or surely_not_sent(exc):
                raise
            msg = f"{call.method} {call.path}: the connection failed after sending ({retry.connection_reason(exc)})"
            raise ClosumOutcomeUnknown(msg) from None
        finally:
            self.pace.release()
        LOGGER.debug("%s: %d in %.3f s", call.what, response.status_code, time.monotonic() - started)
        self.pace.observe(response.status_code, retry_after_seconds(response))
        return response


@dataclass(frozen=True)
class _Route:
    """Where the calls of one API go and how: its base URL, its auth, the check of its answers, its retry limits."""

    base: str
    auth: ClosumTokenAuth | ApiKeyAuth
    check: t.Callable[[str, str, requests.Response], dict[str, t.Any]]
    policy: RetryPolicy


@dataclass(frozen=True)
class Call:
    """One request to send.

    Attributes:
        method: the HTTP verb.
        path: the API path (``/lead``).
        idempotent: whether repeating it is harmless (everything but a create).
        params: the query string (never a credential: the auth adds it as the request is prepared).
        json: the request body.
        api: the API it goes to.
    """

    method: str
    path: str
    idempotent: bool
    params: t.Mapping[str, t.Any] | None = None
    json: t.Mapping[str, t.Any] | None = None
    api: Api = Api.V1

    @property
    def what(self) -> str:
        """``GET /lead?page=2``: the request, for the logs and for counting its tries."""
        page = (self.params or {}).get("page")
        return f"{self.method} {self.path}" + (f"?{urlencode({'page': page})}" if page is not None else "")


def _log_retry(wait: float, tries: int, exc: BaseException) -> None:
    LOGGER.warning("Retrying in %.1f s after try %d: %s", wait, tries, retry.failure_reason(exc))
