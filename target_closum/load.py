"""What every sink of one run shares: settings, client, ledger, rejects file, write pool, tallies.

The target builds one :class:`LoadContext` per run and hands it to each sink
it creates (as the SDK's ``SQLTarget`` hands its connector to its sinks). A
sink reads and writes only through it, never through the target, so a sink can
be built and tested with a context alone. Run-wide state that later features
share between streams (say, an index of what Closum already holds) belongs here.

The run's stop event is given to the context with the settings: the client,
the write pool and the writers wait on it. The client, ledger, rejects file and
thread pool are created when first needed; :meth:`LoadContext.open` creates them in the main thread before any
worker runs, and :meth:`LoadContext.close` releases those that were created.
"""

from __future__ import annotations

import functools
import logging
import threading
import typing as t
from functools import cached_property

from closum_api import ahead, pace, registry
from closum_api.errors import ClosumError, ClosumNotFoundError
from closum_api.retry import TRANSIENT
from closum_api.stop import WorkerPool
from target_closum.index import Indexes, read_list, read_newest
from target_closum.ledger import Ledger, LedgerLock
from target_closum.rejects import RejectsFile
from target_closum.summary import Tally

if t.TYPE_CHECKING:
    from closum_api.client import ClosumClient
    from closum_api.registry import Resource
    from closum_api.stop import StopEvent
    from target_closum.index import ServerIndex
    from target_closum.mapping import StreamMapping
    from target_closum.plan import Item
    from target_closum.settings import TargetSettings


LOGGER = logging.getLogger("target-closum")


class DoubledError(ClosumError):
    """Records the run created exist more than once in Closum: another writer created them at the same time."""


class RejectedShareError(ClosumError):
    """More of the run's records were rejected than ``max_rejected_share`` allows."""


class Batch(t.Protocol):
    """What a sink holds for writing (a :class:`~target_closum.sinks.ClosumSink`)."""

    def flush(self) -> None:
        """Write what it holds; return once it is written."""


class LoadContext:
    """The shared parts of one run of the target.

    Args:
        settings: the target's settings (those shared with the tap in ``settings.shared``).
        stop: the run's stop event (set by the target's signal handler).

    Attributes:
        settings: the target's settings.
        stop: the run's stop event: the client, the write pool and the writers wait on it.
    """

    def __init__(self, settings: TargetSettings, stop: StopEvent) -> None:
        """Hold the settings and the stop; the shared objects are created when first needed."""
        self.settings = settings
        self.stop = stop
        self._tallies: dict[str, Tally] = {}
        self._tally_lock = threading.Lock()
        self._recovered_streams: set[str] = set()
        self._opened = False
        self._unserved: set[str] = set()
        self._batches: dict[str, list[Batch]] = {}
        self._batches_lock = threading.Lock()

    @property
    def dry_run(self) -> bool:
        """True in a dry run: nothing is sent, and nothing written to the ledger or the rejects file."""
        return self.settings.dry_run

    # -- shared resources, created when first needed ------------------------------
    @cached_property
    def client(self) -> ClosumClient:
        """The Closum client every sink writes through (never in a dry run).

        Raises:
            RuntimeError: in a dry run.
        """
        if self.dry_run:
            msg = "a dry run never talks to Closum"
            raise RuntimeError(msg)
        return self.settings.shared.client(self.stop)

    @cached_property
    def ledger(self) -> Ledger:
        """The ledger of writes (read-only in a dry run), locked for this run unless in a dry run.

        Raises:
            LedgerInUseError: another run writes it.
        """
        if not self.dry_run:
            self.ledger_lock.acquire()
        return Ledger(self.settings.ledger_path, read_only=self.dry_run)

    @cached_property
    def ledger_lock(self) -> LedgerLock:
        """The one-writer lock of the ledger."""
        return LedgerLock(self.settings.ledger_path)

    @cached_property
    def rejects(self) -> RejectsFile:
        """The file of records set aside."""
        return RejectsFile(self.settings.rejects_path)

    @cached_property
    def executor(self) -> WorkerPool:
        """The thread pool of writes shared by all streams.

        It has more threads than places in flight (:func:`closum_api.ahead.threads_for`):
        a write waiting out its backoff holds a thread, not a place, and the
        client's pace keeps at most ``max_parallel_requests`` requests in flight.
        """
        threads = ahead.threads_for(self.settings.shared.max_parallel_requests)
        return WorkerPool(threads, "write", self.stop)

    @cached_property
    def indexes(self) -> Indexes:
        """The run's indexes of what Closum holds, each read once, on first need, through the run's client."""
        threads = ahead.threads_for(self.settings.shared.max_parallel_requests)
        return Indexes(functools.partial(read_list, self.client, threads=threads))

    def index(self, resource: Resource, fields: t.Sequence[str]) -> ServerIndex | None:
        """The index of ``resource`` by ``fields``; None when this account does not serve the resource (404)."""
        if resource.name in self._unserved:
            return None
        try:
            return self.indexes.get(resource, fields)
        except ClosumNotFoundError:
            self._unserved.add(resource.name)
            return None

    def written(self, stream: str, item: Item, resource: Resource, closum_id: int, action: str) -> None:
        """A write settled: the ledger holds its key as done, and the run's indexes know it.

        Args:
            stream: the ledger's stream name.
            item: the record written.
            resource: its resource.
            closum_id: its id in Closum.
            action: how it was written (``create`` or ``update``); what the run created is checked
                for doubles at the end (:meth:`check_doubled`).
        """
        self.ledger.mark_done(stream, item.key, resource.name, closum_id, item.payload_hash, action)
        self.indexes.note(resource.name, item.payload, closum_id, created=action == "create")

    def check_doubled(self) -> None:
        """Before the run reports success: no record it created by a match key exists twice now.

        Another run that cannot see this one's ledger (another machine, a retry that
        overlapped) may have created the same keys at the same time. What it created is
        newer than what this run matched against, so the newest records of each resource
        matched on are read back once. A read that fails is a warning, not a failure.

        Raises:
            DoubledError: some keys now exist more than once.
        """
        if self.dry_run or "client" not in self.__dict__:
            return
        try:
            doubled = self.indexes.doubled(
                functools.partial(read_newest, self.client, max_parallel=self.settings.shared.max_parallel_requests)
            )
        except (ClosumError, *TRANSIENT) as exc:
            LOGGER.warning("Could not read back the records written to check that no other run doubled them: %s", exc)
            return
        if not doubled:
            return
        parts = []
        for found in doubled:
            nouns = registry.get(found.rule.resource).stream_name.replace("_", " ")
            examples = "; ".join(
                f"{label}: ids {', '.join(map(str, ids))}" for label, ids in list(found.ids.items())[:3]
            )
            parts.append(f"{len(found.ids)} {nouns} by {' + '.join(found.rule.fields)} ({examples})")
        msg = (
            f"another run wrote the same records at the same time: {'; '.join(parts)} now exist more than once in "
            "Closum. Keep one writer per account (docs/scaling.md), then merge or delete the extra records in Closum"
        )
        raise DoubledError(msg)

    def hold_batches(self, resource_name: str, batch: Batch) -> None:
        """A sink of ``resource_name`` holds records in a batch (see :meth:`batches_of`)."""
        with self._batches_lock:
            self._batches.setdefault(resource_name, []).append(batch)

    def batches_of(self, resource_names: t.Iterable[str]) -> list[Batch]:
        """The batches of these resources' sinks: a sink writes them before its own records that refer to them."""
        with self._batches_lock:
            return [b for name in resource_names for b in self._batches.get(name, ())]

    def open(self) -> None:
        """Create the shared objects in the main thread, before any worker needs them. Idempotent.

        Also asks for the token in the background while records are read; a
        failure there is ignored (the first write asks again and reports it).
        """
        if self._opened:
            return
        self._opened = True
        _ = self.ledger, self.rejects
        if not self.dry_run:
            _ = self.indexes
            self.executor.submit(_quiet_token, self.client)

    def close(self) -> None:
        """Wait for the writes in flight, then release what was created."""
        created = self.__dict__
        if "executor" in created:
            self.stop.shutdown(self.executor)
        if "rejects" in created:
            self.rejects.close()
        if "ledger" in created:
            self.ledger.close()
        if "ledger_lock" in created:
            self.ledger_lock.release()
        if "client" in created:
            self.client.close()

    def report_budget(self, logger: logging.Logger, metrics_logger: logging.Logger) -> None:
        """At the end of a run that sent requests: what its request budget saw (:func:`closum_api.pace.report`).

        Args:
            logger: where the line goes.
            metrics_logger: the SDK's metrics logger.
        """
        if "client" in self.__dict__:
            pace.report(self.client.pace.stats(), logger, metrics_logger)

    # -- tallies ------------------------------------------------------------------
    def tally_for(self, mapping: StreamMapping) -> Tally:
        """The tally of a stream, created at its first sink (a new sink of the stream adds to it)."""
        with self._tally_lock:
            if mapping.stream not in self._tallies:
                self._tallies[mapping.stream] = Tally(
                    mapping.stream, mapping.resource.name, mapping.action, dry_run=self.dry_run
                )
            return self._tallies[mapping.stream]

    @property
    def tallies(self) -> dict[str, Tally]:
        """The tallies by stream name, in the order the streams started."""
        return dict(self._tallies)

    def rejected_share(self) -> tuple[int, int]:
        """How many records the run rejected, of how many it handled (written, skipped, matched or rejected)."""
        rejected = handled = 0
        for tally in self.tallies.values():
            rejected += tally.rejected
            handled += tally.handled
        return rejected, handled

    def over_rejected_share(self) -> bool:
        """Whether more records were rejected than ``max_rejected_share`` allows."""
        rejected, handled = self.rejected_share()
        return handled > 0 and rejected / handled > self.settings.max_rejected_share

    def check_rejected_share(self, *, state_held_back: bool = False) -> None:
        """At the end of a run: fail when more records were rejected than ``max_rejected_share`` allows.

        Args:
            state_held_back: a STATE was held back because of it (the line says so).

        Raises:
            RejectedShareError: the share is over the setting.
        """
        if not self.over_rejected_share():
            return
        rejected, handled = self.rejected_share()
        verb = "would be rejected" if self.dry_run else "were rejected"
        msg = (
            f"{rejected} of {handled} records ({rejected / handled:.0%}) {verb}, more than max_rejected_share "
            f"{self.settings.max_rejected_share:g} allows: usually a mapping error upstream (the reasons are logged "
            f"above{'' if self.dry_run else ' and the records are in ' + self.settings.rejects_path})"
        )
        if state_held_back:
            msg += "; the last STATE was held back, so a rerun after the fix sends them again"
        raise RejectedShareError(msg)

    # -- run state ----------------------------------------------------------------
    def first_recovery(self, stream: str) -> bool:
        """True the first time it is asked for ``stream``: pending writes are settled once per run."""
        if stream in self._recovered_streams:
            return False
        self._recovered_streams.add(stream)
        return True


def _quiet_token(client: ClosumClient) -> None:
    """Ask for the token once, ahead of the first write; a failure is left for that write to meet."""
    client.auth.prefetch()
