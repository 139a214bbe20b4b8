"""Reading a list on its own: pages in order, none skipped or repeated; the envelope read tolerantly."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from closum_api import ahead
from closum_api.listing import Page, has_next_page, ordered_pages, page_count
from closum_api.stop import StopEvent
from closum_sandbox.testing import wait_until


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
    got = [p.number for p in ordered_pages(pages[1], fetch, threads=5, stop=StopEvent())]
    assert got == list(range(1, 21))
    assert sorted(calls) == list(range(2, 21))


def test_an_empty_page_that_says_more_follow_does_not_end_the_listing():
    pages = {
        1: Page(1, [{"id": 1}], has_next=True, page_count=3),
        2: Page(2, [], has_next=True, page_count=3),
        3: Page(3, [{"id": 3}], has_next=False, page_count=3),
    }
    fetch, _ = pager(pages)
    assert [p.number for p in ordered_pages(pages[1], fetch, threads=4, stop=StopEvent())] == [1, 2, 3]
    assert [p.number for p in ordered_pages(pages[1], fetch, threads=1, stop=StopEvent())] == [1, 2, 3]


def test_pages_announced_later_are_fetched_too():
    # The first page announced 2 pages; records arrived meanwhile and page 2 says 4.
    pages = {
        1: Page(1, [{"id": 1}], has_next=True, page_count=2),
        2: Page(2, [{"id": 2}], has_next=True, page_count=4),
        3: Page(3, [{"id": 3}], has_next=True, page_count=4),
        4: Page(4, [{"id": 4}], has_next=False, page_count=4),
    }
    fetch, calls = pager(pages)
    assert [p.number for p in ordered_pages(pages[1], fetch, threads=8, stop=StopEvent())] == [1, 2, 3, 4]
    assert sorted(calls) == [2, 3, 4]


def test_the_threads_bound_pages_in_flight():
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    pages = {n: Page(n, [{"id": n}], has_next=n < 30, page_count=30) for n in range(1, 31)}

    def fetch(number: int) -> Page:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.003)
        with lock:
            in_flight -= 1
        return pages[number]

    assert len(list(ordered_pages(pages[1], fetch, threads=4, stop=StopEvent()))) == 30
    assert 1 < peak <= 4


def test_stopping_early_cancels_queued_pages():
    pages = {n: Page(n, [{"id": n}], has_next=True, page_count=100) for n in range(1, 101)}
    gate = threading.Event()
    calls: list[int] = []

    def fetch(number: int) -> Page:
        calls.append(number)
        if number > 3:
            gate.wait(10)  # pages past 3 are in flight until the walk is closed
        return pages[number]

    iterator = ordered_pages(pages[1], fetch, threads=3, stop=StopEvent())
    assert [next(iterator).number for _ in range(3)] == [1, 2, 3]
    wait_until(lambda: len(calls) == 5, "pages 4, 5 and 6 in flight")  # the three threads are busy
    threading.Timer(0.2, gate.set).start()  # the pages in flight are answered while close() waits for them
    iterator.close()
    assert sorted(calls) == [
        2,
        3,
        4,
        5,
        6,
    ]  # those taken, and the three in flight when it closed: none of the 94 queued


def test_every_page_up_to_the_count_is_read_even_after_one_that_says_none_follows():
    # The list shrank while being read: page 2 says it is the last, but page 1 announced 3.
    pages = {
        1: Page(1, [{"id": 1}], has_next=True, page_count=3),
        2: Page(2, [{"id": 2}], has_next=False, page_count=2),
        3: Page(3, [{"id": 3}], has_next=False, page_count=3),
    }
    for window in (1, 4):
        fetch, calls = pager(pages)
        assert [p.number for p in ordered_pages(pages[1], fetch, threads=window, stop=StopEvent())] == [1, 2, 3]
        assert sorted(calls) == [2, 3]


def test_past_the_count_an_empty_page_ends_the_listing_whatever_it_says(caplog):
    # A server that always says more follow must not be read forever.
    pages = {n: Page(n, [{"id": n}] if n < 4 else [], has_next=True, page_count=2) for n in range(1, 10)}
    for window in (1, 4):
        fetch, calls = pager(pages)
        read = ordered_pages(pages[1], fetch, threads=window, stop=StopEvent(), what="GET /x")
        assert [p.number for p in read] == [1, 2, 3]
        assert sorted(calls) == [2, 3, 4]
    assert "GET /x: page 4 came back empty past the 2 pages announced" in caplog.text


def lying(served: int, per_page: int, lie: str, *, total: int | None = None):
    """Pages of a server with ``served`` records that lies: ``page_count`` or ``repeat_last``."""

    def page(number: int) -> Page:
        last = -(-served // per_page)
        shown = min(number, last) if lie == "repeat_last" else number
        ids = range((shown - 1) * per_page + 1, min(served, shown * per_page) + 1)
        count = 1_000_000 if lie == "page_count" else last
        return Page(number, [{"id": i} for i in ids], has_next=True, page_count=count, total=total)

    return page


@pytest.mark.parametrize("threads", [1, 8])
def test_an_endless_page_count_ends_once_the_records_announced_are_read(threads, caplog):
    fetch = lying(95, 10, "page_count", total=95)
    calls: list[int] = []

    def counted(number: int) -> Page:
        calls.append(number)
        return fetch(number)

    ids = [
        r["id"]
        for p in ordered_pages(fetch(1), counted, threads=threads, stop=StopEvent(), what="GET /lead")
        for r in p.records
    ]
    assert ids == list(range(1, 96))
    assert "GET /lead: page 11 came back empty once the 95 records announced were read" in caplog.text
    assert len(calls) < 11 + 300  # bounded by the read-ahead buffer, not by the million pages announced


def test_an_endless_page_count_without_a_record_count_ends_after_three_empty_pages(caplog):
    fetch = lying(30, 10, "page_count")
    ids = [
        r["id"]
        for p in ordered_pages(fetch(1), fetch, threads=4, stop=StopEvent(), what="GET /lead")
        for r in p.records
    ]
    assert ids == list(range(1, 31))
    assert "page 6 came back empty 3 times in a row" in caplog.text


@pytest.mark.parametrize("threads", [1, 4])
def test_a_last_page_served_forever_is_read_once(threads, caplog):
    fetch = lying(25, 10, "repeat_last")
    pages = list(ordered_pages(fetch(1), fetch, threads=threads, stop=StopEvent(), what="GET /lead"))
    assert [r["id"] for p in pages for r in p.records] == list(range(1, 26))
    assert "GET /lead: page 4 repeated page 3 past the 3 pages announced" in caplog.text


def test_read_ahead_is_bounded_by_its_buffer_not_by_threads():
    started: list[int] = []
    release = threading.Event()

    def slow_head(n: int) -> int:
        started.append(n)
        if n == 0:
            release.wait(5)  # the head waits (a backoff): the others go on meanwhile
        return n

    results = ahead.ordered(slow_head, itertools.count(), threads=4, stop=StopEvent(), buffer=20)
    waiter = threading.Thread(target=lambda: next(results))
    waiter.start()
    wait_until(lambda: len(started) >= 20, "the buffer's 20 calls to start", timeout=5)
    time.sleep(0.05)  # would more start? (none may: 20 are submitted, the buffer is full)
    assert len(started) == 20
    release.set()
    waiter.join()
    results.close()


def test_a_read_ahead_fed_later_goes_on_while_the_caller_waits_for_an_earlier_result():
    started: list[int] = []
    release = threading.Event()

    def slow_first(n: int) -> int:
        started.append(n)
        if n == 0:
            release.wait(5)  # the first waits (a backoff): what is fed after it goes on meanwhile
        return n * 10

    reader: ahead.ReadAhead[int, int] = ahead.ReadAhead(slow_first, threads=4, stop=StopEvent())
    reader.feed([0, 1])
    reader.feed(range(2, 6))  # a later hand-over's items
    wait_until(lambda: len(started) == 6, "the six fed calls to start", timeout=5)
    assert sorted(started) == [0, 1, 2, 3, 4, 5]  # all started before anything was taken
    release.set()
    assert [reader.take() for _ in range(6)] == [0, 10, 20, 30, 40, 50]  # in the order fed
    with pytest.raises(StopIteration):
        reader.take()
    reader.feed([6])
    assert reader.take() == 60
    reader.close()


def test_a_read_ahead_on_one_thread_calls_in_the_callers_thread_when_taken():
    calls: list[tuple[int, str]] = []

    def record(n: int) -> int:
        calls.append((n, threading.current_thread().name))
        return n

    reader: ahead.ReadAhead[int, int] = ahead.ReadAhead(record, threads=1, stop=StopEvent())
    reader.feed([1, 2])
    assert calls == []  # nothing runs before it is taken
    assert reader.take() == 1
    assert calls == [(1, threading.current_thread().name)]
    reader.close()
    with pytest.raises(StopIteration):
        reader.take()


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
