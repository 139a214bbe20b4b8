"""Which Closum resource, and which action, each input stream is written with.

Rules, in order:

1. ``resource_map[stream]`` when the setting names the stream: its
   ``resource`` and ``action`` (``create`` when the action is omitted, or
   ``upsert`` when ``load_method`` is ``upsert`` and the resource can be updated).
2. Otherwise a stream named like a writable resource maps to it: the
   singular or plural registry names, with underscores or hyphens
   (``lead``, ``leads``, ``contact_type``, ``contact-types``...; ``contact``
   and ``contacts`` go to the V2 API's contact).
3. Anything else is refused at its SCHEMA message with one line that names the
   stream and says how to map or deselect it; the tap's consent streams
   (``lead_opt_ins``...) are never written on their own.

``resource_map[stream].match_on`` names the fields that identify a record on
the server (see :data:`target_closum.rules.RULES`); contact types,
audience lists and lead audience lists are matched on their name (the pair of
ids) whether it is set or not.
"""

from __future__ import annotations

import json
import typing as t
from dataclasses import dataclass

from closum_api import registry
from closum_api.errors import ClosumSettingsError
from closum_api.registry import Api, Resource, Verb
from target_closum.index import default_match_on
from target_closum.rules import rules_for

ACTIONS = ("create", "update", "upsert")
LOAD_METHODS = ("append-only", "upsert", "overwrite")


@dataclass(frozen=True)
class StreamMapping:
    """Where one stream goes."""

    stream: str
    resource: Resource
    action: str
    match_on: tuple[str, ...] = ()

    def describe(self) -> str:
        """``stream → resource (action)``, as the logs show it, with the fields it is matched on."""
        matched = f", matched on {', '.join(self.match_on)}" if self.match_on else ""
        return f"{self.stream} → {self.resource.name} ({self.action}{matched})"


def writable_resources() -> tuple[Resource, ...]:
    """The resources Closum can create, in either API: the ones a stream may be written to."""
    return tuple(r for r in registry.ALL_RESOURCES if r.has(Verb.CREATE))


def _names_of(resource: Resource) -> set[str]:
    # A V2 resource's path (lead) is a V1 resource's name: it is known by its names only.
    names = {resource.name, resource.stream_name} | ({resource.path} if resource.api is Api.V1 else set())
    return names | {n.replace("_", "-") for n in names} | {n.replace("-", "_") for n in names}


def resource_by_any_name(name: str) -> Resource | None:
    """The resource a stream or resource name refers to (``contact-types`` → contact_type)."""
    for resource in registry.ALL_RESOURCES:
        if name in _names_of(resource):
            return resource
    return None


def _writable_names() -> str:
    return ", ".join(r.name for r in writable_resources())


def _example(stream: str) -> str:
    return json.dumps({stream: {"resource": "lead", "action": "create"}})


def default_action(resource: Resource, load_method: str | None) -> str:
    """``upsert`` under ``load_method: upsert`` for updatable resources, else ``create``."""
    if load_method == "upsert" and resource.has(Verb.UPDATE):
        return "upsert"
    return "create"


def check_load_method(load_method: str) -> None:
    """Refuse, with one line, a ``load_method`` that can never work (checked at start).

    Raises:
        ClosumSettingsError: ``overwrite`` (Closum cannot delete) or an unknown method.
    """
    if load_method == "overwrite":
        msg = (
            "load_method 'overwrite' is not supported: Closum has no endpoint that deletes records; "
            "use 'append-only' (create) or 'upsert'"
        )
        raise ClosumSettingsError(msg)
    if load_method not in LOAD_METHODS:
        msg = f"load_method {load_method!r} is unknown; use one of {', '.join(LOAD_METHODS)}"
        raise ClosumSettingsError(msg)


def mapping_for(stream: str, resource_map: t.Mapping[str, t.Any], load_method: str) -> StreamMapping:
    """The resource and action for a stream, or a :class:`ClosumSettingsError` of one line.

    Args:
        stream: the input stream's name.
        resource_map: the ``resource_map`` setting.
        load_method: the ``load_method`` setting.

    Returns:
        Where the stream's records go.

    Raises:
        ClosumSettingsError: the stream cannot be written as mapped, or matches no writable resource.
    """
    entry = resource_map.get(stream)
    if entry is None:
        return _mapping_by_name(stream, load_method)
    if not isinstance(entry, t.Mapping) or not entry.get("resource"):
        msg = f"resource_map[{stream!r}] must be an object with a 'resource' (one of {_writable_names()})"
        raise ClosumSettingsError(msg)
    resource = resource_by_any_name(str(entry["resource"]))
    if resource is None or not resource.has(Verb.CREATE):
        what = "is not a Closum resource" if resource is None else "cannot be written (the API only lists it)"
        msg = f"resource_map[{stream!r}]: resource {entry['resource']!r} {what}; use one of {_writable_names()}"
        raise ClosumSettingsError(msg)
    action = str(entry.get("action") or default_action(resource, load_method))
    if action not in ACTIONS:
        msg = f"resource_map[{stream!r}]: action {action!r} is unknown; use one of {', '.join(ACTIONS)}"
        raise ClosumSettingsError(msg)
    if resource.api is Api.V2 and (action != "create" or entry.get("match_on") is not None):
        what = f"action {action!r}" if action != "create" else "match_on"
        msg = (
            f"resource_map[{stream!r}]: {what} does not apply to {resource.name}: Closum's V2 lead/add finds the "
            f"{resource.name} that exists already itself and updates it (setting update_enabled, on by default); "
            f"use action 'create' without match_on"
        )
        raise ClosumSettingsError(msg)
    if action in {"update", "upsert"} and not resource.has(Verb.UPDATE):
        msg = (
            f"resource_map[{stream!r}]: action {action!r} is impossible, Closum resource "
            f"{resource.name!r} is create-only (no update endpoint); use action 'create'"
        )
        raise ClosumSettingsError(msg)
    return StreamMapping(stream, resource, action, check_match_on(stream, resource, entry.get("match_on")))


def _mapping_by_name(stream: str, load_method: str) -> StreamMapping:
    """A stream not in ``resource_map``: the writable resource it is named like."""
    resource = resource_by_any_name(stream)
    if resource is not None and resource.has(Verb.CREATE):
        match_on = default_match_on(resource)
        return StreamMapping(stream, resource, default_action(resource, load_method), match_on)
    opt_in = next((o for o in registry.OPT_INS if stream == o.stream_name), None)
    if opt_in is not None:
        msg = (
            f"stream {stream!r} cannot be loaded: Closum takes a {opt_in.parent.name}'s opt-in only inside "
            f"the {opt_in.parent.name}'s create ({opt_in.name}), never on its own. Deselect the stream in the tap"
        )
    elif resource is not None:
        msg = (
            f"stream {stream!r} cannot be loaded: Closum resource {resource.name!r} is read-only "
            f"in the API. Deselect the stream in the tap, or map it to a writable resource "
            f"({_writable_names()}) with resource_map, e.g. {_example(stream)}"
        )
    else:
        msg = (
            f"stream {stream!r} matches no Closum resource. Map it with resource_map, e.g. "
            f"{_example(stream)} (resources: {_writable_names()}), or deselect it in the tap"
        )
    raise ClosumSettingsError(msg)


def check_match_on(stream: str, resource: Resource, value: object) -> tuple[str, ...]:
    """The fields a stream's records are matched on, in key order; refuse, with one line, a ``match_on`` that cannot be.

    Args:
        stream: the input stream's name.
        resource: the resource it is written to.
        value: ``resource_map[stream].match_on`` (None when not set).

    Returns:
        The fields (the resource's default when not set; none for leads, emails and phones).

    Raises:
        ClosumSettingsError: not a list of the resource's key fields, or not the fixed key of a resource matched always.
    """
    default = default_match_on(resource)
    if value is None:
        return default
    allowed = rules_for(resource).match_fields
    where = f"resource_map[{stream!r}].match_on"
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        msg = f"{where} must be a non-empty list of field names, one of {', '.join(allowed)}"
        raise ClosumSettingsError(msg)
    unknown = [v for v in value if v not in allowed]
    if unknown:
        msg = f"{where}: {', '.join(map(repr, unknown))} cannot identify a {resource.name}; use {', '.join(allowed)}"
        raise ClosumSettingsError(msg)
    fields = tuple(f for f in allowed if f in value)
    if default and fields != default:
        msg = f"{where}: a {resource.name} is always matched on {' and '.join(default)}; drop match_on"
        raise ClosumSettingsError(msg)
    if resource.name == "phone" and "number" not in fields:
        msg = f"{where}: a phone is matched on its number (and extension); add 'number'"
        raise ClosumSettingsError(msg)
    return fields


def credentials_problem(mapping: StreamMapping, *, v1: bool, v2: bool) -> str | None:
    """Why a stream cannot be written with the credentials given; None when it can.

    Args:
        mapping: where the stream goes.
        v1: ``api_username`` and ``api_pw`` are set (the V1 API).
        v2: ``api_key`` is set (the V2 API).

    Returns:
        The one line saying what to set, or None.
    """
    resource = mapping.resource
    if resource.api is Api.V2 and not v2:
        return (
            f"stream {mapping.stream!r} writes {resource.name} through Closum's V2 API (lead/add), which takes an "
            "api_key: set api_key (created in Closum: Settings → Application → Integrations → API Keys)"
        )
    if resource.api is Api.V1 and not v1:
        return (
            f"stream {mapping.stream!r} writes {resource.name} through Closum's V1 API, which takes api_username and "
            "api_pw; only api_key is set, and it writes through the V2 API (resource contact, stream contacts) only: "
            "set api_username and api_pw, or map the stream to contact"
        )
    return None
