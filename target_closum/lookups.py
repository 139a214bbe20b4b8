"""Names instead of ids: the lookup fields of a record, taken out before validation and resolved before the write.

In a lead: ``city`` → ``city_id`` (the ``city`` list, 2019 revision),
``contact_lifecycle_stage`` → ``contact_lifecycle_stage_id`` (2021), and
``audience_lists`` (names, as a list or one string separated by ``;`` or
``,``) → a membership of each list once the lead is written (2021). In an
unqualified lead: ``contact_type`` → ``contact_type_id`` (2019). In a lead
audience list: ``lead_email`` → ``lead_id`` and ``audience_list`` →
``audience_list_id``.

Names compare case-, accent- and whitespace-insensitively (emails: trimmed
and case-folded). A name that names nothing (and may not be created) or several
records rejects the record with the field, the value and up to three close
candidates. Ids copied from another account (``contact_type_id``,
``audience_list_id``, ``lead_id``) are translated through the ledger when this
target loaded the record they name (see :data:`TRANSLATED`).
"""

from __future__ import annotations

import difflib
import re
import typing as t
from dataclasses import dataclass

from closum_api.errors import ClosumError
from target_closum.index import fold

if t.TYPE_CHECKING:
    from target_closum.index import ServerIndex

#: how many of the records an ambiguous name matches a reject names
AMBIGUOUS_SHOWN = 5


class ClosumLookupError(ClosumError):
    """A lookup cannot work on this account at all (its API revision lacks the list); fix the input."""


class LookupMissError(Exception):
    """A name resolves to no record, or to several: the record is rejected with this message."""


@dataclass(frozen=True)
class Lookup:
    """One lookup field.

    Attributes:
        field: the input field holding a name (``city``).
        target: the payload field it fills (``city_id``).
        reference: the resource the name is looked up in (``city``).
        key: the reference's field the name is compared with (``city_name``).
        creatable: whether ``create_missing_references`` may create a missing one.
        noun: what a reference is called in messages.
    """

    field: str
    target: str
    reference: str
    key: str
    creatable: bool
    noun: str

    @property
    def nouns(self) -> str:
        """The plural of :attr:`noun`."""
        return self.noun[:-1] + "ies" if self.noun.endswith("y") else self.noun + "s"


CITY = Lookup("city", "city_id", "city", "city_name", creatable=False, noun="city")
CONTACT_TYPE = Lookup("contact_type", "contact_type_id", "contact_type", "label", creatable=True, noun="contact type")
STAGE = Lookup(
    "contact_lifecycle_stage",
    "contact_lifecycle_stage_id",
    "contact_lifecycle_stage",
    "label",
    creatable=False,
    noun="contact lifecycle stage",
)
LEAD_EMAIL = Lookup("lead_email", "lead_id", "lead", "email", creatable=False, noun="lead")
AUDIENCE_LIST = Lookup(
    "audience_list", "audience_list_id", "audience_list", "name", creatable=True, noun="audience list"
)
#: The field of a lead whose names become memberships of audience lists.
MEMBERSHIPS = "audience_lists"

#: The lookup fields of each resource's records.
LOOKUPS: dict[str, tuple[Lookup, ...]] = {
    "lead": (CITY, STAGE),
    "unqualified_lead": (CONTACT_TYPE,),
    "lead_audience_list": (LEAD_EMAIL, AUDIENCE_LIST),
}
#: Ids translated through the ledger: field → the resource whose loaded records they name.
TRANSLATED: dict[str, dict[str, str]] = {
    "unqualified_lead": {"contact_type_id": "contact_type"},
    "lead_audience_list": {"lead_id": "lead", "audience_list_id": "audience_list"},
}
#: Streams of these resources are written before a batch of the key resource's stream.
PARENTS: dict[str, tuple[str, ...]] = {
    "lead": ("audience_list",),
    "unqualified_lead": ("contact_type",),
    "lead_audience_list": ("lead", "audience_list"),
}
# A lookup field given to a resource that has no such reference, and what to do instead.
_NOT_HERE: dict[tuple[str, str], str] = {
    ("lead", "contact_type"): "a lead has no contact type in Closum (only an unqualified lead has contact_type_id); "
    "drop the field, or use contact_lifecycle_stage",
    ("unqualified_lead", "city"): "Closum takes no city for an unqualified lead (its city_id is read-only); "
    "drop the field",
    ("unqualified_lead", "contact_lifecycle_stage"): "an unqualified lead has no lifecycle stage in Closum; "
    "drop the field",
    ("unqualified_lead", MEMBERSHIPS): "only a lead can be a member of an audience list; drop the field",
}
_ALL_FIELDS = (CITY.field, CONTACT_TYPE.field, STAGE.field, MEMBERSHIPS)
_SEPARATORS = re.compile(r"[;,]")


@dataclass(frozen=True)
class Extracted:
    """A record with its lookup fields taken out.

    Attributes:
        record: the record without them (what the payload is built from).
        names: lookup field → the name given (trimmed).
        lists: the audience list names of a lead's ``audience_lists``.
        problem: why the record is rejected before any lookup, if it is.
    """

    record: dict[str, t.Any]
    names: dict[str, str]
    lists: tuple[str, ...] = ()
    problem: str | None = None


def lookup_for(resource: str, field: str) -> Lookup:
    """The lookup of ``field`` in a record of ``resource`` (``audience_lists`` → the audience list lookup)."""
    if field == MEMBERSHIPS:
        return AUDIENCE_LIST
    return next(lk for lk in LOOKUPS[resource] if lk.field == field)


def extract(resource: str, record: t.Mapping[str, t.Any]) -> Extracted:
    """Take the lookup fields out of a record of ``resource``; null or empty ones count as absent."""
    lookups = LOOKUPS.get(resource)
    if lookups is None:
        return Extracted(dict(record), {})
    fields = {lk.field for lk in lookups} | ({MEMBERSHIPS} if resource == "lead" else set())
    if resource != "lead_audience_list":
        fields |= set(_ALL_FIELDS)
    rest = {k: v for k, v in record.items() if k not in fields}
    names: dict[str, str] = {}
    lists: tuple[str, ...] = ()
    for field in sorted(fields & record.keys()):
        value = record[field]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if (resource, field) in _NOT_HERE:
            return Extracted(rest, {}, (), f"field {field}: {_NOT_HERE[resource, field]}")
        if field == MEMBERSHIPS:
            parsed = _list_names(value)
            if parsed is None:
                return Extracted(rest, {}, (), f"field {field}: give a list of names or one string separated by ; or ,")
            lists = parsed
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return Extracted(rest, {}, (), f"field {field}: must be a name, not {type(value).__name__}")
        target = lookup_for(resource, field).target
        if record.get(target) is not None:
            return Extracted(rest, {}, (), f"give {field} or {target}, not both")
        names[field] = str(value).strip()
    return Extracted(rest, names, lists)


def _list_names(value: object) -> tuple[str, ...] | None:
    if isinstance(value, str):
        items: list[object] = list(_SEPARATORS.split(value))
    elif isinstance(value, list):
        items = list(value)
    else:
        return None
    names: list[str] = []
    for item in items:
        if item is None:
            continue
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            return None
        name = str(item).strip()
        if name and fold(AUDIENCE_LIST.key, name) not in {fold(AUDIENCE_LIST.key, n) for n in names}:
            names.append(name)
    return tuple(names)


def with_placeholders(resource: str, payload: t.Mapping[str, t.Any], names: t.Mapping[str, str]) -> dict[str, t.Any]:
    """The payload with a stand-in id where a lookup will fill one, so it can be validated before the lookup."""
    filled = dict(payload)
    for field in names:
        filled[lookup_for(resource, field).target] = 1
    return filled


def find(index: ServerIndex, lookup: Lookup, name: str) -> int | None:
    """The id ``name`` names in ``index``, None when it names nothing.

    Several records with the same folded name resolve to the one spelled exactly
    as given, if there is one.

    Raises:
        LookupMissError: the name names several records.
    """
    key = index.rule.key({lookup.key: name})
    ids = index.ids(key) if key is not None else []
    if len(ids) <= 1:
        return ids[0] if ids else None
    exact = [i for i in ids if index.label_of(i) == name]
    if len(exact) == 1:
        return exact[0]
    shown = ", ".join(f"{index.label_of(i)} (id {i})" for i in ids[:AMBIGUOUS_SHOWN])
    more = f" and {len(ids) - AMBIGUOUS_SHOWN} more" if len(ids) > AMBIGUOUS_SHOWN else ""
    msg = (
        f"{lookup.field} {name!r} is ambiguous: {len(ids)} {lookup.nouns} in Closum have that name ({shown}{more}); "
        f"rename them in Closum, or give {lookup.target}"
    )
    raise LookupMissError(msg)


def not_found(index: ServerIndex, lookup: Lookup, name: str, field: str | None = None) -> str:
    """The reject message of a name that names nothing, with up to three close candidates."""
    field = field or lookup.field
    by_fold: dict[str, str] = {}
    for label in index.labels():
        by_fold.setdefault(str(fold(lookup.key, label)), label)
    close = difflib.get_close_matches(str(fold(lookup.key, name)), list(by_fold), n=3, cutoff=0.6)
    message = f"{field} {name!r} not found"
    if field == MEMBERSHIPS:
        message = f"{field}: audience list {name!r} not found"
    if close:
        shown = [by_fold[c] for c in close]
        message += "; did you mean " + ", ".join(shown[:-1]) + (" or " if len(shown) > 1 else "") + shown[-1] + "?"
    elif lookup.creatable:
        message += " (set create_missing_references to create it)"
    return message
