"""The one base stream every Closum stream derives from.

It reads a Closum list page by page through the run's one client
(:meth:`closum_api.client.ClosumClient.get`, the request path the target writes
through too: token, retries, pace, the limit in flight, the whole-request
timeout), reads pages ahead once the first page has told how many there are
(:func:`closum_api.listing.ordered_pages`), and stops early where it can. The
SDK does the rest: records to messages, bookmarks, state.

- append-only resources are read newest first (``sort=id&direction=desc``)
  and the read stops at the bookmark, so an hourly run costs what changed;
- an endpoint that answers 404 on its first page belongs to the other API
  revision: the stream is skipped with one warning.
"""

from __future__ import annotations

import datetime as dt
import sys
import typing as t
from functools import cached_property

from singer_sdk import RESTStream
from singer_sdk import singerlib as singer
from singer_sdk.helpers.conform import TypeConformanceLevel

from closum_api import ahead
from closum_api.errors import ClosumBadResponse, ClosumFatalError, ClosumNotFoundError
from closum_api.listing import Page, ordered_pages
from closum_api.registry import Replication, Resource
from closum_api.schemas import record_schema
from tap_closum.progress import Progress, quiet_unsorted_warning
from tap_closum.runtime import parse_timestamp

if sys.version_info >= (3, 12):
    from typing import override
else:
    from typing_extensions import override

if t.TYPE_CHECKING:
    from singer_sdk import Tap
    from singer_sdk.helpers.types import Context, Record

    from tap_closum.runtime import Runtime

_T = t.TypeVar("_T")


class _Cursor:
    """Decides, record by record, what a stream emits and when it may stop.

    Ids come strictly ordered (ascending, or descending for newest-first
    reads); a record that breaks the order was already emitted from an
    earlier page that shifted while we read, and is dropped.
    """

    def __init__(
        self,
        *,
        descending: bool,
        bookmark: int | None,
        start_date: dt.datetime | None,
        created_field: str | None,
    ) -> None:
        self.descending = descending
        self.bookmark = bookmark
        self.start_date = start_date
        self.created_field = created_field
        self.last_id: int | None = None
        self.done = False
        self.duplicates = 0

    def take(self, records: list[dict[str, t.Any]]) -> t.Iterator[dict[str, t.Any]]:
        for record in records:
            record_id = record.get("id")
            if not isinstance(record_id, int):
                msg = f"a record without an integer id: {str(record)[:200]}"
                raise ClosumBadResponse(msg)
            if self.last_id is not None and (
                record_id >= self.last_id if self.descending else record_id <= self.last_id
            ):
                self.duplicates += 1
                continue
            if self.descending and self.bookmark is not None and record_id <= self.bookmark:
                self.done = True  # everything after this is older still
                return
            if self.start_date is not None and self._created_before(record, self.start_date):
                if self.descending:
                    self.done = True
                    return
                continue
            self.last_id = record_id
            yield record

    def _created_before(self, record: dict[str, t.Any], start_date: dt.datetime) -> bool:
        value = record.get(self.created_field or "")
        if not isinstance(value, str):
            return False
        try:
            return parse_timestamp(value) < start_date
        except ValueError:
            return False


class ClosumStream(RESTStream[int]):
    """A Closum list endpoint as a Singer stream.

    Args:
        tap: the tap the stream belongs to.
        runtime: what every stream of the run shares (settings, client, page size).
    """

    resource: t.ClassVar[Resource]
    #: the field holding when a record was created, for ``start_date``
    created_field: t.ClassVar[str | None] = None
    primary_keys: t.ClassVar[tuple[str, ...]] = ("id",)
    # Ids only grow and we emit in a known order, but newest first, so the SDK
    # must keep the bookmark as a progress marker until the stream completes.
    # (Its warning that such a stream is "assumed to be unsorted" is untrue
    # here, and quieted: tap_closum.progress.)
    is_sorted = False
    # Records arrive as JSON already typed as the schema says; the SDK's
    # per-value conformance would cost more CPU than all the rest of the tap.
    # Fields the schema does not know are dropped in post_process instead.
    TYPE_CONFORMANCE_LEVEL = TypeConformanceLevel.NONE

    def __init__(self, tap: Tap, runtime: Runtime) -> None:
        """A stream of ``resource``, reading through ``runtime``."""
        self._runtime = runtime
        name, schema, path = self.declaration()
        super().__init__(tap=tap, name=name, schema=schema, path=path)
        if self.resource.replication is Replication.INCREMENTAL:
            self.replication_key = "id"
        self._known_fields = frozenset(self.schema["properties"])
        self._unknown_seen: set[str] = set()
        self._max_id_seen: int | None = None
        self._progress: Progress | None = None
        quiet_unsorted_warning()

    @classmethod
    def declaration(cls) -> tuple[str, dict[str, t.Any], str]:
        """The stream's name, record schema and path: its resource's list, unless a subclass reads elsewhere."""
        return cls.resource.stream_name, record_schema(cls.resource), cls.resource.list_path

    # -- where and how to ask -------------------------------------------------
    @property
    def runtime(self) -> Runtime:
        """What every stream of the run shares: settings, client (session, token, pace), page size."""
        return self._runtime

    @property
    @override
    def url_base(self) -> str:
        return self.runtime.connection.api_url

    @property
    def descending(self) -> bool:
        """Append-only resources are read newest first."""
        return self.resource.replication is Replication.INCREMENTAL

    @override
    def get_url_params(self, context: Context | None, next_page_token: int | None) -> dict[str, t.Any]:
        return {
            "limit": self.runtime.page_size,
            "page": next_page_token or 1,
            "sort": "id",
            "direction": "desc" if self.descending else "asc",
        }

    # -- answers ---------------------------------------------------------------
    @override
    def post_process(self, row: Record, context: Context | None = None) -> Record | None:
        unknown = row.keys() - self._known_fields
        if unknown:
            new = unknown - self._unknown_seen
            if new:
                self._unknown_seen |= new
                self.logger.warning("%s: dropping fields the schema does not know: %s", self.name, sorted(new))
            for key in unknown:
                del row[key]
        return row

    @override
    def _increment_stream_state(self, latest_record: Record, *, context: Context | None = None) -> None:
        """Advance the bookmark only for a record above the highest id seen.

        Newest-first reads meet their highest id first; asking the SDK's state
        machinery about every later, smaller id cost more than emitting it.
        """
        record_id = latest_record.get(self.replication_key or "id")
        if isinstance(record_id, int) and self._max_id_seen is not None and record_id <= self._max_id_seen:
            return
        self._max_id_seen = record_id if isinstance(record_id, int) else self._max_id_seen
        super()._increment_stream_state(latest_record, context=context)

    @cached_property
    def _deselects_properties(self) -> bool:
        return any(not selected for crumb, selected in self.mask.items() if crumb)

    @override
    def _generate_record_messages(self, record: Record) -> t.Generator[singer.RecordMessage, None, None]:
        """The SDK's record messages, minus its per-record selection walk.

        The walk is skipped when the catalog deselects no property: it was the
        tap's largest CPU cost.
        """
        if self._deselects_properties:
            yield from super()._generate_record_messages(record)
            return
        for stream_map in self.stream_maps:
            mapped = stream_map.transform(record)
            if mapped is not None:
                yield singer.RecordMessage(
                    stream=stream_map.stream_alias,
                    record=mapped,
                    version=self._stream_version,
                    time_extracted=dt.datetime.now(dt.timezone.utc),
                )

    @override
    def compare_start_date(self, value: _T, start_date_value: str) -> _T:
        """The bookmark is an id, not a date: ``start_date`` filters records instead."""
        return value

    # -- reading ---------------------------------------------------------------
    @property
    def progress(self) -> Progress:
        """What this stream has done so far in this run (told only if it is selected)."""
        if self._progress is None:
            self._progress = Progress(self.name, self.logger if self.selected else None)
        return self._progress

    def end_progress(self) -> None:
        """The stream is read: its summary line; the next read counts anew."""
        self.progress.summary()
        self._progress = None

    @override
    def get_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        progress = self.progress
        for record in super().get_records(context):
            progress.record()
            yield record
        self.records_read(context)

    def records_read(self, context: Context | None) -> None:
        """After :meth:`get_records` read every record of ``context``: the stream's summary line.

        Args:
            context: what was read (a stream read in parts sums up once, at its end).
        """
        _ = context  # one part: the whole stream
        self.end_progress()

    def _fetch(self, number: int, context: Context | None) -> Page:
        """Page ``number``: one request of the run's client, its tries and the token they may need in one budget."""
        params = self.get_url_params(context, number)
        envelope = self.runtime.client.get(self.path, params)
        data = envelope["data"]
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            msg = f"GET {self.path} answered a list whose data is not a list of objects: {str(data)[:200]}"
            raise ClosumBadResponse(msg)
        return Page.of(number, envelope)

    def _first_page(self, context: Context | None) -> Page | None:
        try:
            return self._fetch(1, context)
        except ClosumNotFoundError as exc:
            self.runtime.note_unserved(self.name, exc)
            self.logger.warning(
                "Skipping stream %s: %s (this account serves the other Closum API revision)",
                self.name,
                exc,
            )
            return None
        except ClosumFatalError as exc:
            if not self.runtime.fall_back_page_size(exc):
                raise
            return self._fetch(1, context)

    def _bookmark(self, context: Context | None) -> int | None:
        if self.replication_key is None:
            return None
        value = self.get_starting_replication_key_value(context)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @override
    def request_records(self, context: Context | None) -> t.Iterable[dict[str, t.Any]]:
        self._max_id_seen = None
        bookmark = self._bookmark(context)
        settings = self.runtime.settings
        cursor = _Cursor(
            descending=self.descending,
            bookmark=bookmark,
            start_date=settings.start_date,
            created_field=self.created_field,
        )
        first = self._first_page(context)
        if first is None:
            return
        self.runtime.note_served(self.name)
        # Behind a bookmark, only the first few pages are new: read them one
        # by one. Otherwise every page is wanted: read them ahead.
        threads = 1 if bookmark is not None else ahead.threads_for(settings.shared.max_parallel_requests)
        counter = self.get_http_request_counter()
        with counter:
            counter.with_context(context)
            pages = ordered_pages(
                first,
                lambda n: self._fetch(n, context),
                threads=threads,
                stop=self.runtime.stop,
                what=f"GET {self.path}",
            )
            try:
                for page in pages:
                    counter.increment()
                    self.progress.request()
                    yield from cursor.take(page.records)
                    if cursor.done:
                        break
            finally:
                pages.close()
        if cursor.duplicates:
            self.logger.info("%s: dropped %d records repeated by shifting pages", self.name, cursor.duplicates)
