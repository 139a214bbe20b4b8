"""The run's stop event: a termination signal asks every wait to end now.

The tap and the target install signal handlers that call
:meth:`StopEvent.request_stop`; every wait in :mod:`closum_api` (backoff
sleeps, the :class:`~closum_api.pace.Pace`'s waits) goes through
:meth:`StopEvent.sleep`, which returns within milliseconds of a stop and then
raises :class:`ClosumStopped`. The program turns that into exit status
128 + the signal's number, as a shell reports a process ended by a signal.
"""

from __future__ import annotations

import signal
import threading

from closum_api.errors import ClosumError


class ClosumStopped(ClosumError):  # noqa: N818  # public name shared by the tap, the target and closum_api
    """A termination signal asked the run to stop.

    Attributes:
        signum: the signal's number.
    """

    def __init__(self, signum: int) -> None:
        """Name the signal.

        Args:
            signum: the signal's number.
        """
        super().__init__(f"stopped by {signal_name(signum)}; rerun to continue from the last STATE")
        self.signum = signum


def signal_name(signum: int) -> str:
    """``SIGTERM`` for 15, and so on; the number when it has no name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class StopEvent:
    """A ``threading.Event``-like flag that a signal handler may set.

    :meth:`request_stop` never takes a lock in the calling thread: a signal
    handler runs in the main thread between two bytecodes, possibly while that
    thread holds the event's own lock, so the event is set from a helper thread.
    """

    def __init__(self) -> None:
        """Not stopping."""
        self._event = threading.Event()
        self._signum: int | None = None

    def request_stop(self, signum: int) -> None:
        """Ask every wait to end; safe to call from a signal handler.

        Args:
            signum: the signal that asked (the first one is kept).
        """
        if self._signum is None:
            self._signum = signum
        threading.Thread(target=self._event.set, name="closum-stop", daemon=True).start()

    def stopping(self) -> bool:
        """True once a stop was requested."""
        return self._signum is not None

    def signum(self) -> int | None:
        """The signal that asked to stop, if any."""
        return self._signum

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
            raise ClosumStopped(signum)

    def check(self) -> None:
        """Raise :class:`ClosumStopped` if a stop was requested, else return at once."""
        self.sleep(0)

    def clear(self) -> None:
        """Forget a stop (for a new run in the same process, as tests do)."""
        self._signum = None
        self._event.clear()


#: The one stop event of the process.
STOP = StopEvent()
request_stop = STOP.request_stop
stopping = STOP.stopping
signum = STOP.signum
sleep = STOP.sleep

__all__ = ["STOP", "ClosumStopped", "StopEvent", "request_stop", "signal_name", "signum", "sleep", "stopping"]
