"""A run's stop event: a termination signal asks every wait of the run to end now.

Each run (the tap's, the target's) creates one :class:`StopEvent` and hands it
to what waits on it: the client gives it to its
:class:`~closum_api.pace.Pace` and its retry loop, a
:class:`~closum_api.ahead.ReadAhead` and a :class:`WorkerPool` take it, the
target hands it to its reader and, through its load context, to its writers.
The run's signal handler calls :meth:`StopEvent.request_stop`; every wait
(backoff sleeps, the pace's waits) goes through :meth:`StopEvent.sleep`, which
returns within milliseconds of a stop and then raises :class:`ClosumStopped`.
The program turns that into exit status 128 + the signal's number, as a shell
reports a process ended by a signal. Nothing here is process-wide: two runs in
one process have two events.

A request already sent cannot be called back: after a stop, the requests in
flight get :data:`STOP_GRACE` seconds to be answered
(:meth:`StopEvent.wait_all`, :meth:`StopEvent.shutdown`), then the run ends
without them (a create left unanswered stays pending in the target's ledger,
settled by the next run), instead of waiting out ``request_timeout``. The
event counts the work its pools are running (:meth:`StopEvent.work_in_flight`),
and the :class:`ClosumStopped` it raises names it, so that the program, exiting,
knows whether some is still running and need not wait for it.
"""

from __future__ import annotations

import concurrent.futures
import functools
import signal
import threading
import time
import typing as t

from closum_api.errors import ClosumError

if t.TYPE_CHECKING:
    from collections.abc import Iterable

R = t.TypeVar("R")
P = t.ParamSpec("P")

#: after a stop, the seconds the requests already sent get to be answered
STOP_GRACE = 5.0
#: seconds between two looks at the stop event while waiting for work in flight
POLL = 0.05


class ClosumStopped(ClosumError):  # noqa: N818  # public name shared by the tap, the target and closum_api
    """A termination signal asked the run to stop.

    Attributes:
        signum: the signal's number.
        stop: the run's stop event that was set: it tells the work still in flight.
    """

    def __init__(self, signum: int, stop: StopEvent) -> None:
        """Name the signal.

        Args:
            signum: the signal's number.
            stop: the run's stop event that was set.
        """
        super().__init__(f"stopped by {signal_name(signum)}; rerun to continue from the last STATE")
        self.signum = signum
        self.stop = stop


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, and so on; the number when it has no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopEvent:
    """The stop of one run: a ``threading.Event``-like flag that a signal handler may set.

    :meth:`request_stop` never takes a lock in the calling thread: a signal
    handler runs in the main thread between two bytecodes, possibly while that
    thread holds the event's own lock, so the event is set from a helper thread.
    """

    def __init__(self) -> None:
        """Not stopping; no work in flight."""
        self._event = threading.Event()
        self._signum: int | None = None
        self._stopped_at = 0.0
        self._running = 0
        self._running_lock = threading.Lock()

    def request_stop(self, signum: int) -> None:
        """Ask every wait to end; safe to call from a signal handler.

        Args:
            signum: the signal that asked (the first one is kept).
        """
        if self._signum is None:
            self._signum = signum
            self._stopped_at = time.monotonic()
        threading.Thread(target=self._event.set, name="stop-event", daemon=True).start()

    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._signum is not None

    def signum(self) -> int | None:
        """The signal that asked to stop, if any."""
        return self._signum

    def grace_left(self) -> float | None:
        """Seconds the work in flight still gets since the stop (None: not stopping)."""
        if self._signum is None:
            return None
        return max(0.0, self._stopped_at + STOP_GRACE - time.monotonic())

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when a stop is requested meanwhile.

        Args:
            seconds: how long to wait.

        Raises:
            ClosumStopped: a stop was requested (before or during the wait).
        """
        if self._signum is None and seconds > 0:
            self._event.wait(seconds)
        signum = self._signum
        if signum is not None:
            raise ClosumStopped(signum, self)

    def check(self) -> None:
        """Raise :class:`ClosumStopped` if a stop was requested, else return at once."""
        self.sleep(0)

    def wait_all(self, futures: Iterable[concurrent.futures.Future[t.Any]]) -> None:
        """Wait until ``futures`` are done; after a stop, for :data:`STOP_GRACE` seconds at most.

        Args:
            futures: the work in flight.

        Raises:
            ClosumStopped: a stop was requested and some are still running after the grace.
        """
        pending = set(futures)
        while pending:
            left = self.grace_left()
            if left == 0.0:
                for future in pending:
                    future.cancel()
                self.check()
            _, pending = concurrent.futures.wait(pending, timeout=POLL if left is None else min(POLL, left))

    def result(self, future: concurrent.futures.Future[R]) -> R:
        """What ``future`` returns once it is done, or :class:`ClosumStopped` as soon as a stop is requested.

        Args:
            future: work on a pool (a read: dropping it at a stop loses nothing).

        Returns:
            Its result (its exception is raised).
        """
        while not future.done():
            self.check()
            concurrent.futures.wait([future], timeout=POLL)
        return future.result()

    def shutdown(self, pool: concurrent.futures.Executor) -> None:
        """Close ``pool``: wait for its work, unless a stop was requested (then its queued work is dropped).

        Args:
            pool: a pool of the run.
        """
        stopping = self.stopping()
        pool.shutdown(wait=not stopping, cancel_futures=stopping)

    def counted(self, call: t.Callable[[], R]) -> R:
        """Run ``call``, counted as work in flight of this run while it runs (:meth:`work_in_flight`).

        Args:
            call: one task of a pool of the run.

        Returns:
            What it returns.
        """
        with self._running_lock:
            self._running += 1
        try:
            return call()
        finally:
            with self._running_lock:
                self._running -= 1

    def work_in_flight(self) -> int:
        """How many tasks of the run's pools are running: the interpreter waits for them at exit, daemon or not."""
        with self._running_lock:
            return self._running


class WorkerPool(concurrent.futures.ThreadPoolExecutor):
    """A thread pool of the run whose work its stop counts while it runs (:meth:`StopEvent.work_in_flight`).

    Args:
        threads: its most threads.
        name: what its threads are called (``closum-<name>``), for thread dumps only.
        stop: the run's stop event, which counts the pool's work.

    Attributes:
        stop: the run's stop event.
    """

    def __init__(self, threads: int, name: str, stop: StopEvent) -> None:
        """A pool of ``threads`` threads."""
        super().__init__(max_workers=threads, thread_name_prefix=f"closum-{name}")
        self.stop = stop

    def submit(self, fn: t.Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> concurrent.futures.Future[R]:
        """Run ``fn`` on the pool, counted as work in flight of the run while it runs."""
        return super().submit(self.stop.counted, functools.partial(fn, *args, **kwargs))


__all__ = [
    "STOP_GRACE",
    "ClosumStopped",
    "StopEvent",
    "WorkerPool",
    "signal_name",
]
