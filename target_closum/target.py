"""The target: settings, sink selection, shared resources, one-line failures."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import typing as t
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.io_base import SingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine, SingerReadError
from singer_sdk.singerlib.json import deserialize_json

from closum_api import DISTRIBUTION, __version__
from closum_api.config import client_from_config, connection_properties
from closum_api.errors import ClosumError
from target_closum.ledger import Ledger
from target_closum.mapping import ACTIONS, LOAD_METHODS, StreamMapping, check_settings, mapping_for, writable_resources
from target_closum.rejects import RejectsFile
from target_closum.sinks import ClosumSink
from target_closum.summary import Tally

if t.TYPE_CHECKING:
    from types import FrameType

    from closum_api.client import ClosumClient

DEFAULT_REJECTS = "closum-rejects.jsonl"
DEFAULT_LEDGER = "closum-ledger.sqlite"


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
            default=DEFAULT_REJECTS,
            title="Rejects file",
            description="JSON-lines file that receives every record set aside (failed validation or "
            "refused by Closum with 400/403/404/405), with stream, record, payload, status, message and "
            "time. Appended to; relative paths are from the working directory.",
        ),
        th.Property(
            "ledger_path",
            th.StringType(min_length=1),
            default=DEFAULT_LEDGER,
            title="Ledger file",
            description="SQLite file recording each write (stream + record key → Closum id, payload hash), "
            "so a rerun or a replay writes nothing twice. Keep it between runs of the same load.",
        ),
        th.Property(
            "dry_run",
            th.BooleanType,
            default=False,
            title="Dry run",
            description="Map and validate every record and report what would be written, without "
            "sending any POST/PUT and without writing the ledger or the rejects file.",
        ),
        th.Property(
            "load_method",
            th.StringType,
            allowed_values=list(LOAD_METHODS),
            default="append-only",
            title="Load method",
            description="SDK setting. append-only: streams default to action create. upsert: streams of "
            "resources that can be updated (email, phone, contact_type) default to action upsert. "
            "overwrite is refused at start (Closum cannot delete). An action in resource_map always wins.",
        ),
        th.Property(
            "batch_size_rows",
            th.IntegerType(minimum=1),
            title="Batch size",
            description="Records held per stream before they are written (default 1000); bounds memory. "
            "STATE is emitted only once the records before it are written.",
        ),
    ).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._tallies: dict[str, Tally] = {}
        self._tally_lock = threading.Lock()
        self._busy_count = 0
        self._busy_lock = threading.Lock()
        self._stop_signal: int | None = None
        self._finished = False
        self._recovered_streams: set[str] = set()
        self._opened = False
        super().__init__(*args, **kwargs)
        check_settings(self.config)
        self.max_parallelism = 4

    # -- shared resources, created when first needed ------------------------------
    @property
    def dry_run(self) -> bool:
        return bool(self.config.get("dry_run", False))

    @cached_property
    def client(self) -> ClosumClient:
        if self.dry_run:
            msg = "a dry run never talks to Closum"
            raise RuntimeError(msg)
        return client_from_config(self.config, user_agent=f"target-closum/{__version__}")

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.config.get("ledger_path") or DEFAULT_LEDGER, read_only=self.dry_run)

    @cached_property
    def rejects(self) -> RejectsFile:
        return RejectsFile(self.config.get("rejects_path") or DEFAULT_REJECTS)

    @cached_property
    def executor(self) -> ThreadPoolExecutor:
        workers = int(self.config.get("max_parallel_requests", 8))
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="closum-write")

    # -- streams ------------------------------------------------------------------
    def mapping_for(self, stream_name: str) -> StreamMapping:
        return mapping_for(stream_name, self.config)

    def get_sink_class(self, stream_name: str) -> type[ClosumSink]:
        """Refuse a stream that cannot be written, at its SCHEMA message."""
        self.mapping_for(stream_name)
        return ClosumSink

    def tally_for(self, mapping: StreamMapping) -> Tally:
        with self._tally_lock:
            if mapping.stream not in self._tallies:
                self._tallies[mapping.stream] = Tally(
                    mapping.stream, mapping.resource.name, mapping.action, dry_run=self.dry_run
                )
            return self._tallies[mapping.stream]

    @property
    def tallies(self) -> dict[str, Tally]:
        return dict(self._tallies)

    def open_resources(self) -> None:
        """Create the shared objects in the main thread, before any worker needs them.

        Also asks for the token in the background while records are read; a
        failure there is ignored (the first write asks again and reports it).
        """
        if self._opened:
            return
        self._opened = True
        _ = self.ledger, self.rejects
        if not self.dry_run:
            client = self.client
            self.executor.submit(_quiet_token, client)

    def recover_pending(self, sink: ClosumSink) -> None:
        """Settle the creates a killed run left pending for this stream (once per run)."""
        if sink.stream_name in self._recovered_streams:
            return
        self._recovered_streams.add(sink.stream_name)
        entries = self.ledger.pending(sink.stream_name)
        if not entries:
            return
        self.logger.warning(
            "Stream %s: %d writes were left pending by an earlier run; checking them on the server",
            sink.stream_name,
            len(entries),
        )
        with self.busy():
            settled = sink.recover(entries)
        self.logger.info("Stream %s: %d pending writes settled", sink.stream_name, settled)

    # -- run lifecycle ---------------------------------------------------------------
    @contextlib.contextmanager
    def busy(self) -> t.Iterator[None]:
        """Marks writes in progress, so a termination signal waits for them."""
        with self._busy_lock:
            self._busy_count += 1
        try:
            yield
        finally:
            with self._busy_lock:
                self._busy_count -= 1

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
        if self._busy_count:
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
        try:
            with self.busy():
                super().process_endofpipe()
        finally:
            self.finish()

    def finish(self) -> None:
        """Log one summary line per stream (and a metric), release resources. Idempotent."""
        if self._finished:
            return
        self._finished = True
        rejects_path = str(self.config.get("rejects_path") or DEFAULT_REJECTS)
        for tally in self._tallies.values():
            self.logger.info(tally.line(rejects_path))
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
        if "executor" in self.__dict__:
            self.executor.shutdown(wait=True)
        if "rejects" in self.__dict__:
            self.rejects.close()
        if "ledger" in self.__dict__:
            self.ledger.close()
        if "client" in self.__dict__:
            self.client.close()

    @classmethod
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:  # type: ignore[override]
        """Run the target; a failure of the run ends it with one line, not a traceback."""
        try:
            super().invoke(*args, **kwargs)
        except ConfigValidationError as exc:
            errors = "; ".join(getattr(exc, "errors", []) or []) or str(exc)
            cls.logger.error("target-closum failed: invalid settings: %s", errors)  # noqa: TRY400
            sys.exit(1)
        except ClosumError as exc:
            cls.logger.error("target-closum failed: %s", exc)  # noqa: TRY400
            sys.exit(1)
        except SingerReadError as exc:
            cls.logger.error("target-closum failed: the input is not Singer messages: %s", exc)  # noqa: TRY400
            sys.exit(1)


def _quiet_token(client: ClosumClient) -> None:
    with contextlib.suppress(Exception):
        client.auth.token()


if __name__ == "__main__":
    TargetClosum.cli()
