"""Reading a Closum list: its page envelope, the documented page size, the ordered walk over its pages.

A list answers one page at a time (1-based ``page``, ``limit`` records asked
for) as ``{"data": [...], "pagination": {"page_count", "has_next_page", ...}}``.
A server may serve fewer records than asked for, so pages are never counted
from ``limit``: :func:`ordered_pages` follows ``page_count`` and
``has_next_page``. Tap and target read their lists through it; what each does
with the records (the tap's cursor, the target's index) and how it asks for a
page stay with them.
"""

from __future__ import annotations

import collections
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus

from closum_api import stop

if t.TYPE_CHECKING:
    from concurrent.futures import Executor, Future

    from closum_api.errors import ClosumFatalError

#: Records asked for per list request unless told otherwise (the tap's ``page_size`` default).
DEFAULT_PAGE_SIZE = 100
#: The page size the API reference documents: the fall-back when a larger one is refused.
DOCUMENTED_PAGE_SIZE = 25


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
    try:
        return max(1, int(_pagination(envelope).get("page_count") or 1))
    except (TypeError, ValueError):
        return 1


def has_next_page(envelope: t.Mapping[str, t.Any]) -> bool:
    """Whether a list answer says another page follows (False when it says nothing).

    Args:
        envelope: a decoded list answer.

    Returns:
        ``pagination.has_next_page``, read as a truth value.
    """
    return bool(_pagination(envelope).get("has_next_page"))


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
    """

    number: int
    records: list[dict[str, t.Any]]
    has_next: bool
    page_count: int

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
        return cls(number, records, has_next_page(envelope), page_count(envelope))


def ordered_pages(
    first: Page,
    fetch: t.Callable[[int], Page],
    *,
    window: int,
    executor: Executor | None = None,
) -> t.Generator[Page, None, None]:
    """Yield ``first`` and every following page, in page order.

    Every page up to the highest page count announced so far is read, whatever
    it holds or says of a next page; those after ``first`` are read ahead on
    ``executor`` (or, when none is given, on a pool of ``window`` threads made
    for the walk and closed with it), at most ``window`` in flight, so memory
    stays bounded by the window however long the list is. Past that count the
    walk goes on one page at a time while the last page says it has a next page
    and held records (a server may serve fewer records than asked for). With a
    ``window`` of 1 every page is read in the caller's thread, none ahead. A
    caller that stops iterating cancels the pages still queued.

    Args:
        first: the first page, already read (it tells the page count).
        fetch: reads a page by its number.
        window: how many pages may be read ahead at once.
        executor: where pages are read ahead.

    Yields:
        The pages, in order.
    """
    own_pool: ThreadPoolExecutor | None = None
    pending: collections.deque[Future[Page]] = collections.deque()
    try:
        page, count, next_number = first, first.page_count, first.number + 1
        while True:
            yield page
            count = max(count, page.page_count)
            if window > 1 and next_number <= count:
                if executor is None:
                    own_pool = executor = ThreadPoolExecutor(max_workers=window, thread_name_prefix="closum-page")
                while next_number <= count and len(pending) < window:
                    pending.append(executor.submit(fetch, next_number))
                    next_number += 1
            if pending:
                page = pending.popleft().result()
                continue
            if next_number > count and not (page.has_next and page.records):
                return
            page = fetch(next_number)
            next_number += 1
    finally:
        for future in pending:
            future.cancel()
        if own_pool is not None:
            stop.shutdown(own_pool)
