"""The tap: settings, streams, and one shared runtime per run."""

from __future__ import annotations

import contextlib
import sys
import typing as t
from functools import cached_property

from singer_sdk import Tap
from singer_sdk import typing as th

from closum_api import DISTRIBUTION
from closum_api.config import connection_properties
from closum_api.failure import OneLineCommand, read_json_argument
from closum_api.stop import ClosumStopped, signal_name
from tap_closum.runtime import Runtime, parse_timestamp, tap_properties
from tap_closum.streams import STREAM_TYPES
from tap_closum.writer import ChunkedWriter

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from types import FrameType

    from tap_closum.client import ClosumStream


def setting_errors(config: t.Mapping[str, t.Any]) -> list[str]:
    """What the settings' JSON Schema cannot check: each problem named by its setting.

    Args:
        config: the tap's config.

    Returns:
        One message per setting that cannot be used.
    """
    errors = []
    start_date = config.get("start_date")
    if start_date is not None:
        try:
            parse_timestamp(str(start_date))
        except ValueError:
            errors.append(
                f"start_date: {start_date!r} is not an ISO 8601 date-time (such as 2024-01-31 or 2024-01-31T00:00:00Z)"
            )
    return errors


class TapClosum(OneLineCommand, Tap):
    """Singer tap for Closum."""

    name = "tap-closum"
    path_options = frozenset({"catalog", "state"})  # read by invoke, which names a file it cannot read
    package_name = DISTRIBUTION
    message_writer_class = ChunkedWriter

    config_jsonschema = th.PropertiesList(*connection_properties(), *tap_properties()).to_dict()

    @property
    def writer(self) -> ChunkedWriter:
        """The tap's Singer writer (:attr:`message_writer_class`)."""
        return t.cast("ChunkedWriter", self.message_writer)

    @override
    def setting_errors(self, config: t.Mapping[str, t.Any]) -> list[str]:
        """The shared settings' problems, then :func:`setting_errors` (the tap's own)."""
        return super().setting_errors(config) + setting_errors(config)

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
        self._warn_if_nothing_selected()
        try:
            try:
                super().sync_all()
            finally:
                self.writer.flush()
                self.runtime.report_budget(self.metrics_logger)
        except ClosumStopped:
            # The records emitted so far are out; the state goes after them
            # (a bookmark moves only when its stream completed).
            self.state_writer.write_state(self.state)
            raise
        self.runtime.check_served()

    def _warn_if_nothing_selected(self) -> None:
        """One warning when the catalog selects no stream (a typo in ``select``, say): the run reads nothing."""
        if any(stream.selected or stream.has_selected_descendents for stream in self.streams.values()):
            return
        self.logger.warning(
            "The catalog selects no stream, so nothing is read. tap-closum offers: %s "
            "(check the names in meltano.yml's select, or the catalog's metadata)",
            ", ".join(sorted(self.streams)),
        )

    @override
    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT: stop now, once the chunk being written is out; every wait ends at once.

        The run's stop event (:attr:`Runtime.stop`) is set; :meth:`sync_all` then writes the state,
        and :meth:`invoke` exits with 128 + ``signum``.
        """
        _ = frame  # where the signal interrupted: not needed
        run_stop = self.runtime.stop
        if run_stop.stopping():
            return  # a second signal: the stop is already under way
        run_stop.request_stop(signum)
        self.logger.warning(
            "Received %s: stopping; the records read so far and the state go out first", signal_name(signum)
        )

        def stop() -> None:
            raise ClosumStopped(signum, run_stop)

        if not self.writer.defer_if_writing(stop):
            stop()

    # -- the command line: every failure ends the run with one line ------------------

    @classmethod
    @contextlib.contextmanager
    def command_arguments(cls, arguments: dict[str, t.Any]) -> t.Iterator[dict[str, t.Any]]:
        """``--state`` and ``--catalog`` arrive as paths (:attr:`path_options`): read them, one line if unreadable.

        Args:
            arguments: click's arguments, by parameter name.

        Yields:
            The arguments, the state and the catalog read.
        """
        yield arguments | {
            "state": read_json_argument("state", arguments.get("state")),
            "catalog": read_json_argument("catalog", arguments.get("catalog"), list_key="streams"),
        }


if __name__ == "__main__":
    TapClosum.cli()
