"""Admin routes of the sandbox, under ``/_admin`` (no auth, never faulted).

- ``GET /_admin/health``: 200 ``{"status": "ok"}``.
- ``GET /_admin/requests[?path_prefix=/api/lead]``: the recorded ``/api``
  calls (last 200,000), each ``{method, path, query, status,
  after_write_fault, fault, time}``; ``DELETE /_admin/requests`` clears them.
- ``POST /_admin/reset`` ``{"seed": N}`` (optional, default the server's
  seed): wipe every record and seed again. Tokens, knobs and faults stay.
- ``GET /_admin/config``; ``PATCH /_admin/config`` with any of
  ``latency_ms``, ``fail_rate``, ``rate_limit``, ``max_page_size``,
  ``token_ttl``, ``fault_seed``: change runtime knobs; answers the config.
- ``GET /_admin/faults``: queued scripted faults; ``POST /_admin/faults``
  ``{"faults": [...]}`` appends (see :mod:`closum_sandbox.faults`);
  ``DELETE /_admin/faults`` clears.
- ``POST /_admin/tokens/revoke``: invalidate every token.
- ``POST /_admin/records/{resource_name}`` ``{"count": N}``: generate N more
  realistic records; answers ``{"ids": [...]}``.
- ``GET /_admin/records/{resource_name}``: every stored record as retrieve
  serves it (list shape for resources without retrieve).

Errors use the API's envelope ``{"success": false, "message": ...}``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from closum_api import registry
from closum_api.registry import Verb
from closum_sandbox import seed as seeding
from closum_sandbox.app import ApiError, json_response, read_json
from closum_sandbox.faults import normalize_fault
from closum_sandbox.settings import RUNTIME_KNOBS

router = APIRouter(prefix="/_admin", tags=["admin"])


def _sb(request: Request):
    return request.app.state.sandbox


async def _object(request: Request, allow_empty: bool = True) -> dict:
    raw = await request.body()
    if allow_empty and not raw.strip():
        return {}
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, "Bad Request: the body must be a JSON object")
    return body


@router.get("/health")
async def health() -> Response:
    return json_response({"status": "ok"})


@router.get("/requests")
async def list_requests(request: Request) -> Response:
    prefix = request.query_params.get("path_prefix")
    return json_response(_sb(request).log.list(prefix))


@router.delete("/requests")
async def clear_requests(request: Request) -> Response:
    _sb(request).log.clear()
    return json_response({"success": True})


@router.post("/reset")
async def reset(request: Request) -> Response:
    sb = _sb(request)
    body = await _object(request)
    seed = body.get("seed", sb.settings.seed)
    if seed is None:
        seed = sb.settings.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ApiError(400, f"field seed: must be an integer >= 0, not {seed!r}")
    sb.reset(seed)
    return json_response({"success": True, "seed": seed})


@router.get("/config")
async def get_config(request: Request) -> Response:
    return json_response(_sb(request).settings.runtime_config())


@router.patch("/config")
async def patch_config(request: Request) -> Response:
    sb = _sb(request)
    body = await _object(request, allow_empty=False)
    knobs = {**RUNTIME_KNOBS, "fault_seed": (int, 0)}
    for key, value in body.items():
        if key not in knobs:
            raise ApiError(400, f"unknown field {key}; changeable: {', '.join(knobs)}")
        kind, low = knobs[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            raise ApiError(400, f"field {key}: {value!r} is not a number")
        if value < low or (key == "fail_rate" and value > 1):
            raise ApiError(400, f"field {key}: {value!r} is out of range")
    for key, value in body.items():
        kind = knobs[key][0]
        setattr(sb.settings, key, kind(value))
        if key == "fault_seed":
            sb.faults.reseed(int(value))
    return json_response(sb.settings.runtime_config())


@router.get("/faults")
async def list_faults(request: Request) -> Response:
    return json_response(_sb(request).faults.scripted)


@router.post("/faults")
async def add_faults(request: Request) -> Response:
    sb = _sb(request)
    body = await _object(request, allow_empty=False)
    entries = body.get("faults")
    if not isinstance(entries, list):
        raise ApiError(400, "field faults: must be a list of fault objects")
    try:
        faults = [normalize_fault(e) for e in entries]
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    sb.faults.scripted.extend(faults)
    return json_response({"success": True, "queued": len(sb.faults.scripted)})


@router.delete("/faults")
async def clear_faults(request: Request) -> Response:
    _sb(request).faults.scripted.clear()
    return json_response({"success": True})


@router.post("/tokens/revoke")
async def revoke_tokens(request: Request) -> Response:
    return json_response({"success": True, "revoked": _sb(request).tokens.revoke_all()})


def _resource(request: Request, name: str):
    sb = _sb(request)
    try:
        res = registry.get(name)
    except KeyError:
        raise ApiError(404, f"Not Found: unknown resource {name!r}") from None
    if res.name not in sb.served_names:
        raise ApiError(404, f"Not Found: resource {res.name!r} is not served by revision {sb.settings.revision}")
    return sb, res


@router.post("/records/{resource_name}")
async def add_records(request: Request, resource_name: str) -> Response:
    sb, res = _resource(request, resource_name)
    body = await _object(request, allow_empty=False)
    count = body.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000_000:
        raise ApiError(400, f"field count: must be a positive integer, not {count!r}")
    try:
        ids = seeding.add_records(sb.store, res.name, count)
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    if len(ids) < count:
        raise ApiError(400, f"cannot generate {res.name} records: what they refer to does not exist")
    return json_response({"ids": ids})


@router.get("/records/{resource_name}")
async def all_records(request: Request, resource_name: str) -> Response:
    sb, res = _resource(request, resource_name)
    return json_response(sb.store.all(res.name, retrieve=res.has(Verb.RETRIEVE)))
