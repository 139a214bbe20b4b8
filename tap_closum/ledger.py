"""What the tap last emitted of a stream, compactly: blocks of ids, each with its ids as runs and slot digests.

Closum's lists have no updated-at filter and no deleted flag: only re-reading
tells a change or a deletion. To emit only what changed, the tap keeps, per
stream, a :class:`Ledger` in the stream's state:

- the ids emitted, split into blocks of about :data:`BLOCK` ids (a block
  covers the ids from its ``lo`` up to the next block's ``lo``), each block's
  ids kept as runs (``[gap, run, gap, run...]`` from ``lo``: a block of
  consecutive ids is ``[0, 256]``);
- per block, :data:`SLOTS` digests of 24 bits: slot ``id % SLOTS`` sums
  (modulo 2**24) the 24-bit hashes of its records' content, so a block grows
  by adding to its sums. A changed record changes its slot's
  digest, so re-reading a block tells which slots changed and only their
  records (about ``BLOCK / SLOTS``) are emitted again;
- an id of the block's record no longer listed is a deletion: a tombstone.

100,000 leads take about 391 blocks, about 33 KB of JSON (``benchmarks/bench_changes.py``
measures it). A change goes unnoticed only when its slot's 24-bit digest comes
out the same by chance: one changed slot in 16.7 million (at a thousand edits a
day, one edit in about 45 years arrives only with the record's next change).
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import itertools
import json
import typing as t
from dataclasses import dataclass, field

#: Records per block when blocks are made; a block is split when it holds twice as many.
BLOCK = 256
#: Digests per block: a changed record's re-emission takes its slot's records with it.
SLOTS = 16
#: The ledger's format, in the state.
VERSION = 1
#: Bytes of a hash and of a slot digest.
DIGEST_BYTES = 3
_MASK = (1 << (8 * DIGEST_BYTES)) - 1


def record_hash(record: t.Mapping[str, t.Any]) -> int:
    """A 24-bit hash of a record's content as served (key order does not matter)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=DIGEST_BYTES).digest(), "big")


def slot_of(record_id: int, slots: int = SLOTS) -> int:
    """The slot of a block (of ``slots``) an id's digest goes to."""
    return record_id % slots


def pack(digests: list[int]) -> str:
    """Slot digests as base64 text."""
    return base64.b64encode(b"".join(d.to_bytes(DIGEST_BYTES, "big") for d in digests)).decode()


def unpack(text: str, slots: int) -> list[int]:
    """Slot digests from :func:`pack`'s text.

    Raises:
        ValueError: the text does not hold ``slots`` digests.
    """
    raw = base64.b64decode(text, validate=True)
    if len(raw) != slots * DIGEST_BYTES:
        msg = f"{len(raw)} bytes are not {slots} digests"
        raise ValueError(msg)
    return [int.from_bytes(raw[i : i + DIGEST_BYTES], "big") for i in range(0, len(raw), DIGEST_BYTES)]


def _runs(lo: int, ids: list[int]) -> list[int]:
    out: list[int] = []
    at = lo
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out += [ids[i] - at, j - i + 1]
        at = ids[j] + 1
        i = j + 1
    return out


def _ids(lo: int, runs: list[int]) -> list[int]:
    ids: list[int] = []
    at = lo
    for gap, run in zip(runs[::2], runs[1::2], strict=False):
        at += gap
        ids.extend(range(at, at + run))
        at += run
    return ids


@dataclass
class Block:
    """The records of one range of ids, as last emitted: their ids and their slots' digests.

    Attributes:
        lo: the first id of the range (the next block's ``lo`` ends it).
        ids: the ids emitted in the range, ascending.
        slots: one 32-bit digest per slot.
    """

    lo: int
    ids: list[int]
    slots: list[int] = field(default_factory=lambda: [0] * SLOTS)

    @classmethod
    def of(cls, lo: int, hashes: t.Mapping[int, int]) -> Block:
        """A block from its records' hashes (by id)."""
        return cls(lo, sorted(hashes), digests(hashes))

    def encode(self) -> list[t.Any]:
        """The block as JSON: ``[lo, runs, base64 digests]``."""
        return [self.lo, _runs(self.lo, self.ids), pack(self.slots)]

    @classmethod
    def decode(cls, value: t.Any) -> Block:  # noqa: ANN401  # JSON from the state, checked here
        """A block from :meth:`encode`'s JSON.

        Raises:
            ValueError: the value is not a block.
        """
        try:
            lo, runs, packed = value
            slots = unpack(packed, SLOTS)
            return cls(int(lo), _ids(int(lo), [int(r) for r in runs]), slots)
        except (TypeError, ValueError) as exc:
            msg = f"not a ledger block: {str(value)[:80]}"
            raise ValueError(msg) from exc


def digests(hashes: t.Mapping[int, int], slots: int = SLOTS) -> list[int]:
    """The digests of ``slots`` slots of records (by id: their hash)."""
    sums = [0] * slots
    for record_id, value in hashes.items():
        slot = slot_of(record_id, slots)
        sums[slot] = (sums[slot] + value) & _MASK
    return sums


@dataclass
class Ledger:
    """Every block of a stream, ascending, and where the sweep goes on.

    Attributes:
        blocks: the blocks, by ascending ``lo``.
        next: the sweep goes on with the blocks below this id (``None``: from the newest block).
        credit: list pages the sweep may still read (it earns ``page_count / sweep_cycle_runs`` per run).
        cycles: whole sweeps of the history completed.
    """

    blocks: list[Block] = field(default_factory=list)
    next: int | None = None
    credit: float = 0.0
    cycles: int = 0

    # -- state -----------------------------------------------------------------
    def encode(self) -> dict[str, t.Any]:
        """The ledger as the stream's state holds it."""
        return {
            "v": VERSION,
            "next": self.next,
            "credit_milli": round(self.credit * 1000),  # an integer: SDK targets read JSON numbers as Decimal
            "cycles": self.cycles,
            "blocks": [b.encode() for b in self.blocks],
        }

    @classmethod
    def decode(cls, value: object) -> Ledger:
        """A ledger from :meth:`encode`'s JSON.

        Raises:
            ValueError: the value is not a ledger of this version.
        """
        if not isinstance(value, dict) or value.get("v") != VERSION:
            msg = f"not a ledger of version {VERSION}"
            raise ValueError(msg)
        blocks = [Block.decode(b) for b in value.get("blocks") or []]
        if any(a.lo >= b.lo for a, b in itertools.pairwise(blocks)):
            msg = "ledger blocks out of order"
            raise ValueError(msg)
        nxt = value.get("next")
        return cls(
            blocks,
            nxt if isinstance(nxt, int) else None,
            int(value.get("credit_milli") or 0) / 1000,
            int(value.get("cycles") or 0),
        )

    # -- reading ---------------------------------------------------------------
    def __len__(self) -> int:
        """How many ids the ledger holds."""
        return sum(len(b.ids) for b in self.blocks)

    def index_of(self, record_id: int) -> int:
        """The index of the block whose range holds ``record_id`` (-1: below the first block)."""
        return bisect.bisect_right([b.lo for b in self.blocks], record_id) - 1

    def ids_at_or_above(self, record_id: int) -> int:
        """How many ids of the ledger are ``>= record_id``."""
        return sum(len(b.ids) - bisect.bisect_left(b.ids, record_id) for b in self.blocks)

    @property
    def top(self) -> int | None:
        """The highest id held."""
        for block in reversed(self.blocks):
            if block.ids:
                return block.ids[-1]
        return None

    # -- writing ---------------------------------------------------------------
    def append(self, hashes: t.Mapping[int, int]) -> None:
        """Add records above every id held (new records), filling the last block, then new ones."""
        new = sorted(hashes)
        if not new:
            return
        top = self.top
        if top is not None and new[0] <= top:
            msg = f"append takes ids above {top} only, not {new[0]}"
            raise ValueError(msg)
        if self.blocks and len(self.blocks[-1].ids) < BLOCK:
            last = self.blocks[-1]
            take, new = new[: BLOCK - len(last.ids)], new[BLOCK - len(last.ids) :]
            added = digests({i: hashes[i] for i in take})
            last.ids += take
            last.slots = [(a + b) & _MASK for a, b in zip(last.slots, added, strict=True)]
        for start in range(0, len(new), BLOCK):
            chunk = new[start : start + BLOCK]
            # The first block's range starts at 0: an id below every id held still has a block.
            self.blocks.append(Block.of(chunk[0] if self.blocks else 0, {i: hashes[i] for i in chunk}))

    def replace(self, index: int, hashes: t.Mapping[int, int]) -> None:
        """Block ``index`` now holds these records (its range unchanged); split when it holds twice :data:`BLOCK`."""
        lo = self.blocks[index].lo
        ids = sorted(hashes)
        if not ids and index > 0:
            del self.blocks[index]  # the range joins the block below
            return
        parts = [ids[i : i + BLOCK] for i in range(0, len(ids), BLOCK)] if len(ids) >= 2 * BLOCK else [ids]
        blocks = [Block.of(lo if n == 0 else part[0], {i: hashes[i] for i in part}) for n, part in enumerate(parts)]
        self.blocks[index : index + 1] = blocks
