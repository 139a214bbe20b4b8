"""Writing one stream's valid records to Closum, each exactly once: a batch at a time, its groups on the pool.

A batch's records are grouped by ledger key and the groups run on the run's
shared thread pool (``max_parallel_requests`` places in flight), so writes for
one key stay in order while different keys go in parallel;
:meth:`StreamWriter.write_batch` returns only when every record is written,
skipped or rejected. A dry run counts what :func:`target_closum.plan.decide`
would do instead.

Before the writes, the indexes the batch needs are read and the references it
lacks created (:mod:`target_closum.resolve`); its sink has written the streams it
refers to first. Each record is then written in three steps: a create of its key
left pending earlier is settled, its names are resolved
(:meth:`~target_closum.resolve.Resolver.resolve`), and the record is written
under its key (:class:`~target_closum.record_writer.RecordWriter`; a create goes
through :mod:`target_closum.creator`); a lead then joins its lists.

A failure stops the batch's other groups before their next record and ends the
run with one line; creates whose outcome stays unknown are listed at the end of
the batch, their intents left pending for the next run.
"""

from __future__ import annotations

import dataclasses
import threading
import typing as t

from closum_api.errors import (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumEndpointError,
    ClosumError,
)
from closum_api.failure import failure_line
from closum_api.retry import TRANSIENT, ClosumGaveUp
from closum_api.stop import ClosumStopped
from target_closum.creator import ClosumWriteError, CreateUnresolvedError
from target_closum.lookups import ClosumLookupError, LookupMissError
from target_closum.plan import Item, Outcome, Skip, Update, decide
from target_closum.record_writer import RecordWriter
from target_closum.rejects import RejectsFileError
from target_closum.resolve import Resolver

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Callable
    from concurrent.futures import Executor, Future

    from closum_api.registry import Resource
    from closum_api.stop import StopEvent
    from target_closum.load import LoadContext
    from target_closum.mapping import StreamMapping

__all__ = ["ClosumWriteError", "StreamWriter"]

# Failures that end the run as they are: their one line already says what to fix.
_AS_THEY_ARE = (
    ClosumAuthError,
    ClosumBadResponse,
    ClosumEndpointError,
    ClosumGaveUp,
    ClosumStopped,
    ClosumLookupError,
    ClosumWriteError,
    RejectsFileError,
)


def _ends_as_it_is(exc: BaseException) -> bool:
    """Whether a failure ends the run as it is; if not (a Closum or network failure), as a :class:`ClosumWriteError`."""
    return isinstance(exc, _AS_THEY_ARE) or not isinstance(exc, (ClosumError, *TRANSIENT))


class StreamWriter:
    """Writes one stream's records to its Closum resource, through the run's shared parts.

    Args:
        load: what all streams of the run share (client, ledger, rejects file, pool, tallies).
        mapping: the stream's resource and action.
        logger: where the stream's messages go.
    """

    def __init__(self, load: LoadContext, mapping: StreamMapping, logger: logging.Logger) -> None:
        """Take the stream's tally from the run's context; a record writer and a resolver of its own."""
        self.load = load
        self.stream_name = mapping.stream
        self.resource: Resource = mapping.resource
        self.action = mapping.action
        self.dry_run = load.dry_run
        self.tally = load.tally_for(mapping)
        self.records = RecordWriter(load, mapping, logger, self.tally, load.rejects)
        self.resolver = Resolver(load, mapping, self.tally, logger)

    def recover_pending(self) -> None:
        """Settle the creates a killed run left pending for this stream's helpers, then for this stream."""
        self.resolver.recover_pending()
        self.records.recover()

    def reject(
        self, record: t.Mapping[str, t.Any], payload: t.Mapping[str, t.Any] | None, status: int | None, message: str
    ) -> Outcome:
        """Count a record as rejected (and why) and, unless in a dry run, append it to the rejects file."""
        return self.records.reject(record, payload, status, message)

    # -- per batch -----------------------------------------------------------------
    def write_batch(self, items: list[Item]) -> None:
        """Write the batch (or, in a dry run, count what would be written); return once all is settled."""
        groups: dict[str, list[Item]] = {}
        for item in items:
            groups.setdefault(item.key, []).append(item)
        if self.dry_run:
            for group in groups.values():
                for item in group:
                    self._plan(item)
            return
        self.prepare(items)
        self._write_groups(list(groups.values()))

    def prepare(self, items: t.Sequence[Item]) -> None:
        """Read the indexes this batch needs (in the calling thread), and create the references it lacks.

        Raises:
            ClosumLookupError: a lookup needs a list this account does not serve.
            ClosumWriteError: what Closum holds could not be read.
        """
        try:
            self.records.match_index()
            self.resolver.read_indexes(items)
        except (ClosumError, *TRANSIENT) as exc:
            if _ends_as_it_is(exc):
                raise
            msg = (
                f"stream {self.stream_name}: could not read what Closum holds (to match records or resolve "
                f"names) after retries: {failure_line(exc)}; rerun to finish"
            )
            raise ClosumWriteError(msg) from exc
        self.resolver.create_missing(items)

    def _write_groups(self, groups: list[list[Item]]) -> None:
        """Write the groups on the shared pool: in order within a group, groups in parallel; stop at a failure."""
        failures, unresolved = write_groups(
            self.load.executor, groups, self.write_one, stop=self.load.stop, kept=CreateUnresolvedError
        )
        if failures:
            first = failures[0]
            if _ends_as_it_is(first):
                raise first
            msg = f"stream {self.stream_name}: writing to Closum failed after retries ({failure_line(first)}); rerun"
            raise ClosumWriteError(msg) from first
        if unresolved:
            msg = (
                f"stream {self.stream_name}: {len(unresolved)} creates have an unknown outcome that could not be "
                f"checked on the server (first: {unresolved[0]}); rerun to reconcile them"
            )
            raise ClosumWriteError(msg)

    def _plan(self, item: Item) -> None:
        """Dry run: count what would be written; read the ledger, write nothing."""
        decision = decide(self.action, self.load.ledger.get(self.stream_name, item.key), item)
        if isinstance(decision, Skip):
            self.tally.add("skipped")
        elif isinstance(decision, Update):
            self.tally.add("would_update")
        else:
            self.tally.add("would_create")

    def write_one(self, item: Item) -> Outcome:
        """Write one record of the stream (in the calling thread) and say what became of it."""
        entry = self.records.settle_pending(item.key)
        try:
            payload, list_ids = self.resolver.resolve(item)
        except LookupMissError as exc:
            return self.records.reject(item.record, item.payload, None, str(exc))
        outcome = self.records.write(dataclasses.replace(item, payload=payload), entry)
        if outcome.closum_id is not None and list_ids:
            self.resolver.join_lists(outcome.closum_id, list_ids)
        return outcome


def write_groups(
    executor: Executor,
    groups: list[list[Item]],
    write_one: Callable[[Item], object],
    *,
    stop: StopEvent,
    kept: type[BaseException] | tuple[type[BaseException], ...] = (),
) -> tuple[list[BaseException], list[str]]:
    """Write ``groups`` on the run's pool: in order within a group, groups in parallel; a failure stops them all.

    After a stop or a failure no new write starts; the writes in flight finish (or stay pending).

    Args:
        executor: the run's write pool.
        groups: the items, grouped so that a group's are written one after another.
        write_one: writes one item.
        stop: the run's stop event: after it no new write starts, and the writes in flight get its grace.
        kept: failures of one item that do not stop the others (kept as their messages).

    Returns:
        The failures that stopped the writes (the first is the cause) and the messages of those kept.

    Raises:
        ClosumStopped: the run was asked to stop.
    """
    abort = threading.Event()
    failures: list[BaseException] = []
    messages: list[str] = []
    lock = threading.Lock()

    def run(group: list[Item]) -> None:
        for item in group:
            if abort.is_set() or stop.stopping():  # after a stop, no new write starts
                return
            try:
                write_one(item)
            except kept as exc:
                with lock:
                    messages.append(str(exc))
            except BaseException as exc:  # noqa: BLE001  # kept, and raised again in the calling thread
                with lock:
                    failures.append(exc)
                abort.set()
                return

    futures: list[Future[None]] = [executor.submit(run, group) for group in groups]
    stop.wait_all(futures)
    stop.check()  # stopped: the writes in flight are done or left pending; no STATE past them
    return failures, messages
