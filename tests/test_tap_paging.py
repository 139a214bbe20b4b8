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
    pages = {n: Page(n, [{"id": n}], n < 20, 20) for n in range(1, 21)}
    fetch, calls = pager(pages)
    got = [p.number for p in ordered_pages(pages[1], fetch, window=5)]
    assert got == list(range(1, 21))
    assert sorted(calls) == list(range(2, 21))


def test_an_empty_page_that_says_more_follow_does_not_end_the_listing():
    pages = {
        1: Page(1, [{"id": 1}], True, 3),
        2: Page(2, [], True, 3),
        3: Page(3, [{"id": 3}], False, 3),
    }
    fetch, _ = pager(pages)
    assert [p.number for p in ordered_pages(pages[1], fetch, window=4)] == [1, 2, 3]
    assert [p.number for p in ordered_pages(pages[1], fetch, window=1)] == [1, 2, 3]


def test_pages_announced_later_are_fetched_too():
    # The first page announced 2 pages; records arrived meanwhile and page 2 says 4.
    pages = {
        1: Page(1, [{"id": 1}], True, 2),
        2: Page(2, [{"id": 2}], True, 4),
        3: Page(3, [{"id": 3}], True, 4),
        4: Page(4, [{"id": 4}], False, 4),
    }
    fetch, calls = pager(pages)
    assert [p.number for p in ordered_pages(pages[1], fetch, window=8)] == [1, 2, 3, 4]
    assert sorted(calls) == [2, 3, 4]


def test_the_window_bounds_pages_in_flight():
    in_flight = 0
    peak = 0
    lock = threading.Lock()
    pages = {n: Page(n, [], n < 30, 30) for n in range(1, 31)}

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
    pages = {n: Page(n, [{"id": n}], True, 100) for n in range(1, 101)}
    fetch, calls = pager(pages)
    iterator = ordered_pages(pages[1], fetch, window=3)
    assert [next(iterator).number for _ in range(3)] == [1, 2, 3]
    iterator.close()
    assert len(calls) <= 6


def test_a_signal_during_a_chunk_write_neither_repeats_nor_splits_it(monkeypatch):
    import sys

    from singer_sdk import singerlib as singer

    from tap_closum.tap import ChunkedWriter

    writer = ChunkedWriter()
    written: list[bytes] = []

    class Stdout:
        class buffer:  # noqa: N801
            @staticmethod
            def write(data: bytes) -> None:
                written.append(bytes(data))
                if len(written) == 1:  # a SIGTERM lands in the middle of the first chunk
                    assert writer.defer_if_writing(
                        lambda: writer.write_message(singer.StateMessage(value={"at": "signal"}))
                    )

        @staticmethod
        def flush() -> None:
            pass

    monkeypatch.setattr(sys, "stdout", Stdout)
    for n in range(3):
        writer.write_message(singer.RecordMessage(stream="s", record={"id": n}))
    writer.flush()
    lines = b"".join(written).decode().splitlines()
    assert [line.count('"RECORD"') for line in lines] == [1, 1, 1, 0]
    assert '"signal"' in lines[-1]
