"""Where one Closum account is and how patiently to talk to it."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_API_URL = "https://api.closum.com/api"


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
