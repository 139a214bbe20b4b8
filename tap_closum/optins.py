"""The consent streams: a contact's opt-in, read from its retrieve, as a child of the contact's stream.

The API serves a lead's opt-in only inside ``GET /lead/ID`` (``lead_opt_in``);
no list carries it. So ``lead_opt_ins`` is a child stream of ``leads`` (and
``unqualified_lead_opt_ins`` of ``unqualified_leads``): one retrieve for each
lead the parent emits in this run, so an incremental run costs one request
per *new* lead, never a re-read of the history.

- The parent (:class:`OptInParent`) feeds each id it emits to the child
  (:class:`OptInStream`), whose one read-ahead for the run
  (:class:`closum_api.ahead.ReadAhead`) starts its retrieve at once, through
  the run's one client, as the list pages (at most ``max_parallel_requests``
  requests in flight for the whole run). The parent hands the ids over in
  batches of :data:`BATCH` (one SDK child sync per batch, one SCHEMA message
  per run) one batch late, so while the child emits a batch's opt-ins in the
  parent's order the retrieves of the next are under way: the read-ahead never
  drains at a hand-over, and a retrieve waiting out a backoff stalls nothing.
- The child is one stream in the log, though synced per batch: the SDK's
  start lines of a batch after the first go to DEBUG, its METRICs and the
  progress lines span every batch, and :meth:`OptInStream.finish` (the parent
  calls it at its end) logs them once with the summary.
- A 404 (the contact was deleted) emits the opt-in's tombstone (its key and
  ``_sdc_deleted_at``): the parent's sweep hands over the contacts it found deleted.
- A retrieve without an opt-in emits nothing. Until the account is known to
  serve opt-ins (the stream's state says it served one, or this run found
  one), at most :data:`PROBE` retrieves are under way; when the first
  :data:`PROBE` of a run carry none at all, the account does not serve opt-ins
  there: the stream stops retrieving new contacts for the rest of the run,
  with one warning; the consent sweep still reads them later, so no opt-in is
  lost for good.
- **The consent sweep.** No list carries opt-ins, so a consent withdrawn or
  given in Closum's UI shows only in a retrieve. After the parent's read, the
  parent hands over whole blocks of its ledger, as many as
  :meth:`tap_closum.consent.Consent.plan` allows this run; the child
  retrieves them and emits what :meth:`~tap_closum.consent.Consent.settle`
  says changed: an opt-in changed or new, a tombstone for one gone.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import json
import logging
import sys
import typing as t

from singer_sdk import metrics

from closum_api import ahead
from closum_api.ahead import ReadAhead
from closum_api.errors import ClosumBadResponse, ClosumNotFoundError
from closum_api.schemas import record_schema
from tap_closum.client import ClosumStream
from tap_closum.consent import CONSENT_KEY, Consent
from tap_closum.ledger import record_hash
from tap_closum.progress import StreamCounter, StreamTimer
from tap_closum.sweep import SweptStream

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context, Record

    from closum_api.registry import OptIn
    from tap_closum.ledger import Ledger
    from tap_closum.runtime import Runtime

#: One retrieve: the parent id, its opt-in (``None``: none), whether the contact exists.
Retrieved = tuple[int, "dict[str, t.Any] | None", bool]

#: Parent ids handed to the child per batch (one SDK child sync each).
BATCH = 250
#: Retrieves without any opt-in after which a run stops asking (and at most under way until one shows up).
PROBE = 50
#: The child context key holding the batch of parent ids.
PARENT_IDS = "parent_ids"
#: The child context key holding the consent sweep's blocks: ``(lo, ids)`` per parent ledger block.
CONSENT_BLOCKS = "consent_blocks"
#: The child context key: whether the consent sweep's blocks reach the parent's oldest block.
CONSENT_WRAPS = "consent_wraps"


def _as_object(value: object) -> dict[str, t.Any] | None:
    """An opt-in (or its ``enviroment``) as an object: JSON text is parsed; empty means none."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) and value else None


class OptInStream(ClosumStream):
    """The opt-ins of the contacts a parent stream emits, one retrieve per contact.

    Args:
        tap: the tap the stream belongs to.
        runtime: what every stream of the run shares.
    """

    #: the opt-in this stream reads (its parent resource is :attr:`resource`)
    opt_in: t.ClassVar[OptIn]

    def __init_subclass__(cls, **kwargs: t.Any) -> None:
        """Derive the resource read and the key from :attr:`opt_in`."""
        super().__init_subclass__(**kwargs)
        cls.resource = cls.opt_in.parent
        cls.primary_keys = (cls.opt_in.key,)

    def __init__(self, tap: Tap, runtime: Runtime) -> None:
        """A child stream of the stream of ``opt_in.parent``."""
        super().__init__(tap, runtime)
        # Incremental on the parent's id: the opt-ins of new contacts only, as the parent emits them.
        self.replication_key = self.opt_in.key
        # One bookmark for the stream, not one per batch of parent ids.
        self.state_partitioning_keys = ()
        self._batch: tuple[int, ...] = ()
        self._schema_written = False
        self._found = False
        self._without = 0
        self._given_up = False
        #: the run's one read-ahead of retrieves (started at the first id fed)
        self._reader: ReadAhead[int, Retrieved] | None = None
        #: ids fed whose results are not taken yet
        self._owed = 0
        #: results taken (to judge the probe) and not emitted yet, in the order fed
        self._ready: collections.deque[Retrieved] = collections.deque()
        #: whether retrieves are held to :data:`PROBE` under way (no opt-in seen yet); decided at the first id fed
        self._probing: bool | None = None
        self._meters: dict[str, StreamCounter | StreamTimer] = {}
        self._consent_blocks: tuple[tuple[int, tuple[int, ...]], ...] = ()
        self._consent_wraps = False
        self._parent_los: frozenset[int] = frozenset()
        #: opt-ins of new contacts emitted this run, by contact id: the parent's consent plan files them
        self.pending: dict[int, int] = {}
        self.deleted_at = dt.datetime.now(dt.timezone.utc).isoformat()

    @classmethod
    @override
    def declaration(cls) -> tuple[str, dict[str, t.Any], str]:
        return cls.opt_in.stream_name, record_schema(cls.opt_in), cls.resource.item_path(f"{{{cls.opt_in.key}}}")

    @property
    def retrieving(self) -> bool:
        """Whether this run still asks for opt-ins (selected, and not given up)."""
        return self.selected and not self._given_up

    # -- one stream in the log, though synced per batch ------------------------------
    @property
    def begun(self) -> bool:
        """Whether a batch of this run was synced already (and :meth:`finish` is still to come)."""
        return self._progress is not None

    @override
    def log(self, message: str, *args: t.Any, level: int = logging.INFO, **kwargs: t.Any) -> None:
        """The SDK's lines of a batch (``Beginning sync of ...``): at DEBUG after the first batch."""
        if self.begun and level == logging.INFO:
            level = logging.DEBUG
        super().log(message, *args, level=level, **kwargs)

    @override
    def _write_starting_replication_value(self, context: Context | None) -> None:
        """The starting bookmark, and its INFO line: once per run, not once per batch.

        Private in the SDK, but the only place: the value it writes stays the
        same for every batch (the bookmark moves only when the stream completes).
        """
        if not self.begun:
            super()._write_starting_replication_value(context)

    @override
    def get_record_counter(
        self, *, endpoint: str | None = None, log_interval: float = metrics.DEFAULT_LOG_INTERVAL
    ) -> StreamCounter:
        """One record counter for every batch of the run, logged by :meth:`finish`."""
        meter = self._meters.get("records")
        if not isinstance(meter, StreamCounter):
            tags = {metrics.Tag.STREAM: self.name} | ({metrics.Tag.ENDPOINT: endpoint} if endpoint else {})
            meter = self._meters["records"] = StreamCounter(metrics.Metric.RECORD_COUNT, tags, log_interval)
        return meter

    @override
    def get_http_request_counter(self) -> StreamCounter:
        """One request counter for every batch of the run, logged by :meth:`finish`."""
        meter = self._meters.get("requests")
        if not isinstance(meter, StreamCounter):
            tags = {metrics.Tag.STREAM: self.name, metrics.Tag.ENDPOINT: self.path}
            meter = self._meters["requests"] = StreamCounter(metrics.Metric.HTTP_REQUEST_COUNT, tags)
        return meter

    @override
    def get_sync_timer(self) -> StreamTimer:
        """One timer from the first batch of the run to :meth:`finish`."""
        meter = self._meters.get("timer")
        if not isinstance(meter, StreamTimer):
            meter = self._meters["timer"] = StreamTimer(metrics.Metric.SYNC_DURATION, {metrics.Tag.STREAM: self.name})
        return meter

    @override
    def records_read(self, context: Context | None) -> None:
        """A batch is read: the summary waits for :meth:`finish`."""

    def finish(self) -> None:
        """The parent is read, so is this stream: its METRICs and its summary line, once."""
        self.close_reader()
        meters, self._meters = self._meters, {}
        for meter in meters.values():
            meter.close()
        if self.selected:
            self.end_progress()
        self._progress = None

    @property
    def consent(self) -> Consent:
        """The consent sweep's state (read afresh from the stream state)."""
        return Consent(self.stream_state.get(CONSENT_KEY))

    def file_pending(self, ledger: Ledger, new: frozenset[int]) -> None:
        """File the opt-ins of new contacts emitted this run under their parent block (its digests).

        Args:
            ledger: the parent's ledger, this run's new records in it.
            new: the ids of this run's new records (an older contact's opt-in is in its digests already).
        """
        consent = self.consent
        consent.file(self.pending, ledger, new)
        self.pending = {}
        self.stream_state[CONSENT_KEY] = consent.encode()

    def consent_plan(self, ledger: Ledger) -> dict[str, t.Any] | None:
        """The parent's blocks this run's consent sweep retrieves, as a child context; ``None``: none this run.

        Args:
            ledger: the parent's ledger, this run's new records in it.

        Returns:
            The child context, or ``None``.
        """
        consent = self.consent
        settings = self.runtime.settings
        blocks, wraps = consent.plan(ledger, settings.consent_sweep_retrieves_per_run, settings.sweep_cycle_runs)
        self.stream_state[CONSENT_KEY] = consent.encode()
        if not blocks:
            return None
        los = tuple(b.lo for b in ledger.blocks)
        return {CONSENT_BLOCKS: blocks, CONSENT_WRAPS: wraps, "parent_los": los}

    # -- requests --------------------------------------------------------------
    @override
    def get_url_params(self, context: Context | None, next_page_token: int | None) -> dict[str, t.Any]:
        return {}

    def feed(self, parent_id: int) -> None:
        """A contact the parent emits: its retrieve starts now; its opt-in is emitted when its batch is handed over.

        While no opt-in was seen, at most :data:`PROBE` retrieves are under way:
        the parent waits for their results before feeding more, and the run
        gives up when :data:`PROBE` of them carried none.
        """
        if self._given_up:
            return
        if self._probing is None:
            self._probing = not self.consent.seen
        while self._probing and self._owed and self._without + self._owed >= PROBE:
            self._ready.append(self._pull())
        if self._probing and self._without >= PROBE:
            self._give_up()
            return
        if self._reader is None:
            threads = ahead.threads_for(self.runtime.settings.shared.max_parallel_requests)
            self._reader = ReadAhead(self._retrieve, threads=threads, stop=self.runtime.stop)
        self._reader.feed((parent_id,))
        self._owed += 1

    def _pull(self) -> Retrieved:
        """The next result of the read-ahead, counted for the probe."""
        if self._reader is None:
            msg = "no retrieve is owed"  # only called with results owed
            raise RuntimeError(msg)
        result = self._reader.take()
        self._owed -= 1
        if result[1] is not None:
            self._found, self._probing = True, False
        elif result[2] and self._probing:
            self._without += 1
        return result

    def _give_up(self) -> None:
        self._given_up = True
        self.close_reader()
        self.logger.warning(
            "%s: the first %d retrieves of %s carried no %s: this account does not serve opt-ins "
            "there; not asking again in this run (deselect %s to skip the %d requests)",
            self.name,
            PROBE,
            self.resource.item_path("ID"),
            self.opt_in.name,
            self.name,
            PROBE,
        )

    def close_reader(self) -> None:
        """End the run's read-ahead: retrieves not started are dropped (the parent's read ended or failed)."""
        reader, self._reader = self._reader, None
        self._owed = 0
        if reader is not None:
            reader.close()

    def _retrieve(self, parent_id: int) -> Retrieved:
        """One retrieve: the parent id, its opt-in (or ``None``), and whether the contact exists."""
        path = self.resource.item_path(parent_id)
        try:
            envelope = self.runtime.client.get(path)
        except ClosumNotFoundError:
            return parent_id, None, False
        data = envelope["data"]
        if not isinstance(data, dict):
            msg = f"GET {path} answered data that is not an object: {str(data)[:200]}"
            raise ClosumBadResponse(msg)
        return parent_id, _as_object(data.get(self.opt_in.name)), True

    # -- records ---------------------------------------------------------------
    @override
    def preprocess_context(self, context: Context) -> Context:
        """Keep the batch of parent ids for :meth:`request_records`; the context keeps only its bounds."""
        self._consent_blocks = tuple(context.get(CONSENT_BLOCKS) or ())
        self._consent_wraps = bool(context.get(CONSENT_WRAPS))
        self._parent_los = frozenset(context.get("parent_los") or ())
        if self._consent_blocks:
            return {"consent_blocks": len(self._consent_blocks)}
        ids = tuple(context.get(PARENT_IDS) or ())
        self._batch = ids
        if not ids:
            return {"parents": 0}
        return {"parents": len(ids), f"first_{self.opt_in.key}": ids[0], f"last_{self.opt_in.key}": ids[-1]}

    @override
    def request_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        if self._consent_blocks:
            blocks, self._consent_blocks = self._consent_blocks, ()
            yield from self._consent_sweep(blocks, context)
            return
        ids, self._batch = self._batch, ()
        counter = self.get_http_request_counter()
        with counter:
            counter.with_context(context)
            # The ids fed are a prefix of the parent's (none after a give-up): this batch's come first.
            for _ in range(min(len(ids), len(self._ready) + self._owed)):
                parent_id, opt_in, exists = self._ready.popleft() if self._ready else self._pull()
                counter.increment()
                self.progress.request()
                if opt_in is not None:
                    record = self._record(parent_id, opt_in)
                    self.pending[parent_id] = record_hash(record)
                    yield record
                elif not exists:
                    yield self._deleted(parent_id)
            if self._probing and self._without >= PROBE and not self._given_up:
                self._give_up()

    def _deleted(self, parent_id: int) -> dict[str, t.Any]:
        """The tombstone of the opt-in of a contact found deleted, or found without one by the consent sweep."""
        return {self.opt_in.key: parent_id, "_sdc_deleted_at": self.deleted_at}

    def _consent_sweep(
        self, blocks: tuple[tuple[int, tuple[int, ...]], ...], context: Context | None
    ) -> t.Iterator[dict[str, t.Any]]:
        """Retrieve whole parent blocks; emit the opt-ins that changed, new ones, and tombstones for those gone."""
        threads = ahead.threads_for(self.runtime.settings.shared.max_parallel_requests)
        total = sum(len(ids) for _lo, ids in blocks)
        counter = self.get_http_request_counter()
        with counter:
            counter.with_context(context)
            # One read-ahead over every block, so it never drains between two.
            results = ahead.ordered(
                self._retrieve,
                (i for _lo, ids in blocks for i in ids),
                threads=min(threads, max(total, 1)),
                stop=self.runtime.stop,
            )
            try:
                for lo, ids in blocks:
                    found: dict[int, dict[str, t.Any]] = {}
                    for parent_id, opt_in, _exists in itertools.islice(results, len(ids)):
                        counter.increment()
                        if opt_in is not None:
                            found[parent_id] = self._record(parent_id, opt_in)
                    consent = self.consent
                    for parent_id in consent.settle(lo, ids, {i: record_hash(r) for i, r in found.items()}):
                        yield found.get(parent_id) or self._deleted(parent_id)
                    self.stream_state[CONSENT_KEY] = consent.encode()
            finally:
                results.close()
            if self._consent_wraps:
                consent = self.consent
                consent.wrap(self._parent_los)
                self.stream_state[CONSENT_KEY] = consent.encode()

    def _record(self, parent_id: int, opt_in: dict[str, t.Any]) -> dict[str, t.Any]:
        record = dict(opt_in)
        record[self.opt_in.key] = parent_id
        if "enviroment" in record and record["enviroment"] is not None:
            env = record["enviroment"]
            record["enviroment"] = _as_object(env) or ({"raw": env} if isinstance(env, str) and env else None)
        return record

    @override
    def _write_schema_message(self) -> None:
        """One SCHEMA message per run, though the SDK syncs the stream once per batch.

        A repeated SCHEMA makes some targets flush every stream's batch.
        """
        if not self._schema_written:
            self._schema_written = True
            super()._write_schema_message()


class OptInParent(SweptStream):
    """A stream whose records' opt-ins a child :class:`OptInStream` reads.

    The SDK syncs a child once per context a parent record yields; this
    parent yields one context per :data:`BATCH` records (and one for the rest
    at the end), so the child can retrieve a batch concurrently.
    """

    def __init__(self, tap: Tap, runtime: Runtime) -> None:
        """A stream of ``resource`` whose ids go to its opt-in child, if selected."""
        super().__init__(tap, runtime)
        self._handover: list[int] = []
        self._late: tuple[int, ...] = ()
        self._collecting = False

    def _opt_in_children(self) -> list[OptInStream]:
        return [c for c in self.child_streams if isinstance(c, OptInStream) and c.retrieving]

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        self._handover, self._late = [], ()
        self._collecting = bool(self._opt_in_children())
        try:
            yield from super().get_records(context)
            for batch in (self._late, tuple(self._handover)):
                if batch:
                    self._sync_children({PARENT_IDS: batch})
            self._handover, self._late = [], ()
        finally:
            for child in self.child_streams:
                if isinstance(child, OptInStream):
                    child.close_reader()
        self._sweep_consents()
        for child in self.child_streams:
            if isinstance(child, OptInStream):
                child.finish()

    def _sweep_consents(self) -> None:
        """The consent sweep, once the history has been read whole once (a first run retrieved every opt-in)."""
        if self.ledger is None:
            return
        for child in self.child_streams:
            if isinstance(child, OptInStream) and child.selected:
                child.file_pending(self.ledger, self.appended)
                plan = None if self.read_whole else child.consent_plan(self.ledger)
                if plan is not None:
                    child.sync(context=plan)

    @override
    def generate_child_contexts(self, record: Record, context: Context | None) -> t.Iterable[Context | None]:
        if not self._collecting:
            return ()
        children = self._opt_in_children()
        if not children:  # every child gave up: what was fed is handed over at the end
            self._collecting = False
            return ()
        # The SDK drops the contexts of a record a stream map filters out: such a record neither
        # joins a batch nor hands one over.
        if not isinstance(record.get("id"), int) or not self.stream_maps[0].get_filter_result(record):
            return ()
        self._handover.append(record["id"])
        for child in children:
            child.feed(record["id"])
        if len(self._handover) < BATCH:
            return ()
        # Handed over one batch late: the retrieves of this one go on while the child emits the one before.
        late, self._late, self._handover = self._late, tuple(self._handover), []
        return ({PARENT_IDS: late},) if late else ()
