"""Ordered read-ahead: calls run on a pool of threads, their results come back in the order asked for.

The tap's list pages and retrieves and the target's index reads all go through
a :class:`ReadAhead` (:func:`ordered` for one list of items). How far it reads ahead is bounded by memory — at most
``buffer`` results wait behind the one the caller needs — not by the requests in
flight: while the call at the head waits out a backoff, the others go on (the
run's :class:`~closum_api.pace.Pace` alone limits what is in flight). A caller
that stops iterating cancels the calls not started yet, and waiting for the head
ends within :data:`closum_api.stop.POLL` of a stop of the run's event, which the
read-ahead is given (its pool's work is counted there as in flight).
"""

from __future__ import annotations

import collections
import typing as t

from closum_api.stop import WorkerPool

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator
    from concurrent.futures import Future

    from closum_api.stop import StopEvent

I = t.TypeVar("I")  # noqa: E741  # the item type, as R is the result type
R = t.TypeVar("R")

#: results read ahead of the one the caller waits for, at most (pages or records)
BUFFER = 256
#: threads per place in flight: a thread waiting out a backoff holds no place, so there are more threads than places
THREADS_PER_PLACE = 4
#: the most threads one read-ahead starts
MAX_THREADS = 64


def threads_for(max_parallel: int) -> int:
    """The threads a read-ahead needs to keep ``max_parallel`` requests in flight while some wait out a backoff.

    Args:
        max_parallel: ``max_parallel_requests``.

    Returns:
        :data:`THREADS_PER_PLACE` per place, at most :data:`MAX_THREADS`; 1 for 1.
    """
    return 1 if max_parallel <= 1 else min(MAX_THREADS, THREADS_PER_PLACE * max_parallel)


class ReadAhead(t.Generic[I, R]):
    """``fn`` over items fed as they come, on a pool of threads; the results taken in the order fed.

    A call starts as soon as its item is fed (at most ``buffer`` calls not yet
    taken), so a read-ahead kept across hand-overs never drains: while the
    caller takes the results of one batch, the calls of the next go on. Items
    are drawn lazily from what is fed (an iterable may be endless). With one
    thread every call runs in the caller's, when its result is taken.

    Args:
        fn: one call (a request and its retries).
        threads: threads to run the calls on.
        stop: the run's stop event: waiting for a result ends on it.
        buffer: the most calls submitted and not yet taken.
    """

    def __init__(self, fn: Callable[[I], R], *, threads: int, stop: StopEvent, buffer: int = BUFFER) -> None:
        """An empty read-ahead; no thread starts before the first item."""
        self._fn = fn
        self._threads = threads
        self._stop = stop
        self._buffer = buffer
        self._pool: WorkerPool | None = None
        self._sources: collections.deque[Iterator[I]] = collections.deque()
        self._pending: collections.deque[Future[R]] = collections.deque()

    def feed(self, items: Iterable[I]) -> None:
        """Queue ``items`` behind those fed before; their calls start while the buffer has room."""
        self._sources.append(iter(items))
        self._fill()

    def _fill(self) -> None:
        if self._threads <= 1:
            return
        while self._sources and len(self._pending) < self._buffer:
            try:
                item = next(self._sources[0])
            except StopIteration:
                self._sources.popleft()
                continue
            if self._pool is None:
                self._pool = WorkerPool(self._threads, "ahead", self._stop)
            self._pending.append(self._pool.submit(self._fn, item))

    def take(self) -> R:
        """The result of the oldest item fed and not taken (its exception raised).

        Raises:
            StopIteration: every item fed was taken.
            ClosumStopped: the run was asked to stop while the caller waited.
        """
        if self._threads <= 1:
            while self._sources:
                try:
                    item = next(self._sources[0])
                except StopIteration:
                    self._sources.popleft()
                    continue
                return self._fn(item)
            raise StopIteration
        self._fill()
        if not self._pending:
            raise StopIteration
        future = self._pending.popleft()
        try:
            return self._stop.result(future)
        finally:
            self._fill()

    def close(self) -> None:
        """Drop what was fed and not taken: calls not started are cancelled; the pool ends."""
        self._sources.clear()
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            self._stop.shutdown(pool)


def ordered(
    fn: Callable[[I], R], items: Iterable[I], *, threads: int, stop: StopEvent, buffer: int = BUFFER
) -> Generator[R, None, None]:
    """``fn`` over ``items`` on ``threads`` threads; the results in the items' order (a :class:`ReadAhead`).

    ``items`` is drawn lazily, never more than ``buffer`` ahead of the result the
    caller waits for, so it may be endless or change its mind (a list that turns
    out shorter than announced). With one thread every call runs in the caller's.

    Args:
        fn: one call (a request and its retries).
        items: what to call it with.
        threads: threads to run the calls on.
        stop: the run's stop event: waiting for a result ends on it.
        buffer: the most calls submitted and not yet handed to the caller.

    Yields:
        What each call returned, in order; a call's exception is raised in its turn.

    Raises:
        ClosumStopped: the run was asked to stop while the caller waited.
    """
    reader: ReadAhead[I, R] = ReadAhead(fn, threads=threads, stop=stop, buffer=buffer)
    reader.feed(items)
    try:
        while True:
            try:
                result = reader.take()
            except StopIteration:
                return
            yield result
    finally:
        reader.close()
