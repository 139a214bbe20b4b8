"""The ordered concurrent pager on its own: pages in order, none skipped or repeated."""

from __future__ import annotations

import threading
import time

from tap_closum.paging import Page, ordered_pages


def pager(pages: dict[int, Page]):
    calls: list[int] = []
    lock = threading.Lock()

    def fetch(number: int) -> Page:
        time.sleep(0.002 * (number % 3))  # finish out of order
        with lock:
            calls.append(number)
        return pages[number]

    return fetch, calls


def test_pages_come_back_in_order_whatever_order_they_finish_in():
    pages = {n: Page(n, [{"id": n}], has_next=n < 20, page_count=20) for n in range(1, 21)}
    fetch, calls = pager(pages)
    got = [p.number for p in ordered_pages(pages[1], fetch, window=5)]
    assert got == list(range(1, 21))
    assert sorted(calls) == list(range(2, 21))


def test_an_empty_page_that_says_more_follow_does_not_end_the_listing():
    pages = {
        1: Page(1, [{"id": 1}], has_next=True, page_count=3),
        2: Page(2, [], has_next=True, page_count=3),
        3: Page(3, [{"id": 3}], has_next=False, page_count=3),
    }
    fetch, _ = pager(pages)
    assert [p.number for p in ordered_pages(pages[1], fetch, window=4)] == [1, 2, 3]
    assert [p.number for p in ordered_pages(pages[1], fetch, window=1)] == [1, 2, 3]


def test_pages_announced_later_are_fetched_too():
    # The first page announced 2 pages; records arrived meanwhile and page 2 says 4.
    pages = {
        1: Page(1, [{"id": 1}], has_next=True, page_count=2),
        2: Page(2, [{"id": 2}], has_next=True, page_count=4),
        3: Page(3, [{"id": 3}], has_next=True, page_count=4),
        4: Page(4, [{"id": 4}], has_next=False, page_count=4),
    }
    fetch, calls = pager(pages)
    assert [p.number for p in ordered_pages(pages[1], fetch, window=8)] == [1, 2, 3, 4]
    assert sorted(calls) == [2, 3, 4]


def test_the_window_bounds_pages_in_flight():
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    pages = {n: Page(n, [], has_next=n < 30, page_count=30) for n in range(1, 31)}

    def fetch(number: int) -> Page:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.003)
        with lock:
            in_flight -= 1
        return pages[number]

    assert len(list(ordered_pages(pages[1], fetch, window=4))) == 30
    assert 1 < peak <= 4


def test_stopping_early_cancels_queued_pages():
    pages = {n: Page(n, [{"id": n}], has_next=True, page_count=100) for n in range(1, 101)}
    fetch, calls = pager(pages)
    iterator = ordered_pages(pages[1], fetch, window=3)
    assert [next(iterator).number for _ in range(3)] == [1, 2, 3]
    iterator.close()
    assert len(calls) <= 6
