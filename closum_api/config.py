"""Settings that the tap and the target share: where Closum is and how to talk to it."""

from __future__ import annotations

import typing as t

from singer_sdk import typing as th

from closum_api.client import ClosumClient
from closum_api.connection import DEFAULT_API_URL, Connection


def connection_properties() -> list[th.Property]:
    """The connection settings, in the order the README's tables list them."""
    return [
        th.Property(
            "api_username",
            th.StringType(min_length=1),
            required=True,
            title="API username",
            description="Your Closum api_username (account details page in Closum).",
        ),
        th.Property(
            "api_pw",
            th.StringType(min_length=1),
            required=True,
            secret=True,
            title="API password",
            description="Your Closum api_pw. Secret: never logged.",
        ),
        th.Property(
            "api_url",
            th.StringType(pattern=r"^https?://[^\s/]+(/[^\s]*)?$"),
            default=DEFAULT_API_URL,
            title="API base URL",
            description="Base URL of the Closum API, up to and including /api. "
            "Point it at `closum-sandbox` (http://127.0.0.1:8080/api) to try things out.",
        ),
        th.Property(
            "max_parallel_requests",
            th.IntegerType(minimum=1, maximum=64),
            default=8,
            title="Parallel requests",
            description="Most requests in flight at once.",
        ),
        th.Property(
            "request_timeout",
            th.NumberType(minimum=1),
            default=60,
            title="Request timeout",
            description="Seconds to wait for each answer before treating it as failed.",
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0, maximum=20),
            default=5,
            title="Max retries",
            description="Retries of a request after a transient failure "
            "(429, 5xx, timeout, dropped connection), with exponential backoff "
            "and jitter, honouring Retry-After.",
        ),
        th.Property(
            "backoff_base_seconds",
            th.NumberType(minimum=0),
            default=1.0,
            title="Backoff base",
            description="Wait before the first retry, in seconds; it doubles with each retry.",
        ),
        th.Property(
            "user_agent",
            th.StringType,
            title="User agent",
            description="User-Agent header sent with every request.",
        ),
    ]


def client_from_config(config: t.Mapping[str, t.Any], *, user_agent: str) -> ClosumClient:
    """A :class:`ClosumClient` built from tap or target settings."""
    connection = Connection(
        api_url=str(config.get("api_url") or DEFAULT_API_URL),
        username=str(config["api_username"]),
        password=str(config["api_pw"]),
        timeout=float(config.get("request_timeout", 60)),
        max_tries=int(config.get("max_retries", 5)) + 1,
        backoff_base=float(config.get("backoff_base_seconds", 1.0)),
        user_agent=str(config.get("user_agent") or user_agent),
    )
    return ClosumClient(connection, pool_size=int(config.get("max_parallel_requests", 8)))
