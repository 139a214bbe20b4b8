"""Answers and errors in the service's envelopes, shared by the API and admin routes.

- :class:`ApiError`: raise it anywhere in a handler; the application answers it as
  ``{"success": false, "message": ..., "errors": [...]}`` with its status.
- :func:`json_response` / :func:`error_response`: JSON answers, encoded with msgspec.
- :func:`read_json` / :func:`read_object`: a request's JSON body, or a 400.
- :func:`bearer_token`: the token of a request's ``Authorization: Bearer`` header.
- :func:`positive_int`: a whole-number query parameter from 1 (``limit``, ``page``), or a 400.
- :data:`STATUS_TEXT`: the reference's one-line text for each error status.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import msgspec
from fastapi import Request
from fastapi.responses import Response

if TYPE_CHECKING:
    from collections.abc import Mapping

    from closum_api.schemas import JsonValue

_encode = msgspec.json.Encoder().encode

#: The reference's wording of each error status, for errors that carry no message of their own.
STATUS_TEXT = {
    400: "Bad Request -- Your request is invalid.",
    401: "Unauthorized -- Your Bearer Token is wrong.",
    403: "Forbidden -- You don't have permission to access this request on this server.",
    404: "Not Found -- The specified record could not be found.",
    405: "Method Not Allowed -- You tried to access with an invalid method.",
    500: "Internal Server Error -- We had a problem with our server. Try again later.",
}

NOT_AN_OBJECT = "Bad Request: the body must be a JSON object"
#: The page size of a list call without ``limit``, as the service has it.
DEFAULT_LIMIT = 25


class ApiError(Exception):
    """An error answered in the service's envelope.

    Attributes:
        status: the HTTP status.
        message: the one-line ``message`` of the envelope.
        errors: every problem found, as the envelope's ``errors`` (omitted when ``None``).
        headers: extra response headers (``WWW-Authenticate``, ...).
    """

    def __init__(
        self, status: int, message: str, errors: list[str] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        """Keep what the answer needs (see the class attributes)."""
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers


def json_response(payload: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``payload`` as a JSON response.

    Args:
        payload: anything msgspec encodes (dicts, lists, scalars).
        status: the HTTP status.
        headers: extra response headers.

    Returns:
        The response.
    """
    return Response(_encode(payload), status_code=status, media_type="application/json", headers=headers)


def error_response(
    status: int, message: str, errors: list[str] | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An error in the service's envelope: ``{"success": false, "message": ...}``.

    Args:
        status: the HTTP status.
        message: the envelope's one-line message.
        errors: every problem found, added as ``errors`` when not empty.
        headers: extra response headers.

    Returns:
        The response.
    """
    body: dict[str, Any] = {"success": False, "message": message}
    if errors:
        body["errors"] = errors
    return json_response(body, status, headers)


def bearer_token(request: Request) -> str | None:
    """The token of the request's ``Authorization: Bearer <token>`` header.

    Args:
        request: the request.

    Returns:
        The token (stripped; ``""`` for a bare ``Bearer``), or ``None`` when the header is
        missing, empty or of another scheme.
    """
    scheme, _, credentials = (request.headers.get("Authorization") or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


async def read_json(request: Request) -> JsonValue:
    """The request's body parsed as JSON.

    Args:
        request: the request.

    Returns:
        The parsed body: any JSON value.

    Raises:
        ApiError: 400 when the body is empty or not JSON.
    """
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, NOT_AN_OBJECT)
    try:
        value: JsonValue = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Bad Request: malformed JSON body ({exc})") from None
    return value


async def read_object(request: Request, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request's body, which must be a JSON object.

    Args:
        request: the request.
        allow_empty: answer ``{}`` for an empty body instead of refusing it.

    Returns:
        The parsed body.

    Raises:
        ApiError: 400 when the body is not a JSON object.
    """
    if allow_empty and not (await request.body()).strip():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, NOT_AN_OBJECT)
    return body


def positive_int(params: Mapping[str, str], name: str, default: int) -> int:
    """A whole-number query parameter from 1; ``default`` when absent.

    Raises:
        ApiError: 400, naming the parameter and what came.
    """
    raw = params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"Bad Request: query parameter {name} must be an integer, not {raw!r}") from None
    if value < 1:
        raise ApiError(400, f"Bad Request: query parameter {name} must be at least 1, not {value}")
    return value
