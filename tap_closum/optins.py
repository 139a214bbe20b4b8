"""The consent streams: a contact's opt-in, read from its retrieve, as a child of the contact's stream.

The API serves a lead's opt-in only inside ``GET /lead/ID`` (``lead_opt_in``);
no list carries it. So ``lead_opt_ins`` is a child stream of ``leads`` (and
``unqualified_lead_opt_ins`` of ``unqualified_leads``): one retrieve for each
lead the parent emits in this run, so an incremental run costs one request
per *new* lead, never a re-read of the history.

- The parent (:class:`OptInParent`) hands its ids over in batches of
  :data:`BATCH` (one SDK child sync per batch, one SCHEMA message per run);
  the child (:class:`OptInStream`) reads a batch ahead
  (:func:`closum_api.ahead.ordered`) through the run's one client, as the list
  pages (at most ``max_parallel_requests`` requests in flight for the whole
  run), and emits the opt-ins in the parent's order.
- A 404 (the contact was deleted between list and retrieve) is a warning.
- A retrieve without an opt-in emits nothing. When the first :data:`PROBE`
  retrieves of a run carry none at all, the account does not serve opt-ins
  there: the stream stops retrieving for the rest of the run, with one warning.
"""

from __future__ import annotations

import json
import sys
import typing as t

from closum_api import ahead
from closum_api.errors import ClosumBadResponse, ClosumNotFoundError
from closum_api.schemas import record_schema
from tap_closum.client import ClosumStream
from tap_closum.sweep import SweptStream

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context, Record

    from closum_api.registry import OptIn
    from tap_closum.runtime import Runtime

#: Parent ids handed to the child per batch (one SDK child sync each).
BATCH = 250
#: Retrieves without any opt-in after which a run stops asking.
PROBE = 50
#: The child context key holding the batch of parent ids.
PARENT_IDS = "parent_ids"


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

    @classmethod
    @override
    def declaration(cls) -> tuple[str, dict[str, t.Any], str]:
        return cls.opt_in.stream_name, record_schema(cls.opt_in), cls.resource.item_path(f"{{{cls.opt_in.key}}}")

    @property
    def retrieving(self) -> bool:
        """Whether this run still asks for opt-ins (selected, and not given up)."""
        return self.selected and not self._given_up

    # -- requests --------------------------------------------------------------
    @override
    def get_url_params(self, context: Context | None, next_page_token: int | None) -> dict[str, t.Any]:
        return {}

    def _retrieve(self, parent_id: int) -> tuple[int, dict[str, t.Any] | None, bool]:
        """One retrieve: the parent id, its opt-in (or ``None``), and whether the contact exists."""
        path = self.resource.item_path(parent_id)
        try:
            envelope = self.runtime.client.get(path)
        except ClosumNotFoundError as exc:
            self.logger.warning(
                "%s: skipping %s %d, deleted since it was listed (%s)", self.name, self.resource.name, parent_id, exc
            )
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
        ids = tuple(context.get(PARENT_IDS) or ())
        self._batch = ids
        if not ids:
            return {"parents": 0}
        return {"parents": len(ids), f"first_{self.opt_in.key}": ids[0], f"last_{self.opt_in.key}": ids[-1]}

    @override
    def request_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        ids, self._batch = self._batch, ()
        threads = ahead.threads_for(self.runtime.settings.shared.max_parallel_requests)
        counter = self.get_http_request_counter()
        with counter:
            counter.with_context(context)
            start = 0
            while start < len(ids) and not self._given_up:
                # Until an opt-in shows up, ask no more than the probe has left.
                size = len(ids) - start if self._found else min(len(ids) - start, PROBE - self._without)
                chunk = ids[start : start + size]
                start += size
                results = ahead.ordered(self._retrieve, chunk, threads=min(threads, len(chunk)))
                try:
                    for parent_id, opt_in, exists in results:
                        counter.increment()
                        if opt_in is not None:
                            self._found = True
                            yield self._record(parent_id, opt_in)
                        elif exists and not self._found:
                            self._without += 1
                finally:
                    results.close()
                if not self._found and self._without >= PROBE:
                    self._given_up = True
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
        self._collecting = False

    def _opt_in_children(self) -> list[OptInStream]:
        return [c for c in self.child_streams if isinstance(c, OptInStream) and c.retrieving]

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        self._handover = []
        self._collecting = bool(self._opt_in_children())
        yield from super().get_records(context)
        if self._handover:
            batch, self._handover = self._handover, []
            self._sync_children({PARENT_IDS: tuple(batch)})

    @override
    def generate_child_contexts(self, record: Record, context: Context | None) -> t.Iterable[Context | None]:
        if not self._collecting:
            return ()
        # A child stops retrieving only while it syncs, at a hand-over: ask again only after one.
        if not self._handover and not self._opt_in_children():
            self._collecting = False
            return ()
        # The SDK drops the contexts of a record a stream map filters out: such a record neither
        # joins a batch nor hands one over.
        if not isinstance(record.get("id"), int) or not self.stream_maps[0].get_filter_result(record):
            return ()
        self._handover.append(record["id"])
        if len(self._handover) < BATCH:
            return ()
        batch, self._handover = self._handover, []
        return ({PARENT_IDS: tuple(batch)},)
