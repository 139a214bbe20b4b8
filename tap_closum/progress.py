"""What a stream has done so far, told at the default log level while it reads and once at its end.

A run at the default level reads like a summary: the SDK's start lines, per
stream a progress line at most every :data:`INTERVAL` seconds while it reads
(``leads: 12,000 records, 121 requests, 2,300 records/s``) and one summary at
its end (``leads: 40,000 records in 17.2 s, 401 requests``), the SDK's
METRIC lines once per stream, then the request-budget line.

SDK lines that are wrong or repeated for our streams, and how each is quieted
(the SDK offers a public hook for none of them):

- ``Stream is assumed to be unsorted, progress is not resumable if
  interrupted`` (``singer_sdk.helpers._state``, logger ``singer_sdk``):
  dropped by :func:`quiet_unsorted_warning`. Ours are sorted (by id, newest
  first for incremental streams) and keep their new bookmark as a progress
  marker until the stream completes on purpose: a stopped run resumes from
  the last complete bookmark and loses nothing. ``is_sorted = True`` would be
  wrong (the bookmark would jump to the newest id at the first record).
- the consent child's ``Starting incremental sync of ... with bookmark value``
  once per batch of parent ids: ``OptInStream._write_starting_replication_value``
  (private) writes it only at the first batch of the run.
- its ``Beginning sync of ...`` per batch: demoted to DEBUG after the first
  through ``Stream.log`` (public); its METRICs span the run through the public
  ``get_record_counter``/``get_sync_timer``/``get_http_request_counter`` and
  :class:`StreamCounter`/:class:`StreamTimer`.
"""

from __future__ import annotations

import logging
import time
import typing as t

from singer_sdk import metrics

if t.TYPE_CHECKING:
    from types import TracebackType

    from singer_sdk.helpers.types import Context
    from typing_extensions import Self

#: Seconds between two progress lines of a stream (at most one per interval, only while it reads).
INTERVAL = 10.0
#: The SDK's warning for an incremental stream that is not ``is_sorted`` (see the module's docstring).
UNSORTED_WARNING = "Stream is assumed to be unsorted, progress is not resumable if interrupted"


class Progress:
    """The records and requests of one stream so far, told every :data:`INTERVAL` and summed up at its end.

    Args:
        stream: the stream's name, which starts each line.
        logger: where the lines go (INFO); ``None`` tells nothing (a stream read only for its child).
    """

    def __init__(self, stream: str, logger: logging.Logger | None) -> None:
        """Start counting now."""
        self.stream = stream
        self.logger = logger
        self.records = 0
        self.requests = 0
        self.started = time.monotonic()
        self._told = self.started

    def record(self) -> None:
        """One record read."""
        self.records += 1
        self._tell_if_due()

    def request(self) -> None:
        """One request answered (a page or a retrieve; its retries are in the budget line)."""
        self.requests += 1
        self._tell_if_due()

    def _tell_if_due(self) -> None:
        now = time.monotonic()
        if now - self._told < INTERVAL:
            return
        self._told = now
        if self.logger is not None:
            rate = self.records / max(now - self.started, 1e-9)
            self.logger.info(
                "%s: %s records, %s requests, %s records/s",
                self.stream,
                f"{self.records:,}",
                f"{self.requests:,}",
                f"{rate:,.0f}",
            )

    def summary(self) -> None:
        """The stream's one summary line."""
        if self.logger is not None:
            self.logger.info(
                "%s: %s records in %.1f s, %s requests",
                self.stream,
                f"{self.records:,}",
                time.monotonic() - self.started,
                f"{self.requests:,}",
            )


def _not_unsorted_warning(record: logging.LogRecord) -> bool:
    return record.msg != UNSORTED_WARNING


def quiet_unsorted_warning() -> None:
    """Drop the SDK's "assumed to be unsorted" warning: untrue of every stream of this tap (see the docstring)."""
    logging.getLogger("singer_sdk").addFilter(_not_unsorted_warning)  # the same filter twice is added once


class StreamCounter(metrics.Counter):
    """An SDK counter for every batch of a stream: it logs when the stream ends (:meth:`close`), not per batch.

    Like the SDK's, it also logs what it counted every ``log_interval`` (60 s).
    """

    def __enter__(self) -> Self:
        """A batch begins: keep counting."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        """A batch ends: keep counting."""

    def with_context(self, value: Context | None) -> None:
        """One meter for the stream: the batch's context is not kept.

        Args:
            value: the batch's context.
        """

    def close(self) -> None:
        """The stream ends: log the count."""
        self.exit()


class StreamTimer(metrics.Timer):
    """An SDK timer from a stream's first batch to its end (:meth:`close`), logged once."""

    def __enter__(self) -> Self:
        """A batch begins: keep timing."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None
    ) -> None:
        """A batch ends: a failure is kept for :meth:`close`."""
        if exc_type is not None:
            self.tags[metrics.Tag.STATUS] = metrics.Status.FAILED

    def with_context(self, value: Context | None) -> None:
        """One meter for the stream: the batch's context is not kept.

        Args:
            value: the batch's context.
        """

    def close(self) -> None:
        """The stream ends: log the time since the first batch."""
        super().__exit__(None, None, None)
