"""The run's stop event: a signal asks every wait of the run to end.

The tap's and the target's signal handlers call :func:`request_stop`; every
wait in ``closum_api`` (backoff sleeps, pace waits) goes through :func:`sleep`,
which returns early when a stop is requested and then raises
:class:`ClosumStopped`, so a signal interrupts a wait within milliseconds.
"""

from __future__ import annotations

import signal
import threading

from closum_api.errors import ClosumError


class ClosumStopped(ClosumError):  # noqa: N818  # public name of the shared interface
    """A wait was cut short because the run was asked to stop.

    Attributes:
        signum: the signal that asked, if one did.
    """

    def __init__(self, signum: int | None = None) -> None:
        """Name the signal, if any.

        Args:
            signum: the signal that asked the run to stop.
        """
        self.signum = signum
        super().__init__(f"stopped by {_signal_name(signum)}")


def _signal_name(signum: int | None) -> str:
    if signum is None:
        return "request"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopEvent:
    """A ``threading.Event``-like flag that remembers which signal set it."""

    def __init__(self) -> None:
        """Not stopping."""
        self._event = threading.Event()
        self._signum: int | None = None

    def request_stop(self, signum: int) -> None:
        """Ask the run to stop; every :meth:`sleep` in progress ends now.

        Args:
            signum: the signal received (the first one is kept).
        """
        if self._signum is None:
            self._signum = signum
        self._event.set()

    def stopping(self) -> bool:
        """Whether a stop was requested."""
        return self._event.is_set()

    def signum(self) -> int | None:
        """The signal that asked to stop, if any."""
        return self._signum

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, unless a stop is requested first.

        Args:
            seconds: how long to wait; zero or less only checks for a stop.

        Raises:
            ClosumStopped: a stop was requested before or during the wait.
        """
        if self._event.wait(max(0.0, seconds)) or self._event.is_set():
            raise ClosumStopped(self._signum)

    def reset(self) -> None:
        """Forget a stop request (for a new run in the same process, as tests do)."""
        self._signum = None
        self._event.clear()


#: the stop event of the process
STOP = StopEvent()
request_stop = STOP.request_stop
stopping = STOP.stopping
signum = STOP.signum
sleep = STOP.sleep
reset = STOP.reset
