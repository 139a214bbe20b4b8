"""The sink: maps, validates and writes one stream's records, a bounded batch at a time.

Records are turned into payloads and validated as they arrive (refused ones go
to the rejects file at once); valid ones wait in the batch. When the batch is
drained, its records are grouped by ledger key and the groups run on the
run's shared thread pool (``max_parallel_requests`` workers), so writes for
one key stay in order while different keys go in parallel. ``process_batch``
returns only when every record of the batch is written, skipped or rejected,
so the SDK emits the tap's STATE only after the records before it are safe.

A sink reaches everything it shares with other streams (client, ledger,
rejects file, thread pool, tallies) through the :class:`LoadContext` the target
hands it; it never calls the target.
"""

from __future__ import annotations

import json
import threading
import time
import typing as t
from concurrent.futures import Future, wait

from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import BatchSink

from closum_api import registry
from closum_api.client import CONNECTION_FAILURES
from closum_api.errors import (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumError,
    ClosumFatalError,
    ClosumOutcomeUnknown,
    ClosumRetriableError,
    jitter,
    retry_waits,
)
from target_closum.payloads import (
    build_payload,
    canonical_json,
    payload_hash,
    record_id,
    validation_message,
)
from target_closum.plan import Create, Item, Skip, Update, decide
from target_closum.reconcile import find_created

if t.TYPE_CHECKING:
    from singer_sdk import Target

    from closum_api.registry import Resource
    from target_closum.ledger import Entry
    from target_closum.load import LoadContext
    from target_closum.mapping import StreamMapping

MAX_WAIT_SECONDS = 30.0
TRANSIENT = (ClosumRetriableError, *CONNECTION_FAILURES)


class ClosumWriteError(ClosumError):
    """Writes could not be finished; the run stops without emitting STATE past them."""


class _UnresolvedError(Exception):
    """A create whose outcome stays unknown: its intent is left pending for the next run."""


class ClosumSink(BatchSink):
    """Writes one stream to one Closum resource.

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
        """Take the stream's mapping and tally from the run's shared context."""
        self.load = load
        self.mapping: StreamMapping = load.settings.mapping_for(stream_name)
        self.resource: Resource = self.mapping.resource
        self.action = self.mapping.action
        self.dry_run = load.dry_run
        self.tally = load.tally_for(self.mapping)
        self._invalid_reason: str | None = None
        super().__init__(target, stream_name, schema, key_properties)

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
        if not self.dry_run and self.load.first_recovery(self.stream_name):
            self._recover_pending()

    def _recover_pending(self) -> None:
        """Settle the creates a killed run left pending for this stream."""
        entries = self.load.ledger.pending(self.stream_name)
        if not entries:
            return
        self.logger.warning(
            "Stream %s: %d writes were left pending by an earlier run; checking them on the server",
            self.stream_name,
            len(entries),
        )
        with self.load.busy():
            settled = self.recover(entries)
        self.logger.info("Stream %s: %d pending writes settled", self.stream_name, settled)

    # -- per record: the SDK's checks become rejects, not crashes ----------------
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
            return "pk:" + canonical_json([record[k] for k in self.key_properties])
        return "hash:" + p_hash

    def process_record(self, record: dict, context: dict) -> None:
        """Build and validate the record's payload; a valid one joins the batch, a refused one the rejects."""
        if self._invalid_reason is not None:
            reason, self._invalid_reason = self._invalid_reason, None
            self.reject(record, None, None, reason)
            return
        payload = build_payload(self.resource, record, self.key_properties)
        problem = validation_message(self.resource, payload)
        if problem:
            self.reject(record, payload, None, problem)
            return
        rid = record_id(record)
        if self.action == "update" and rid is None:
            self.reject(record, payload, None, "action update needs the record's Closum id in field id")
            return
        p_hash = payload_hash(payload)
        item = Item(record, self.record_key(record, p_hash), payload, p_hash, rid)
        context.setdefault("records", []).append(item)

    def reject(
        self, record: t.Mapping[str, t.Any], payload: t.Mapping[str, t.Any] | None, status: int | None, message: str
    ) -> None:
        """Count a record as rejected and, unless in a dry run, append it to the rejects file."""
        self.tally.add("rejected")
        if self.dry_run:
            self.logger.warning("Would reject a record of stream %s: %s", self.stream_name, message)
            return
        self.load.rejects.write(stream=self.stream_name, record=record, payload=payload, status=status, message=message)

    # -- per batch -----------------------------------------------------------------
    def process_batch(self, context: dict) -> None:
        """Write the batch (or, in a dry run, count what would be written); return once all is settled."""
        items: list[Item] = context.pop("records", [])
        if not items:
            return
        groups: dict[str, list[Item]] = {}
        for item in items:
            groups.setdefault(item.key, []).append(item)
        if self.dry_run:
            for group in groups.values():
                for item in group:
                    self._plan(item)
            return
        with self.load.busy():
            self._write_groups(list(groups.values()))

    def _write_groups(self, groups: list[list[Item]]) -> None:
        """Write the groups on the shared pool: in order within a group, groups in parallel; stop at a failure."""
        abort = threading.Event()
        failures: list[BaseException] = []
        unresolved: list[str] = []
        lock = threading.Lock()

        def run(group: list[Item]) -> None:
            for item in group:
                if abort.is_set():
                    return
                try:
                    self._write(item)
                except _UnresolvedError as exc:
                    with lock:
                        unresolved.append(str(exc))
                except BaseException as exc:  # noqa: BLE001  # kept, and raised again in the calling thread
                    with lock:
                        failures.append(exc)
                    abort.set()
                    return

        futures: list[Future[None]] = [self.load.executor.submit(run, g) for g in groups]
        wait(futures)
        if failures:
            first = failures[0]
            if isinstance(first, (ClosumAuthError, ClosumWriteError)) or not isinstance(
                first, (ClosumError, *TRANSIENT)
            ):
                raise first
            msg = f"stream {self.stream_name}: writing to Closum failed after retries ({first}); rerun to finish"
            raise ClosumWriteError(msg) from first
        if unresolved:
            msg = (
                f"stream {self.stream_name}: {len(unresolved)} creates have an unknown outcome that could not be "
                f"checked on the server (first: {unresolved[0]}); rerun to reconcile them"
            )
            raise ClosumWriteError(msg)

    def _plan(self, item: Item) -> None:
        """Dry run: count what would be written; read the ledger, write nothing."""
        decision = decide(self.action, self.load.ledger.get(self.stream_name, item.key), item)
        if isinstance(decision, Skip):
            self.tally.add("skipped")
        elif isinstance(decision, Update):
            self.tally.add("would_update")
        else:
            self.tally.add("would_create")

    def _write(self, item: Item) -> None:
        ledger = self.load.ledger
        entry = ledger.get(self.stream_name, item.key)
        if entry is not None and entry.state == "pending":
            # An earlier create of this key lost its answer: settle it before anything else.
            self._settle_pending(entry, self.resource)
            entry = ledger.get(self.stream_name, item.key)
        decision = decide(self.action, entry, item)
        if isinstance(decision, Skip):
            self.tally.add("skipped")
            if decision.changed:
                self.tally.add("changed_but_skipped")
        elif isinstance(decision, Create):
            self._create(item)
        else:
            self._update(item, decision.closum_id)

    def _update(self, item: Item, target_id: int) -> None:
        try:
            self.load.client.update(self.resource, target_id, item.payload)
        except ClosumAuthError:
            raise
        except ClosumFatalError as exc:
            self.reject(item.record, item.payload, exc.status, exc.server_message or str(exc))
            return
        self.load.ledger.mark_done(
            self.stream_name, item.key, self.resource.name, target_id, item.payload_hash, "update"
        )
        self.tally.add("updated")

    def _create(self, item: Item) -> None:
        self.load.ledger.mark_pending(
            self.stream_name, item.key, self.resource.name, canonical_json(item.payload), item.payload_hash
        )
        self._create_with_intent(item, self.resource)

    def _create_with_intent(self, item: Item, resource: Resource, *, recovering: bool = False) -> None:
        """POST behind a pending intent; on a lost answer, search before trying again.

        A pending intent being settled (``recovering``) is searched for before the first POST.
        """
        key, payload, p_hash = item.key, item.payload, item.payload_hash
        search_first = recovering
        ledger = self.load.ledger
        client = self.load.client
        # As many creates as the client has tries, each lost answer followed by a search,
        # waiting between them as the shared retry policy does.
        waits = retry_waits(client.backoff_base, cap=MAX_WAIT_SECONDS)
        next(waits)
        for attempt in range(client.max_tries):
            if attempt > 0:
                time.sleep(jitter(waits.send(None)))
            if search_first or attempt > 0:
                found = self._search(resource, payload, key)
                if found is not None:
                    ledger.mark_done(self.stream_name, key, resource.name, found, p_hash, "create")
                    self._count_created(recovering=recovering, reconciled=True)
                    self.logger.info("Found the record of key %s on the server (id %d) after a lost answer", key, found)
                    return
            try:
                new_id = client.create(resource, payload)
            except (ClosumOutcomeUnknown, ClosumBadResponse) as exc:
                self.logger.warning("POST /%s: outcome unknown (%s); checking the server", resource.path, exc)
                search_first = True
                continue
            except ClosumAuthError:
                ledger.forget(self.stream_name, key)
                raise
            except ClosumFatalError as exc:
                ledger.forget(self.stream_name, key)
                self.reject(item.record, payload, exc.status, exc.server_message or str(exc))
                return
            except TRANSIENT:
                ledger.forget(self.stream_name, key)  # 429/503/refused: surely not written
                raise
            ledger.mark_done(self.stream_name, key, resource.name, new_id, p_hash, "create")
            self._count_created(recovering=recovering, reconciled=False)
            return
        # The last attempt's answer was lost too: one more look, else leave it pending.
        found = self._search(resource, payload, key)
        if found is not None:
            ledger.mark_done(self.stream_name, key, resource.name, found, p_hash, "create")
            self._count_created(recovering=recovering, reconciled=True)
            return
        msg = f"key {key} of stream {self.stream_name}"
        raise _UnresolvedError(msg)

    def _search(self, resource: Resource, payload: t.Mapping[str, t.Any], key: str) -> int | None:
        try:
            return find_created(
                self.load.client,
                resource,
                payload,
                is_claimed=lambda cid: self.load.ledger.claimed(resource.name, cid),
            )
        except ClosumAuthError:
            raise
        except (ClosumError, *TRANSIENT) as exc:
            msg = f"key {key} of stream {self.stream_name}: could not list /{resource.path} ({exc})"
            raise _UnresolvedError(msg) from exc

    def _count_created(self, *, recovering: bool, reconciled: bool) -> None:
        if recovering:  # an earlier run's write: not one of this run's input records
            self.tally.add("recovered")
            return
        self.tally.add("created")
        if reconciled:
            self.tally.add("reconciled")

    def _settle_pending(self, entry: Entry, resource: Resource) -> None:
        """Settle a pending create of the ledger: find it on the server, else create it."""
        payload = json.loads(entry.payload or "{}")
        # Not one of this run's records: a reject shows the payload in place of the record.
        item = Item(payload, entry.record_key, payload, entry.payload_hash, None)
        self._create_with_intent(item, resource, recovering=True)

    def recover(self, entries: list[Entry]) -> int:
        """Settle the pending intents a killed run left for this stream; the number settled.

        Raises:
            ClosumWriteError: one of them can be neither found on the server nor created.
        """
        settled = 0
        for entry in entries:
            try:
                self._settle_pending(entry, registry.get(entry.resource) if entry.resource else self.resource)
            except _UnresolvedError as exc:
                msg = f"stream {self.stream_name}: a write left pending by an earlier run cannot be checked ({exc})"
                raise ClosumWriteError(msg) from exc
            settled += 1
        return settled
