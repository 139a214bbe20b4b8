"""Streams whose records change and disappear: new records newest first, then a slice of the history re-read.

Closum's lists have no updated-at filter and no deleted flag, and no record
is append-only (a lead moves through lifecycle stages, contacts get deleted).
A :class:`SweptStream` therefore does two things each run:

1. **new records**: the list newest first (``sort=id&direction=desc``) down to
   the bookmark, every one emitted, as before;
2. **the sweep**: a slice of the history, continuing below where the last
   run's sweep stopped, re-read by id ranges (the blocks of the stream's
   :class:`~tap_closum.ledger.Ledger`) and compared with what was emitted:
   only a record whose content changed (its block slot's digest) is emitted
   again, a record never emitted is emitted, and an id gone from its range is
   emitted once as a tombstone (its key and ``_sdc_deleted_at``).

Each run earns the sweep ``1.5 * page_count / sweep_cycle_runs`` list pages
(at most ``sweep_requests_per_run``), so the whole history is re-read within
``sweep_cycle_runs`` runs and a small account sweeps a block only every few
runs. A block is settled only once read whole, so a run that stops mid-block
(budget spent, interrupted, failed) leaves it to the next run: nothing is
skipped.

**Pages of a live table shift.** Both reads go newest first, one page after
the other, and compare each page's record ``count`` with the page before: a
deletion above the read shifts later records up onto the page already read,
so when the count dropped the page before is read again (its records not yet
seen are taken; ids are strictly descending, so repeats are dropped). An
insertion only shifts records down (repeats). So no record is passed unseen
while the count does not drop unnoticed. The first, whole read goes ahead
in parallel instead; a record it misses while the list moves is in a block's
range and the sweep emits it, within one cycle.

No API filter selects ids, so the sweep finds a block by page: the ids the
ledger holds above it tell the page, and the page's first id tells whether
to step back one.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
import typing as t

from closum_api import ahead
from closum_api.errors import ClosumBadResponse
from closum_api.listing import SAME_IN_A_ROW, ordered_pages
from tap_closum.client import ClosumStream
from tap_closum.ledger import SLOTS, Ledger, digests, record_hash, slot_of

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk.helpers.types import Context, Record

    from closum_api.listing import Page

#: The stream state's key holding the ledger.
LEDGER_KEY = "ledger"
#: Pages read again in a row, because the list shrank under the read, before reading on regardless.
MAX_REREADS = 20
#: The share of a cycle's pages the sweep earns per run beyond the list's own, for locating blocks and partial pages.
SLACK = 1.5


def _id_of(record: t.Mapping[str, t.Any]) -> int:
    record_id = record.get("id")
    if not isinstance(record_id, int) or isinstance(record_id, bool):
        msg = f"a record without an integer id: {str(record)[:200]}"
        raise ClosumBadResponse(msg)
    return record_id


class SweptStream(ClosumStream):
    """A stream read newest first down to its bookmark, whose history is swept for changes and deletions.

    Args:
        tap: the tap the stream belongs to.
        runtime: what every stream of the run shares.
    """

    _sweeping = False
    #: this run's ledger, once the new records are in it (the consent sweep reads its ids)
    ledger: Ledger | None = None
    #: the ids this run added to the ledger (its new records)
    appended: frozenset[int] = frozenset()
    #: whether this run read the whole list (a first run, or --full-refresh)
    read_whole = False
    #: whether the last walk ended because the list lied about its pages
    walk_lied = False

    @property
    @override
    def descending(self) -> bool:
        return True

    # -- the bookmark ------------------------------------------------------------
    def _checked_bookmark(self, context: Context | None, newest: int | None) -> int | None:
        """The bookmark, or ``None`` (read everything): a bookmark of the wrong type or in the future is warned of."""
        value = self.get_starting_replication_key_value(context)
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            self.logger.warning(
                "%s: the state's bookmark %r is not an id; reading the whole list, as a first run does "
                "(is the state from another tap?)",
                self.name,
                value,
            )
            return None
        if newest is not None and value > newest:
            self.logger.warning(
                "%s: the state's bookmark %d is above the newest id %d the list serves: no record is new; "
                "records created later with ids up to %d would never be read (is the state from another "
                "account? run with --full-refresh to start afresh)",
                self.name,
                value,
                newest,
                value,
            )
        return value

    def _ledger(self, bookmark: int | None) -> Ledger:
        """The stream's ledger from its state; a fresh one for a first run (or ``--full-refresh``)."""
        if bookmark is None:
            return Ledger()
        try:
            return Ledger.decode(self.stream_state.get(LEDGER_KEY))
        except ValueError:
            return Ledger()

    # -- reading -----------------------------------------------------------------
    def _walk(self, page: Page, fetch: t.Callable[[int], Page]) -> t.Iterator[Page]:
        """``page`` and the pages after it, one after the other; a drop of the count reads the page before again.

        A list that serves nothing older than it already did, :data:`SAME_IN_A_ROW` pages in a row,
        lies about its pages: the read ends there with a warning.
        """
        self.walk_lied = False
        rereads = stale = 0
        oldest = _id_of(page.records[-1]) if page.records else None
        yield page
        while page.has_next and page.records:
            after = fetch(page.number + 1)
            shrank = page.total is not None and after.total is not None and after.total < page.total
            if shrank and rereads < MAX_REREADS:
                rereads += 1
                page = fetch(page.number)
            else:
                rereads = rereads if shrank else 0
                page = after
            last = _id_of(page.records[-1]) if page.records else None
            stale = stale + 1 if last is None or (oldest is not None and last >= oldest) else 0
            oldest = last if oldest is None or (last is not None and last < oldest) else oldest
            if stale >= SAME_IN_A_ROW:
                self.walk_lied = True
                self.logger.warning(
                    "GET %s: %d pages in a row up to page %d served nothing older than before, though more "
                    "were announced; the read ends here",
                    self.path,
                    stale,
                    page.number,
                )
                return
            yield page

    def _created_before_start(self, record: t.Mapping[str, t.Any]) -> bool:
        start = self.runtime.settings.start_date
        value = record.get(self.created_field or "")
        if start is None or not isinstance(value, str):
            return False
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) < start
        except ValueError:
            return False

    @override
    def request_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        self._max_id_seen = None
        first = self._first_page(context)
        if first is None:
            return
        self.runtime.note_served(self.name)
        ledger = self._ledger(self._bookmark(context))
        newest = _id_of(first.records[0]) if first.records else None
        # A bookmark above the newest id is expected when the newest records were deleted (the ledger holds it).
        bookmark = self._checked_bookmark(context, max(newest or 0, ledger.top or 0) if first.records else None)
        if bookmark is not None and LEDGER_KEY not in self.stream_state:
            self.logger.warning(
                "%s: the state has a bookmark but no ledger (a tap before the sweep): reading the whole list once",
                self.name,
            )
            bookmark = None
        self.read_whole = bookmark is None
        counter = self.get_http_request_counter()
        with counter:
            counter.with_context(context)
            new: dict[int, int] = {}
            for record in self._new_records(first, bookmark, context, counter):
                new[_id_of(record)] = record_hash(record)
                yield record
            top = ledger.top
            appended = {i: h for i, h in new.items() if top is None or i > top}
            ledger.append(appended)
            self.ledger, self.appended = ledger, frozenset(appended)
            # A first run read everything just now: the sweep starts with the next run.
            if bookmark is not None and self.runtime.settings.sweep_requests_per_run > 0:
                self._sweeping = True
                try:
                    yield from self._sweep(first, ledger, context, counter)
                finally:
                    self._sweeping = False
        self.stream_state[LEDGER_KEY] = ledger.encode()

    @override
    def _increment_stream_state(self, latest_record: Record, *, context: Context | None = None) -> None:
        """The sweep's records are older than the bookmark: they never move it (nor leave a progress marker)."""
        if not self._sweeping:
            super()._increment_stream_state(latest_record, context=context)

    def _new_records(
        self,
        first: Page,
        bookmark: int | None,
        context: Context | None,
        counter: t.Any,  # noqa: ANN401  # the SDK's counter
    ) -> t.Iterator[dict[str, t.Any]]:
        """The records above the bookmark, newest first (all of them without one)."""
        last: int | None = None
        if bookmark is None:
            threads = ahead.threads_for(self.runtime.settings.shared.max_parallel_requests)
            pages: t.Iterator[Page] = ordered_pages(
                first,
                lambda n: self._fetch(n, context),
                threads=threads,
                stop=self.runtime.stop,
                what=f"GET {self.path}",
            )
        else:
            pages = self._walk(first, lambda n: self._fetch(n, context))
        moved = False
        try:
            for page in pages:
                counter.increment()
                self.progress.request()
                moved = moved or (page.total is not None and first.total is not None and page.total != first.total)
                for record in page.records:
                    record_id = _id_of(record)
                    if last is not None and record_id >= last:
                        continue  # shown again by a page that shifted
                    if bookmark is not None and record_id <= bookmark:
                        return
                    last = record_id
                    if not self._created_before_start(record):  # creation dates need not follow ids
                        yield record
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
            if moved and bookmark is None:
                self.logger.info(
                    "%s: the list changed while it was read; the sweep emits what moved past the read", self.name
                )

    # -- the sweep ---------------------------------------------------------------
    def _sweep(
        self,
        first: Page,
        ledger: Ledger,
        context: Context | None,
        counter: t.Any,  # noqa: ANN401  # the SDK's counter
    ) -> t.Iterator[dict[str, t.Any]]:
        """Re-read the next slice of the history; yield what changed, what was never emitted, and tombstones."""
        settings = self.runtime.settings
        if not ledger.blocks:
            return
        cap = settings.sweep_requests_per_run
        ledger.credit = min(ledger.credit + SLACK * first.page_count / settings.sweep_cycle_runs, cap)
        if ledger.credit < 1:
            return
        sweep = _Sweep(self, ledger, first, context)
        yield from sweep.run(allowance=math.floor(ledger.credit), cap=cap, counter=counter)
        ledger.credit -= sweep.pages


class _Sweep:
    """One run's slice of the sweep of a stream."""

    def __init__(self, stream: SweptStream, ledger: Ledger, first: Page, context: Context | None) -> None:
        self.stream = stream
        self.ledger = ledger
        self.first = first
        self.context = context
        self.pages = 0
        self.deleted_at = dt.datetime.now(dt.timezone.utc).isoformat()
        self.key = stream.primary_keys[0]
        self.last: int | None = None
        self.skipped: set[int] = set()

    def _fetch(self, number: int) -> Page:
        """Page ``number``, a page of the sweep's allowance."""
        self.pages += 1
        return self.stream._fetch(number, self.context)  # noqa: SLF001  # the stream's one way to read a page

    def _start(self, upper: int | None) -> Page:
        """The page where records below ``upper`` begin, newest first (one page back at a time if it shifted)."""
        size = len(self.first.records) if self.first.has_next else self.stream.runtime.page_size
        position = 0 if upper is None else self.ledger.ids_at_or_above(upper)
        number = position // max(size, 1) + 1
        page = self.first if number == 1 else self._fetch(number)
        while number > 1 and upper is not None and (not page.records or _id_of(page.records[0]) < upper):
            number -= 1
            page = self.first if number == 1 else self._fetch(number)
        return page

    def run(self, *, allowance: int, cap: int, counter: t.Any) -> t.Iterator[dict[str, t.Any]]:  # noqa: ANN401  # the SDK's counter
        """Read from where the last run stopped, settling whole blocks, until the allowance is spent."""
        ledger = self.ledger
        index = len(ledger.blocks) - 1 if ledger.next is None else ledger.index_of(ledger.next - 1)
        if index < 0:  # below the first block: the cycle is done
            ledger.next, ledger.cycles = None, ledger.cycles + 1
            return
        upper = ledger.blocks[index + 1].lo if index + 1 < len(ledger.blocks) else None
        seen: dict[int, tuple[int, dict[str, t.Any]]] = {}
        settled = False
        for page in self.stream._walk(self._start(upper), self._fetch):  # noqa: SLF001  # the stream's one walk
            counter.increment()
            self.stream.progress.request()
            for record in self._slice(page, upper):
                record_id = record["id"]
                below = max(ledger.index_of(record_id), 0)
                while index > below:
                    yield from self._settle(index, seen)
                    seen, settled, index = {}, True, index - 1
                seen[record_id] = (record_hash(record), record)
            if not (page.has_next and page.records):
                break
            if self.pages >= cap or (settled and self.pages >= allowance):
                # Spent: the block being read is left whole to the next run.
                self._stop_above(index, settled=settled)
                return
        if self.stream.walk_lied:
            # Not the end of the list, a lie: nothing below is settled (no tombstone on a lie's word).
            self._stop_above(index, settled=settled)
            return
        # The end of the list: every block left is settled (one without records was deleted whole).
        while index >= 0:
            yield from self._settle(index, seen)
            seen, index = {}, index - 1
        ledger.next, ledger.cycles = None, ledger.cycles + 1

    def _stop_above(self, index: int, *, settled: bool) -> None:
        """The next run goes on with block ``index`` (unless no block was settled: then where this run began)."""
        if settled:
            self.ledger.next = self.ledger.blocks[index + 1].lo

    def _slice(self, page: Page, upper: int | None) -> t.Iterator[dict[str, t.Any]]:
        """The page's records below ``upper`` not seen yet, in order (those created before start_date aside)."""
        for record in page.records:
            record_id = _id_of(record)
            if (upper is not None and record_id >= upper) or (self.last is not None and record_id >= self.last):
                continue  # above the slice, or shown again by a shifted page
            self.last = record_id
            if self.stream._created_before_start(record):  # noqa: SLF001  # the stream's start_date
                self.skipped.add(record_id)  # not synced, but not gone: no tombstone
                continue
            yield record

    def _settle(self, index: int, seen: dict[int, tuple[int, dict[str, t.Any]]]) -> t.Iterator[dict[str, t.Any]]:
        """Block ``index`` was read whole: emit its changes, then hold what it holds now."""
        block = self.ledger.blocks[index]
        hashes = {record_id: value for record_id, (value, _) in seen.items()}
        now = digests(hashes)
        changed = {slot for slot in range(SLOTS) if now[slot] != block.slots[slot]}
        held = set(block.ids)
        for record_id in sorted(held - hashes.keys() - self.skipped, reverse=True):
            yield {self.key: record_id, "_sdc_deleted_at": self.deleted_at}
        for record_id in sorted(hashes, reverse=True):
            if record_id not in held or slot_of(record_id) in changed:
                yield seen[record_id][1]
        self.ledger.replace(index, hashes)
