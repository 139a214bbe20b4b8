"""Creates written exactly once: the machine of :mod:`target_closum.create_states` carried out.

A create is the one write that is not idempotent. Its intent is written to the
ledger (``pending``, with its payload) just before the POST is handed to the
client; Closum's answer makes it ``done`` with the new id. An answer lost on the
way is never followed by a blind POST: the newest records are searched first
(:func:`target_closum.reconcile.candidates`), and an intent a killed run left
``pending`` is settled the same way before the stream's first write. The POST,
its retries, the token it needs and its searches draw from one retry budget:
the POST gives up after ``max_retries + 1`` tries in a row whose outcome was
unknown (one last search follows), each search page after as many failed tries
of its own. A 2xx that is not the envelope ends the run at once, the intent
left pending for the next run to settle.
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass, field

from closum_api.errors import (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumEndpointError,
    ClosumError,
    ClosumFatalError,
    ClosumOutcomeUnknown,
)
from closum_api.retry import TRANSIENT, ClosumGaveUp
from closum_api.stop import ClosumStopped
from target_closum.create_states import CreateEvent, CreateMachine, CreateState
from target_closum.payloads import canonical_json
from target_closum.plan import Item, Outcome
from target_closum.reconcile import candidates

if t.TYPE_CHECKING:
    import logging

    from closum_api.registry import Resource
    from closum_api.retry import Budget
    from target_closum.ledger import Entry
    from target_closum.load import LoadContext
    from target_closum.summary import Tally


class ClosumWriteError(ClosumError):
    """Writes could not be finished; the run stops without emitting STATE past them."""


class CreateUnresolvedError(Exception):
    """A create whose outcome stays unknown: its intent is left pending for the next run."""


@dataclass
class _Create:
    """One create being carried out.

    Attributes:
        item: the record.
        resource: what it is created in.
        budget: the retry budget of the POST, its token and its searches.
        recovering: an intent a killed run left (counted as recovered, not created).
        machine: where it stands.
        last_look: the POST's tries are spent: a search that misses gives up.
    """

    item: Item
    resource: Resource
    budget: Budget
    recovering: bool
    machine: CreateMachine = field(default_factory=CreateMachine)
    last_look: bool = False


class Creator:
    """Carries out the exactly-once creates of one stream (or helper), through the run's client and ledger.

    Args:
        load: the run's shared parts (client, ledger, indexes).
        stream: the ledger's stream name.
        tally: where its creates are counted (created, reconciled, recovered).
        logger: where its messages go.
    """

    def __init__(self, load: LoadContext, stream: str, tally: Tally, logger: logging.Logger) -> None:
        """Bind the creator to its stream."""
        self.load = load
        self.stream = stream
        self.tally = tally
        self.logger = logger

    def create(self, item: Item, resource: Resource) -> Outcome:
        """Create ``item`` once: from NEW to DONE, or to REJECTED (its outcome says why).

        Raises:
            CreateUnresolvedError: it may exist and could not be found (UNRESOLVED).
            ClosumWriteError: a 2xx that is not the envelope (UNRESOLVED).
        """
        return self._run(_Create(item, resource, self.load.client.budget(), recovering=False))

    def settle(self, item: Item, resource: Resource) -> Outcome:
        """Settle an intent left pending (:func:`pending_item`): from UNKNOWN (search first) to DONE, or to REJECTED.

        Raises:
            CreateUnresolvedError: it may exist and could not be found (UNRESOLVED).
            ClosumWriteError: a 2xx that is not the envelope (UNRESOLVED).
        """
        machine = CreateMachine(CreateState.UNKNOWN)
        return self._run(_Create(item, resource, self.load.client.budget(), recovering=True, machine=machine))

    def _run(self, op: _Create) -> Outcome:
        outcome: Outcome | None = None
        try:
            while outcome is None:
                if op.machine.state is CreateState.NEW:
                    self._mark(op)
                elif op.machine.state is CreateState.PENDING:
                    outcome = self._post(op)
                else:
                    outcome = self._look(op)
        except BaseException:
            if op.machine.fail() is CreateState.FAILED:
                self.load.ledger.forget(self.stream, op.item.key)  # never sent, or surely not written
            raise
        return outcome

    def _mark(self, op: _Create) -> None:
        """NEW: the intent written to the ledger with its payload (PENDING)."""
        item = op.item
        self.load.ledger.mark_pending(
            self.stream, item.key, op.resource.name, canonical_json(item.payload), item.payload_hash
        )
        op.machine.on(CreateEvent.MARK)

    def _post(self, op: _Create) -> Outcome | None:
        """PENDING: the POST (SENT); the outcome when it settles the create, None after a lost answer (UNKNOWN).

        Raises:
            ClosumWriteError: a 2xx that is not the envelope.
            ClosumAuthError: the credentials or the token were refused.
            ClosumEndpointError: there is no endpoint to create in.
        """
        op.machine.on(CreateEvent.SEND)
        try:
            new_id = self.load.client.create(op.resource, op.item.payload, budget=op.budget)
        except ClosumOutcomeUnknown as exc:
            if exc.final:
                op.machine.on(CreateEvent.GIVE_UP)
                msg = (
                    f"stream {self.stream}: {exc} The create of key {op.item.key} may have happened: "
                    "it stays pending, and the next run checks it on the server"
                )
                raise ClosumWriteError(msg) from None
            op.machine.on(CreateEvent.LOSE)
            self.logger.warning("POST /%s: outcome unknown (%s); checking the server", op.resource.path, exc)
            self._wait(op, exc)
            return None
        except ClosumFatalError as exc:
            if isinstance(exc, (ClosumAuthError, ClosumEndpointError)):
                raise  # the run ends: no record of it can be written
            op.machine.on(CreateEvent.REFUSE)
            self.load.ledger.forget(self.stream, op.item.key)
            return Outcome(None, "rejected", exc.server_message or str(exc), exc.status)
        op.machine.on(CreateEvent.ANSWER)
        self._done(op, new_id, reconciled=False)
        return Outcome(new_id, "created")

    def _wait(self, op: _Create, lost: ClosumOutcomeUnknown) -> None:
        """After a lost answer: the wait before the search, drawn from the budget; none once its tries are spent."""
        try:
            pause = op.budget.failed(lost, f"POST /{op.resource.path}")
        except ClosumGaveUp:
            op.last_look = True
            return
        self.load.stop.sleep(pause)

    def _look(self, op: _Create) -> Outcome | None:
        """UNKNOWN: search; the outcome when found (DONE), None when absent (PENDING: send again).

        Raises:
            CreateUnresolvedError: absent after the POST's last try, or the list could not be read (UNRESOLVED).
        """
        found = self._search(op)
        if found is not None:
            op.machine.on(CreateEvent.FIND)
            self._done(op, found, reconciled=True)
            self.logger.info("Found the record of key %s on the server (id %d) after a lost answer", op.item.key, found)
            return Outcome(found, "created")
        if op.last_look:
            op.machine.on(CreateEvent.GIVE_UP)
            msg = f"key {op.item.key} of stream {self.stream}"
            raise CreateUnresolvedError(msg)
        op.machine.on(CreateEvent.MISS)
        return None

    def _search(self, op: _Create) -> int | None:
        """The id of the record a lost answer created, within the create's budget; None when absent.

        Raises:
            CreateUnresolvedError: the list could not be read (UNRESOLVED).
        """
        resource = op.resource
        try:
            return next(
                (
                    cid
                    for cid in candidates(self.load.client, resource, op.item.payload, budget=op.budget)
                    if not self.load.ledger.claimed(resource.name, cid)
                ),
                None,
            )
        except (ClosumAuthError, ClosumBadResponse, ClosumStopped):
            raise
        except (ClosumError, *TRANSIENT) as exc:
            op.machine.on(CreateEvent.GIVE_UP)
            msg = f"key {op.item.key} of stream {self.stream}: could not list /{resource.path} ({exc})"
            raise CreateUnresolvedError(msg) from exc

    def _done(self, op: _Create, closum_id: int, *, reconciled: bool) -> None:
        """DONE: the ledger and the run's indexes know the id; counted."""
        self.load.written(self.stream, op.item, op.resource, closum_id, "create")
        if op.recovering:  # an earlier run's write: not one of this run's input records
            self.tally.add("recovered")
            return
        self.tally.add("created")
        if reconciled:
            self.tally.add("reconciled")


def pending_item(entry: Entry) -> Item:
    """The create of a pending ledger row, as an item (not one of this run's records: its payload stands in)."""
    payload = json.loads(entry.payload or "{}")
    return Item(payload, entry.record_key, payload, entry.payload_hash, None)
