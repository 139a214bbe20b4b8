"""Retrying a call with the shared policy; every wait ends early on a stop.

The waits come from :func:`closum_api.errors.retry_waits` and
:func:`closum_api.errors.jitter`; they are slept through
:func:`closum_api.stop.sleep`, so a termination signal ends a backoff within
milliseconds (``ClosumStopped``) instead of after it.
"""

from __future__ import annotations

import functools
import time
import typing as t

from closum_api.errors import jitter, retry_waits
from closum_api.stop import STOP

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from backoff.types import Details

P = t.ParamSpec("P")
R = t.TypeVar("R")


def with_retries(
    func: Callable[P, R],
    *,
    retry_on: tuple[type[Exception], ...],
    max_tries: int,
    backoff_base: float,
    on_backoff: Callable[[Details], None],
) -> Callable[P, R]:
    """``func`` retried on ``retry_on`` with :func:`retry_waits` and :func:`jitter`.

    Args:
        func: the call to retry.
        retry_on: the exceptions that earn another try.
        max_tries: tries in all (1 = no retry).
        backoff_base: the first wait, in seconds.
        on_backoff: called before each wait with ``backoff``-style details
            (``tries``, ``wait``, ``exception``, ``elapsed``).

    Returns:
        ``func`` wrapped; after the last try its exception propagates, and a
        stop requested before a try or during a wait raises ``ClosumStopped``.
    """

    @functools.wraps(func)
    def retrying(*args: P.args, **kwargs: P.kwargs) -> R:
        waits = retry_waits(backoff_base)
        next(waits)  # the priming value, never waited
        start = time.monotonic()
        tries = 0
        while True:
            STOP.check()
            tries += 1
            try:
                return func(*args, **kwargs)
            except retry_on as exc:
                if tries >= max_tries:
                    raise
                wait = jitter(waits.send(exc))
                details: Details = {
                    "target": func,
                    "args": args,
                    "kwargs": kwargs,
                    "tries": tries,
                    "elapsed": time.monotonic() - start,
                    "wait": wait,
                    "exception": exc,
                }
                on_backoff(details)
                STOP.sleep(wait)

    return retrying
