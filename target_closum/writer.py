"""Writing one stream's valid records to Closum, each exactly once.

A batch's records are grouped by ledger key and the groups run on the run's
shared thread pool (``max_parallel_requests`` workers), so writes for one key
stay in order while different keys go in parallel; :meth:`StreamWriter.write_batch`
returns only when every record is written, skipped or rejected. What each
record needs is decided by :func:`target_closum.plan.decide`; a dry run counts
those decisions instead of carrying them out.

A create is written ahead in the ledger as ``pending`` just before its POST is
handed to the client (a create that fails before any byte leaves forgets its
intent again); an answer lost on the way (500/502/504, timeout, dropped
connection) is followed by a search of the server before any new POST, and a
``pending`` intent a killed run left behind is settled the same way before the
stream's first write. A create, its retries, the token it needs and its
searches draw from one retry budget: the POST gives up after ``max_retries + 1``
tries in a row whose outcome was unknown, each search page after as many failed
tries of its own. A 2xx that is not the envelope ends the
run at once, the intent left pending for the next run to settle.

Before a batch is written (its sink has written the streams it refers to first,
see :attr:`target_closum.rules.Rules.parents`), the indexes it needs are read (each
once per run, on the pool). Each record's lookups are then resolved, its ids
translated, and its match key looked up in the index while the key is held, so
two writers never create the same key twice. A lead's ``audience_lists`` become
memberships once the lead is written, through a helper writer of the stream
``<stream>.audience_lists``; a missing contact type or audience list is created
(``create_missing_references``) through a helper writer of ``<stream>.<resource>``.
Both keep their writes in the ledger like any stream.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import threading
import typing as t
from dataclasses import dataclass

from closum_api import registry, stop
from closum_api.errors import (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumEndpointError,
    ClosumError,
    ClosumFatalError,
    ClosumOutcomeUnknown,
)
from closum_api.failure import describe
from closum_api.retry import TRANSIENT, Budget, ClosumGaveUp
from closum_api.stop import STOP, ClosumStopped
from target_closum.index import default_match_on, fold_name
from target_closum.lookups import ClosumLookupError, LookupMissError, find, lookup_for, not_found
from target_closum.mapping import StreamMapping
from target_closum.payloads import canonical_json, payload_hash, pk_key
from target_closum.plan import Create, Item, Match, Skip, Update, decide
from target_closum.reconcile import candidates
from target_closum.rejects import RejectsFileError
from target_closum.rules import ALL_HELPERS, AUDIENCE_LIST, MEMBERSHIPS, Lookup, rules_for
from target_closum.summary import Tally

if t.TYPE_CHECKING:
    import logging
    from concurrent.futures import Future

    from closum_api.registry import Resource
    from target_closum.index import ServerIndex
    from target_closum.ledger import Entry
    from target_closum.load import LoadContext


class ClosumWriteError(ClosumError):
    """Writes could not be finished; the run stops without emitting STATE past them."""


# Failures that end the run as they are: their one line already says what to fix.
_AS_THEY_ARE = (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumEndpointError,
    ClosumGaveUp,
    ClosumStopped,
    ClosumLookupError,
    ClosumWriteError,
    RejectsFileError,
)


def _ends_as_it_is(exc: BaseException) -> bool:
    """Whether a failure ends the run as it is; if not (a Closum or network failure), as a :class:`ClosumWriteError`."""
    return isinstance(exc, _AS_THEY_ARE) or not isinstance(exc, (ClosumError, *TRANSIENT))


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


@dataclass(frozen=True)
class Outcome:
    """What became of one record.

    Attributes:
        closum_id: the id it has in Closum (None when rejected).
        kind: created, matched, updated, skipped or rejected.
        message: why it was rejected.
    """

    closum_id: int | None
    kind: str
    message: str = ""


class StreamWriter:
    """Writes one stream's records to its Closum resource, through the run's shared parts.

    Args:
        load: what all streams of the run share (client, ledger, rejects file, pool, tallies).
        mapping: the stream's resource and action.
        logger: where the stream's messages go.
    """

    def __init__(
        self,
        load: LoadContext,
        mapping: StreamMapping,
        logger: logging.Logger,
        *,
        tally: Tally | None = None,
        helper: bool = False,
    ) -> None:
        """Take the stream's tally from the run's context.

        Args:
            load: what all streams of the run share.
            mapping: the stream's resource, action and match key.
            logger: where the stream's messages go.
            tally: a tally of its own (a helper that creates references), instead of the stream's.
            helper: a helper writer of another stream's memberships or references: its ids are this
                account's own, never translated, and a helper with its own tally writes no rejects.
        """
        self.load = load
        self.mapping = mapping
        self.stream_name = mapping.stream
        self.resource: Resource = mapping.resource
        self.action = mapping.action
        self.dry_run = load.dry_run
        self.tally = tally if tally is not None else load.tally_for(mapping)
        self.writes_rejects = tally is None
        self.translates = not helper
        self.logger = logger
        self._helpers: dict[str, StreamWriter] = {}
        self._helpers_lock = threading.Lock()
        # A helper is asked for the same key from several threads at once (two leads join one list):
        # a key is written by one of them at a time. A stream's own keys are in one group already.
        self._ledger_key_locks: dict[str, threading.Lock] | None = {} if helper else None

    def recover_pending(self) -> None:
        """Settle the creates a killed run left pending for this stream's helpers, then for this stream."""
        for kind in ALL_HELPERS:
            # A helper's records name no references and join no lists: a helper has no helpers of its own.
            if self.load.ledger.pending(f"{self.stream_name}.{kind}"):
                self.helper(kind).recover()
        self.recover()

    # -- per record: the SDK's checks become rejects, not crashes ----------------
    def reject(
        self, record: t.Mapping[str, t.Any], payload: t.Mapping[str, t.Any] | None, status: int | None, message: str
    ) -> Outcome:
        """Count a record as rejected (and why) and, unless in a dry run, append it to the rejects file."""
        self.tally.reject(message)
        if self.dry_run:
            self.logger.warning("Would reject a record of stream %s: %s", self.stream_name, message)
        elif self.writes_rejects:
            self.load.rejects.write(
                stream=self.stream_name, record=record, payload=payload, status=status, message=message
            )
        return Outcome(None, "rejected", message)

    # -- helpers: memberships and created references -------------------------------
    def helper(self, kind: str) -> StreamWriter:
        """The writer of this stream's memberships (``audience_lists``) or of the references it creates."""
        with self._helpers_lock:
            if kind not in self._helpers:
                resource = registry.get("lead_audience_list" if kind == MEMBERSHIPS else kind)
                mapping = StreamMapping(f"{self.stream_name}.{kind}", resource, "create", default_match_on(resource))
                own = None if kind == MEMBERSHIPS else Tally(mapping.stream, resource.name, "create")
                self._helpers[kind] = StreamWriter(self.load, mapping, self.logger, tally=own, helper=True)
            return self._helpers[kind]

    # -- before a batch: indexes read, missing references created -------------------
    def prepare(self, items: t.Sequence[Item]) -> None:
        """Read the indexes this batch needs (in the calling thread), and create the references it lacks.

        Raises:
            ClosumLookupError: a lookup needs a list this account does not serve.
        """
        fields = {f for item in items for f in item.names}
        if any(item.lists for item in items):
            fields.add(MEMBERSHIPS)
        try:
            self.match_index()
            if MEMBERSHIPS in fields:
                self.helper(MEMBERSHIPS).match_index()
            for field in sorted(fields):
                self.reference_index(lookup_for(self.resource.name, field), field)
        except (ClosumError, *TRANSIENT) as exc:
            if _ends_as_it_is(exc):
                raise
            msg = (
                f"stream {self.stream_name}: could not read what Closum holds (to match records or resolve "
                f"names) after retries: {describe(exc)}; rerun to finish"
            )
            raise ClosumWriteError(msg) from exc
        self._create_missing_references(items)

    def _create_missing_references(self, items: t.Sequence[Item]) -> None:
        """Create the references the batch names but Closum lacks, one by one in input order.

        Done before the concurrent writes, so the first spelling in the input
        (``Feira 2026`` before ``FEIRA 2026``) is the one created, whatever the
        threads' timing.
        """
        if not self.load.settings.create_missing_references:
            return
        for item in items:
            wanted = [(lookup_for(self.resource.name, f), name, f) for f, name in sorted(item.names.items())]
            wanted += [(AUDIENCE_LIST, name, MEMBERSHIPS) for name in item.lists]
            for lookup, name, field in wanted:
                if lookup.creatable:
                    # A name that cannot be created is rejected by its record's own write, with the reason.
                    with contextlib.suppress(LookupMissError):
                        self._resolve_name(lookup, name, field)

    def match_index(self) -> ServerIndex | None:
        """The index this stream's records are matched in; None without match_on (or when not served)."""
        if not self.mapping.match_on:
            return None
        return self.load.index(self.resource, self.mapping.match_on)

    def reference_index(self, lookup: Lookup, field: str) -> ServerIndex:
        """The index a lookup resolves names in.

        Raises:
            ClosumLookupError: this account does not serve the list (another API revision).
        """
        reference = registry.get(lookup.reference)
        index = self.load.index(reference, (lookup.key,))
        if index is None:
            msg = (
                f"stream {self.stream_name}: field {field} needs Closum's {lookup.nouns}, but this account answers "
                f"404 for GET {reference.list_path} (its API revision has no {lookup.nouns}); drop field {field} "
                "from the input, or load into an account that has them"
            )
            raise ClosumLookupError(msg)
        return index

    def _resolve(self, item: Item) -> tuple[dict[str, t.Any], list[int]]:
        """The item's payload with its names resolved and its ids translated, and the lists it joins.

        Raises:
            LookupMissError: a name resolves to nothing (that may be created) or to several records.
        """
        payload = dict(item.payload)
        for field, name in sorted(item.names.items()):
            lookup = lookup_for(self.resource.name, field)
            payload[lookup.target] = self._resolve_name(lookup, name, field)
        if self.translates:
            by_name = {lookup_for(self.resource.name, f).target for f in item.names}
            for field, reference in rules_for(self.resource).translated.items():
                value = payload.get(field)
                if field not in by_name and isinstance(value, int) and not isinstance(value, bool):
                    payload[field] = self.load.ledger.loaded_id(reference, value) or value
        lists = [self._resolve_name(AUDIENCE_LIST, name, MEMBERSHIPS) for name in item.lists]
        return payload, lists

    def _resolve_name(self, lookup: Lookup, name: str, field: str) -> int:
        index = self.reference_index(lookup, field)
        found = find(index, lookup, name)
        if found is not None:
            return found
        if lookup.creatable and self.load.settings.create_missing_references:
            created = self.helper(lookup.reference).write_reference(lookup, name)
            if created.closum_id is not None:
                if created.kind == "created":
                    self.tally.add("references_created")
                return created.closum_id
            msg = f"{field}: {lookup.noun} {name!r} could not be created in Closum: {created.message}"
            raise LookupMissError(msg)
        raise LookupMissError(not_found(index, lookup, name, field))

    def write_reference(self, lookup: Lookup, name: str) -> Outcome:
        """Create (or find, should another writer have just created it) the reference ``name``."""
        payload = {lookup.key: name}
        item = Item(payload, "name:" + canonical_json([fold_name(name)]), payload, payload_hash(payload), None)
        return self.write_one(item)

    def _join_lists(self, lead_id: int, list_ids: t.Sequence[int]) -> None:
        """Make the lead a member of each list (matched on the pair: never twice)."""
        writer = self.helper(MEMBERSHIPS)
        for list_id in list_ids:
            payload = {"lead_id": lead_id, "audience_list_id": list_id}
            key = pk_key([lead_id, list_id])
            writer.write_one(Item(payload, key, payload, payload_hash(payload), None))

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
        self.prepare(items)
        self._write_groups(list(groups.values()))

    def _write_groups(self, groups: list[list[Item]]) -> None:
        """Write the groups on the shared pool: in order within a group, groups in parallel; stop at a failure."""
        abort = threading.Event()
        failures: list[BaseException] = []
        unresolved: list[str] = []
        lock = threading.Lock()

        def run(group: list[Item]) -> None:
            for item in group:
                if abort.is_set() or STOP.stopping():  # after a stop, no new write starts
                    return
                try:
                    self.write_one(item)
                except _UnresolvedError as exc:
                    with lock:
                        unresolved.append(str(exc))
                except BaseException as exc:  # noqa: BLE001  # kept, and raised again in the calling thread
                    with lock:
                        failures.append(exc)
                    abort.set()
                    return

        futures: list[Future[None]] = [self.load.executor.submit(run, g) for g in groups]
        stop.wait_all(futures)
        STOP.check()  # stopped: the writes in flight are done or left pending; no STATE past them
        if failures:
            first = failures[0]
            if _ends_as_it_is(first):
                raise first
            msg = f"stream {self.stream_name}: writing to Closum failed after retries ({describe(first)}); rerun"
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

    def write_one(self, item: Item) -> Outcome:
        """Write one record (in the calling thread) and say what became of it."""
        if self._ledger_key_locks is None:
            return self._write_key(item)
        with self._helpers_lock:
            lock = self._ledger_key_locks.setdefault(item.key, threading.Lock())
        with lock:
            return self._write_key(item)

    def _write_key(self, item: Item) -> Outcome:
        ledger = self.load.ledger
        entry = ledger.get(self.stream_name, item.key)
        if entry is not None and entry.state == "pending":
            # An earlier create of this key lost its answer: settle it before anything else.
            self._settle_pending(entry, self.resource)
            entry = ledger.get(self.stream_name, item.key)
        try:
            payload, list_ids = self._resolve(item)
        except LookupMissError as exc:
            return self.reject(item.record, item.payload, None, str(exc))
        item = dataclasses.replace(item, payload=payload)
        index = self.match_index()
        key = index.rule.key(payload) if index is not None else None
        with index.key_lock(key) if index is not None else contextlib.nullcontext():
            matches = index.ids(key) if index is not None and key is not None else []
            outcome = self._carry_out(decide(self.action, entry, item, matches[0] if matches else None), item, entry)
        if outcome.closum_id is not None and list_ids:
            self._join_lists(outcome.closum_id, list_ids)
        return outcome

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
            return self._create_with_intent(item, self.resource)
        return self._update(item, decision.closum_id)

    def _update(self, item: Item, target_id: int) -> Outcome:
        try:
            self.load.client.update(self.resource, target_id, item.payload)
        except ClosumFatalError as exc:
            return self._refused(item, exc)
        self._done(item, self.resource, target_id, "update")
        self.tally.add("updated")
        return Outcome(target_id, "updated")

    def _refused(self, item: Item, exc: ClosumFatalError) -> Outcome:
        """Closum refused the write: an auth failure or a missing endpoint ends the run, any other rejects the record.

        Raises:
            ClosumAuthError: the credentials or the token were refused.
            ClosumEndpointError: there is no endpoint to write to (api_url, or the API revision).
        """
        if isinstance(exc, (ClosumAuthError, ClosumEndpointError)):
            raise exc
        return self.reject(item.record, item.payload, exc.status, exc.server_message or str(exc))

    def _done(self, item: Item, resource: Resource, closum_id: int, action: str) -> None:
        """A create or update settled: the ledger and the run's indexes know its id."""
        self.load.ledger.mark_done(self.stream_name, item.key, resource.name, closum_id, item.payload_hash, action)
        self.load.note_written(resource, item.payload, closum_id, created=action == "create")

    def _create_with_intent(self, item: Item, resource: Resource, *, recovering: bool = False) -> Outcome:
        """POST behind a pending intent; on a lost answer, search before trying again; one budget for all.

        The intent is marked pending just before the first POST is handed to the client. A pending
        intent being settled (``recovering``) is searched for before the first POST.
        """
        budget = self.load.client.budget()
        op = _CreateOp(item, resource, recovering=recovering)
        try:
            while True:
                outcome = self._create_round(op, budget)
                if outcome is not None:
                    return outcome
        except BaseException:
            if not op.maybe_written:
                self.load.ledger.forget(self.stream_name, item.key)  # never sent, or refused: not written
            raise

    def _create_round(self, op: _CreateOp, budget: Budget) -> Outcome | None:
        """One search (when due) and one POST; the outcome once the create is settled."""
        item, resource, ledger = op.item, op.resource, self.load.ledger
        if op.search_first:
            found = self._look_for(op, budget)
            if found is not None:
                return found
            op.maybe_written = False

        if not op.marked:
            ledger.mark_pending(
                self.stream_name, item.key, resource.name, canonical_json(item.payload), item.payload_hash
            )
            op.marked = True
        try:
            new_id = self.load.client.create(resource, item.payload, budget=budget)
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
            return self._wait_after_unknown(budget, exc, op)
        except ClosumFatalError as exc:
            outcome = self._refused(item, exc)  # an auth failure raises: the caller forgets the intent
            ledger.forget(self.stream_name, item.key)  # refused: not written
            return outcome
        self._done(item, resource, new_id, "create")
        self._count_created(recovering=op.recovering, reconciled=False)
        return Outcome(new_id, "created")

    def _wait_after_unknown(self, budget: Budget, exc: ClosumOutcomeUnknown, op: _CreateOp) -> Outcome | None:
        """Wait before the search that follows a lost answer; when the POST's tries are spent, one last look.

        Returns:
            The outcome when the last look found the record; None after the wait.

        Raises:
            _UnresolvedError: the budget is spent and the last look did not find the record.
        """
        try:
            pause = budget.failed(exc, f"POST /{op.resource.path}")
        except ClosumGaveUp:
            found = self._look_for(op, budget)
            if found is not None:
                return found
            msg = f"key {op.item.key} of stream {self.stream_name}"
            raise _UnresolvedError(msg) from None
        STOP.sleep(pause)
        return None

    def _look_for(self, op: _CreateOp, budget: Budget) -> Outcome | None:
        """Search the server for the record of a lost answer, within the create's budget.

        Returns:
            The create's outcome, settled in the ledger and counted, when the record is found; None when not.

        Raises:
            _UnresolvedError: the list could not be read.
        """
        item, resource = op.item, op.resource
        try:
            found = next(
                (
                    cid
                    for cid in candidates(self.load.client, resource, item.payload, budget=budget)
                    if not self.load.ledger.claimed(resource.name, cid)
                ),
                None,
            )
        except (ClosumAuthError, ClosumBadResponse, ClosumStopped):
            raise
        except (ClosumError, *TRANSIENT) as exc:
            msg = f"key {item.key} of stream {self.stream_name}: could not list /{resource.path} ({exc})"
            raise _UnresolvedError(msg) from exc
        if found is None:
            return None
        self._done(item, resource, found, "create")
        self._count_created(recovering=op.recovering, reconciled=True)
        self.logger.info("Found the record of key %s on the server (id %d) after a lost answer", item.key, found)
        return Outcome(found, "created")

    def _count_created(self, *, recovering: bool, reconciled: bool) -> None:
        if recovering:  # an earlier run's write: not one of this run's input records
            self.tally.add("recovered")
            return
        self.tally.add("created")
        if reconciled:
            self.tally.add("reconciled")

    def _settle_pending(self, entry: Entry, resource: Resource) -> Outcome:
        """Settle a pending create of the ledger: find it on the server, else create it."""
        payload = json.loads(entry.payload or "{}")
        # Not one of this run's records: a reject shows the payload in place of the record.
        item = Item(payload, entry.record_key, payload, entry.payload_hash, None)
        return self._create_with_intent(item, resource, recovering=True)

    def recover(self) -> None:
        """Settle the pending intents a killed run left for this writer's own stream.

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
                self._settle_pending(entry, registry.get(entry.resource) if entry.resource else self.resource)
        except _UnresolvedError as exc:
            msg = f"stream {self.stream_name}: a write left pending by an earlier run cannot be checked ({exc})"
            raise ClosumWriteError(msg) from exc
        self.logger.info("Stream %s: %d pending writes settled", self.stream_name, len(entries))
