"""Reading a Closum list: its page envelope, the documented page size, the ordered walk over its pages.

A list answers one page at a time (1-based ``page``, ``limit`` records asked
for) as ``{"data": [...], "pagination": {"page_count", "has_next_page", "count", ...}}``.
A server may serve fewer records than asked for, so pages are never counted
from ``limit``: :func:`ordered_pages` follows ``page_count`` and
``has_next_page``. Tap and target read their lists through it; what each does
with the records (the tap's cursor, the target's index) and how it asks for a
page stay with them.

A server may also lie about its pages (an endless ``page_count``, a
``has_next_page`` that never turns false, the last page served again and again).
A read ends, with one warning naming what the server did, when a page comes back
empty or repeats the page before it once past the pages announced, once the
records announced (``count``) are read, or the :data:`SAME_IN_A_ROW` time in a row.
"""

from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass
from http import HTTPStatus

from closum_api import ahead

if t.TYPE_CHECKING:
    from closum_api.errors import ClosumFatalError
    from closum_api.stop import StopEvent

LOGGER = logging.getLogger("closum_api.listing")

#: Records asked for per list request unless told otherwise (the tap's ``page_size`` default).
DEFAULT_PAGE_SIZE = 100
#: The page size the API reference documents: the fall-back when a larger one is refused.
DOCUMENTED_PAGE_SIZE = 25
#: empty or repeated pages in a row that end a read even within the pages and records announced
SAME_IN_A_ROW = 3


def _pagination(envelope: t.Mapping[str, t.Any]) -> t.Mapping[str, t.Any]:
    pagination = envelope.get("pagination")
    return pagination if isinstance(pagination, t.Mapping) else {}


def page_count(envelope: t.Mapping[str, t.Any]) -> int:
    """How many pages a list answer announces: at least 1, and 1 when missing or not a number.

    Args:
        envelope: a decoded list answer.

    Returns:
        ``pagination.page_count`` as an integer, at least 1.
    """
    return max(1, _whole(_pagination(envelope).get("page_count")) or 1)


def has_next_page(envelope: t.Mapping[str, t.Any]) -> bool:
    """Whether a list answer says another page follows (False when it says nothing).

    Args:
        envelope: a decoded list answer.

    Returns:
        ``pagination.has_next_page``, read as a truth value.
    """
    return bool(_pagination(envelope).get("has_next_page"))


def record_count(envelope: t.Mapping[str, t.Any]) -> int | None:
    """How many records a list answer announces in all (``pagination.count``); None when missing or not a number.

    Args:
        envelope: a decoded list answer.

    Returns:
        The count, at least 0, or None.
    """
    count = _whole(_pagination(envelope).get("count"))
    return None if count is None else max(0, count)


def _whole(value: object) -> int | None:
    """A pagination number read tolerantly: an integer or digits; None for anything else (a bool, a list, words)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def page_size_refused(exc: ClosumFatalError, page_size: int) -> bool:
    """Whether a failed first page is worth asking again at :data:`DOCUMENTED_PAGE_SIZE`.

    Args:
        exc: why the first page failed.
        page_size: the page size it was asked with.

    Returns:
        True for a 400 to a page size other than the documented one.
    """
    return exc.status == HTTPStatus.BAD_REQUEST and page_size != DOCUMENTED_PAGE_SIZE


@dataclass(frozen=True)
class Page:
    """One page of a Closum list.

    Attributes:
        number: the page number, from 1.
        records: the page's records.
        has_next: whether the page says another page follows.
        page_count: how many pages the page announces (at least 1).
        total: how many records the page announces in all, if it says.
    """

    number: int
    records: list[dict[str, t.Any]]
    has_next: bool
    page_count: int
    total: int | None = None

    @classmethod
    def of(cls, number: int, envelope: t.Mapping[str, t.Any]) -> Page:
        """Page ``number`` of a decoded list answer: the objects of its ``data`` (none when it is not a list).

        Args:
            number: the page number asked for.
            envelope: the decoded answer.

        Returns:
            The page.
        """
        data = envelope.get("data")
        records = [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []
        return cls(number, records, has_next_page(envelope), page_count(envelope), record_count(envelope))

    def ids(self) -> list[object]:
        """The ids of its records, in order (to tell a page served twice)."""
        return [record.get("id") for record in self.records]


class _Walk:
    """Where a read stands: the pages announced, the records read, and whether the server has started lying."""

    def __init__(self, first: Page, what: str) -> None:
        self.what = what
        self.count = first.page_count
        self.total = first.total
        self.read = 0
        self.last_ids: list[object] | None = None
        self.same = 0  # empty or repeated pages in a row
        self.repeated = False  # the page just taken served the one before again

    def numbers(self, start: int) -> t.Iterator[int]:
        """The pages to read ahead from ``start``: up to the page count announced so far (it may grow)."""
        number = start
        while number <= self.count:
            yield number
            number += 1

    def ends_at(self, page: Page) -> str | None:
        """Take ``page``, in order; why the read ends with it (a lie of the server), or None to go on."""
        self.count = max(self.count, page.page_count)
        empty = not page.records
        ids = page.ids()
        repeated = self.repeated = not empty and ids == self.last_ids
        self.same = self.same + 1 if empty or repeated else 0
        if not repeated:
            self.read += len(page.records)
        self.last_ids = ids
        if not (empty or repeated):
            return None
        past_pages = page.number > self.count
        past_records = self.total is not None and self.read >= self.total
        if not (past_pages or past_records or self.same >= SAME_IN_A_ROW):
            return None
        did = f"page {page.number} came back empty" if empty else f"page {page.number} repeated page {page.number - 1}"
        if past_pages:
            why = f"past the {self.count} pages announced, though the page before said more follow"
        elif past_records:
            why = f"once the {self.total} records announced were read, though {self.count} pages were announced"
        else:
            why = f"{self.same} times in a row, though {self.count} pages were announced"
        return f"{self.what}: {did} {why}; the read ends here ({self.read} records)"


def ordered_pages(
    first: Page,
    fetch: t.Callable[[int], Page],
    *,
    threads: int,
    stop: StopEvent,
    what: str = "a list",
) -> t.Generator[Page, None, None]:
    """Yield ``first`` and every following page, in page order, until the list ends.

    Every page up to the highest page count announced so far is read ahead on
    ``threads`` threads (:func:`closum_api.ahead.ordered`), whatever it holds or
    says of a next page; past that count the walk goes on one page at a time
    while the last page says it has a next page and held records (a server may
    serve fewer records than asked for). A server that lies ends the read with
    one warning (see the module docstring); a page served twice is yielded once.
    A caller that stops iterating cancels the pages still queued.

    Args:
        first: the first page, already read (it tells the page count).
        fetch: reads a page by its number.
        threads: threads to read ahead on (1: every page in the caller's thread, none ahead).
        stop: the run's stop event: waiting for a page read ahead ends on it.
        what: the list (``GET /lead``), for the warning.

    Yields:
        The pages, in order.
    """
    walk = _Walk(first, what)
    walk.ends_at(first)
    yield first
    last = first
    while True:
        start = last.number + 1
        if start <= walk.count:
            pages = ahead.ordered(fetch, walk.numbers(start), threads=threads, stop=stop)
        elif last.has_next and last.records:
            pages = (fetch(number) for number in (start,))  # past the count: one at a time
        else:
            return
        try:
            for page in pages:
                why = walk.ends_at(page)
                if why is not None:
                    LOGGER.warning(why)
                    return
                if not walk.repeated:
                    yield page
                last = page
        finally:
            pages.close()
