"""A gate that every worker passes before it sends a request.

When one worker is told to slow down (a 429 or 503 with ``Retry-After``), the
gate closes for that long and every other worker waits too, instead of each
finding out on its own with a failed request.
"""

from __future__ import annotations

import threading
import time

from closum_api.stop import STOP


class PauseGate:
    """Shared pause: ``pause(s)`` closes it for ``s`` seconds, ``wait()`` blocks while closed."""

    def __init__(self) -> None:
        """Start open."""
        self._lock = threading.Lock()
        self._until = 0.0

    def pause(self, seconds: float) -> None:
        """Close the gate for ``seconds`` from now; a longer pause already set wins.

        Args:
            seconds: how long every worker waits.
        """
        with self._lock:
            self._until = max(self._until, time.monotonic() + max(0.0, seconds))

    def wait(self) -> float:
        """Sleep until the gate opens; a stop ends the wait (``ClosumStopped``).

        Returns:
            The seconds slept.
        """
        slept = 0.0
        while True:
            with self._lock:
                remaining = self._until - time.monotonic()
            if remaining <= 0:
                return slept
            STOP.sleep(remaining)
            slept += remaining
