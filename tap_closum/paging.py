"""Fetch numbered pages concurrently and hand them back in order.

Once the first page tells how many pages there are, the rest are fetched by a
pool of workers, at most ``window`` in flight, and yielded strictly in page
order, so memory stays bounded by the window however long the list is.
"""

from __future__ import annotations

import collections
import typing as t
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass


@dataclass(frozen=True)
class Page:
    """One page of a Closum list."""

    number: int
    records: list[dict[str, t.Any]]
    has_next: bool
    page_count: int


def ordered_pages(
    first: Page,
    fetch: t.Callable[[int], Page],
    *,
    window: int,
) -> t.Generator[Page, None, None]:
    """Yield ``first`` and every following page, in order.

    Pages are requested up to the last page count any answer announced, and
    the listing ends at the first page (in order) whose ``has_next`` is false.
    A caller that stops iterating cancels the pages still queued.
    """
    if window <= 1 or not first.has_next:
        yield from _sequential(first, fetch)
        return
    pool = ThreadPoolExecutor(max_workers=window, thread_name_prefix="closum-page")
    pending: collections.deque[tuple[int, Future[Page]]] = collections.deque()
    try:
        page, next_number, last_known = first, first.number + 1, first.page_count
        while True:
            yield page
            if not page.has_next:
                return
            last_known = max(last_known, page.page_count, page.number + 1)
            while next_number <= last_known and len(pending) < window:
                pending.append((next_number, pool.submit(fetch, next_number)))
                next_number += 1
            _, future = pending.popleft()
            page = future.result()
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def _sequential(first: Page, fetch: t.Callable[[int], Page]) -> t.Generator[Page, None, None]:
    page = first
    while True:
        yield page
        if not page.has_next:
            return
        page = fetch(page.number + 1)
