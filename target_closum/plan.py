"""What to do with one valid record: skip it, create it, or update which id; and what became of it.

One function, :func:`decide`, answers from the stream's action and what the
ledger knows of the record's key; the dry run counts its answers and the real
write carries them out, so the two can never disagree. An :class:`Outcome`
says what the write made of the record.
"""

from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

if t.TYPE_CHECKING:
    from target_closum.ledger import Entry


@dataclass(frozen=True)
class Item:
    """One valid record waiting in a batch.

    Attributes:
        record: the record as received.
        key: its ledger key.
        payload: the request body built from it.
        payload_hash: the hash of ``payload`` (and of the names its lookups hold, before they are resolved).
        record_id: the Closum id the record names, if any.
        names: lookup field → the name to resolve before the write (``city`` → ``Águeda``).
        lists: the audience lists a lead joins once written.
    """

    record: dict[str, t.Any]
    key: str
    payload: dict[str, t.Any]
    payload_hash: str
    record_id: int | None
    names: dict[str, str] = field(default_factory=dict)
    lists: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skip:
    """Nothing to send: the ledger holds the record as written.

    Attributes:
        changed: its payload changed since it was loaded (action create never updates).
    """

    changed: bool = False


@dataclass(frozen=True)
class Create:
    """Create the record (POST)."""


@dataclass(frozen=True)
class Update:
    """Update the record of this id (PUT).

    Attributes:
        closum_id: the id to update.
    """

    closum_id: int


@dataclass(frozen=True)
class Match:
    """Nothing to send: the server already holds the record (found by its match key) under this id.

    Attributes:
        closum_id: the id of the record found.
    """

    closum_id: int


Decision: t.TypeAlias = Skip | Create | Update | Match


@dataclass(frozen=True)
class Outcome:
    """What became of one record.

    Attributes:
        closum_id: the id it has in Closum (None when rejected).
        kind: created, matched, updated, skipped or rejected.
        message: why it was rejected.
        status: Closum's HTTP status when Closum refused it.
    """

    closum_id: int | None
    kind: str
    message: str = ""
    status: int | None = None


def decide(action: str, entry: Entry | None, item: Item, matched_id: int | None = None) -> Decision:
    """What writing ``item`` takes under ``action``, given the ledger's ``entry`` for its key.

    - ``create``: a key the ledger holds as done is skipped (even when its payload
      changed since); a record the server holds already (``matched_id``, found by
      its match key) is matched; any other is created.
    - ``update`` / ``upsert``: a done key with the same payload (and, for update,
      the same id) is skipped. ``update`` updates the record's own id; ``upsert``
      updates the id the ledger holds, else the matched id, else the record's
      own id, else creates.

    A ``pending`` entry counts as not written.

    Args:
        action: the stream's action (create, update or upsert).
        entry: the ledger's row for the item's key, if any.
        item: the record to write.
        matched_id: the id of the record the server holds with the item's match key, if any.

    Returns:
        The decision.

    Raises:
        ValueError: action ``update`` for a record without an id (the sink rejects those first).
    """
    done = entry if entry is not None and entry.state == "done" else None
    if action == "create":
        if done is not None:
            return Skip(changed=done.payload_hash != item.payload_hash)
        return Match(matched_id) if matched_id else Create()
    if (
        done is not None
        and done.payload_hash == item.payload_hash
        and (action != "update" or done.closum_id == item.record_id)
    ):
        return Skip()
    if action == "update":
        if item.record_id is None:
            msg = "action update needs the record's Closum id in field id"
            raise ValueError(msg)
        return Update(item.record_id)
    target_id = done.closum_id if done is not None and done.closum_id else matched_id or item.record_id
    return Update(target_id) if target_id else Create()
