"""What Closum already holds, by natural key: read once per run, kept current with the run's own writes.

A :class:`KeyRule` says which fields identify a record of a resource and how
they compare: emails case-folded and trimmed, phone numbers on their digits,
names and labels case-, accent- and whitespace-insensitive (Unicode NFKD),
ids as integers. A :class:`ServerIndex` maps each key to the ids that carry it;
:class:`Indexes` builds each index once per run by reading the resource's whole
list (page 1 tells the page count, the other pages are read on the run's pool),
and adds every record the run itself creates to the indexes already built, so
matching and lookups see the run's own writes without reading again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import typing as t
import unicodedata
from dataclasses import dataclass

from closum_api import registry
from closum_api.errors import ClosumFatalError
from closum_api.listing import DEFAULT_PAGE_SIZE, DOCUMENTED_PAGE_SIZE, Page, ordered_pages, page_size_refused
from target_closum.rules import rules_for

if t.TYPE_CHECKING:
    from closum_api.client import ClosumClient
    from closum_api.registry import Resource

Key: t.TypeAlias = tuple[object, ...]
K = t.TypeVar("K")


def fold_name(value: object) -> str:
    """A name as compared: accents dropped (NFKD), case folded, whitespace collapsed ("  Águeda " → "agueda")."""
    text = unicodedata.normalize("NFKD", str(value))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return " ".join(text.casefold().split())


def fold_email(value: object) -> str:
    """An email as compared: surrounding whitespace trimmed, case folded."""
    return str(value).strip().casefold()


def phone_digits(value: object) -> str:
    """A phone number (or extension) as compared: its digits only ("517-388 1452" → "5173881452")."""
    return "".join(ch for ch in str(value) if ch.isdigit())


def _as_id(value: object) -> object:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _nested(record: t.Mapping[str, t.Any], name: str, part: str) -> object:
    value = record.get(name)
    if isinstance(value, t.Mapping):
        return value.get(part)
    return value if part == name else None


# How each key field is read from a payload or a served record, and how it compares.
_FOLD: dict[str, t.Callable[[object], object]] = {
    "email": fold_email,
    "phone": phone_digits,
    "number": phone_digits,
    "extension": phone_digits,
    "label": fold_name,
    "name": fold_name,
    "city_name": fold_name,
    "lead_id": _as_id,
    "audience_list_id": _as_id,
}


# A contact's email and phone are nested objects: the part of each its key compares.
_NESTED = {"email": "email", "phone": "number"}


def fold(field: str, value: object) -> object:
    """A value of key field ``field`` as compared (an email trimmed and case-folded, a name also without accents...)."""
    return _FOLD[field](value)


def default_match_on(resource: Resource) -> tuple[str, ...]:
    """The fields a resource's records are matched on when ``match_on`` is not set; none for most resources."""
    return rules_for(resource).default_match_on


@dataclass(frozen=True)
class KeyRule:
    """The fields that identify a record of one resource.

    Attributes:
        resource: the resource's name.
        fields: the key fields, in key order.
    """

    resource: str
    fields: tuple[str, ...]
    #: a contact's email and phone are nested (from its rules, read once: a key is taken per record)
    contact: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Read once whether the resource is a contact."""
        object.__setattr__(self, "contact", rules_for(self.resource).contact)

    def _raw(self, record: t.Mapping[str, t.Any], field: str) -> object:
        if self.contact and field in _NESTED:
            return _nested(record, field, _NESTED[field])
        return record.get(field)

    def same(self, wanted: Key, served: Key | None) -> bool:
        """Whether a served record's key carries every value of ``wanted`` (a key's missing values match anything).

        Args:
            wanted: the key of what was sent.
            served: the key of a record Closum serves.

        Returns:
            True when it is the same record by this rule.
        """
        if served is None:
            return False
        return all(want is None or want == got for want, got in zip(wanted, served, strict=True))

    def key(self, record: t.Mapping[str, t.Any]) -> Key | None:
        """The key of a payload or a served record (they share their shape); None when it has none of the fields."""
        values: list[object] = []
        for field in self.fields:
            raw = self._raw(record, field)
            folded = None if raw is None else fold(field, raw)
            values.append(folded if folded not in {"", None} else None)
        return tuple(values) if any(v is not None for v in values) else None

    def label(self, record: t.Mapping[str, t.Any]) -> str:
        """The key's values as a person reads them (``Águeda``), for messages."""
        parts = [self._raw(record, f) for f in self.fields]
        return " ".join(str(p).strip() for p in parts if p is not None)


class KeyLocks(t.Generic[K]):
    """One lock per key, made on first use: what is written under a key, one thread at a time."""

    def __init__(self) -> None:
        """No key held yet."""
        self._locks: dict[K, threading.Lock] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def held(self, key: K) -> t.Iterator[None]:
        """Hold ``key`` (wait while another thread holds it)."""
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


class ServerIndex:
    """Ids by key for one resource and one :class:`KeyRule`. Thread-safe.

    Args:
        rule: what the keys are made of.
    """

    def __init__(self, rule: KeyRule) -> None:
        """An empty index."""
        self.rule = rule
        self._ids: dict[Key, list[int]] = {}
        self._labels: dict[int, str] = {}
        self._lock = threading.Lock()
        self._key_locks: KeyLocks[Key] = KeyLocks()

    def add(self, record: t.Mapping[str, t.Any], closum_id: int) -> None:
        """Index a record (served, or just written by the run) under its key."""
        key = self.rule.key(record)
        if key is None:
            return
        with self._lock:
            ids = self._ids.setdefault(key, [])
            if closum_id not in ids:
                ids.append(closum_id)
                ids.sort()
            self._labels[closum_id] = self.rule.label(record)

    def ids(self, key: Key) -> list[int]:
        """The ids carrying ``key``, oldest first."""
        with self._lock:
            return list(self._ids.get(key, ()))

    def label_of(self, closum_id: int) -> str:
        """How the record of ``closum_id`` is named, as served."""
        with self._lock:
            return self._labels.get(closum_id, str(closum_id))

    def labels(self) -> list[str]:
        """Every name held, as served (for suggestions)."""
        with self._lock:
            return sorted(set(self._labels.values()))

    @contextlib.contextmanager
    def key_lock(self, key: Key | None) -> t.Iterator[None]:
        """Hold the key while a record with it is looked up and written, so two writers never create it twice."""
        if key is None:
            yield
            return
        with self._key_locks.held(key):
            yield


class Indexes:
    """The run's indexes, each built once, on first need, by reading the resource's list.

    Args:
        read: reads every record of a resource (see :func:`read_list`).
    """

    def __init__(self, read: t.Callable[[Resource], t.Iterable[dict[str, t.Any]]]) -> None:
        """No index is read yet."""
        self._read = read
        self._built: dict[KeyRule, ServerIndex] = {}
        self._build_locks: dict[KeyRule, threading.Lock] = {}
        # The run's writes noted while an index is being read, by the index being read; replayed into it once read.
        self._pending: dict[KeyRule, list[tuple[dict[str, t.Any], int]]] = {}
        self._lock = threading.Lock()
        # The largest id each index's read found: a record another run created since has a larger one.
        self._floors: dict[KeyRule, int] = {}
        # The keys this run created, by index, with the ids it created them as.
        self._created: dict[KeyRule, dict[Key, int]] = {}

    def get(self, resource: Resource, fields: t.Sequence[str]) -> ServerIndex:
        """The index of ``resource`` by ``fields``, read from the server the first time it is asked for.

        A write noted before the read starts is in the list the read returns; one noted while the
        read runs is kept aside and added once the list is in; one noted after the index is
        published goes to the index directly. Replay and publication happen under one hold of
        the lock, so no write falls between them.
        """
        rule = KeyRule(resource.name, tuple(fields))
        with self._lock:
            if rule in self._built:
                return self._built[rule]
            build_lock = self._build_locks.setdefault(rule, threading.Lock())
        with build_lock:
            with self._lock:
                if rule in self._built:
                    return self._built[rule]
                self._pending[rule] = []
            index = ServerIndex(rule)
            floor = 0
            try:
                for record in self._read(resource):
                    rid = record.get("id")
                    if isinstance(rid, int):
                        index.add(record, rid)
                        floor = max(floor, rid)
            except BaseException:
                with self._lock:
                    del self._pending[rule]
                raise
            with self._lock:
                for payload, rid in self._pending.pop(rule):
                    index.add(payload, rid)
                self._built[rule] = index
                self._floors[rule] = floor
            return index

    def note(
        self, resource_name: str, payload: t.Mapping[str, t.Any], closum_id: int, *, created: bool = False
    ) -> None:
        """A record the run wrote: added to this resource's indexes built or being read; nothing is kept otherwise.

        Args:
            resource_name: the record's resource.
            payload: what was sent.
            closum_id: the record's id.
            created: the run created it (its key is checked for doubles at the end, :meth:`doubled`).
        """
        with self._lock:
            for rule, pending in self._pending.items():
                if rule.resource == resource_name:
                    pending.append((dict(payload), closum_id))
            indexes = [index for rule, index in self._built.items() if rule.resource == resource_name]
            if created:
                for rule in [*self._pending, *self._built]:
                    key = rule.key(payload) if rule.resource == resource_name else None
                    if key is not None:
                        self._created.setdefault(rule, {})[key] = closum_id
        for index in indexes:
            index.add(payload, closum_id)

    def doubled(self, read_newest: t.Callable[[str, int, int], t.Iterable[dict[str, t.Any]]]) -> list[Doubled]:
        """The keys this run created that Closum now holds more than once (another writer created them too).

        Such a double can only be newer than the index the run matched against: each index's
        newest records are read back (``read_newest(resource name, floor, created)``: the records
        with an id above the largest the index's read found, of which ``created`` are the run's),
        and grouped by key.

        Args:
            read_newest: the records of a resource newer than an id, newest first.

        Returns:
            One :class:`Doubled` per index with doubles, each with its doubled keys' ids.
        """
        with self._lock:
            created = {rule: dict(keys) for rule, keys in self._created.items() if rule in self._floors}
            floors = dict(self._floors)
        found = []
        for rule, keys in created.items():
            ids: dict[Key, set[int]] = {key: {rid} for key, rid in keys.items()}
            labels: dict[Key, str] = {}
            for record in read_newest(rule.resource, floors[rule], len(keys)):
                key, rid = rule.key(record), record.get("id")
                if key in ids and isinstance(rid, int):
                    ids[key].add(rid)
                    labels.setdefault(key, rule.label(record))
            doubles = {labels[key]: sorted(rids) for key, rids in ids.items() if len(rids) > 1}
            if doubles:
                found.append(Doubled(rule, doubles))
        return found


@dataclass(frozen=True)
class Doubled:
    """Keys a run created that Closum holds more than once.

    Attributes:
        rule: the resource and the fields of the key.
        ids: each doubled key, as a person reads it, with the ids carrying it.
    """

    rule: KeyRule
    ids: dict[str, list[int]]


def read_list(
    client: ClosumClient,
    resource: Resource,
    *,
    threads: int = 1,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> t.Iterator[dict[str, t.Any]]:
    """Every record of ``resource``: page 1 tells the page count, the rest are read ahead on ``threads`` threads.

    The pages are walked by :func:`closum_api.listing.ordered_pages`: up to the
    count announced, then on while the last one says it has a next page and held
    records (a server may serve fewer records than asked for); a server that lies
    about its pages ends the read with a warning. A refused page size (400)
    falls back once to the documented 25. Records come page by page, in page
    order, each id once; a page is dropped once its records are taken, so memory
    holds the pages in flight, not the list.

    Raises:
        ClosumNotFoundError: the account does not serve the resource (another API revision).
    """
    try:
        first = client.list_page(resource, page=1, limit=page_size)
    except ClosumFatalError as exc:
        if not page_size_refused(exc, page_size):
            raise
        page_size = DOCUMENTED_PAGE_SIZE
        first = client.list_page(resource, page=1, limit=page_size)

    def fetch(number: int) -> Page:
        return Page.of(number, client.list_page(resource, page=number, limit=page_size))

    seen: set[int] = set()
    pages = ordered_pages(Page.of(1, first), fetch, threads=threads, stop=client.stop, what=f"GET {resource.list_path}")
    with contextlib.closing(pages):
        for page in pages:
            for record in page.records:
                if isinstance(record.get("id"), int) and record["id"] not in seen:
                    seen.add(record["id"])
                    yield record


def read_newest(
    client: ClosumClient, resource_name: str, floor: int, expected: int, *, max_parallel: int
) -> t.Iterator[dict[str, t.Any]]:
    """The records of a resource with an id above ``floor``, newest first, each once (see :meth:`Indexes.doubled`).

    About ``expected`` of them are known (the run created them): as many pages as they fill
    are read ahead at once, at most ``max_parallel``; the walk stops at the first page reaching ``floor``.
    """
    resource = registry.get(resource_name)

    def fetch(number: int) -> Page:
        envelope = client.list_page(resource, page=number, limit=DEFAULT_PAGE_SIZE, direction="desc")
        return Page.of(number, envelope)

    window = max(1, min(max_parallel, -(-expected // DEFAULT_PAGE_SIZE) + 1))
    seen: set[int] = set()
    pages = ordered_pages(fetch(1), fetch, threads=window, stop=client.stop, what=f"GET {resource.list_path}")
    with contextlib.closing(pages):
        for page in pages:
            ids = [r["id"] for r in page.records if isinstance(r.get("id"), int)]
            for record in page.records:
                rid = record.get("id")
                if isinstance(rid, int) and rid > floor and rid not in seen:
                    seen.add(rid)
                    yield record
            if min(ids, default=floor) <= floor:
                return
