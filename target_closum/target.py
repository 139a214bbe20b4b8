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
from singer_sdk.helpers.capabilities import PluginCapabilities

from closum_api import DISTRIBUTION, __version__
from closum_api.config import SharedSettings, connection_properties
from closum_api.failure import ClosumSettingsError, OneLineCommand
from closum_api.stop import STOP, ClosumStopped, signal_name
from target_closum.ledger import LedgerInUseError
from target_closum.load import LoadContext
from target_closum.mapping import ACTIONS, LOAD_METHODS, ClosumConfigError, credentials_problem, writable_resources
from target_closum.reader import BadInputError, ClosumReader, batch_records, batch_storage
from target_closum.settings import (
    DEFAULT_BATCH_ROWS,
    DEFAULT_CREATE_MISSING_REFERENCES,
    DEFAULT_DRY_RUN,
    DEFAULT_LEDGER_PATH,
    DEFAULT_LOAD_METHOD,
    DEFAULT_MAX_REJECTED_SHARE,
    DEFAULT_PHONE_REGION,
    DEFAULT_REJECTS_PATH,
    DEFAULT_UPDATE_ENABLED,
    TargetSettings,
)
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

USER_AGENT = f"target-closum/{__version__}"


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

    config_jsonschema = th.PropertiesList(
        *connection_properties(v2=True),
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
                    th.Property(
                        "match_on",
                        th.ArrayType(th.StringType),
                        description="Fields that identify a record already in Closum, which is then not created "
                        "again (counted 'matched existing'; upsert updates it): leads and unqualified leads email "
                        "and/or phone, emails email, phones number (+ extension). Contact types (label), audience "
                        "lists (name) and lead audience lists (lead_id + audience_list_id) are always matched. "
                        "Costs one read of the resource's list per run.",
                    ),
                    additional_properties=False,
                ),
            ),
            title="Resource map",
            description='Input stream name → {"resource": lead | unqualified_lead | email | phone | '
            'contact_type | audience_list | lead_audience_list | contact, "action": create | update | upsert, '
            '"match_on": [fields]}. '
            "Streams not listed map by name (leads, lead, contact-types, contacts...) with action create. "
            "update and upsert need a resource with an update endpoint (email, phone, contact_type). "
            "contact is written through Closum's V2 API (api_key): action create, no match_on.",
        ),
        th.Property(
            "update_enabled",
            th.BooleanType,
            default=DEFAULT_UPDATE_ENABLED,
            title="Update existing contacts (V2)",
            description="Contacts (V2 lead/add): ask Closum to update the contact it already has (same email or "
            "mobile number) instead of refusing the add. On, sending a contact again never creates a second one "
            "(a replay, or a machine without the ledger); off, Closum refuses a contact that exists (a reject).",
        ),
        th.Property(
            "default_consent_email",
            th.BooleanType,
            title="Default email consent (V2)",
            description="Contacts (V2): the consent_email sent for a record that has none. Unset: such a record "
            "is rejected (Closum's V2 API requires it). Set it only to what the contacts really agreed to.",
        ),
        th.Property(
            "default_consent_sms",
            th.BooleanType,
            title="Default SMS consent (V2)",
            description="Contacts (V2): the consent_sms sent for a record that has none. Unset: such a record "
            "is rejected (Closum's V2 API requires it). Set it only to what the contacts really agreed to.",
        ),
        th.Property(
            "default_phone_region",
            th.StringType(min_length=2, max_length=3),
            default=DEFAULT_PHONE_REGION,
            title="Default phone region",
            description="The region (two letters, such as PT or ES) of phone numbers written without a country "
            "code: +351 912 345 678, 00351912345678 and, with PT, 912 345 678 are one number. A contact's "
            "mobile_number is sent in E.164 (+351912345678); a lead's phone given as one string as "
            "extension 00351 and number 912345678. A number that cannot be one is rejected with the reason.",
        ),
        th.Property(
            "create_missing_references",
            th.BooleanType,
            default=DEFAULT_CREATE_MISSING_REFERENCES,
            title="Create missing references",
            description="Create the contact types (a record's contact_type) and audience lists (audience_lists, "
            "audience_list) that a record names and Closum does not have; otherwise such a record is rejected.",
        ),
        th.Property(
            "rejects_path",
            th.StringType(min_length=1),
            default=DEFAULT_REJECTS_PATH,
            title="Rejects file",
            description="JSON-lines file that receives every record set aside (failed validation or "
            "refused by Closum with 400/403/404/405), with stream, record, payload, status, message and "
            "time. Appended to; relative paths are from the working directory (in a Meltano project, from "
            "its root). It holds people's personal data (names, emails, phones): keep it out of version "
            "control and delete it once its records are fixed.",
        ),
        th.Property(
            "max_rejected_share",
            th.NumberType(minimum=0, maximum=1),
            default=DEFAULT_MAX_REJECTED_SHARE,
            title="Max rejected share",
            description="The run fails (exit status 1, one line) when more than this share of its records is "
            "rejected, after writing the others and setting the rejected aside; its last STATE is then held back, "
            "so a rerun after the fix sends them again. 0: any reject fails the run; 1: never.",
        ),
        th.Property(
            "ledger_path",
            th.StringType(min_length=1),
            default=DEFAULT_LEDGER_PATH,
            title="Ledger file",
            description="SQLite file recording each write (stream + record key → Closum id, payload hash), "
            "so a rerun or a replay writes nothing twice. Keep it between runs of the same load. Relative "
            "paths are from the working directory (in a Meltano project, from its root).",
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
            default=DEFAULT_BATCH_ROWS,
            title="Batch size",
            description="Records held per stream before they are written; "
            "bounds memory. STATE is emitted only once the records before it are written.",
        ),
    ).to_dict()

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
        self.load = LoadContext(self.settings, SharedSettings.from_config(self.config, user_agent=USER_AGENT))

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
            ClosumConfigError: the stream's API needs credentials that are not set.
        """
        mapping = self.settings.mapping_for(stream_name)
        connection = self.load.shared.connection
        problem = credentials_problem(mapping, v1=connection.has_v1_credentials, v2=bool(connection.api_key))
        if problem:
            raise ClosumConfigError(problem)
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
        self._assert_line_requires(message_dict, requires={"stream", "encoding", "manifest"})
        stream_name = message_dict["stream"]
        if stream_name not in self.mapper.stream_maps:
            self._assert_sink_exists(stream_name)
        for records in batch_records(message_dict["encoding"], message_dict["manifest"], self.batch_storage):
            for record in records:
                STOP.check()  # as between two lines
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

        Blocked on its input, the target stops at once; otherwise the reader
        or the writer raises ``ClosumStopped`` at its next step, :meth:`listen`
        emits the last STATE whose records are all written, and :meth:`invoke`
        exits with 128 + ``signum``.
        """
        _ = frame  # where the signal interrupted: not needed
        if STOP.stopping():
            return  # a second signal: the stop is already under way
        STOP.request_stop(signum)
        self.logger.warning(
            "Received %s: stopping; no new write starts, the writes in flight finish", signal_name(signum)
        )
        if self.reader.waiting_for_input:
            raise ClosumStopped(signum)

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
