"""The sink: the SDK's per-stream reader of records, a bounded batch at a time.

Records are turned into payloads and validated as they arrive (refused ones go
to the rejects file at once); their lookup fields (``city``, ``audience_lists``...)
are taken out and validated as the ids they will become. Valid records wait in
the sink's queue. When the batch is drained, the stream's :class:`StreamWriter`
writes it and returns only when every record is written, skipped or rejected,
so the SDK emits the tap's STATE only after the records before it are safe.
The records of BATCH files arrive here one by one too (the target hands each on
as a RECORD message): the SDK's ``process_batch_files`` is never used, and the
batch context never carries ``records``.

Parents before children: each sink makes its batch known to the run's
:class:`LoadContext`, and before it writes its own batch a sink flushes the
sinks of the resources its records refer to (a membership waits for its lead
and list).
The queue is the sink's own, under a lock, so a batch taken out for writing is
written before a child's flush returns, whichever thread drains it.

A sink reaches everything it shares with other streams (client, ledger,
rejects file, thread pool, tallies) through the :class:`LoadContext` the target
hands it; it never calls the target.
"""

from __future__ import annotations

import threading
import typing as t

from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import BatchSink

from closum_api.registry import Api
from target_closum.lead_add import ContactWriter
from target_closum.lookups import extract, with_placeholders
from target_closum.payloads import (
    PayloadError,
    build_payload,
    payload_hash,
    pk_key,
    record_id,
    unsendable,
    validation_message,
)
from target_closum.plan import Item
from target_closum.rules import rules_for
from target_closum.writer import StreamWriter

if t.TYPE_CHECKING:
    from singer_sdk import Target

    from closum_api.registry import Resource
    from target_closum.load import LoadContext
    from target_closum.mapping import StreamMapping


class ClosumSink(BatchSink):
    """Reads one stream's records for one Closum resource; its writer writes them.

    Args:
        target: the SDK target that reads the input (its logger and config; never called back).
        stream_name: the input stream.
        schema: the stream's SCHEMA.
        key_properties: the stream's key properties.
        load: what all sinks of the run share.
    """

    def __init__(
        self,
        target: Target,
        stream_name: str,
        schema: dict,
        key_properties: t.Sequence[str] | None,
        *,
        load: LoadContext,
    ) -> None:
        """Take the stream's mapping from the run's settings and a writer on the run's shared parts."""
        self.load = load
        self.mapping: StreamMapping = load.settings.mapping_for(stream_name)
        self.resource: Resource = self.mapping.resource
        self.action = self.mapping.action
        self.dry_run = load.dry_run
        self._invalid_reason: str | None = None
        self._queue: list[Item] = []
        self._queue_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        super().__init__(target, stream_name, schema, key_properties)
        # A V2 resource is written through lead/add (target_closum.lead_add), a V1 one by the stream writer.
        self.writer: StreamWriter | ContactWriter = (
            ContactWriter(load, self.mapping, self.logger)
            if self.resource.api is Api.V2
            else StreamWriter(load, self.mapping, self.logger)
        )

    # -- batching ----------------------------------------------------------------
    @property
    def max_size(self) -> int:
        """Records held before the batch is written: the ``batch_size_rows`` setting."""
        return self.load.settings.batch_size_rows

    def setup(self) -> None:
        """Open the run's shared parts; settle the writes an earlier run left pending for this stream."""
        super().setup()
        self.logger.info("Loading stream %s", self.mapping.describe() + (" [dry run]" if self.dry_run else ""))
        self.load.open()
        self.load.hold_batches(self.resource.name, self)
        if not self.dry_run and self.load.first_recovery(self.stream_name):
            self.writer.recover_pending()

    def _validate_and_parse(self, record: dict) -> dict:
        """Check the record against its stream schema; a mismatch rejects the record.

        Timestamps are not parsed: the record stays as JSON gave it.
        """
        self._invalid_reason = None
        if self._validator is not None:
            try:
                self._validator.validate(record)
            except InvalidRecord as exc:
                detail = getattr(exc, "error_message", None) or str(exc)
                self._invalid_reason = f"record does not match the stream's schema: {detail}"
        return record

    def _singer_validate_message(self, record: dict) -> None:
        missing = [k for k in self.key_properties if k not in record]
        if missing and self._invalid_reason is None:
            self._invalid_reason = f"record lacks key properties {', '.join(missing)}"

    def record_key(self, record: t.Mapping[str, t.Any], p_hash: str) -> str:
        """Ledger key: the stream's primary key values, else the payload hash."""
        if self.key_properties and all(record.get(k) is not None for k in self.key_properties):
            return pk_key([record[k] for k in self.key_properties])
        return "hash:" + p_hash

    def _remove_sdc_metadata_from_record(self, record: dict) -> None:
        """The SDK's metadata leaves the record, but a tombstone's ``_sdc_deleted_at`` stays: it is refused by name."""
        deleted_at = record.get("_sdc_deleted_at")
        super()._remove_sdc_metadata_from_record(record)
        if deleted_at:
            record["_sdc_deleted_at"] = deleted_at

    def process_record(self, record: dict, context: dict) -> None:
        """Build and validate the record's payload; a valid one joins the batch, a refused one the rejects."""
        if self._invalid_reason is not None:
            reason, self._invalid_reason = self._invalid_reason, None
            self.writer.reject(record, None, None, reason)
            return
        _ = context  # the batch is the sink's own queue
        if record.get("_sdc_deleted_at"):
            reason = "a deletion (_sdc_deleted_at is set): Closum's API deletes nothing; deselect or filter tombstones"
            self.writer.reject(record, None, None, reason)
            return
        problem = unsendable(record)
        if problem:
            self.writer.reject(record, None, None, problem)
            return
        extracted = extract(self.resource.name, record)
        if extracted.problem:
            self.writer.reject(record, None, None, extracted.problem)
            return
        try:
            payload = build_payload(
                self.resource, extracted.record, self.key_properties, options=self.load.settings.payload_options
            )
            problem = validation_message(self.resource, with_placeholders(self.resource.name, payload, extracted.names))
        except PayloadError as exc:
            payload, problem = {}, str(exc)
        if problem:
            self.writer.reject(record, payload or None, None, problem)
            return
        rid = record_id(record)
        if self.action == "update" and rid is None:
            self.writer.reject(record, payload, None, "action update needs the record's Closum id in field id")
            return
        lookups = dict(extracted.names) | ({"audience_lists": list(extracted.lists)} if extracted.lists else {})
        p_hash = payload_hash(payload | {"_lookups": lookups} if lookups else payload)
        item = Item(record, self.record_key(record, p_hash), payload, p_hash, rid, extracted.names, extracted.lists)
        with self._queue_lock:
            self._queue.append(item)

    # -- per batch -----------------------------------------------------------------
    def process_batch(self, context: dict) -> None:
        """Write the batch; return once every record is written, skipped or rejected."""
        _ = context  # the batch is the sink's own queue
        self.flush()

    def flush(self) -> None:
        """Write what the queue holds; return once it is written (also when another stream asks, see the module)."""
        with self._flush_lock:
            with self._queue_lock:
                items, self._queue = self._queue, []
            if not items:
                return
            if not self.dry_run:
                for parent in self.load.batches_of(rules_for(self.resource).parents):
                    parent.flush()  # the records this batch refers to are written first
            self.writer.write_batch(items)
