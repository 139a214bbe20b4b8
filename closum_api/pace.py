"""The request rate of a whole run, shared by every thread that sends.

One :class:`Pace` per run: every request takes a send slot from
:meth:`Pace.acquire` first and reports its answer to :meth:`Pace.observe`.

- **fixed** (``max_requests_per_second`` set): slots are spaced ``1/R`` apart,
  whatever the concurrency, a shade under ``R`` (:data:`FIXED_HEADROOM`) so that
  the network's jitter never puts ``R + 1`` requests in the server's second.
  A 429 still lowers the rate below ``R``.
- **adaptive** (not set): no rate until the server first answers 429, so a
  run against an unlimited server is not slowed; only a slow start, as TCP's:
  at most :data:`START_WINDOW` requests in flight at first, one more for each
  answer, so the concurrency doubles every round trip and a limit is first met
  with a few requests in flight, not all of them. Then the rate drops to
  :data:`DROP_FACTOR` times the answers of the last second, that rate is
  remembered as the ceiling, and it is probed upward gently: back towards the
  ceiling quickly, past it by a percent of it every :data:`PROBE_EVERY` seconds
  without a 429. A steady limit is approached from below instead of being hit
  over and over.
- **5xx are not limits.** A 500 or 503 says the server stumbled, not that we
  sent too much: it changes no rate (its request is retried after its own
  backoff). Measured: with 5 % of calls failing at random, slowing down at two
  503s within a second (as this module once did) cut a run to a few requests
  per second for no gain, since a failing call fails whatever the rate. Only a
  ``Retry-After`` says when the server wants us back: on a 503, or longer than
  :data:`PAUSE_ALL_AFTER` seconds, it pauses every worker.
- **In flight**: at most ``max_in_flight`` (``max_parallel_requests``) requests
  are sent and not yet answered, whatever the threads; this is the run's one
  limit of concurrency. A request waiting out its backoff holds no place.

Every wait goes through the run's :meth:`~closum_api.stop.StopEvent.sleep` (the
event the pace is built with), so a signal ends it.

The first 429 of a run also tells what the server allowed: the most answers
seen within one second before it. :func:`report` ends a run with one line, the metric, and,
when Closum limited the run, a warning naming the ``max_requests_per_second``
that paces the next runs under that limit from their first request (the
adaptive pace cannot know the limit before it meets it, so its first meeting
costs the requests then in flight).
"""

from __future__ import annotations

import collections
import json
import threading
import time
import typing as t
from dataclasses import dataclass
from http import HTTPStatus

if t.TYPE_CHECKING:
    import logging

    from closum_api.stop import StopEvent

#: ``max_parallel_requests`` when it is not set: the most requests of a run in flight at once
DEFAULT_PARALLEL_REQUESTS = 8
#: the adaptive pace starts with this many requests in flight at most, one more per answer
START_WINDOW = 2
#: the slow start ends (no window any more) once this many may be in flight
WINDOW_OPEN = 64
#: seconds between two looks at the stop event while waiting for a place in the window
WINDOW_POLL = 0.05
#: fixed mode sends at this fraction of ``max_requests_per_second``
FIXED_HEADROOM = 0.93
#: after a 429 the rate drops to this fraction of the answers of the last second
DROP_FACTOR = 0.9
#: the lowest rate the adaptive pace drops to, in requests per second
MIN_RATE = 0.5
#: 429s within this many seconds of a drop are the same burst: one drop
BURST_SECONDS = 1.0
#: seconds between two probes upward
PROBE_EVERY = 2.0
#: each probe above 0.9 x the ceiling adds this fraction of the ceiling
PROBE_STEP = 0.01
#: below 0.9 x the ceiling, each probe multiplies the rate by this
CATCH_UP = 1.25
#: a Retry-After longer than this pauses every worker, not just the retried request
PAUSE_ALL_AFTER = 2.0
#: pauses every worker honours are capped at this many seconds
MAX_PAUSE = 60.0


@dataclass(frozen=True)
class PaceStats:
    """What the pace saw over the run.

    Attributes:
        mode: ``fixed``, ``adaptive`` (the rate dropped at least once) or ``unpaced``.
        requests: answers observed.
        http_429: of them, 429s.
        http_503: of them, 503s.
        wall_s: seconds from the first slot taken to the last answer.
        effective_rps: ``requests / wall_s``.
        allowed_rps: the rate allowed at the end (None: unpaced).
        seconds_waited: seconds the senders spent waiting for slots, all threads summed.
        limit_rps: the most requests answered within one second before the first 429
            (None: no 429): what the server allowed.
    """

    mode: str
    requests: int
    http_429: int
    http_503: int
    wall_s: float
    effective_rps: float
    allowed_rps: float | None
    seconds_waited: float
    limit_rps: int | None = None

    def line(self) -> str:
        """``requests: 78 in 8.1 s (9.6/s); answered 429: 1 (1.3 %)``, plus the pace."""
        share = 100.0 * self.http_429 / self.requests if self.requests else 0.0
        pace = "unpaced" if self.allowed_rps is None else f"{self.mode} pace, {self.allowed_rps:.1f}/s at the end"
        return (
            f"requests: {self.requests} in {self.wall_s:.1f} s ({self.effective_rps:.1f}/s); "
            f"answered 429: {self.http_429} ({share:.1f} %); {pace}"
        )

    def metric(self) -> dict[str, t.Any]:
        """The ``closum_request_budget`` counter, in the SDK's metric format."""
        return {
            "type": "counter",
            "metric": "closum_request_budget",
            "value": self.requests,
            "tags": {
                "http_429": self.http_429,
                "http_503": self.http_503,
                "wall_s": round(self.wall_s, 3),
                "effective_rps": round(self.effective_rps, 2),
                "allowed_rps": None if self.allowed_rps is None else round(self.allowed_rps, 2),
                "mode": self.mode,
                "limit_rps": self.limit_rps,
            },
        }

    def advice(self) -> str | None:
        """What to set so that the next runs draw no 429; None when none was drawn."""
        if not self.http_429:
            return None
        refused = f"Closum answered 429 (too many requests) to {self.http_429} of {self.requests} requests"
        allowed = f": it allowed about {self.limit_rps} per second" if self.limit_rps else ""
        if self.mode == "fixed":
            to = f" to {self.limit_rps}" if self.limit_rps else ""
            return f"{refused} even under max_requests_per_second{allowed}; lower max_requests_per_second{to}"
        setting = f"max_requests_per_second: {self.limit_rps}" if self.limit_rps else "max_requests_per_second"
        return f"{refused}{allowed}; set {setting} to pace runs under that from their first request"


def report(stats: PaceStats, logger: logging.Logger, metrics_logger: logging.Logger) -> None:
    """End a run that sent requests: the budget's line, its metric, and the advice if Closum limited the run.

    Args:
        stats: what the run's pace saw.
        logger: where the line (INFO) and the advice (WARNING) go.
        metrics_logger: the SDK's metrics logger.
    """
    if not stats.requests:
        return
    logger.info(stats.line())
    advice = stats.advice()
    if advice:
        logger.warning(advice)
    metrics_logger.info("METRIC: %s", json.dumps(stats.metric(), separators=(",", ":")))


class Pace:
    """The request rate of one run (see the module docstring).

    Args:
        max_rps: ``max_requests_per_second``; None for the adaptive pace.
        stop: the run's stop event: a wait for a place in flight ends on it.
        max_in_flight: most requests sent and not yet answered (``max_parallel_requests``); None: no limit.
        clock: monotonic seconds (a fake one in tests).
        sleep: how to wait for a send slot (a fake one in tests); ``stop.sleep`` by default, which a stop ends.
    """

    def __init__(
        self,
        max_rps: float | None = None,
        *,
        stop: StopEvent,
        max_in_flight: int | None = None,
        clock: t.Callable[[], float] = time.monotonic,
        sleep: t.Callable[[float], None] | None = None,
    ) -> None:
        """Start unpaced (adaptive) or at ``max_rps`` (fixed)."""
        self.max_rps = max_rps
        self.max_in_flight = max_in_flight
        self._stop = stop
        self._clock = clock
        self._sleep = sleep if sleep is not None else stop.sleep
        self._lock = threading.Lock()
        self._rate: float | None = max_rps * FIXED_HEADROOM if max_rps else None
        self._ceiling: float | None = None
        self._next_slot = 0.0
        self._pause_until = 0.0
        self._last_drop: float | None = None
        self._last_probe = 0.0
        self._answers: collections.deque[float] = collections.deque()
        self._dropped = False
        self._limit_seen: int | None = None
        self._peak_answers = 0  # the most answers seen within one second
        self._first: float | None = None
        self._last: float | None = None
        # The slow start's window (None: no window), and the requests in flight.
        self._window: int | None = None if max_rps else START_WINDOW
        self._in_flight = 0
        self._room = threading.Condition(self._lock)
        self.requests = 0
        self.http_429 = 0
        self.http_503 = 0
        self.seconds_waited = 0.0

    @property
    def rate(self) -> float | None:
        """The requests per second allowed now; None while unpaced."""
        return self._rate

    def acquire(self, *, windowed: bool = True) -> float:
        """Block until this thread may send; every request of the run calls it first, :meth:`release` after.

        Args:
            windowed: take a place in flight (and :meth:`release` it after): within
                ``max_in_flight`` and the slow start's window. The token request
                does not: it may be needed by a request that holds a place already.

        Returns:
            The seconds waited.

        Raises:
            ClosumStopped: the run was asked to stop during the wait.
        """
        with self._lock:
            while windowed and self._in_flight >= self._places():
                self._room.wait(WINDOW_POLL)
                self._stop.check()
            if windowed:
                self._in_flight += 1
            now = self._clock()
            if self._first is None:
                self._first = now
            self._probe(now)
            slot = max(now, self._pause_until)
            if self._rate is not None:
                slot = max(slot, self._next_slot)
                self._next_slot = slot + 1.0 / self._rate
            wait = slot - now
            self.seconds_waited += wait
        if wait > 0:
            try:
                self._sleep(wait)
            except BaseException:
                if windowed:
                    self.release()
                raise
        return wait

    def _places(self) -> float:
        """Requests that may be in flight now: ``max_in_flight``, within the slow start's window. Lock held."""
        places = float(self.max_in_flight) if self.max_in_flight else float("inf")
        return places if self._window is None else min(places, self._window)

    def release(self) -> None:
        """The request that took a slot is over (answered or failed)."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            self._room.notify()

    def observe(self, status: int, retry_after: float | None = None) -> None:
        """Count an answer, and slow down when it says so.

        Args:
            status: the answer's HTTP status.
            retry_after: the seconds its ``Retry-After`` asked for, if any.
        """
        with self._lock:
            now = self._clock()
            self.requests += 1
            self._last = now
            if self._first is None:
                self._first = now
            dropped = False
            if status == HTTPStatus.TOO_MANY_REQUESTS:
                self.http_429 += 1
                dropped = self._slow_down(now)
            elif status == HTTPStatus.SERVICE_UNAVAILABLE:
                self.http_503 += 1  # the server stumbled: no limit of ours, no change of rate
            else:
                self._answers.append(now)
                if self._window is not None:
                    self._window += 1
                    if self._window >= WINDOW_OPEN:
                        self._window = None
                    self._room.notify()
            while self._answers and self._answers[0] <= now - 1.0:
                self._answers.popleft()
            self._peak_answers = max(self._peak_answers, len(self._answers))
            if retry_after is not None and (
                dropped or retry_after > PAUSE_ALL_AFTER or status == HTTPStatus.SERVICE_UNAVAILABLE
            ):
                # The server's window is full: every worker waits, not only the one told.
                self._pause_until = max(self._pause_until, now + min(retry_after, MAX_PAUSE))
                self._next_slot = max(self._next_slot, self._pause_until)

    def _slow_down(self, now: float) -> bool:
        """A 429: drop the rate, once per burst; whether it dropped. Lock held."""
        if self._limit_seen is None:
            # The first 429: the most answers seen within one second before it is what the server allows.
            self._limit_seen = self._peak_answers or None
        if self._last_drop is not None and now - self._last_drop < BURST_SECONDS:
            return False
        answered = float(len(self._answers))  # answers of the last second, 429s not included
        if self.max_rps:  # fixed: the limit is known, only a little lower
            new_rate = max(MIN_RATE, DROP_FACTOR * (self._rate or self.max_rps))
            self._ceiling = self.max_rps * FIXED_HEADROOM
        else:
            new_rate = max(MIN_RATE, DROP_FACTOR * answered)
            if self._rate is not None:
                new_rate = min(new_rate, DROP_FACTOR * self._rate) if answered == 0 else min(new_rate, self._rate)
            self._ceiling = max(answered, new_rate)
        self._rate = new_rate
        self._window = None  # the rate rules from now on
        self._room.notify_all()
        self._dropped = True
        self._last_drop = now
        self._last_probe = now
        self._next_slot = max(self._next_slot, now + 1.0 / new_rate)
        return True

    def _probe(self, now: float) -> None:
        """Raise the rate a little after each quiet stretch. Called with the lock held."""
        if self._ceiling is None or self._rate is None or now - self._last_probe < PROBE_EVERY:
            return
        self._last_probe = now
        if self._rate < DROP_FACTOR * self._ceiling:
            self._rate = min(DROP_FACTOR * self._ceiling, self._rate * CATCH_UP)
        else:
            self._rate += PROBE_STEP * self._ceiling
        if self.max_rps:
            self._rate = min(self._rate, self.max_rps * FIXED_HEADROOM)

    def stats(self) -> PaceStats:
        """What the pace saw so far."""
        with self._lock:
            wall = (self._last - self._first) if self._first is not None and self._last is not None else 0.0
            if self.max_rps:
                mode = "fixed"
            elif self._dropped:
                mode = "adaptive"
            else:
                mode = "unpaced"
            return PaceStats(
                mode=mode,
                requests=self.requests,
                http_429=self.http_429,
                http_503=self.http_503,
                wall_s=wall,
                effective_rps=self.requests / wall if wall > 0 else 0.0,
                allowed_rps=self._rate,
                seconds_waited=self.seconds_waited,
                limit_rps=self._limit_seen,
            )
