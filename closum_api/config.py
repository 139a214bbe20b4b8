"""Settings that the tap and the target share: where Closum is and how to talk to it."""

from __future__ import annotations

import difflib
import typing as t
from dataclasses import dataclass
from urllib.parse import urlsplit

from singer_sdk import typing as th

from closum_api.client import ClosumClient
from closum_api.connection import DEFAULT_API_URL, DEFAULT_API_V2_URL, Connection
from closum_api.pace import DEFAULT_PARALLEL_REQUESTS
from closum_api.redact import scrub

if t.TYPE_CHECKING:
    from singer_sdk.plugin_base import PluginBase

    from closum_api.stop import StopEvent

#: The V1 API's credentials (a bearer token is traded for them) and the V2 API's key: a plugin that speaks
#: both (the target) needs one group or the other, each whole; one that speaks only V1 (the tap), the first.
V1_CREDENTIALS = ("api_username", "api_pw")
V2_CREDENTIALS = ("api_key",)


def credential_groups(settings: t.Iterable[str]) -> list[tuple[str, ...]]:
    """The groups of credentials a plugin with these settings accepts (Meltano's ``settings_group_validation``).

    Args:
        settings: the names of the plugin's settings.

    Returns:
        The V1 group, and the V2 group when the plugin has ``api_key``.
    """
    return [V1_CREDENTIALS, *([V2_CREDENTIALS] if "api_key" in set(settings) else [])]


def connection_properties(*, v2: bool = False) -> list[th.Property]:
    """The connection settings, in the order the README's tables list them.

    Args:
        v2: the plugin also writes through Closum's V2 API (the target): ``api_key`` and ``api_v2_url``
            are added, and ``api_username``/``api_pw`` are needed only without an ``api_key``.

    Returns:
        The ``th.Property`` definitions the tap and the target declare.
    """
    either = " Needed unless api_key is set (then only the V2 resource contact can be written)." if v2 else ""
    v2_properties = [
        th.Property(
            "api_key",
            th.StringType(min_length=1),
            secret=True,
            title="API key (V2)",
            description="A key of Closum's V2 API (created in Closum: Settings → Application → Integrations → "
            "API Keys), sent as the api-key query parameter. It writes the resource contact (stream contacts): "
            "with only a key, set no api_username/api_pw. Secret: never logged, never shown in an error or a reject.",
        ),
        th.Property(
            "api_v2_url",
            th.StringType,
            default=DEFAULT_API_V2_URL,
            title="API V2 base URL",
            description="Base URL of Closum's V2 API, up to and including /v2 "
            "(closum-sandbox serves it at http://127.0.0.1:8080/v2).",
        ),
    ]
    return [
        th.Property(
            "api_username",
            th.StringType(min_length=1),
            required=not v2,
            title="API username",
            description="Your Closum api_username (account details page in Closum)." + either,
        ),
        th.Property(
            "api_pw",
            th.StringType(min_length=1),
            required=not v2,
            secret=True,
            title="API password",
            description="Your Closum api_pw. Secret: never logged." + either,
        ),
        th.Property(
            "api_url",
            th.StringType,
            default=DEFAULT_API_URL,
            title="API base URL",
            description="Base URL of the Closum API, up to and including /api. "
            "Point it at `closum-sandbox` (http://127.0.0.1:8080/api) to try things out.",
        ),
        *(v2_properties if v2 else []),
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
    for name, default in (("api_url", DEFAULT_API_URL), ("api_v2_url", DEFAULT_API_V2_URL)):
        url = config.get(name)
        if isinstance(url, str) and url:
            problem = url_problem(url)
            if problem:
                errors.append(f"{name}: {scrub(url)!r} {problem}, such as {default}")
    v1 = [name for name in V1_CREDENTIALS if config.get(name)]
    if len(v1) == 1:
        missing = next(name for name in V1_CREDENTIALS if name not in v1)
        errors.append(f"{missing}: not set, but {v1[0]} is: give both, or neither and api_key")
    elif not v1 and not config.get("api_key"):
        errors.append("no credentials: give api_username and api_pw (Closum's V1 API), or api_key (its V2 API)")
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
    if parts.query or parts.fragment:
        return "has a query or fragment (give a key as api_key, never in a URL); it must be a base URL"
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
            config: the plugin's config (``api_username`` and ``api_pw``, or ``api_key``: checked before).
            user_agent: the User-Agent to send when ``user_agent`` is not set.

        Returns:
            The parsed settings.
        """
        values = schema_values(config, connection_properties(v2=True))
        max_retries = int(values["max_retries"])
        connection = Connection(
            api_url=str(values["api_url"]),
            username=_optional_text(config, "api_username"),
            password=_optional_text(config, "api_pw"),
            api_key=_optional_text(config, "api_key"),
            api_v2_url=str(values["api_v2_url"]),
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

    def client(self, stop: StopEvent) -> ClosumClient:
        """A client for these settings, with the run's one pace.

        Args:
            stop: the run's stop event: every wait of the client's requests ends on it.

        Returns:
            A :class:`ClosumClient` whose pool holds ``max_parallel_requests`` connections.
        """
        return ClosumClient(
            self.connection,
            stop=stop,
            max_parallel=self.max_parallel_requests,
            max_rps=self.max_requests_per_second,
        )


def _optional_text(config: t.Mapping[str, t.Any], key: str) -> str | None:
    """A text setting without a default; None when it is absent, null or empty."""
    value = config.get(key)
    return None if value is None or value == "" else str(value)
