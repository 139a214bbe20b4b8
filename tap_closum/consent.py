"""The consent sweep's state: which contacts' opt-ins a run re-checks, and which of them it emits again.

No list carries opt-ins, so a consent withdrawn or given in Closum's UI shows
only in a retrieve. After the parent's read, the consent stream re-retrieves
whole blocks of the parent's ledger (the ids it emitted, see
:mod:`tap_closum.ledger`), at most ``consent_sweep_retrieves_per_run`` ids per
run, continuing below where the last run stopped, and compares each block
with the opt-in digests kept in its state (:data:`CONSENT_KEY`: per parent
block, :data:`CONSENT_SLOTS` slot digests; no id is kept). A changed slot
emits every contact of the block in that slot again: its opt-in, or a
tombstone when it has none (withdrawn, or the contact deleted; a tombstone of
an opt-in that never was deletes nothing).
"""

from __future__ import annotations

import typing as t

from tap_closum.ledger import DIGEST_BYTES, digests, pack, slot_of, unpack
from tap_closum.sweep import SLACK

if t.TYPE_CHECKING:
    from collections.abc import Mapping

    from tap_closum.ledger import Ledger

#: The stream state's key holding the consent sweep's digests and position.
CONSENT_KEY = "consent"
#: Digests per parent block the consent sweep keeps: a changed opt-in re-emits its slot's (about 32 contacts).
CONSENT_SLOTS = 8

#: Blocks a run re-checks: ``(lo, ids)`` per parent ledger block, newest first.
Blocks = tuple[tuple[int, tuple[int, ...]], ...]


def _consent_block(encoded: object) -> tuple[int, list[int]] | None:
    """A consent block ``[lo, digests]`` from the state; ``None`` when it is not one."""
    if not (isinstance(encoded, list) and len(encoded) == 2 and isinstance(encoded[0], int)):  # noqa: PLR2004  # [lo, digests]
        return None
    try:
        return encoded[0], unpack(str(encoded[1]), CONSENT_SLOTS)
    except ValueError:
        return None


class Consent:
    """The consent sweep's state: per parent ledger block, :data:`CONSENT_SLOTS` digests of its contacts' opt-ins.

    No id is kept: when a slot's digest changed, every contact of the block in
    that slot is emitted again, its opt-in, or a tombstone when it has none (a
    tombstone of an opt-in that never was deletes nothing).

    Attributes:
        blocks: slot digests by the parent block's ``lo``.
        next: the sweep goes on with the parent blocks below this ``lo`` (``None``: from the newest).
        seen: whether the account ever served an opt-in (then the probe never gives up).
        cycles: whole consent sweeps completed.
        credit: retrieves the consent sweep may still send (it earns 1.5 x contacts / ``sweep_cycle_runs`` per run).
    """

    def __init__(self, value: object) -> None:
        """Read from the stream state (anything unreadable starts afresh)."""
        raw = value if isinstance(value, dict) else {}
        self.blocks: dict[int, list[int]] = {}
        for encoded in raw.get("blocks") or []:
            block = _consent_block(encoded)
            if block is not None:
                self.blocks[block[0]] = block[1]
        nxt = raw.get("next")
        self.next: int | None = nxt if isinstance(nxt, int) else None
        self.seen = bool(raw.get("seen"))
        self.cycles = int(raw.get("cycles") or 0)
        self.credit = int(raw.get("credit_milli") or 0) / 1000

    def encode(self) -> dict[str, t.Any]:
        """As the stream state holds it."""
        return {
            "next": self.next,
            "seen": self.seen,
            "cycles": self.cycles,
            "credit_milli": round(self.credit * 1000),  # an integer: SDK targets read JSON numbers as Decimal
            "blocks": [[lo, pack(self.blocks[lo])] for lo in sorted(self.blocks)],
        }

    def add(self, lo: int, record_id: int, value: int) -> None:
        """The opt-in of a new contact, first emitted: into the digests of parent block ``lo``."""
        slots = self.blocks.setdefault(lo, [0] * CONSENT_SLOTS)
        slot = slot_of(record_id, CONSENT_SLOTS)
        slots[slot] = (slots[slot] + value) % (1 << (8 * DIGEST_BYTES))

    def file(self, pending: Mapping[int, int], ledger: Ledger, new: frozenset[int]) -> None:
        """The opt-ins of new contacts emitted this run (content hash by id), under their parent block.

        Args:
            pending: the opt-ins emitted this run, by contact id.
            ledger: the parent's ledger, this run's new records in it.
            new: the ids of this run's new records (an older contact's opt-in is in its digests already).
        """
        for record_id, value in sorted(pending.items()):
            index = ledger.index_of(record_id)
            if index >= 0 and record_id in new:
                self.add(ledger.blocks[index].lo, record_id, value)
        self.seen = self.seen or bool(pending)

    def plan(self, ledger: Ledger, budget: int, cycle_runs: int) -> tuple[Blocks, bool]:
        """The parent blocks this run re-checks, and whether they reach its oldest (a cycle ends).

        Each run earns the retrieves of 1 / ``cycle_runs`` of the contacts (with
        the sweep's slack for whole blocks), at most ``budget``; whole blocks are
        taken while credit is left, the last one may overdraw it (repaid by the
        next runs), so a run spends its budget on average.

        Args:
            ledger: the parent's ledger, this run's new records in it.
            budget: ``consent_sweep_retrieves_per_run`` (0: none).
            cycle_runs: ``sweep_cycle_runs``.

        Returns:
            The blocks (empty: none this run) and whether the cycle ends with them.
        """
        if budget <= 0 or not ledger.blocks:
            return (), False
        self.credit = min(self.credit + SLACK * len(ledger) / cycle_runs, budget)
        index = len(ledger.blocks) - 1 if self.next is None else ledger.index_of(self.next - 1)
        blocks: list[tuple[int, tuple[int, ...]]] = []
        while index >= 0 and self.credit > 0:
            blocks.append((ledger.blocks[index].lo, tuple(ledger.blocks[index].ids)))
            self.credit -= len(ledger.blocks[index].ids)
            index -= 1
        return tuple(blocks), index < 0

    def settle(self, lo: int, ids: tuple[int, ...], found: Mapping[int, int]) -> list[int]:
        """A parent block re-checked: the contacts to emit again (newest first); its digests and position kept.

        Args:
            lo: the parent block.
            ids: its contacts, all retrieved.
            found: the content hash of each opt-in found, by contact id.

        Returns:
            The contacts of the slots that changed: each one's opt-in, or its tombstone when it has none.
        """
        held = self.blocks.get(lo)
        now = digests(found, CONSENT_SLOTS)
        changed = {slot for slot in range(CONSENT_SLOTS) if held is None or now[slot] != held[slot]}
        self.blocks[lo] = now
        self.seen = self.seen or bool(found)
        self.next = lo
        return [i for i in sorted(ids, reverse=True) if slot_of(i, CONSENT_SLOTS) in changed]

    def wrap(self, parent_los: frozenset[int]) -> None:
        """A cycle ended: the next run starts from the newest block; blocks the parent no longer has are dropped."""
        self.next, self.cycles = None, self.cycles + 1
        self.blocks = {lo: b for lo, b in self.blocks.items() if lo in parent_los}
