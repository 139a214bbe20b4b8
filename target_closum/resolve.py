"""A record's names made ids, through the run's indexes and the stream's helper writers.

Before a batch is written, the indexes its lookups need are read (each once
per run, :meth:`Resolver.read_indexes`) and, with ``create_missing_references``,
the contact types and audience lists it names but Closum lacks are created in
input order (:meth:`Resolver.create_missing`). Then each record's names become
ids (``city`` → ``city_id``), the ids it copied from another account are
translated through the ledger (:meth:`Resolver.resolve`), and once the record
is written a lead joins its ``audience_lists`` (:meth:`Resolver.join_lists`).

A missing reference is created through the helper writer of
``<stream>.<resource>``, memberships through the helper writer of
``<stream>.audience_lists``: both keep their writes in the ledger like any
stream, and are written from several threads at once, a key at a time.
"""

from __future__ import annotations

import contextlib
import threading
import typing as t

from closum_api import registry
from target_closum.index import default_match_on, fold_name
from target_closum.lookups import ClosumLookupError, LookupMissError, find, lookup_for, not_found
from target_closum.mapping import StreamMapping
from target_closum.payloads import canonical_json, payload_hash, pk_key
from target_closum.plan import Item
from target_closum.record_writer import RecordWriter
from target_closum.rules import ALL_HELPERS, AUDIENCE_LIST, MEMBERSHIPS, Lookup, rules_for
from target_closum.summary import Tally

if t.TYPE_CHECKING:
    import logging

    from closum_api.registry import Resource
    from target_closum.index import ServerIndex
    from target_closum.load import LoadContext
    from target_closum.plan import Outcome


class Resolver:
    """Resolves the names of one stream's records, creating references and memberships through helper writers.

    Args:
        load: the run's shared parts.
        mapping: the stream's resource.
        tally: the stream's tally (it counts the references created for its records).
        logger: where the helpers' messages go.
    """

    def __init__(self, load: LoadContext, mapping: StreamMapping, tally: Tally, logger: logging.Logger) -> None:
        """No helper writer yet: each is made on first need."""
        self.load = load
        self.stream_name = mapping.stream
        self.resource: Resource = mapping.resource
        self.tally = tally
        self.logger = logger
        self._helpers: dict[str, RecordWriter] = {}
        self._helpers_lock = threading.Lock()

    def helper(self, kind: str) -> RecordWriter:
        """The writer of this stream's memberships (``audience_lists``) or of the references it creates."""
        with self._helpers_lock:
            if kind not in self._helpers:
                resource = registry.get("lead_audience_list" if kind == MEMBERSHIPS else kind)
                mapping = StreamMapping(f"{self.stream_name}.{kind}", resource, "create", default_match_on(resource))
                if kind == MEMBERSHIPS:  # counted, and rejected, as a stream of their own
                    writer = RecordWriter(
                        self.load, mapping, self.logger, self.load.tally_for(mapping), self.load.rejects
                    )
                else:  # a refused reference rejects the records naming it instead
                    tally = Tally(mapping.stream, resource.name, "create")
                    writer = RecordWriter(self.load, mapping, self.logger, tally, None)
                self._helpers[kind] = writer
            return self._helpers[kind]

    def recover_pending(self) -> None:
        """Settle the creates a killed run left pending for this stream's helpers."""
        for kind in ALL_HELPERS:
            # A helper's records name no references and join no lists: a helper has no helpers of its own.
            if self.load.ledger.pending(f"{self.stream_name}.{kind}"):
                self.helper(kind).recover()

    # -- before a batch -----------------------------------------------------------
    def read_indexes(self, items: t.Sequence[Item]) -> None:
        """Read the indexes the batch's names and memberships need (in the calling thread).

        Raises:
            ClosumLookupError: a lookup needs a list this account does not serve.
        """
        fields = {f for item in items for f in item.names}
        if any(item.lists for item in items):
            fields.add(MEMBERSHIPS)
            self.helper(MEMBERSHIPS).match_index()
        for field in sorted(fields):
            self.reference_index(lookup_for(self.resource.name, field), field)

    def create_missing(self, items: t.Sequence[Item]) -> None:
        """Create the references the batch names but Closum lacks, one by one in input order.

        Done before the concurrent writes, so the first spelling in the input
        (``Feira 2026`` before ``FEIRA 2026``) is the one created, whatever the
        threads' timing.
        """
        if not self.load.settings.create_missing_references:
            return
        for item in items:
            wanted = [(lookup_for(self.resource.name, f), name, f) for f, name in sorted(item.names.items())]
            wanted += [(AUDIENCE_LIST, name, MEMBERSHIPS) for name in item.lists]
            for lookup, name, field in wanted:
                if lookup.creatable:
                    # A name that cannot be created is rejected by its record's own write, with the reason.
                    with contextlib.suppress(LookupMissError):
                        self._resolve_name(lookup, name, field)

    def reference_index(self, lookup: Lookup, field: str) -> ServerIndex:
        """The index a lookup resolves names in.

        Raises:
            ClosumLookupError: this account does not serve the list (another API revision).
        """
        reference = registry.get(lookup.reference)
        index = self.load.index(reference, (lookup.key,))
        if index is None:
            msg = (
                f"stream {self.stream_name}: field {field} needs Closum's {lookup.nouns}, but this account answers "
                f"404 for GET {reference.list_path} (its API revision has no {lookup.nouns}); drop field {field} "
                "from the input, or load into an account that has them"
            )
            raise ClosumLookupError(msg)
        return index

    # -- per record -----------------------------------------------------------------
    def resolve(self, item: Item) -> tuple[dict[str, t.Any], list[int]]:
        """The item's payload with its names resolved and its ids translated, and the lists it joins.

        Raises:
            LookupMissError: a name resolves to nothing (that may be created) or to several records.
        """
        payload = dict(item.payload)
        for field, name in sorted(item.names.items()):
            lookup = lookup_for(self.resource.name, field)
            payload[lookup.target] = self._resolve_name(lookup, name, field)
        by_name = {lookup_for(self.resource.name, f).target for f in item.names}
        for field, reference in rules_for(self.resource).translated.items():
            value = payload.get(field)
            if field not in by_name and isinstance(value, int) and not isinstance(value, bool):
                payload[field] = self.load.ledger.loaded_id(reference, value) or value
        lists = [self._resolve_name(AUDIENCE_LIST, name, MEMBERSHIPS) for name in item.lists]
        return payload, lists

    def _resolve_name(self, lookup: Lookup, name: str, field: str) -> int:
        index = self.reference_index(lookup, field)
        found = find(index, lookup, name)
        if found is not None:
            return found
        if lookup.creatable and self.load.settings.create_missing_references:
            created = self._write_reference(lookup, name)
            if created.closum_id is not None:
                if created.kind == "created":
                    self.tally.add("references_created")
                return created.closum_id
            msg = f"{field}: {lookup.noun} {name!r} could not be created in Closum: {created.message}"
            raise LookupMissError(msg)
        raise LookupMissError(not_found(index, lookup, name, field))

    def _write_reference(self, lookup: Lookup, name: str) -> Outcome:
        """Create (or find, should another writer have just created it) the reference ``name``."""
        payload = {lookup.key: name}
        item = Item(payload, "name:" + canonical_json([fold_name(name)]), payload, payload_hash(payload), None)
        return self.helper(lookup.reference).write_one(item)

    def join_lists(self, lead_id: int, list_ids: t.Sequence[int]) -> None:
        """Make the lead a member of each list (matched on the pair: never twice)."""
        writer = self.helper(MEMBERSHIPS)
        for list_id in list_ids:
            payload = {"lead_id": lead_id, "audience_list_id": list_id}
            key = pk_key([lead_id, list_id])
            writer.write_one(Item(payload, key, payload, payload_hash(payload), None))
