"""The tap: settings, streams, and one shared connection per run."""

from __future__ import annotations

import sys
import threading
import typing as t
from functools import cached_property

from singer_sdk import Tap
from singer_sdk import typing as th
from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import SingerMessageType

from closum_api import DISTRIBUTION, __version__
from closum_api.config import client_from_config, connection_properties
from closum_api.errors import ClosumError, ClosumFatalError
from closum_api.throttle import PauseGate
from tap_closum.client import DOCUMENTED_PAGE_SIZE
from tap_closum.streams import STREAM_TYPES

if t.TYPE_CHECKING:
    from tap_closum.client import ClosumStream


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
        super().__init__()
        self._pending = bytearray()
        self._writing = False
        self._deferred: t.Callable[[], None] | None = None

    def write_message(self, message: t.Any) -> None:  # noqa: ANN401
        self._pending += self.format_message(message)
        if message.type != SingerMessageType.RECORD or len(self._pending) >= self.CHUNK:
            self.flush()

    def flush(self) -> None:
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
        """Run ``action`` once the chunk being written is out; False if none is."""
        if not self._writing:
            return False
        self._deferred = action
        return True


class Runtime:
    """What every stream of one run shares: session, token, pause gate, page size."""

    def __init__(self, tap: TapClosum) -> None:
        self.user_agent = f"tap-closum/{__version__}"
        self.client = client_from_config(tap.config, user_agent=self.user_agent)
        self.session = self.client.session
        self.auth = self.client.auth
        self.gate = PauseGate()
        self.page_size = int(tap.config.get("page_size", 100))
        self._logger = tap.logger
        self._lock = threading.Lock()
        self._fell_back = False

    def fall_back_page_size(self, exc: ClosumFatalError) -> bool:
        """After a 400 on a first page: drop to the documented page size, once."""
        with self._lock:
            if self._fell_back or self.page_size == DOCUMENTED_PAGE_SIZE:
                return False
            self._logger.warning(
                "page_size %d was refused (%s); falling back to the documented %d",
                self.page_size,
                exc,
                DOCUMENTED_PAGE_SIZE,
            )
            self.page_size = DOCUMENTED_PAGE_SIZE
            self._fell_back = True
            return True


class TapClosum(Tap):
    """Singer tap for Closum."""

    name = "tap-closum"
    package_name = DISTRIBUTION
    message_writer_class = ChunkedWriter

    config_jsonschema = th.PropertiesList(
        *connection_properties(),
        th.Property(
            "page_size",
            th.IntegerType(minimum=1),
            default=100,
            title="Page size",
            description="Records asked for per list request. If the server refuses it "
            "with a 400, the tap falls back once to the documented 25 with a warning.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description="Skip records created before this instant (ISO 8601). Bookmarks still move on ids.",
        ),
    ).to_dict()

    def sync_all(self) -> None:
        try:
            super().sync_all()
        finally:
            t.cast("ChunkedWriter", self.message_writer).flush()

    def _handle_termination(self, signum: int, frame: t.Any) -> None:  # noqa: ANN401
        """SIGTERM/SIGINT: the SDK writes the state and exits, once the chunk being written is out."""
        writer = t.cast("ChunkedWriter", self.message_writer)
        if not writer.defer_if_writing(lambda: super(TapClosum, self)._handle_termination(signum, frame)):
            super()._handle_termination(signum, frame)

    def discover_streams(self) -> list[ClosumStream]:
        return [cls(self) for cls in STREAM_TYPES]

    @cached_property
    def runtime(self) -> Runtime:
        return Runtime(self)

    @classmethod
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:
        """Run the tap; a Closum failure ends it with one line, not a traceback."""
        try:
            super().invoke(*args, **kwargs)
        except ClosumError as exc:
            cls.logger.error("tap-closum failed: %s", exc)  # noqa: TRY400
            sys.exit(1)


if __name__ == "__main__":
    TapClosum.cli()
