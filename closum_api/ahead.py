"""Ordered read-ahead: calls run on a pool of threads, their results come back in the order asked for.

The tap's list pages and retrieves and the target's index reads all go through
:func:`ordered`. How far it reads ahead is bounded by memory — at most
``buffer`` results wait behind the one the caller needs — not by the requests in
flight: while the call at the head waits out a backoff, the others go on (the
run's :class:`~closum_api.pace.Pace` alone limits what is in flight). A caller
that stops iterating cancels the calls not started yet, and waiting for the head
ends within :data:`closum_api.stop.POLL` of a stop.
"""

from __future__ import annotations

import collections
import typing as t

from closum_api import stop

if t.TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable
    from concurrent.futures import Future

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


def ordered(
    fn: Callable[[I], R], items: Iterable[I], *, threads: int, buffer: int = BUFFER
) -> Generator[R, None, None]:
    """``fn`` over ``items`` on ``threads`` threads; the results in the items' order.

    ``items`` is drawn lazily, never more than ``buffer`` ahead of the result the
    caller waits for, so it may be endless or change its mind (a list that turns
    out shorter than announced). With one thread every call runs in the caller's.

    Args:
        fn: one call (a request and its retries).
        items: what to call it with.
        threads: threads to run the calls on.
        buffer: the most calls submitted and not yet handed to the caller.

    Yields:
        What each call returned, in order; a call's exception is raised in its turn.

    Raises:
        ClosumStopped: the run was asked to stop while the caller waited.
    """
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    pool = stop.WorkerPool(threads, "ahead")
    pending: collections.deque[Future[R]] = collections.deque()
    source = iter(items)
    try:
        drained = False
        while True:
            while not drained and len(pending) < buffer:
                try:
                    item = next(source)
                except StopIteration:
                    drained = True
                    break
                pending.append(pool.submit(fn, item))
            if not pending:
                return
            yield stop.result(pending.popleft())
    finally:
        for future in pending:
            future.cancel()
        stop.shutdown(pool)
