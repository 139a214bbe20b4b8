"""Where one Closum account is, how patiently to talk to it, and the HTTP session that does."""

from __future__ import annotations

import sys
import typing as t
from dataclasses import dataclass, field

import requests
from requests.adapters import HTTPAdapter

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_API_URL = "https://api.closum.com/api"
#: seconds a try waits for the connection to be set up (at most ``request_timeout``): a host that
#: drops packets (a firewall, a wrong address) fails a try in seconds, not after ``request_timeout``
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Connection:
    """Everything the token auth and the client need to reach an account.

    Attributes:
        api_url: base URL up to and including ``/api``.
        username: the account's ``api_username``.
        password: the account's ``api_pw``; kept out of ``repr``.
        timeout: seconds to wait for each answer.
        max_tries: attempts per request on transient failures (1 = no retry).
        backoff_base: first wait between attempts, in seconds (doubles).
        user_agent: the User-Agent header, if any.
    """

    api_url: str
    username: str
    password: str = field(repr=False)
    timeout: float = 60.0
    max_tries: int = 6
    backoff_base: float = 1.0
    user_agent: str | None = None

    def __post_init__(self) -> None:
        """Normalise: no trailing slash on ``api_url``, at least one try."""
        object.__setattr__(self, "api_url", self.api_url.rstrip("/"))
        object.__setattr__(self, "max_tries", max(1, self.max_tries))


class TimeoutAdapter(HTTPAdapter):
    """Splits a request's timeout: connecting gives up after :data:`CONNECT_TIMEOUT`, the answer gets the rest."""

    @override
    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send as requests does (same parameters), a single number of seconds becoming ``(connect, read)``."""
        if isinstance(timeout, (int, float)):
            timeout = (min(CONNECT_TIMEOUT, timeout), timeout)
        return super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)


def new_session(pool_size: int = 8) -> requests.Session:
    """A session whose connection pool holds ``pool_size`` connections per host.

    Args:
        pool_size: connections kept open per host, at least 1.

    Returns:
        The session; it never retries on its own, asks for JSON, and gives up
        connecting after :data:`CONNECT_TIMEOUT` seconds.
    """
    session = requests.Session()
    adapter = TimeoutAdapter(pool_connections=4, pool_maxsize=max(1, pool_size), max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.headers.update({"Accept": "application/json"})
    return session
