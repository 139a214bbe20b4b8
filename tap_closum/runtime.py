"""What every stream of one run shares: its settings, its stop event, one client (the request path), the page size.

The tap builds one :class:`Runtime` and hands it to each stream it creates.
Settings are parsed once, on first use (discovery needs no credentials), with
the defaults the settings' ``th.Property`` definitions declare. The run's one
:class:`~closum_api.stop.StopEvent` is created with the runtime: the tap's
signal handler sets it, and the client and the streams' read-aheads wait on it.
"""

from __future__ import annotations

import datetime as dt
import threading
import typing as t
from dataclasses import dataclass
from functools import cached_property

from singer_sdk import typing as th

from closum_api import __version__, pace
from closum_api.config import SharedSettings, schema_values
from closum_api.errors import ClosumError, shown_url
from closum_api.listing import DEFAULT_PAGE_SIZE, DOCUMENTED_PAGE_SIZE, page_size_refused
from closum_api.stop import StopEvent

if t.TYPE_CHECKING:
    import logging

    from closum_api.client import ClosumClient
    from closum_api.connection import Connection
    from closum_api.errors import ClosumFatalError, ClosumNotFoundError

#: The User-Agent sent unless ``user_agent`` says otherwise.
USER_AGENT = f"tap-closum/{__version__}"


def parse_timestamp(value: str) -> dt.datetime:
    """An ISO 8601 timestamp as an aware datetime (naive means UTC).

    Args:
        value: the timestamp, ``Z`` or an offset allowed.

    Returns:
        The instant, in the timestamp's own offset, or UTC when it has none.
    """
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def tap_properties() -> list[th.Property]:
    """The tap's own settings, in the order the settings table lists them.

    Returns:
        Their ``th.Property`` definitions, each with its default (the one place it is written).
    """
    return [
        th.Property(
            "page_size",
            th.IntegerType(minimum=1),
            default=DEFAULT_PAGE_SIZE,
            title="Page size",
            description="Records asked for per list request. If the server refuses it "
            f"with a 400, the tap falls back once to the documented {DOCUMENTED_PAGE_SIZE} with a warning.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description="Skip records created before this instant (ISO 8601). Bookmarks still move on ids.",
        ),
        th.Property(
            "sweep_cycle_runs",
            th.IntegerType(minimum=1),
            default=24,
            title="Sweep cycle (runs)",
            description="Closum's lists tell no edit or deletion, so each run also re-reads a slice of every "
            "changeable stream's history (the sweep) and emits what changed and tombstones for what is gone: "
            "the whole history is re-read within this many runs (24: a day of hourly runs).",
        ),
        th.Property(
            "sweep_requests_per_run",
            th.IntegerType(minimum=0),
            default=100,
            title="Sweep requests per run",
            description="The most list pages the sweep re-reads per stream and run (0: no sweep). "
            "A history larger than this many pages times sweep_cycle_runs takes more runs to re-read.",
        ),
        th.Property(
            "consent_sweep_retrieves_per_run",
            th.IntegerType(minimum=0),
            default=10_000,
            title="Consent sweep retrieves per run",
            description="Opt-ins are served only by a lead's retrieve: the most retrieves per run and consent "
            "stream that re-check the opt-ins of leads already synced, oldest check first (0: none).",
        ),
    ]


@dataclass(frozen=True)
class TapSettings:
    """The tap's settings, parsed once, defaults applied.

    Attributes:
        shared: the settings the tap shares with the target (connection, parallelism, retries).
        page_size: records asked for per list request.
        start_date: records created before this instant are skipped, if set.
        sweep_cycle_runs: runs in which the sweep re-reads each stream's whole history.
        sweep_requests_per_run: the most list pages the sweep reads per stream and run.
        consent_sweep_retrieves_per_run: the most retrieves the consent sweep sends per run and stream.
    """

    shared: SharedSettings
    page_size: int
    start_date: dt.datetime | None
    sweep_cycle_runs: int
    sweep_requests_per_run: int
    consent_sweep_retrieves_per_run: int

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> TapSettings:
        """Parse the tap's config.

        Args:
            config: the tap's config (``api_username`` and ``api_pw`` required).

        Returns:
            The parsed settings.
        """
        values = schema_values(config, tap_properties())
        start_date = values.get("start_date")
        return cls(
            shared=SharedSettings.from_config(config, user_agent=USER_AGENT),
            page_size=int(values["page_size"]),
            start_date=parse_timestamp(str(start_date)) if start_date else None,
            sweep_cycle_runs=int(values["sweep_cycle_runs"]),
            sweep_requests_per_run=int(values["sweep_requests_per_run"]),
            consent_sweep_retrieves_per_run=int(values["consent_sweep_retrieves_per_run"]),
        )


class Runtime:
    """What every stream of one run shares: settings, stop event, client (session, token, pace), page size.

    Args:
        config: the tap's config; parsed on first use.
        logger: where the page size fall-back is told.

    Attributes:
        stop: the run's stop event (set by the tap's signal handler): every wait of the run ends on it.
    """

    def __init__(self, config: t.Mapping[str, t.Any], logger: logging.Logger) -> None:
        """Nothing is parsed or opened yet: discovery needs no credentials."""
        self._config = config
        self._logger = logger
        self.stop = StopEvent()
        self._lock = threading.Lock()
        self._fell_back = False
        #: streams whose list answered 404 (the other API revision), with the URL asked
        self.unserved: dict[str, str] = {}
        #: streams whose list answered
        self.served: set[str] = set()

    @cached_property
    def settings(self) -> TapSettings:
        """The tap's settings, parsed on first use."""
        return TapSettings.from_config(self._config)

    @cached_property
    def connection(self) -> Connection:
        """Where the account is and how patiently to talk to it."""
        return self.settings.shared.connection

    @cached_property
    def client(self) -> ClosumClient:
        """The one client of the run: its session, token, pace and retry budgets serve every stream."""
        return self.settings.shared.client(self.stop)

    def report_budget(self, metrics_logger: logging.Logger) -> None:
        """At the end of a run that sent requests: what its request budget saw (:func:`closum_api.pace.report`).

        Args:
            metrics_logger: the SDK's metrics logger.
        """
        if "client" in self.__dict__:
            pace.report(self.client.pace.stats(), self._logger, metrics_logger)

    @cached_property
    def page_size(self) -> int:
        """Records asked for per list request; drops to the documented size after a refusal."""
        return self.settings.page_size

    def fall_back_page_size(self, exc: ClosumFatalError) -> bool:
        """After a first page failed: if it was a 400 to the page size, drop to the documented one, once.

        Args:
            exc: why the first page failed; a refusal is told in the warning.

        Returns:
            True when the page size changed and the page is worth asking again.
        """
        with self._lock:
            if self._fell_back or not page_size_refused(exc, self.page_size):
                return False
            self._logger.warning(
                "page_size %d was refused (%s); falling back to the documented %d",
                self.page_size,
                exc,
                DOCUMENTED_PAGE_SIZE,
            )
            self.page_size = DOCUMENTED_PAGE_SIZE
            self._fell_back = True
            return True

    # -- which streams this account serves ------------------------------------------
    def note_unserved(self, stream: str, exc: ClosumNotFoundError) -> None:
        """A stream's list answered 404: the stream is skipped (another API revision, or api_url is wrong).

        Args:
            stream: the stream's name.
            exc: the 404, whose request names the URL asked.
        """
        url = exc.response.url if exc.response is not None else self.connection.api_url
        with self._lock:
            self.unserved[stream] = shown_url(url)

    def note_served(self, stream: str) -> None:
        """A stream's list answered: this account serves it.

        Args:
            stream: the stream's name.
        """
        with self._lock:
            self.served.add(stream)

    def check_served(self) -> None:
        """After a run: fail when every stream it asked for answered 404.

        Raises:
            NothingServedError: no stream's list answered, at least one answered 404.
        """
        if self.served or not self.unserved:
            return
        names = sorted(self.unserved)
        example = self.unserved[names[0]]
        msg = (
            f"every selected stream answered 404 ({', '.join(names)}; e.g. GET {example}): nothing was read. "
            "Check api_url (the base URL of the Closum API, ending with /api), "
            "or select the streams of this account's API revision"
        )
        raise NothingServedError(msg)


class NothingServedError(ClosumError):
    """Every stream the run asked for answered 404: the run read nothing it was asked to."""
