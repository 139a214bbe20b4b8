"""Writing one stream's valid records to Closum, each exactly once.

A batch's records are grouped by ledger key and the groups run on the run's
shared thread pool (``max_parallel_requests`` workers), so writes for one key
stay in order while different keys go in parallel; :meth:`StreamWriter.write_batch`
returns only when every record is written, skipped or rejected. What each
record needs is decided by :func:`target_closum.plan.decide`; a dry run counts
those decisions instead of carrying them out.

A create is written ahead in the ledger as ``pending`` just before its POST
goes out (once the token is held and the pace slot taken: a create never sent
is never pending); an answer lost on the way (500/502/504, timeout, dropped
connection) is followed by a search of the server before any new POST, and a
``pending`` intent a killed run left behind is settled the same way before the
stream's first write. A create, its retries, the token it needs and its
searches draw from one retry budget. A 2xx that is not the envelope ends the
run at once, the intent left pending for the next run to settle.
"""

from __future__ import annotations

import json
import threading
import typing as t
from concurrent.futures import Future, wait

from closum_api import registry, retry, stop
from closum_api.errors import (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumError,
    ClosumFatalError,
    ClosumOutcomeUnknown,
)
from closum_api.retry import TRANSIENT, ClosumGaveUp
from target_closum.payloads import canonical_json
from target_closum.plan import Create, Item, Skip, Update, decide
from target_closum.reconcile import find_created

if t.TYPE_CHECKING:
    import logging

    from closum_api.registry import Resource
    from target_closum.ledger import Entry
    from target_closum.load import LoadContext
    from target_closum.mapping import StreamMapping

# Failures that end the run as they are: their line already says what to fix.
_AS_THEY_ARE = (ClosumAuthError, ClosumBadResponse, ClosumGaveUp, stop.ClosumStopped)


class ClosumWriteError(ClosumError):
    """Writes could not be finished; the run stops without emitting STATE past them."""


class _UnresolvedError(Exception):
    """A create whose outcome stays unknown: its intent is left pending for the next run."""


class _CreateOp:
    """Where one create stands.

    Attributes:
        marked: its intent is pending in the ledger.
        maybe_written: a POST may have created the record since the last search.
        search_first: search the server before the next POST.
    """

    def __init__(self, item: Item, resource: Resource, *, recovering: bool) -> None:
        self.item = item
        self.resource = resource
        self.recovering = recovering
        self.marked = recovering
        self.maybe_written = recovering
        self.search_first = recovering


class _Settled(Exception):  # noqa: N818  # a signal inside the writer, not an error
    """The last look after a spent budget found the record: the create is settled."""


class StreamWriter:
    """Writes one stream's records to its Closum resource, through the run's shared parts.

    Args:
        load: what all streams of the run share (client, ledger, rejects file, pool, tallies).
        mapping: the stream's resource and action.
        logger: where the stream's messages go.
    """

    def __init__(self, load: LoadContext, mapping: StreamMapping, logger: logging.Logger) -> None:
        """Take the stream's tally from the run's context."""
        self.load = load
        self.mapping = mapping
        self.stream_name = mapping.stream
        self.resource: Resource = mapping.resource
        self.action = mapping.action
        self.dry_run = load.dry_run
        self.tally = load.tally_for(mapping)
        self.logger = logger

    def recover_pending(self) -> None:
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
    def write_batch(self, items: list[Item]) -> None:
        """Write the batch (or, in a dry run, count what would be written); return once all is settled."""
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
            if isinstance(first, (ClosumWriteError, *_AS_THEY_ARE)) or not isinstance(first, (ClosumError, *TRANSIENT)):
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
        self._create_with_intent(item, self.resource)

    def _create_with_intent(self, item: Item, resource: Resource, *, recovering: bool = False) -> None:
        """POST behind a pending intent; on a lost answer, search before trying again; one budget for all.

        The intent is marked pending just before the first POST goes out. A pending
        intent being settled (``recovering``) is searched for before the first POST.
        """
        attempts = self.load.client.attempts()
        op = _CreateOp(item, resource, recovering=recovering)
        try:
            with retry.using(attempts):
                while not self._create_round(op, attempts):
                    pass
        except _Settled:
            return
        except BaseException:
            if not op.maybe_written:
                self.load.ledger.forget(self.stream_name, item.key)  # never sent, or refused: not written
            raise

    def _create_round(self, op: _CreateOp, attempts: retry.Attempts) -> bool:
        """One search (when due) and one POST; True once the create is settled."""
        item, resource, ledger = op.item, op.resource, self.load.ledger
        if op.search_first:
            found = self._search(resource, item.payload, item.key)
            if found is not None:
                ledger.mark_done(self.stream_name, item.key, resource.name, found, item.payload_hash, "create")
                self._count_created(recovering=op.recovering, reconciled=True)
                self.logger.info(
                    "Found the record of key %s on the server (id %d) after a lost answer", item.key, found
                )
                return True
            op.maybe_written = False

        def mark_pending() -> None:
            if not op.marked:
                ledger.mark_pending(
                    self.stream_name, item.key, resource.name, canonical_json(item.payload), item.payload_hash
                )
                op.marked = True

        try:
            new_id = self.load.client.create(resource, item.payload, attempts=attempts, on_sending=mark_pending)
        except ClosumOutcomeUnknown as exc:
            op.maybe_written = True
            if exc.final:
                msg = (
                    f"stream {self.stream_name}: {exc} The create of key {item.key} may have happened: "
                    "it stays pending, and the next run checks it on the server"
                )
                raise ClosumWriteError(msg) from None
            self.logger.warning("POST /%s: outcome unknown (%s); checking the server", resource.path, exc)
            op.search_first = True
            self._wait_after_unknown(attempts, exc, resource, item, recovering=op.recovering)
            return False
        except ClosumFatalError as exc:
            if isinstance(exc, ClosumAuthError):
                raise
            ledger.forget(self.stream_name, item.key)
            self.reject(item.record, item.payload, exc.status, exc.server_message or str(exc))
            return True
        ledger.mark_done(self.stream_name, item.key, resource.name, new_id, item.payload_hash, "create")
        self._count_created(recovering=op.recovering, reconciled=False)
        return True

    def _wait_after_unknown(
        self, attempts: retry.Attempts, exc: ClosumOutcomeUnknown, resource: Resource, item: Item, *, recovering: bool
    ) -> None:
        """Wait before the search that follows a lost answer; when the budget is spent, one last look."""
        try:
            pause = attempts.next_wait(exc, f"POST /{resource.path}")
        except ClosumGaveUp:
            found = self._search(resource, item.payload, item.key)
            if found is not None:
                self.load.ledger.mark_done(
                    self.stream_name, item.key, resource.name, found, item.payload_hash, "create"
                )
                self._count_created(recovering=recovering, reconciled=True)
                raise _Settled from None
            msg = f"key {item.key} of stream {self.stream_name}"
            raise _UnresolvedError(msg) from None
        stop.sleep(pause)

    def _search(self, resource: Resource, payload: t.Mapping[str, t.Any], key: str) -> int | None:
        """Look for the record of a lost answer, within the create's budget (the thread's current one)."""
        try:
            return find_created(
                self.load.client,
                resource,
                payload,
                is_claimed=lambda cid: self.load.ledger.claimed(resource.name, cid),
            )
        except (ClosumAuthError, ClosumBadResponse, stop.ClosumStopped):
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
