"""The target: settings, sink creation, the end-of-run summary, one-line failures."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sqlite3
import sys
import typing as t
from pathlib import Path

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.exceptions import RecordsWithoutSchemaException
from singer_sdk.helpers.capabilities import PluginCapabilities

from closum_api import DISTRIBUTION
from closum_api.config import connection_properties
from closum_api.failure import ClosumSettingsError, OneLineCommand
from closum_api.stop import ClosumStopped, StopEvent, signal_name
from target_closum.ledger import LedgerInUseError
from target_closum.load import LoadContext
from target_closum.mapping import credentials_problem
from target_closum.reader import BadInputError, ClosumReader, batch_records, batch_storage
from target_closum.settings import TargetSettings, target_properties
from target_closum.sinks import ClosumSink

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from types import FrameType

    from singer_sdk.helpers.capabilities import CapabilitiesEnum
    from singer_sdk.sinks import Sink

    from closum_api.client import ClosumClient
    from target_closum.summary import Tally


def path_problem(path: str) -> str | None:
    """Why a file the target appends to cannot be written there, if that can be told before writing.

    Args:
        path: the file (created with its directories when first written).

    Returns:
        The reason, or ``None`` when it looks writable.
    """
    target = Path(path)
    if target.is_dir():
        return "it is a directory"
    if target.exists():
        return None if os.access(target, os.W_OK) else "permission denied"
    parent = target.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"permission denied in {parent}"
    return None


class TargetClosum(OneLineCommand, Target):
    """Singer target for Closum."""

    name = "target-closum"
    path_options = frozenset({"file_input"})  # read by invoke, which names a file it cannot read
    package_name = DISTRIBUTION
    default_sink_class = ClosumSink
    message_reader_class = ClosumReader
    #: the SDK's, and BATCH messages (their records go the way of RECORD messages)
    capabilities: t.ClassVar[list[CapabilitiesEnum]] = [*Target.capabilities, PluginCapabilities.BATCH]

    config_jsonschema = th.PropertiesList(*connection_properties(v2=True), *target_properties()).to_dict()

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Build the target; settings that can never work are refused here, with one line.

        Raises:
            ClosumSettingsError: the rejects or ledger file cannot be written where the settings say
                (or ``batch_config.storage`` has no root).
        """
        self._finished = False
        #: the last STATE read at a moment every record read so far was written
        self._safe_state: dict | None = None
        self._emitted_state: dict | None = None
        self._state_held_back = False
        self._input_complete = True
        #: the run's stop event: the signal handler sets it; the reader, the client and the writers wait on it
        self.stop = StopEvent()
        if kwargs.get("message_reader") is None:
            kwargs["message_reader"] = ClosumReader(self.stop)
        super().__init__(*args, **kwargs)
        self.settings = TargetSettings.from_config(self.config)
        if not self.settings.dry_run:
            for name, path in (
                ("rejects_path", self.settings.rejects_path),
                ("ledger_path", self.settings.ledger_path),
            ):
                problem = path_problem(path)
                if problem:
                    msg = f"{name} {path!r} cannot be written: {problem}"
                    raise ClosumSettingsError(msg)
        self.batch_storage = batch_storage(self.config)
        self.max_parallelism = 4
        self.load = LoadContext(self.settings, self.stop)

    @property
    def reader(self) -> ClosumReader:
        """The target's Singer reader (:attr:`message_reader_class`)."""
        return t.cast("ClosumReader", self.message_reader)

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
        """Refuse a stream that cannot be written (or not with the credentials given), at its SCHEMA message.

        Raises:
            ClosumSettingsError: the stream's API needs credentials that are not set.
        """
        mapping = self.settings.mapping_for(stream_name)
        connection = self.settings.shared.connection
        problem = credentials_problem(mapping, v1=connection.has_v1_credentials, v2=bool(connection.api_key))
        if problem:
            raise ClosumSettingsError(problem)
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
        except sqlite3.Error as exc:
            msg = f"ledger_path {self.settings.ledger_path!r} cannot be used: {exc}"
            raise ClosumSettingsError(msg) from None
        except LedgerInUseError:
            raise  # its line says it all
        except Exception:
            # As the SDK's add_sink says it; the run's one-line failure follows.
            self.logger.error("Error initializing target sink '%s'", self.name)  # noqa: TRY400  # no traceback
            raise
        self._sinks_active[stream_name] = sink
        return sink

    # -- run lifecycle ---------------------------------------------------------------
    def _note_safe_state(self) -> None:
        """Remember the latest STATE when every record read so far is written (no sink holds any)."""
        if (
            self._latest_state
            and not self._sinks_to_clear
            and all(sink.current_size == 0 for sink in self._sinks_active.values())
        ):
            self._safe_state = self._latest_state

    @override
    def _process_record_message(self, message_dict: dict) -> None:
        super()._process_record_message(message_dict)
        self._note_safe_state()  # a full batch was just written, perhaps

    @override
    def _process_batch_message(self, message_dict: dict) -> None:
        """A BATCH message: each record of its files goes on as a RECORD message of its stream would.

        So a record read from a file meets the same schema check, payload, rejects,
        ledger key, lookups, matching and bounded batches as one read from a RECORD
        line, and the STATE after the BATCH waits for it like any other.
        (The SDK's own way, ``Sink.process_batch_files``, hands a sink a whole file
        as one batch of raw records, bypassing all of that.)
        """
        self.message_reader.assert_line_requires(message_dict, requires={"stream", "encoding", "manifest"})
        stream_name = message_dict["stream"]
        if stream_name not in self.mapper.stream_maps and not self.sink_exists(stream_name):
            msg = f"a BATCH of stream {stream_name!r} before any SCHEMA of that stream"
            raise RecordsWithoutSchemaException(msg)  # the reader names the line
        for records in batch_records(message_dict["encoding"], message_dict["manifest"], self.batch_storage):
            for record in records:
                self.stop.check()  # as between two lines
                self._process_record_message({"type": "RECORD", "stream": stream_name, "record": record})

    @override
    def _process_state_message(self, message_dict: dict) -> None:
        super()._process_state_message(message_dict)
        self._note_safe_state()

    @override
    def _write_state_message(self, state: dict) -> None:
        """Emit a STATE, unless the run is past ``max_rejected_share``: its rejects are then not done with."""
        if self.load.over_rejected_share():
            if not self._state_held_back:
                self.logger.warning("STATE held back: more records rejected than max_rejected_share allows")
                self._state_held_back = True
            return
        super()._write_state_message(state)
        self._emitted_state = state

    @override
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: no new write starts, every wait ends; the writes in flight finish or stay pending.

        The run's stop event (:attr:`stop`) is set. Blocked on its input, the target stops at once; otherwise the reader
        or the writer raises ``ClosumStopped`` at its next step, :meth:`listen`
        emits the last STATE whose records are all written, and :meth:`invoke`
        exits with 128 + ``signum``.
        """
        _ = frame  # where the signal interrupted: not needed
        if self.stop.stopping():
            return  # a second signal: the stop is already under way
        self.stop.request_stop(signum)
        self.logger.warning(
            "Received %s: stopping; no new write starts, the writes in flight finish", signal_name(signum)
        )
        if self.reader.waiting_for_input:
            raise ClosumStopped(signum, self.stop)

    # The SDK offers no hook around the whole run but this method.
    @override  # type: ignore[misc]  # listen is final in the SDK: no other place to wind down after a failure
    def listen(self, file_input: t.IO[str] | None = None) -> None:
        """Read and write everything; on a failure, first finish or record what can be.

        - a stop: the STATE of what is written goes out (writes already sent are done or pending);
        - a line that is not a Singer message: what came before it is written, rejected and
          its STATE emitted, then the run ends naming the line;
        - anything else: the summary lines, and the resources are released.
        """
        try:
            super().listen(file_input)
            self.load.check_rejected_share(state_held_back=self._state_held_back)
        except ClosumStopped:
            self._emit_safe_state()
            raise
        except BadInputError:
            self._input_complete = False  # what came before the bad line is written, not checked for doubles
            try:
                self.process_endofpipe()
            except ClosumStopped:
                self._emit_safe_state()
                raise
            raise
        finally:
            self.finish()

    def _emit_safe_state(self) -> None:
        """After a stop: emit the last STATE whose records are all written, unless it is out already."""
        state = self._safe_state
        if state is not None and state != self._emitted_state:
            self._write_state_message(copy.deepcopy(state))

    def process_endofpipe(self) -> None:
        """Write what is left and emit the last STATE; check that no other run doubled what this one created; finish."""
        try:
            super().process_endofpipe()
            if self._input_complete:
                self.load.check_doubled()
        finally:
            self.finish()

    def finish(self) -> None:
        """Log one summary line per stream (and a metric), release resources. Idempotent."""
        if self._finished:
            return
        self._finished = True
        for tally in self.load.tallies.values():
            self.logger.info(tally.line(self.settings.rejects_path))
            for line in tally.reason_lines():
                self.logger.warning(line)
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
        repeated = self.load.rejects.repeated if "rejects" in self.load.__dict__ else 0
        if repeated:
            self.logger.info(
                "%d of the rejects were in %s already (a replay of the same input): not appended again",
                repeated,
                self.settings.rejects_path,
            )
        self.load.report_budget(self.logger, self.metrics_logger)
        self.load.close()

    # -- the command line: every failure ends the run with one line ------------------

    @classmethod
    @contextlib.contextmanager
    def command_arguments(cls, arguments: dict[str, t.Any]) -> t.Iterator[dict[str, t.Any]]:
        """``--input`` arrives as a path (:attr:`path_options`): open it for the run, one line if unreadable.

        Args:
            arguments: click's arguments, by parameter name.

        Yields:
            The arguments, ``file_input`` an open file (or None: standard input).

        Raises:
            ClosumSettingsError: the ``--input`` file cannot be read.
        """
        file_input = arguments.get("file_input")
        if file_input is None:
            yield arguments
            return
        try:
            handle = Path(file_input).open(encoding="utf-8")  # noqa: SIM115  # closed below, after the run
        except OSError as exc:
            msg = f"cannot read the --input file {file_input!r}: {exc.strerror or exc}"
            raise ClosumSettingsError(msg) from None
        with handle:
            yield arguments | {"file_input": handle}


if __name__ == "__main__":
    TargetClosum.cli()
