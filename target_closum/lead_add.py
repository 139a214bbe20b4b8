"""Writing one stream's contacts through Closum's V2 API (``POST /v2/lead/add/``), each once.

:class:`ContactWriter` is the V2 counterpart of :class:`target_closum.writer.StreamWriter`
(the sink hands it the same items and asks the same of it: ``reject``,
``recover_pending``, ``write_batch``). What differs is the API's own promise:

- With ``update_enabled`` (the default), Closum updates the contact it already
  has (same email, else same mobile number) instead of adding a second one, so
  an add is safe to send again: every transient failure is retried, a lost
  answer needs no search (the V2 API documents no way to search), and a replay
  of the same input on a machine without the ledger updates instead of
  creating. The ledger still records each add (key, payload hash, the id if the
  answer gave one), so a rerun here skips what is loaded and sends what changed.
- Without it, an add is not safe to send twice: it is written ahead in the
  ledger as ``pending``, and an answer lost after sending ends the run with the
  key left pending (nothing can tell whether Closum wrote it). A later run sends
  a pending add again only with ``update_enabled`` on; with it off, it stops
  with the same line.

Records that name the same contact (the same email, else the same mobile
number) are written one after the other, different contacts in parallel on the
run's pool. ``contact_lifecycle_stage`` is looked up by label: in the account's
list when V1 credentials are set, else among the nine stages the V2
documentation's ids name (:data:`closum_api.v2.LIFECYCLE_STAGES`).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import typing as t

from closum_api import registry, v2
from closum_api.errors import ClosumAuthError, ClosumEndpointError, ClosumError, ClosumFatalError, ClosumOutcomeUnknown
from closum_api.failure import failure_line
from closum_api.registry import Api
from closum_api.retry import TRANSIENT
from target_closum.index import KeyLocks, KeyRule, ServerIndex
from target_closum.lookups import LookupMissError, find, lookup_for, not_found
from target_closum.payloads import canonical_json
from target_closum.writer import write_groups

if t.TYPE_CHECKING:
    import logging

    from closum_api.registry import Resource
    from closum_api.retry import Budget
    from target_closum.ledger import Entry
    from target_closum.load import LoadContext
    from target_closum.mapping import StreamMapping
    from target_closum.plan import Item

#: what the ledger records as the action of a V2 add
ACTION = "add"
NOTE_UPDATE_ENABLED = (
    "with update_enabled Closum updates a contact it has already: created counts the adds of records this ledger "
    "did not hold, new contacts or not (the V2 answer does not say which)"
)
NOTE_NO_UPDATE = (
    "update_enabled is off: Closum refuses a contact it has already, and a record changed since it was loaded is "
    "not sent again"
)


class ClosumAddError(ClosumError):
    """Adds could not be finished; the run stops without emitting STATE past them."""


class ContactWriter:
    """Writes one stream's records to a V2 resource through ``lead/add``, through the run's shared parts.

    Args:
        load: what all streams of the run share (client, ledger, rejects file, pool, tallies).
        mapping: the stream's resource.
        logger: where the stream's messages go.
    """

    def __init__(self, load: LoadContext, mapping: StreamMapping, logger: logging.Logger) -> None:
        """Take the stream's tally from the run's context."""
        self.load = load
        self.mapping = mapping
        self.stream_name = mapping.stream
        self.resource: Resource = mapping.resource
        self.update_enabled = load.settings.update_enabled
        self.dry_run = load.dry_run
        self.tally = load.tally_for(mapping)
        self.tally.note = NOTE_UPDATE_ENABLED if self.update_enabled else NOTE_NO_UPDATE
        self.logger = logger
        self._lock = threading.Lock()
        self._key_locks: KeyLocks[str] = KeyLocks()
        self._stages: ServerIndex | None = None

    # -- per record -----------------------------------------------------------------
    def reject(
        self, record: t.Mapping[str, t.Any], payload: t.Mapping[str, t.Any] | None, status: int | None, message: str
    ) -> None:
        """Count a record as rejected (and why) and, unless in a dry run, append it to the rejects file."""
        self.tally.reject(message)
        if self.dry_run:
            self.logger.warning("Would reject a record of stream %s: %s", self.stream_name, message)
        else:
            self.load.rejects.write(
                stream=self.stream_name, record=record, payload=payload, status=status, message=message
            )

    # -- before the first write: adds an earlier run left pending -------------------------
    def recover_pending(self) -> None:
        """Send again the adds a stopped run left pending, when that is safe (``update_enabled``).

        Raises:
            ClosumAddError: some are pending and ``update_enabled`` is off: nothing can settle them.
        """
        entries = self.load.ledger.pending(self.stream_name)
        if not entries:
            return
        if not self.update_enabled:
            raise ClosumAddError(self._unsettled(entries[0].record_key, len(entries)))
        self.logger.warning(
            "Stream %s: %d adds were left pending by an earlier run; sending them again (update_enabled: Closum "
            "updates a contact it has, so none is added twice)",
            self.stream_name,
            len(entries),
        )
        for entry in entries:
            self._send_again(entry)

    def _send_again(self, entry: Entry) -> None:
        payload = json.loads(entry.payload or "{}") | {"update_enabled": True}
        try:
            answer = self.load.client.add(self.resource, payload, resend_safe=True, budget=self._budget())
        except ClosumFatalError as exc:
            if isinstance(exc, (ClosumAuthError, ClosumEndpointError)):
                raise
            self.load.ledger.forget(self.stream_name, entry.record_key)
            self.reject(payload, payload, exc.status, exc.server_message or str(exc))
            return
        self.load.ledger.mark_done(
            self.stream_name, entry.record_key, self.resource.name, answer.closum_id, entry.payload_hash, ACTION
        )
        self.tally.add("recovered")

    def _unsettled(self, key: str, count: int) -> str:
        return (
            f"stream {self.stream_name}: {count} add{'s' if count != 1 else ''} (first: key {key}) may have been "
            "written by Closum, the answer lost, and its V2 API offers no documented way to check: left pending. "
            "Rerun with update_enabled on (the default) to send them again safely (Closum then updates what it "
            "has), or check the contacts in Closum and remove their rows from the ledger"
        )

    # -- per batch ----------------------------------------------------------------------
    def write_batch(self, items: list[Item]) -> None:
        """Write the batch (or, in a dry run, count what would be written); return once all is settled."""
        if self.dry_run:
            for item in items:
                self._count(self._decide(item), dry=True)
            return
        if any(item.names for item in items):
            self._stage_index()
        groups: dict[str, list[Item]] = {}
        for item in items:
            groups.setdefault(_contact_of(item), []).append(item)
        self._write_groups(list(groups.values()))

    def _write_groups(self, groups: list[list[Item]]) -> None:
        """The groups on the shared pool: in order within a group, groups in parallel; stop at the first failure."""
        failures, _ = write_groups(self.load.executor, groups, self.write_one, stop=self.load.stop)
        if failures:
            first = failures[0]
            if isinstance(first, ClosumError):
                raise first
            msg = f"stream {self.stream_name}: adding to Closum failed ({failure_line(first)}); rerun"
            raise ClosumAddError(msg) from first

    def _decide(self, item: Item) -> str:
        """``skip``, ``add`` (a key the ledger does not hold as written) or ``again`` (its payload changed since)."""
        entry = self.load.ledger.get(self.stream_name, item.key)
        if entry is None or entry.state != "done":
            return "add"
        if entry.payload_hash == item.payload_hash or not self.update_enabled:
            return "skip"
        return "again"

    def _count(self, decision: str, *, dry: bool) -> None:
        names = {"skip": "skipped", "add": "created", "again": "updated"}
        if dry and decision != "skip":
            self.tally.add("would_" + ("create" if decision == "add" else "update"))
        else:
            self.tally.add(names[decision])

    def write_one(self, item: Item) -> None:
        """Write one record (in the calling thread), one record of a ledger key at a time."""
        with self._key_locks.held(item.key):
            self._write_key(item)

    def _write_key(self, item: Item) -> None:
        decision = self._decide(item)
        if decision == "skip":
            self._count(decision, dry=False)
            return
        try:
            payload = self._resolve(item)
        except LookupMissError as exc:
            self.reject(item.record, item.payload, None, str(exc))
            return
        item = dataclasses.replace(item, payload=payload)
        try:
            answer = self._add(item)
        except ClosumFatalError as exc:
            if isinstance(exc, (ClosumAuthError, ClosumEndpointError)):
                raise
            self.reject(item.record, item.payload, exc.status, exc.server_message or str(exc))
            return
        self.load.ledger.mark_done(
            self.stream_name, item.key, self.resource.name, answer.closum_id, item.payload_hash, ACTION
        )
        self._count(decision, dry=False)

    def _add(self, item: Item) -> v2.Answer:
        """Send the add; without ``update_enabled``, behind a pending intent (dropped unless the outcome is unknown).

        Raises:
            ClosumAddError: an add that is not safe to resend lost its answer (its key stays pending).
        """
        # Written just before the add is handed to the client, as a V1 create's intent (target_closum.creator).
        marked = not self.update_enabled
        if marked:
            self.load.ledger.mark_pending(
                self.stream_name, item.key, self.resource.name, canonical_json(item.payload), item.payload_hash
            )
        try:
            return self.load.client.add(
                self.resource,
                item.payload | {"update_enabled": self.update_enabled},
                resend_safe=self.update_enabled,
                budget=self._budget(),
            )
        except ClosumOutcomeUnknown:
            raise ClosumAddError(self._unsettled(item.key, 1)) from None
        except BaseException:
            if marked:  # refused, or never answered and never sent twice: not written
                self.load.ledger.forget(self.stream_name, item.key)
            raise

    def _budget(self) -> Budget:
        """A fresh budget for one add (the give-up line names api_v2_url)."""
        return self.load.client.budget(Api.V2)

    # -- lifecycle stages by label --------------------------------------------------------
    def _resolve(self, item: Item) -> dict[str, t.Any]:
        """The item's payload with its stage label resolved to the stage's id.

        Raises:
            LookupMissError: the label names no stage, or several.
        """
        payload = dict(item.payload)
        for field, name in sorted(item.names.items()):
            lookup = lookup_for(self.resource.name, field)
            index = self._stage_index()
            found = find(index, lookup, name)
            if found is None:
                raise LookupMissError(not_found(index, lookup, name, field))
            payload[lookup.target] = found
        return payload

    def _stage_index(self) -> ServerIndex:
        """The stages by label: the account's (V1 list) when V1 credentials are set, else the documented nine."""
        with self._lock:
            if self._stages is not None:
                return self._stages
        stages = registry.get("contact_lifecycle_stage")
        index = None
        if self.load.settings.shared.connection.has_v1_credentials:
            try:
                index = self.load.index(stages, ("label",))
            except (ClosumError, *TRANSIENT) as exc:
                if isinstance(exc, ClosumAuthError):
                    raise
                msg = (
                    f"stream {self.stream_name}: could not read Closum's lifecycle stages ({failure_line(exc)}); rerun"
                )
                raise ClosumAddError(msg) from exc
        if index is None:  # no V1 credentials, or an account whose V1 revision lists no stages
            index = ServerIndex(KeyRule(stages.name, ("label",)))
            for number, label in enumerate(v2.LIFECYCLE_STAGES, 1):
                index.add({"label": label}, number)
        with self._lock:
            self._stages = index
        return index


def _contact_of(item: Item) -> str:
    """What names the contact in Closum (its folded email, else its mobile number), else the item's ledger key."""
    for field in ("email", "mobile_number"):
        value = item.payload.get(field)
        if isinstance(value, str) and value:
            return f"{field}:{value.casefold()}"
    return "key:" + item.key
