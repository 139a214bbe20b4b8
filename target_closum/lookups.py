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
target loaded the record they name. Which fields a resource looks up, refuses or
translates is in :mod:`target_closum.rules`.
"""

from __future__ import annotations

import difflib
import typing as t
from dataclasses import dataclass

from closum_api.errors import ClosumError
from target_closum.index import fold
from target_closum.payloads import split_names
from target_closum.rules import AUDIENCE_LIST, CONTACT_LOOKUP_FIELDS, MEMBERSHIPS, Lookup, rules_for

if t.TYPE_CHECKING:
    from target_closum.index import ServerIndex

#: how many of the records an ambiguous name matches a reject names
AMBIGUOUS_SHOWN = 5


class ClosumLookupError(ClosumError):
    """A lookup cannot work on this account at all (its API revision lacks the list); fix the input."""


class LookupMissError(Exception):
    """A name resolves to no record, or to several: the record is rejected with this message."""


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
    return rules_for(resource).lookup(field)


def extract(resource: str, record: t.Mapping[str, t.Any]) -> Extracted:
    """Take the lookup fields out of a record of ``resource``; null or empty ones count as absent."""
    rules = rules_for(resource)
    if not rules.lookups:
        return Extracted(dict(record), {})
    fields = {lk.field for lk in rules.lookups} | ({MEMBERSHIPS} if MEMBERSHIPS in rules.helpers else set())
    fields |= set(rules.refused)
    if rules.contact:
        fields |= set(CONTACT_LOOKUP_FIELDS)
    rest = {k: v for k, v in record.items() if k not in fields}
    names: dict[str, str] = {}
    lists: tuple[str, ...] = ()
    for field in sorted(fields & record.keys()):
        value = record[field]
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if field in rules.refused:
            return Extracted(rest, {}, (), f"field {field}: {rules.refused[field]}")
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
    names = split_names(value, clean=str.strip, key=lambda name: fold(AUDIENCE_LIST.key, name))
    return None if names is None else tuple(names)


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
