"""Admin routes of the sandbox, under ``/_admin`` (never faulted).

Open unless the server has an ``admin_token`` (``--admin-token``): then every
route but ``/_admin/health`` wants ``Authorization: Bearer <token>`` or
``X-Admin-Token: <token>`` and answers 401 without it.

- ``GET /_admin/health``: 200 ``{"status": "ok"}``.
- ``GET /_admin/requests[?path_prefix=/api/lead]``: the recorded ``/api``
  calls (last 200,000), each ``{method, path, query, status,
  after_write_fault, fault, time}``; ``DELETE /_admin/requests`` clears them.
- ``POST /_admin/reset`` ``{"seed": N}`` (optional, default the server's
  seed): wipe every record and seed again. Tokens, knobs and faults stay.
- ``GET /_admin/config``; ``PATCH /_admin/config`` with any of
  ``latency_ms``, ``fail_rate``, ``rate_limit``, ``max_page_size``,
  ``token_ttl``, ``fault_seed`` (numbers) and ``opt_ins_on_retrieve``
  (boolean): change runtime knobs; answers the config.
- ``GET /_admin/faults``: queued scripted faults; ``POST /_admin/faults``
  ``{"faults": [...]}`` appends (see :mod:`closum_sandbox.faults`);
  ``DELETE /_admin/faults`` clears.
- ``POST /_admin/tokens/revoke``: invalidate every token.
- ``POST /_admin/records/{resource_name}`` ``{"count": N}``: generate N more
  realistic records; answers ``{"ids": [...]}``.
- ``GET /_admin/records/{resource_name}``: every stored record as retrieve
  serves it (list shape for resources without retrieve), opt-ins included
  even while ``opt_ins_on_retrieve`` is off; with ``?shape=list``, as a list
  serves it (no nested ids, no opt-ins): what a tap reading lists emits.
- ``PATCH /_admin/records/{resource_name}/{id}`` ``{field: value, ...}``:
  edit a record as a person does in Closum's UI (any served field but ``id``;
  a contact's ``email`` ``{email}`` and ``phone`` ``{extension, number}``,
  ``null`` unlinks; its opt-in ``lead_opt_in`` / ``unqualified_lead_opt_in``
  ``{sms, email, enviroment}`` merged into the stored one, ``null`` withdraws
  it entirely); answers the record as retrieve serves it.
- ``DELETE /_admin/records/{resource_name}/{id}``: delete a record (its
  retrieve then answers 404, lists skip it and later pages shift by one).

Errors use the API's envelope ``{"success": false, "message": ...}``.
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from closum_api import registry, schemas
from closum_api.registry import Resource, Verb
from closum_sandbox import seed as seeding
from closum_sandbox.faults import normalize_fault
from closum_sandbox.guard import require_admin_token
from closum_sandbox.responses import ApiError, json_response, read_object
from closum_sandbox.settings import LEAD_ADD_ANSWERS, PAGINATION_LIES, RUNTIME_KNOBS
from closum_sandbox.state import Sandbox, sandbox_of

#: The most records one ``POST /_admin/records/{name}`` generates.
MAX_GENERATED = 10_000_000

router = APIRouter(prefix="/_admin", tags=["admin"], dependencies=[Depends(require_admin_token)])


@router.get("/health")
async def health() -> Response:
    """Answer 200 ``{"status": "ok"}`` once the server serves."""
    return json_response({"status": "ok"})


@router.get("/requests")
async def list_requests(request: Request) -> Response:
    """The recorded ``/api`` calls, those under ``path_prefix`` when given."""
    prefix = request.query_params.get("path_prefix")
    return json_response(sandbox_of(request).log.list(prefix))


@router.delete("/requests")
async def clear_requests(request: Request) -> Response:
    """Forget the recorded ``/api`` calls."""
    sandbox_of(request).log.clear()
    return json_response({"success": True})


@router.post("/reset")
async def reset(request: Request) -> Response:
    """Wipe every record and seed again (``{"seed": N}``, default the server's seed)."""
    sb = sandbox_of(request)
    body = await read_object(request, allow_empty=True)
    seed = body.get("seed", sb.settings.seed)
    if seed is None:
        seed = sb.settings.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ApiError(400, f"field seed: must be an integer >= 0, not {seed!r}")
    sb.reset(seed)
    return json_response({"success": True, "seed": seed})


@router.get("/config")
async def get_config(request: Request) -> Response:
    """The server's settings, without the password."""
    return json_response(sandbox_of(request).settings.runtime_config())


@router.patch("/config")
async def patch_config(request: Request) -> Response:
    """Change runtime knobs; answers the new settings."""
    sb = sandbox_of(request)
    body = await read_object(request)
    for key, value in body.items():
        problem = _knob_problem(key, value)
        if problem is not None:
            raise ApiError(400, problem)
    for key, value in body.items():
        setattr(sb.settings, key, RUNTIME_KNOBS[key][0](value))
        if key == "fault_seed":
            sb.faults.reseed(int(value))
    return json_response(sb.settings.runtime_config())


def _knob_problem(key: str, value: object) -> str | None:
    """Why ``value`` cannot be set to runtime knob ``key``; None when it can."""
    if key not in RUNTIME_KNOBS:
        return f"unknown field {key}; changeable: {', '.join(RUNTIME_KNOBS)}"
    kind, low = RUNTIME_KNOBS[key]
    if kind is str:
        choices = LEAD_ADD_ANSWERS if key == "lead_add_answer" else PAGINATION_LIES
        return None if value in choices else f"field {key}: {value!r} is not one of {', '.join(choices)}"
    if kind is bool:
        return None if isinstance(value, bool) else f"field {key}: {value!r} is not true or false"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        return f"field {key}: {value!r} is not a number"
    if value < low or (key == "fail_rate" and value > 1):
        return f"field {key}: {value!r} is out of range"
    return None


@router.get("/faults")
async def list_faults(request: Request) -> Response:
    """The queued scripted faults."""
    return json_response(sandbox_of(request).faults.scripted)


@router.post("/faults")
async def add_faults(request: Request) -> Response:
    """Queue scripted faults (``{"faults": [...]}``)."""
    sb = sandbox_of(request)
    body = await read_object(request)
    entries = body.get("faults")
    if not isinstance(entries, list):
        raise ApiError(400, "field faults: must be a list of fault objects")
    try:
        faults = [normalize_fault(e) for e in entries]
    except (TypeError, ValueError) as exc:
        raise ApiError(400, str(exc)) from None
    sb.faults.scripted.extend(faults)
    return json_response({"success": True, "queued": len(sb.faults.scripted)})


@router.delete("/faults")
async def clear_faults(request: Request) -> Response:
    """Drop every queued scripted fault."""
    sandbox_of(request).faults.scripted.clear()
    return json_response({"success": True})


@router.post("/tokens/revoke")
async def revoke_tokens(request: Request) -> Response:
    """Invalidate every bearer token issued."""
    return json_response({"success": True, "revoked": sandbox_of(request).tokens.revoke_all()})


def _resource(request: Request, name: str) -> tuple[Sandbox, Resource]:
    sb = sandbox_of(request)
    try:
        res = registry.get(name)
    except KeyError:
        raise ApiError(404, f"Not Found: unknown resource {name!r}") from None
    if res.name not in sb.served_names:
        raise ApiError(404, f"Not Found: resource {res.name!r} is not served by revision {sb.settings.revision}")
    return sb, res


@router.post("/records/{resource_name}")
async def add_records(request: Request, resource_name: str) -> Response:
    """Generate ``{"count": N}`` more realistic records; answers ``{"ids": [...]}``."""
    sb, res = _resource(request, resource_name)
    body = await read_object(request)
    count = body.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_GENERATED:
        raise ApiError(400, f"field count: must be a positive integer, not {count!r}")
    try:
        ids = seeding.add_records(sb.store, res.name, count)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if len(ids) < count:
        raise ApiError(400, f"cannot generate {res.name} records: what they refer to does not exist")
    return json_response({"ids": ids})


@router.get("/records/{resource_name}")
async def all_records(request: Request, resource_name: str, shape: str = "retrieve") -> Response:
    """Every stored record as retrieve serves it (list shape without retrieve); ``?shape=list``: as a list does."""
    sb, res = _resource(request, resource_name)
    if shape not in {"retrieve", "list"}:
        raise ApiError(400, f"shape must be retrieve or list, not {shape!r}")
    return json_response(sb.store.all(res.name, retrieve=shape == "retrieve" and res.has(Verb.RETRIEVE)))


#: Fields of a nested object an edit accepts, by field of a contact.
_NESTED = {"email": {"email"}, "phone": {"extension", "number"}}
_OPT_IN_FIELDS = {"sms", "email", "enviroment"}
_CONTACTS = {opt_in.parent.name for opt_in in registry.OPT_INS}
_EDIT_REFS = {
    "city_id": "city",
    "contact_lifecycle_stage_id": "contact_lifecycle_stage",
    "contact_type_id": "contact_type",
    "lead_id": "lead",
    "audience_list_id": "audience_list",
}


def _edit_problem(sb: Sandbox, res: Resource, key: str, value: object) -> str | None:
    """Why field ``key`` of ``res`` cannot be set to ``value`` by an edit; None when it can."""
    served = set(sb.store.served_fields(res.name, schemas.record_schema(res)["properties"])) - {"id"}
    if key not in served:
        return f"unknown field {key}; editable: {', '.join(sorted(served))}"
    if res.name in _CONTACTS and (key in _NESTED or key.endswith("_opt_in")):
        allowed = _NESTED.get(key, _OPT_IN_FIELDS)
        ok = value is None or (isinstance(value, dict) and value.keys() <= allowed)
        return None if ok else f"field {key}: must be null or an object with {', '.join(sorted(allowed))}"
    if key == "custom_data":
        return None if value is None or _holds_json(value) else "field custom_data: must be null or a string of JSON"
    if key in _EDIT_REFS and value is not None:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"field {key}: must be an integer id or null"
        if not sb.store.exists(_EDIT_REFS[key], value):
            return f"field {key}: no {_EDIT_REFS[key]} with id {value}"
    return None


def _holds_json(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def _existing_id(sb: Sandbox, res: Resource, raw: str) -> int:
    if not raw.isdigit() or not sb.store.exists(res.name, int(raw)):
        raise ApiError(404, f"Not Found: no {res.name} with id {raw}")
    return int(raw)


@router.patch("/records/{resource_name}/{record_id}")
async def edit_record(request: Request, resource_name: str, record_id: str) -> Response:
    """Edit a record as a person does in Closum's UI; answers it as retrieve serves it."""
    sb, res = _resource(request, resource_name)
    body = await read_object(request)
    rid = _existing_id(sb, res, record_id)
    problems = [p for key, value in body.items() if (p := _edit_problem(sb, res, key, value)) is not None]
    if problems:
        raise ApiError(400, problems[0], problems)
    if not sb.store.edit(res.name, rid, body):
        raise ApiError(404, f"Not Found: no {res.name} with id {record_id}")
    record = sb.store.get(res.name, rid) if res.has(Verb.RETRIEVE) else None
    return json_response(record if record is not None else {"id": rid})


@router.delete("/records/{resource_name}/{record_id}")
async def delete_record(request: Request, resource_name: str, record_id: str) -> Response:
    """Delete a record as a person does in Closum's UI."""
    sb, res = _resource(request, resource_name)
    rid = _existing_id(sb, res, record_id)
    sb.store.delete(res.name, rid)
    return json_response({"success": True, "deleted": rid})
