"""One record written under its ledger key: the decision of :func:`target_closum.plan.decide` carried out.

Skip (the ledger holds the key as written), match (Closum holds the record by
its match key: the ledger learns its id), create (exactly once:
:mod:`target_closum.creator`) or update (``PUT``, idempotent). The
match key is looked up in the run's index while the key is held, so two
writers never create the same key twice. A refusal (4xx) makes the record a
reject; an auth failure or a missing endpoint ends the run. A create of the
same key left pending earlier (its answer lost) is settled before the key is
written again.
"""

from __future__ import annotations

import contextlib
import typing as t

from closum_api import registry
from closum_api.errors import ClosumAuthError, ClosumEndpointError, ClosumFatalError
from target_closum.creator import ClosumWriteError, CreateUnresolvedError, Creator, pending_item
from target_closum.index import KeyLocks
from target_closum.plan import Create, Item, Match, Outcome, Skip, Update, decide

if t.TYPE_CHECKING:
    import logging

    from closum_api.registry import Resource
    from target_closum.index import ServerIndex
    from target_closum.ledger import Entry
    from target_closum.load import LoadContext
    from target_closum.mapping import StreamMapping
    from target_closum.rejects import RejectsFile
    from target_closum.summary import Tally


class RecordWriter:
    """Writes records of one stream (or of a helper) to its resource, one key at a time.

    Args:
        load: the run's shared parts.
        mapping: the stream's resource, action and match key.
        logger: where its messages go.
        tally: where its records are counted.
        rejects: where its rejects are appended; None when a reject only goes back to the
            caller as an outcome (a reference created for a record: that record is rejected instead).
    """

    def __init__(
        self,
        load: LoadContext,
        mapping: StreamMapping,
        logger: logging.Logger,
        tally: Tally,
        rejects: RejectsFile | None,
    ) -> None:
        """Bind the writer to its stream."""
        self.load = load
        self.mapping = mapping
        self.stream_name = mapping.stream
        self.resource: Resource = mapping.resource
        self.action = mapping.action
        self.tally = tally
        self.rejects = rejects
        self.logger = logger
        self.creator = Creator(load, mapping.stream, tally, logger)
        self._key_locks: KeyLocks[str] = KeyLocks()

    def reject(
        self, record: t.Mapping[str, t.Any], payload: t.Mapping[str, t.Any] | None, status: int | None, message: str
    ) -> Outcome:
        """Count a record as rejected (and why) and, unless in a dry run, append it to the rejects file."""
        self.tally.reject(message)
        if self.load.dry_run:
            self.logger.warning("Would reject a record of stream %s: %s", self.stream_name, message)
        elif self.rejects is not None:
            self.rejects.write(stream=self.stream_name, record=record, payload=payload, status=status, message=message)
        return Outcome(None, "rejected", message)

    def match_index(self) -> ServerIndex | None:
        """The index this stream's records are matched in; None without match_on (or when not served)."""
        if not self.mapping.match_on:
            return None
        return self.load.index(self.resource, self.mapping.match_on)

    def write_one(self, item: Item) -> Outcome:
        """Write a record that other threads may write at the same time (a helper's): its key held throughout."""
        with self._key_locks.held(item.key):
            return self.write(item, self.settle_pending(item.key))

    def settle_pending(self, key: str) -> Entry | None:
        """The ledger's entry of ``key``, once an earlier create of it that lost its answer is settled."""
        ledger = self.load.ledger
        entry = ledger.get(self.stream_name, key)
        if entry is not None and entry.state == "pending":
            item = pending_item(entry)
            self._booked(self.creator.settle(item, self.resource), item)
            entry = ledger.get(self.stream_name, key)
        return entry

    def write(self, item: Item, entry: Entry | None) -> Outcome:
        """Write a record whose names are resolved, given its key's ledger entry (in the calling thread)."""
        index = self.match_index()
        key = index.rule.key(item.payload) if index is not None else None
        with index.key_lock(key) if index is not None else contextlib.nullcontext():
            matches = index.ids(key) if index is not None and key is not None else []
            decision = decide(self.action, entry, item, matches[0] if matches else None)
            return self._carry_out(decision, item, entry)

    def _carry_out(self, decision: Skip | Create | Update | Match, item: Item, entry: Entry | None) -> Outcome:
        if isinstance(decision, Skip):
            self.tally.add("skipped")
            if decision.changed:
                self.tally.add("changed_but_skipped")
            return Outcome(entry.closum_id if entry is not None else None, "skipped")
        if isinstance(decision, Match):
            self.load.ledger.mark_done(
                self.stream_name, item.key, self.resource.name, decision.closum_id, item.payload_hash, "match"
            )
            self.tally.add("matched")
            return Outcome(decision.closum_id, "matched")
        if isinstance(decision, Create):
            return self._booked(self.creator.create(item, self.resource), item)
        return self._update(item, decision.closum_id)

    def _update(self, item: Item, target_id: int) -> Outcome:
        try:
            self.load.client.update(self.resource, target_id, item.payload)
        except ClosumFatalError as exc:
            if isinstance(exc, (ClosumAuthError, ClosumEndpointError)):
                raise  # the run ends: no record of it can be written
            return self.reject(item.record, item.payload, exc.status, exc.server_message or str(exc))
        self.load.written(self.stream_name, item, self.resource, target_id, "update")
        self.tally.add("updated")
        return Outcome(target_id, "updated")

    def _booked(self, outcome: Outcome, item: Item) -> Outcome:
        """A create's outcome; one Closum refused is booked as the record's reject."""
        if outcome.kind != "rejected":
            return outcome
        return self.reject(item.record, item.payload, outcome.status, outcome.message)

    def recover(self) -> None:
        """Settle the creates a killed run left pending for this writer's stream.

        Raises:
            ClosumWriteError: one of them can be neither found on the server nor created.
        """
        entries = self.load.ledger.pending(self.stream_name)
        if not entries:
            return
        self.logger.warning(
            "Stream %s: %d writes were left pending by an earlier run; checking them on the server",
            self.stream_name,
            len(entries),
        )
        try:
            for entry in entries:
                resource = registry.get(entry.resource) if entry.resource else self.resource
                item = pending_item(entry)
                self._booked(self.creator.settle(item, resource), item)
        except CreateUnresolvedError as exc:
            msg = f"stream {self.stream_name}: a write left pending by an earlier run cannot be checked ({exc})"
            raise ClosumWriteError(msg) from exc
        self.logger.info("Stream %s: %d pending writes settled", self.stream_name, len(entries))
