"""Decode Closum responses and classify what went wrong.

One place decides, for the tap and the target alike, which answers are worth
another try, which are final, and what one line tells the user about them.
The body of a Closum error is undocumented: JSON with ``success: false``, an
HTML page from a proxy or an empty body are all expected and never crash us.
"""

from __future__ import annotations

import email.utils
import html
import json
import re
import time
import typing as t
from http import HTTPStatus
from urllib.parse import urlsplit

import msgspec
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from closum_api.redact import scrub

if t.TYPE_CHECKING:
    import requests

# 429 is not documented; services of this kind send it with Retry-After and
# the notes say to treat it like 503. Any 5xx (a CDN's 520-524, a 505 or 507)
# and a 408 are worth another try.
RETRIABLE_STATUSES = frozenset({408, 429, *range(500, 600)})
# Answers after which a write may or may not have happened: all of them but a
# 429 (refused before anything was done). A CDN's 524 may follow an origin that
# wrote, and even a 503 may come from a proxy in front of one that did.
UNKNOWN_OUTCOME_STATUSES = RETRIABLE_STATUSES - {429}
MAX_MESSAGE = 300
# The end of the line for a 2xx that is not JSON: something else answers at api_url.
NOT_CLOSUM = " — is api_url a Closum API?"


class ClosumError(Exception):
    """Base of every error raised by the Closum connectors."""


class ClosumSettingsError(ClosumError):
    """A setting, a stream's mapping, a file named on the command line, or the input cannot be used as given."""


class ClosumRetriableError(RetriableAPIError, ClosumError):
    """A transient failure: the same request may succeed later.

    Attributes:
        status: the HTTP status of the answer, if there was one.
        retry_after: the seconds its ``Retry-After`` header asked to wait, if any.
    """

    def __init__(self, msg: str, response: requests.Response | None = None) -> None:
        """Keep the answer's status and ``Retry-After``.

        Args:
            msg: one line for the user.
            response: the answer, if the server sent one.
        """
        super().__init__(msg, response)
        self.status = response.status_code if response is not None else None
        self.retry_after = retry_after_seconds(response) if response is not None else None


class ClosumFatalError(FatalAPIError, ClosumError):
    """A failure that repeating the request will not mend.

    Attributes:
        response: the answer, if the server sent one.
        status: its HTTP status.
        server_message: what the server said, as one short line.
    """

    def __init__(self, msg: str, response: requests.Response | None = None) -> None:
        """Keep the answer, its status and the server's message.

        Args:
            msg: one line for the user.
            response: the answer, if the server sent one.
        """
        super().__init__(msg)
        self.response = response
        self.status = response.status_code if response is not None else None
        self.server_message = server_message(response) if response is not None else None


class ClosumAuthError(ClosumFatalError):
    """Closum refused the credentials or the token."""


class ClosumNotFoundError(ClosumFatalError):
    """404: the record, or the whole endpoint (other API revision), is absent."""


class ClosumEndpointError(ClosumFatalError):
    """A 404 or 405 where an endpoint must be: the token endpoint, or a resource's collection on a write.

    Never a record refused: the endpoint itself is not there (``api_url`` wrong,
    or the account serves the other API revision), so every request of the run
    would fail alike. It ends the run with one line naming the URL tried and the
    likely fix.
    """

    @classmethod
    def for_token(cls, url: str, api_url: str, response: requests.Response) -> ClosumEndpointError:
        """``POST /token`` answered 404/405: nothing at ``api_url`` trades credentials for a token.

        Args:
            url: the URL tried.
            api_url: the ``api_url`` setting.
            response: the answer.

        Returns:
            The error, its line naming the URL and the fix.
        """
        hint = api_url_hint(api_url)
        msg = f"POST {shown_url(url)} answered {status_text(response)}: no Closum token endpoint there; {hint}"
        return cls(msg, response)

    @classmethod
    def for_write(cls, response: requests.Response, api_url: str) -> ClosumEndpointError:
        """A write to a resource's collection answered 404/405 (after a token was issued).

        Args:
            response: the answer (its request says which method and URL).
            api_url: the ``api_url`` setting.

        Returns:
            The error, its line naming the URL and the fix.
        """
        method, url = response.request.method, response.url
        hint = api_url_hint(api_url, resource_level=True)
        msg = f"{method} {shown_url(url)} answered {status_text(response)}: no such endpoint in this Closum API; {hint}"
        return cls(msg, response)


#: statuses that, where an endpoint must be, say it is not there
ENDPOINT_MISSING = frozenset({HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED})


def shown_url(url: str) -> str:
    """A URL as a message shows it: scheme, host and path; no user, password or query.

    Args:
        url: any URL.

    Returns:
        ``https://host/path``.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{parts.scheme}://{netloc}{parts.path}"


def status_text(response: requests.Response) -> str:
    """``404 Not Found``: an answer's status and its phrase."""
    try:
        return f"{response.status_code} {HTTPStatus(response.status_code).phrase}"
    except ValueError:
        return str(response.status_code)


def api_url_hint(api_url: str, *, resource_level: bool = False) -> str:
    """What to fix when an endpoint is missing under ``api_url``, in words.

    Args:
        api_url: the ``api_url`` setting.
        resource_level: the token endpoint answered (so ``api_url`` reaches a Closum API):
            a missing resource is more likely the other API revision.

    Returns:
        The advice: ``api_url`` must end with ``/api`` (with the URL to try), or what else to check.
    """
    base = shown_url(api_url).rstrip("/")
    path = urlsplit(base).path
    if not path.endswith("/api"):
        head, found, _ = base.rpartition("/api/")
        suggestion = head + "/api" if found else base + "/api"
        return f"api_url must end with /api (try {suggestion})"
    if resource_level:
        return (
            "this account serves the other Closum API revision, or api_url is not its base URL: "
            "map the stream to a resource the account has (resource_map), or check api_url"
        )
    return "check api_url: it must be the base URL of the Closum API, such as https://api.closum.com/api"


class ClosumBadResponse(ClosumError):  # noqa: N818  # public name used by the tap, the target and tests
    """A 2xx answer that is not the documented envelope (HTML, bad JSON, no data).

    It can never succeed on retry (a proxy, a maintenance page, a URL that is
    not a Closum API): it is fatal at once, and its one line names the
    endpoint and what came back.

    Attributes:
        status: the HTTP status of the answer, if there was one.
    """

    def __init__(self, msg: str, response: requests.Response | None = None) -> None:
        """Keep the answer's status.

        Args:
            msg: one line for the user.
            response: the answer, if there was one.
        """
        super().__init__(msg)
        self.status = response.status_code if response is not None else None


class ClosumOutcomeUnknown(ClosumError):  # noqa: N818  # public name used by the target and tests
    """A write was sent but its answer was lost: it may or may not have happened.

    Attributes:
        status: the HTTP status of the answer, if one came back.
        final: the answer was a 2xx that is not the envelope: checking the
            server will not settle it (something else answers at api_url), so
            the run ends and the intent stays pending for the next run.
    """

    def __init__(self, msg: str, status: int | None = None, *, final: bool = False) -> None:
        """Keep the status, if any.

        Args:
            msg: one line for the user.
            status: the HTTP status of the answer, if one came back.
            final: the run cannot settle it now (see the class).
        """
        super().__init__(msg)
        self.status = status
        self.final = final


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_TAGS = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def one_line(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line, its white space folded, cut to ``limit`` characters with an ellipsis.

    Args:
        text: any text.
        limit: the most characters kept.

    Returns:
        The line.
    """
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def server_message(response: requests.Response) -> str:
    """What the server said, as one short line, whatever shape its body has; secrets masked (:mod:`.redact`)."""
    return scrub(_said(response))


def _said(response: requests.Response) -> str:
    body = response.content or b""
    if not body.strip():
        return "(empty body)"
    try:
        payload = response.json()
    except ValueError:
        text = response.text
        if "<html" in text[:500].lower() or "<!doctype" in text[:500].lower():
            title = _TITLE.search(text)
            shown = html.unescape(title.group(1)) if title else _TAGS.sub(" ", text)
            return one_line(f"an HTML page, not JSON: {shown}")
        return one_line(f"not JSON: {text}")
    if isinstance(payload, dict):
        for key in ("message", "error", "errors"):
            value = payload.get(key)
            if isinstance(value, str) and value:
                return one_line(value)
        data = payload.get("data")
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            return one_line(data["message"])
    return one_line(json.dumps(payload, ensure_ascii=False))


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """The wait a ``Retry-After`` header asks for, in seconds, if any."""
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def answer_line(method: str, path: str, response: requests.Response) -> str:
    """``GET /lead answered 400 Bad Request: <server message>``."""
    try:
        reason = HTTPStatus(response.status_code).phrase
    except ValueError:
        reason = response.reason or ""
    return f"{method} {path} answered {response.status_code} {reason}: {server_message(response)}"


def raise_for_status(method: str, path: str, response: requests.Response) -> None:
    """Raise the error a failed answer's status means (retriable, credentials refused, not found, refused).

    Args:
        method: the HTTP verb, for the message.
        path: the API path (``/lead``), for the message; never a full URL.
        response: the answer.
    """
    status = response.status_code
    if status in RETRIABLE_STATUSES:
        raise ClosumRetriableError(answer_line(method, path, response), response)
    if status == HTTPStatus.UNAUTHORIZED:
        msg = f"Closum refused the credentials ({answer_line(method, path, response)}); check api_username and api_pw"
        raise ClosumAuthError(msg, response)
    if status == HTTPStatus.NOT_FOUND:
        raise ClosumNotFoundError(answer_line(method, path, response), response)
    if status >= HTTPStatus.BAD_REQUEST:
        raise ClosumFatalError(answer_line(method, path, response), response)


def answer_object(method: str, path: str, response: requests.Response, hint: str) -> dict[str, t.Any]:
    """A 2xx answer's JSON object, or :class:`ClosumBadResponse` naming what came instead.

    Args:
        method: the HTTP verb, for the message.
        path: the API path, for the message.
        response: the answer.
        hint: what the message adds when the answer is not JSON (the URL setting to check).

    Returns:
        The decoded object.
    """
    status = response.status_code
    try:
        answer = _decode(response.content or b"")
    except msgspec.DecodeError:
        msg = f"{method} {path} answered {status} with {server_message(response)}{hint}"
        raise ClosumBadResponse(msg, response) from None
    if not isinstance(answer, dict):
        msg = f"{method} {path} answered {status} with JSON that is not an object: {scrub(one_line(str(answer)))}"
        raise ClosumBadResponse(msg, response)
    return answer


def check_response(method: str, path: str, response: requests.Response) -> dict[str, t.Any]:
    """Raise the right error for a failed answer; return the decoded envelope.

    Args:
        method: the HTTP verb, for the message.
        path: the API path (``/lead``), for the message; never a full URL.
        response: the answer.

    Returns:
        The JSON envelope, with ``success`` true and a ``data`` key.
    """
    raise_for_status(method, path, response)
    status = response.status_code
    envelope = answer_object(method, path, response, NOT_CLOSUM)
    if envelope.get("success") is False:
        msg = f"{method} {path} answered {status} with success=false: {server_message(response)}"
        raise ClosumFatalError(msg, response)
    if "data" not in envelope:
        msg = f"{method} {path} answered {status} without a 'data' key: {server_message(response)}"
        raise ClosumBadResponse(msg, response)
    return envelope


_decode = msgspec.json.Decoder().decode
