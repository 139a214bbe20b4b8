"""The tap: settings, streams, and one shared runtime per run."""

from __future__ import annotations

import sys
import typing as t
from functools import cached_property

from singer_sdk import Tap
from singer_sdk import typing as th

from closum_api import DISTRIBUTION
from closum_api.config import connection_properties
from closum_api.errors import ClosumError
from tap_closum.runtime import DEFAULT_PAGE_SIZE, DOCUMENTED_PAGE_SIZE, Runtime
from tap_closum.streams import STREAM_TYPES
from tap_closum.writer import ChunkedWriter

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from types import FrameType

    from tap_closum.client import ClosumStream


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
            default=DEFAULT_PAGE_SIZE,
            title="Page size",
            description="Records asked for per list request. If the server refuses it "
            f"with a 400, the tap falls back once to the documented {DOCUMENTED_PAGE_SIZE} with a warning.",
        ),
        th.Property(
            "start_date",
            th.DateTimeType,
            title="Start date",
            description="Skip records created before this instant (ISO 8601). Bookmarks still move on ids.",
        ),
    ).to_dict()

    @property
    def writer(self) -> ChunkedWriter:
        """The tap's Singer writer (:attr:`message_writer_class`)."""
        return t.cast("ChunkedWriter", self.message_writer)

    @cached_property
    def runtime(self) -> Runtime:
        """What every stream of the run shares; streams get it when they are created."""
        return Runtime(self.config, self.logger)

    @override
    def discover_streams(self) -> list[ClosumStream]:
        return [cls(self, self.runtime) for cls in STREAM_TYPES]

    # The records a failure leaves in the writer's buffer must still reach
    # stdout, and the SDK offers no hook around the run but this method.
    @override  # type: ignore[misc]  # sync_all is final in the SDK: no other place to flush after a failure
    def sync_all(self) -> None:
        try:
            super().sync_all()
        finally:
            self.writer.flush()
            self.runtime.report_budget(self.metrics_logger)

    @override
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: the SDK writes the state and exits, once the chunk being written is out."""
        if not self.writer.defer_if_writing(lambda: super(TapClosum, self)._handle_termination(signum, frame)):
            super()._handle_termination(signum, frame)

    @classmethod
    @override
    def invoke(cls, *args: t.Any, **kwargs: t.Any) -> None:
        """Run the tap; a Closum failure ends it with one line, not a traceback."""
        try:
            super().invoke(*args, **kwargs)
        except ClosumError as exc:
            cls.logger.error("tap-closum failed: %s", exc)  # noqa: TRY400  # one line without a traceback is the point
            sys.exit(1)


if __name__ == "__main__":
    TapClosum.cli()
