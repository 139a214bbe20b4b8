"""The target: settings, sink creation, the end-of-run summary, one-line failures."""

from __future__ import annotations

import json
import sys
import typing as t

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.io_base import SingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine, SingerReadError
from singer_sdk.singerlib.json import deserialize_json

from closum_api import DISTRIBUTION, __version__
from closum_api.config import SharedSettings, connection_properties
from closum_api.errors import ClosumError
from target_closum.load import LoadContext
from target_closum.mapping import ACTIONS, LOAD_METHODS, writable_resources
from target_closum.settings import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_DRY_RUN,
    DEFAULT_LEDGER_PATH,
    DEFAULT_LOAD_METHOD,
    DEFAULT_REJECTS_PATH,
    TargetSettings,
)
from target_closum.sinks import ClosumSink

if t.TYPE_CHECKING:
    from types import FrameType

    from singer_sdk.sinks import Sink

    from closum_api.client import ClosumClient
    from target_closum.summary import Tally

USER_AGENT = f"target-closum/{__version__}"


class _QuietReader(SingerReader):
    """The SDK's reader, minus the traceback it logs for a line that is not JSON."""

    def deserialize_json(self, line: str) -> dict:
        try:
            return deserialize_json(line)
        except ValueError:
            shown = line.strip()[:120]
            msg = f"line is not JSON: {shown!r}"
            raise InvalidInputLine(msg) from None


class TargetClosum(Target):
    """Singer target for Closum."""

    name = "target-closum"
    package_name = DISTRIBUTION
    default_sink_class = ClosumSink
    message_reader_class = _QuietReader

    config_jsonschema = th.PropertiesList(
        *connection_properties(),
        th.Property(
            "resource_map",
            th.ObjectType(
                additional_properties=th.ObjectType(
                    th.Property(
                        "resource",
                        th.StringType,
                        required=True,
                        allowed_values=[r.name for r in writable_resources()],
                        description="The Closum resource the stream's records become.",
                    ),
                    th.Property(
                        "action",
                        th.StringType,
                        allowed_values=list(ACTIONS),
                        description="create (POST), update (PUT by the record's id) or upsert "
                        "(PUT when the id is given or known from the ledger, else POST).",
                    ),
                    additional_properties=False,
                ),
            ),
            title="Resource map",
            description='Input stream name → {"resource": lead | unqualified_lead | email | phone | '
            'contact_type | audience_list | lead_audience_list, "action": create | update | upsert}. '
            "Streams not listed map by name (leads, lead, contact-types...) with action create. "
            "update and upsert need a resource with an update endpoint (email, phone, contact_type).",
        ),
        th.Property(
            "rejects_path",
            th.StringType(min_length=1),
            default=DEFAULT_REJECTS_PATH,
            title="Rejects file",
            description="JSON-lines file that receives every record set aside (failed validation or "
            "refused by Closum with 400/403/404/405), with stream, record, payload, status, message and "
            "time. Appended to; relative paths are from the working directory.",
        ),
        th.Property(
            "ledger_path",
            th.StringType(min_length=1),
            default=DEFAULT_LEDGER_PATH,
            title="Ledger file",
            description="SQLite file recording each write (stream + record key → Closum id, payload hash), "
            "so a rerun or a replay writes nothing twice. Keep it between runs of the same load.",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=DEFAULT_DRY_RUN,
            title="Dry run",
            description="Map and validate every record and report what would be written, without "
            "sending any POST/PUT and without writing the ledger or the rejects file.",
        ),
        th.Property(
            "load_method",
            th.StringType,
            allowed_values=list(LOAD_METHODS),
            default=DEFAULT_LOAD_METHOD,
            title="Load method",
            description="SDK setting. append-only: streams default to action create. upsert: streams of "
            "resources that can be updated (email, phone, contact_type) default to action upsert. "
            "overwrite is refused at start (Closum cannot delete). An action in resource_map always wins.",
        ),
        th.Property(
            "batch_size_rows",
            th.IntegerType(minimum=1),
            title="Batch size",
            description=f"Records held per stream before they are written (default {DEFAULT_BATCH_ROWS}); "
            "bounds memory. STATE is emitted only once the records before it are written.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Build the target; settings that can never work are refused here, with one line."""
        self._stop_signal: int | None = None
        self._finished = False
        super().__init__(*args, **kwargs)
        self.settings = TargetSettings.from_config(self.config)
        self.max_parallelism = 4
        self.load = LoadContext(self.settings, SharedSettings.from_config(self.config, user_agent=USER_AGENT))

    @property
    def client(self) -> ClosumClient:
        """The run's Closum client."""
        return self.load.client

    @property
    def tallies(self) -> dict[str, Tally]:
        """What happened to each stream's records, by stream name."""
        return self.load.tallies

    # -- sinks: each one is handed the run's shared parts ---------------------------
    def get_sink_class(self, stream_name: str) -> type[ClosumSink]:
        """Refuse a stream that cannot be written, at its SCHEMA message."""
        self.settings.mapping_for(stream_name)
        return ClosumSink

    def get_sink(
        self,
        stream_name: str,
        *,
        record: dict | None = None,
        schema: dict | None = None,
        key_properties: t.Sequence[str] | None = None,
    ) -> Sink:
        """The SDK's sink selection, creating sinks with :meth:`add_closum_sink` (as ``SQLTarget`` does)."""
        _ = record
        if schema is None:
            return self._sinks_active[stream_name]
        existing_sink = self._sinks_active.get(stream_name)
        if not existing_sink:
            return self.add_closum_sink(stream_name, schema, key_properties)
        if existing_sink.original_schema != schema or existing_sink.key_properties != key_properties:
            self.logger.info(
                "Schema or key properties for '%s' stream have changed. Initializing a new '%s' sink...",
                stream_name,
                stream_name,
            )
            self._sinks_to_clear.append(self._sinks_active.pop(stream_name))
            return self.add_closum_sink(stream_name, schema, key_properties)
        return existing_sink

    def add_closum_sink(self, stream_name: str, schema: dict, key_properties: t.Sequence[str] | None = None) -> Sink:
        """Create a sink that shares the run's :class:`LoadContext`, set it up and register it."""
        sink_class = self.get_sink_class(stream_name)
        sink = sink_class(
            target=self, stream_name=stream_name, schema=schema, key_properties=key_properties, load=self.load
        )
        try:
            sink.setup()
        except Exception:
            # As the SDK's add_sink says it; the run's one-line failure follows.
            self.logger.error("Error initializing target sink '%s'", self.name)  # noqa: TRY400  # no traceback
            raise
        self._sinks_active[stream_name] = sink
        return sink

    # -- run lifecycle ---------------------------------------------------------------
    def _process_record_message(self, message_dict: dict) -> None:
        try:
            super()._process_record_message(message_dict)
        except BaseException:
            self.finish()  # a failed mid-stream drain: still one summary line per stream
            raise
        if self._stop_signal is not None:
            self._stop_now()

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:  # pragma: no cover
        """SIGTERM/SIGINT: write what was read, emit STATE, stop; never mid-batch."""
        _ = frame  # where the signal interrupted: not needed
        if self.load.is_busy:
            if self._stop_signal is None:
                self.logger.info("Received signal %d during writes; stopping once the writes in flight end", signum)
            self._stop_signal = signum
            return
        self._stop_signal = signum
        self._stop_now()

    def _stop_now(self) -> None:
        self.logger.info("Stopping on signal %s: writing the records read so far", self._stop_signal)
        self.process_endofpipe()
        sys.exit(0)

    def process_endofpipe(self) -> None:
        """Write what is left (writes in progress hold off a termination signal), then finish."""
        try:
            with self.load.busy():
                super().process_endofpipe()
        finally:
            self.finish()

    def finish(self) -> None:
        """Log one summary line per stream (and a metric), release resources. Idempotent."""
        if self._finished:
            return
        self._finished = True
        for tally in self.load.tallies.values():
            self.logger.info(tally.line(self.settings.rejects_path))
            self.metrics_logger.info(
                "METRIC: %s",
                json.dumps(
                    {
                        "type": "counter",
                        "metric": "closum_load_summary",
                        "value": tally.as_dict(),
                        "tags": {"stream": tally.stream},
                    },
                    separators=(",", ":"),
                ),
            )
        self.load.report_budget(self.logger, self.metrics_logger)
        self.load.close()

    @classmethod
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:
        """Run the target; a failure of the run ends it with one line, not a traceback."""
        try:
            super().invoke(*args, **kwargs)
        except ConfigValidationError as exc:
            cls._fail("invalid settings: " + ("; ".join(getattr(exc, "errors", []) or []) or str(exc)))
        except ClosumError as exc:
            cls._fail(str(exc))
        except SingerReadError as exc:
            cls._fail(f"the input is not Singer messages: {exc}")

    @classmethod
    def _fail(cls, message: str) -> t.NoReturn:
        """End the run with one line (no traceback) and exit code 1."""
        cls.logger.error("target-closum failed: %s", message)
        sys.exit(1)


if __name__ == "__main__":
    TargetClosum.cli()
