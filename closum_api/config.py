"""Settings that the tap and the target share: where Closum is and how to talk to it."""

from __future__ import annotations

import difflib
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

from singer_sdk import typing as th

from closum_api.client import ClosumClient
from closum_api.connection import DEFAULT_API_URL, Connection
from closum_api.pace import DEFAULT_PARALLEL_REQUESTS, Pace

if t.TYPE_CHECKING:
    from singer_sdk.plugin_base import PluginBase


def connection_properties() -> list[th.Property]:
    """The connection settings, in the order the README's tables list them.

    Returns:
        The ``th.Property`` definitions the tap and the target both declare.
    """
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
            th.StringType,
            default=DEFAULT_API_URL,
            title="API base URL",
            description="Base URL of the Closum API, up to and including /api. "
            "Point it at `closum-sandbox` (http://127.0.0.1:8080/api) to try things out.",
        ),
        th.Property(
            "max_parallel_requests",
            th.IntegerType(minimum=1, maximum=64),
            default=DEFAULT_PARALLEL_REQUESTS,
            title="Parallel requests",
            description="Most requests in flight at once, for the whole run (list pages, retrieves, "
            "writes, token requests aside). A request waiting out its backoff holds no place.",
        ),
        th.Property(
            "request_timeout",
            th.NumberType(minimum=1),
            default=60,  # whole seconds, as the settings tables and --about show it
            title="Request timeout",
            description="Seconds a whole request may take, its answer read to the end (however slowly a "
            "server trickles it), before the try counts as failed. Setting up the connection gives up sooner, "
            "after 10 s (a host that never answers fails a try in seconds).",
        ),
        th.Property(
            "max_retries",
            th.IntegerType(minimum=0, maximum=20),
            default=5,
            title="Max retries",
            description="Retries of a request after a transient failure "
            "(408, 429, any 5xx, timeout, dropped connection), with exponential backoff "
            "and jitter, honouring Retry-After: a request gives up after max_retries + 1 failed tries in a row, "
            "an answer starts its count over. The token request it needs and, for a create, the check after a "
            "lost answer draw from the same budget, never one of their own.",
        ),
        th.Property(
            "backoff_base_seconds",
            th.NumberType(minimum=0),
            default=1.0,
            title="Backoff base",
            description="The step of the backoff, in seconds: the first retry of a request waits between half of "
            "it and all of it, and the step doubles with each retry of the same request (at most 60 s).",
        ),
        th.Property(
            "max_requests_per_second",
            th.NumberType(exclusive_minimum=0),
            title="Max requests per second",
            description="Pace every request of the run (token requests included, whatever "
            "max_parallel_requests is) to at most this many per second; set it to the account's quota. "
            "Unset: the pace adapts, unpaced until Closum answers 429, then just under the rate it allowed; "
            "such a run ends with a warning naming the value to set here.",
        ),
        th.Property(
            "user_agent",
            th.StringType,
            title="User agent",
            description="User-Agent header sent with every request.",
        ),
    ]


def schema_values(config: t.Mapping[str, t.Any], properties: t.Iterable[th.Property]) -> dict[str, t.Any]:
    """A config as its settings' schema fills it: a setting absent or null takes its property's default.

    The SDK fills the defaults in when it validates a config (but a setting set
    to null stays null there); settings parsed from a config it did not validate
    (tests, tools) get the same values. So a default is written once, in its
    ``th.Property``.

    Args:
        config: the plugin's config.
        properties: the settings' definitions.

    Returns:
        The settings by name: those set, and the defaults of the others.
    """
    values = {p.name: p.default for p in properties if p.default is not None}
    values.update((name, value) for name, value in config.items() if value is not None)
    return values


def setting_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    """What the settings' JSON Schema cannot say in words, each problem named by its setting.

    Args:
        config: the tap's or the target's config.

    Returns:
        One message per shared setting that cannot be used.
    """
    errors = []
    api_url = config.get("api_url")
    if isinstance(api_url, str) and api_url:
        problem = url_problem(api_url)
        if problem:
            errors.append(f"api_url: {api_url!r} {problem}, such as {DEFAULT_API_URL}")
    return errors


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be an API base URL, in words; None when it can.

    Args:
        url: the value of ``api_url``.

    Returns:
        The reason, or None.
    """
    if any(ch.isspace() for ch in url):
        return "holds white space; it must be a URL"
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        return "has no http:// or https:// in front; it must be a full URL"
    if not parts.hostname:
        return "names no host; it must be a full URL"
    return None


def unknown_settings(config: t.Mapping[str, t.Any], known: t.Iterable[str]) -> str | None:
    """One warning naming the settings no one reads (a typo does nothing), each with the closest known name.

    Args:
        config: the plugin's config.
        known: every setting the plugin (and the SDK under it) reads.

    Returns:
        The warning, or None when every setting is known.
    """
    names = sorted(set(known))
    unknown = sorted(set(config) - set(names))
    if not unknown:
        return None
    shown = []
    for name in unknown:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        shown.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return f"unknown settings, ignored: {', '.join(shown)}"


def warn_unknown_settings(plugin: PluginBase) -> None:
    """Log :func:`unknown_settings`' warning for a plugin's config, if any (the SDK's settings count as known).

    Args:
        plugin: the tap or the target, its settings validated (its schema holds the SDK's settings too).
    """
    warning = unknown_settings(plugin.config, plugin.config_jsonschema.get("properties", {}))
    if warning:
        plugin.logger.warning(warning)


@dataclass(frozen=True)
class SharedSettings:
    """The settings the tap and the target share, parsed once, defaults applied.

    Attributes:
        connection: the account and how patiently to talk to it.
        max_parallel_requests: most requests in flight at once.
        max_retries: retries after a transient failure (``connection.max_tries`` - 1).
        max_requests_per_second: the fixed pace of the run; None for the adaptive pace.
    """

    connection: Connection
    max_parallel_requests: int
    max_retries: int
    max_requests_per_second: float | None = None

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any], *, user_agent: str) -> SharedSettings:
        """Parse the shared settings of a tap or target config.

        Args:
            config: the plugin's config (``api_username`` and ``api_pw`` required).
            user_agent: the User-Agent to send when ``user_agent`` is not set.

        Returns:
            The parsed settings.
        """
        values = schema_values(config, connection_properties())
        max_retries = int(values["max_retries"])
        connection = Connection(
            api_url=str(values["api_url"]),
            username=str(config["api_username"]),
            password=str(config["api_pw"]),
            timeout=float(values["request_timeout"]),
            max_tries=max_retries + 1,
            backoff_base=float(values["backoff_base_seconds"]),
            user_agent=str(values.get("user_agent") or user_agent),
        )
        rate = values.get("max_requests_per_second")
        return cls(
            connection=connection,
            max_parallel_requests=int(values["max_parallel_requests"]),
            max_retries=max_retries,
            max_requests_per_second=None if rate is None else float(rate),
        )

    def client(self) -> ClosumClient:
        """A client for these settings, with the run's one pace.

        Returns:
            A :class:`ClosumClient` whose pool holds ``max_parallel_requests`` connections.
        """
        pace = Pace(self.max_requests_per_second, max_in_flight=self.max_parallel_requests)
        return ClosumClient(self.connection, max_parallel=self.max_parallel_requests, pace=pace)
