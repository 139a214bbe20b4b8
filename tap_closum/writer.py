"""The tap's Singer writer: RECORD messages leave in 64 KiB chunks, not one system call each."""

from __future__ import annotations

import sys
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import SingerMessageType

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk import singerlib as singer


class ChunkedWriter(MsgSpecWriter):
    """msgspec Singer writer that sends RECORD messages in 64 KiB chunks.

    The SDK's writer flushes stdout after every message, a system call per
    record. Here records wait in a buffer; any other message (SCHEMA, STATE,
    BATCH) flushes first, so a STATE never overtakes the records before it.

    A termination signal that lands while a chunk is being written must not
    write (the same buffer again) from its handler: :meth:`defer_if_writing`
    holds the handler back until the chunk is out.
    """

    CHUNK = 64 * 1024

    def __init__(self) -> None:
        """An empty buffer."""
        super().__init__()
        self._pending = bytearray()
        self._writing = False
        self._deferred: t.Callable[[], None] | None = None

    @override
    def write_message(self, message: singer.Message) -> None:
        self._pending += self.format_message(message)
        if message.type != SingerMessageType.RECORD or len(self._pending) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
        """Write out what waits in the buffer, then run a termination deferred meanwhile."""
        self._writing = True
        try:
            if self._pending:
                sys.stdout.buffer.write(self._pending)
                self._pending.clear()
            sys.stdout.flush()
        finally:
            self._writing = False
        deferred, self._deferred = self._deferred, None
        if deferred is not None:
            deferred()

    def defer_if_writing(self, action: t.Callable[[], None]) -> bool:
        """Run ``action`` once the chunk being written is out.

        Args:
            action: what a termination signal's handler would do now.

        Returns:
            False when no chunk is being written: the caller runs ``action`` itself.
        """
        if not self._writing:
            return False
        self._deferred = action
        return True
