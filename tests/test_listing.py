"""Reading a list on its own: pages in order, none skipped or repeated; the envelope read tolerantly."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from closum_api.listing import Page, has_next_page, ordered_pages, page_count


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


def test_every_page_up_to_the_count_is_read_even_after_one_that_says_none_follows():
    # The list shrank while being read: page 2 says it is the last, but page 1 announced 3.
    pages = {
        1: Page(1, [{"id": 1}], has_next=True, page_count=3),
        2: Page(2, [{"id": 2}], has_next=False, page_count=2),
        3: Page(3, [{"id": 3}], has_next=False, page_count=3),
    }
    for window in (1, 4):
        fetch, calls = pager(pages)
        assert [p.number for p in ordered_pages(pages[1], fetch, window=window)] == [1, 2, 3]
        assert sorted(calls) == [2, 3]


def test_past_the_count_an_empty_page_ends_the_listing_whatever_it_says():
    # A server that always says more follow must not be read forever.
    pages = {n: Page(n, [{"id": n}] if n < 4 else [], has_next=True, page_count=2) for n in range(1, 10)}
    for window in (1, 4):
        fetch, calls = pager(pages)
        assert [p.number for p in ordered_pages(pages[1], fetch, window=window)] == [1, 2, 3, 4]
        assert sorted(calls) == [2, 3, 4]


def test_pages_are_read_ahead_on_the_executor_given_and_it_stays_open():
    pages = {n: Page(n, [{"id": n}], has_next=n < 12, page_count=12) for n in range(1, 13)}
    threads: set[str] = set()

    def fetch(number: int) -> Page:
        threads.add(threading.current_thread().name)
        return pages[number]

    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="callers-pool") as pool:
        got = [p.number for p in ordered_pages(pages[1], fetch, window=3, executor=pool)]
        assert pool.submit(lambda: 7).result() == 7
    assert got == list(range(1, 13))
    assert threads
    assert all(name.startswith("callers-pool") for name in threads)


@pytest.mark.parametrize(
    ("pagination", "count", "has_next"),
    [
        ({"page_count": 7, "has_next_page": True}, 7, True),
        ({"page_count": "3", "has_next_page": False}, 3, False),
        ({"page_count": 0}, 1, False),
        ({"page_count": -2}, 1, False),
        ({"page_count": None, "has_next_page": None}, 1, False),
        ({"page_count": "many", "has_next_page": 1}, 1, True),
        ({"page_count": [2]}, 1, False),
        ({}, 1, False),
        (None, 1, False),
        ("garbage", 1, False),
    ],
)
def test_the_envelope_is_read_tolerantly(pagination, count, has_next):
    envelope = {"data": [], "pagination": pagination}
    assert (page_count(envelope), has_next_page(envelope)) == (count, has_next)
    assert (page_count({"data": []}), has_next_page({"data": []})) == (1, False)


def test_a_page_of_an_answer_holds_its_objects_only():
    envelope = {"data": [{"id": 1}, 2, "x", None, {"id": 3}], "pagination": {"page_count": 2, "has_next_page": True}}
    assert Page.of(1, envelope) == Page(1, [{"id": 1}, {"id": 3}], has_next=True, page_count=2)
    assert Page.of(2, {"data": {"id": 1}}).records == []
    assert Page.of(2, {"data": None}).records == []
