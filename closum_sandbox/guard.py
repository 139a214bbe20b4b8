"""What keeps a sandbox safe to leave running: a body-size limit, the admin token, the loopback check.

- :class:`BodyLimitMiddleware`: a request whose body is larger than
  ``max_body_bytes`` is answered 413 in the API's envelope, on every route
  (``/api/token`` included): at once when its ``Content-Length`` says so,
  before the body is read; as soon as the count passes the limit when the body
  is streamed without one.
- :func:`require_admin_token`: with ``admin_token`` set, every ``/_admin``
  route but ``/_admin/health`` wants ``Authorization: Bearer <token>`` or
  ``X-Admin-Token: <token>``.
- :func:`is_loopback`: whether an address to listen on is reachable only from
  this machine (``closum-sandbox serve`` warns when it is not).
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import TYPE_CHECKING

from fastapi import Request

from closum_sandbox.responses import ApiError, bearer_token, error_response
from closum_sandbox.state import sandbox_of

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The header that may carry the admin token instead of ``Authorization: Bearer``.
ADMIN_HEADER = "X-Admin-Token"
#: The admin route that stays open: readiness probes and the test servers poll it.
OPEN_ADMIN_PATHS = frozenset({"/_admin/health"})


def too_large(limit: int) -> str:
    """The 413 message."""
    return f"Payload Too Large: the request body is larger than {limit} bytes (--max-body-bytes)"


class BodyLimitMiddleware:
    """Answer 413 to a request whose body is larger than ``limit`` bytes."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        """Wrap ``app``.

        Args:
            app: the application.
            limit: the largest body accepted, in bytes.
        """
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check ``Content-Length`` first, then count what is received."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            text = declared.decode("latin-1").strip()
            if not text.isdigit():
                await error_response(400, "Bad Request: Content-Length is not a number")(scope, receive, send)
                return
            if int(text) > self.limit:
                await error_response(413, too_large(self.limit))(scope, receive, send)
                return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise ApiError(413, too_large(self.limit))
            return message

        await self.app(scope, counting_receive, send)


def require_admin_token(request: Request) -> None:
    """A route dependency of ``/_admin``: with ``admin_token`` set, the request must carry it.

    Args:
        request: the admin request.

    Raises:
        ApiError: 401 without the right token.
    """
    token = sandbox_of(request).settings.admin_token
    if not token or request.url.path in OPEN_ADMIN_PATHS:
        return
    given = request.headers.get(ADMIN_HEADER)
    if given is None:
        given = bearer_token(request)
    if given is None or not secrets.compare_digest(given.encode(), token.encode()):
        raise ApiError(
            401,
            f"Unauthorized: the admin routes of this sandbox need its admin token "
            f"(Authorization: Bearer <token> or {ADMIN_HEADER}: <token>)",
            headers={"WWW-Authenticate": "Bearer"},
        )


def is_loopback(host: str) -> bool:
    """Whether listening on ``host`` keeps the server reachable from this machine only.

    Args:
        host: the address or host name to listen on.

    Returns:
        True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1).
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False
