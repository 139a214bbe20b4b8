"""The FastAPI application of the sandbox: ``create_app(settings)``.

Routes under ``/api`` are generated from :mod:`closum_api.registry` for the
revisions the server answers as: list, create, retrieve and update where the
resource has the verb, and a 405 for every other method on the same paths.
A resource of the other revision is not routed at all, so it answers 404.
The V2 API's routes, under ``/v2``, are :mod:`closum_sandbox.v2`'s.

Responses use the service's envelopes: ``{"success": true, "data": ...}``
(lists add ``pagination`` with ``limit`` always ``null``) and
``{"success": false, "message": "<one line>"}`` for every error, including
malformed JSON and validation errors (400, never FastAPI's 422).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from closum_api import schemas
from closum_api.registry import Resource, Revision, Verb
from closum_sandbox.admin import router as admin_router
from closum_sandbox.faults import FaultMiddleware, quiet_dropped_connections
from closum_sandbox.guard import BodyLimitMiddleware
from closum_sandbox.responses import (
    DEFAULT_LIMIT,
    NOT_AN_OBJECT,
    STATUS_TEXT,
    ApiError,
    error_response,
    json_response,
    positive_int,
    read_json,
    read_object,
)
from closum_sandbox.settings import Settings
from closum_sandbox.state import Sandbox, sandbox_of
from closum_sandbox.v2 import add_v2_routes

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from closum_api.schemas import JsonValue

    _Handler = Callable[[Request], Awaitable[Response]]

ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# ---- handlers ----------------------------------------------------------
async def token_endpoint(request: Request) -> Response:
    """Exchange ``api_username`` and ``api_pw`` for a bearer token.

    Args:
        request: the request; its body is ``{"api_username": ..., "api_pw": ...}``.

    Returns:
        ``{"success": true, "data": {"token", "expires_in", "expiration_date"}}``.

    Raises:
        ApiError: 400 for a malformed body, 401 for wrong credentials.
    """
    sb = sandbox_of(request)
    body = await read_object(request)
    for key in ("api_username", "api_pw"):
        if not isinstance(body.get(key), str):
            raise ApiError(400, f"Bad Request: missing required field {key}")
    if body["api_username"] != sb.settings.username or body["api_pw"] != sb.settings.password:
        raise ApiError(401, "Unauthorized: wrong api_username or api_pw")
    ttl = sb.settings.token_ttl
    token, expires = sb.tokens.issue(ttl)
    expiration = datetime.fromtimestamp(int(expires), timezone.utc).isoformat()
    ttl_out = int(ttl) if float(ttl).is_integer() else ttl
    return json_response(
        {"success": True, "data": {"token": token, "expires_in": ttl_out, "expiration_date": expiration}}
    )


#: the page count a list announces under ``pagination_lie: page_count``
LIED_PAGE_COUNT = 1_000_000


def _make_list(res: Resource) -> _Handler:
    fields = list(schemas.record_schema(res)["properties"])

    async def list_records(request: Request) -> Response:
        sb = sandbox_of(request)
        sb.check_auth(request)
        q = request.query_params
        limit = min(positive_int(q, "limit", DEFAULT_LIMIT), sb.settings.max_page_size)
        page = positive_int(q, "page", 1)
        sort = q.get("sort", "id")
        allowed = sb.store.served_fields(res.name, fields)
        if sort not in allowed:
            raise ApiError(400, f"Bad Request: cannot sort by {sort!r}; sort by one of: {', '.join(allowed)}")
        direction = q.get("direction", "asc").lower()
        if direction not in ("asc", "desc"):
            raise ApiError(400, f"Bad Request: direction must be asc or desc, not {q.get('direction')!r}")
        data, count = sb.store.page(res.name, sort, limit, page, desc=direction == "desc")
        page_count = max(1, math.ceil(count / limit))
        has_next = page < page_count
        lie = sb.settings.pagination_lie
        if lie == "page_count":
            page_count, has_next = LIED_PAGE_COUNT, True
        elif lie == "repeat_last":
            has_next = True
            if not data and count:
                data, _ = sb.store.page(res.name, sort, limit, math.ceil(count / limit), desc=direction == "desc")
        pagination = {
            "page_count": page_count,
            "current_page": page,
            "has_next_page": has_next,
            "has_prev_page": page > 1,
            "count": count,
            "limit": None,
        }
        return json_response({"success": True, "data": data, "pagination": pagination})

    list_records.__doc__ = f"List {res.stream_name.replace('_', ' ')} (query: limit, page, sort, direction)."
    return list_records


def _record_id(request: Request, sb: Sandbox, res: Resource) -> int:
    raw = request.path_params["record_id"]
    if not raw.isdigit() or not sb.store.exists(res.name, int(raw)):
        raise ApiError(404, f"Not Found: no {res.name} with id {raw}")
    return int(raw)


def _make_retrieve(res: Resource) -> _Handler:
    async def retrieve_record(request: Request) -> Response:
        sb = sandbox_of(request)
        sb.check_auth(request)
        raw = request.path_params["record_id"]
        record = sb.store.get(res.name, int(raw), opt_in=sb.settings.opt_ins_on_retrieve) if raw.isdigit() else None
        if record is None:
            raise ApiError(404, f"Not Found: no {res.name} with id {raw}")
        return json_response({"success": True, "data": record})

    retrieve_record.__doc__ = f"Retrieve one {res.name.replace('_', ' ')}."
    return retrieve_record


def _valid_body(sb: Sandbox, res: Resource, body: JsonValue) -> dict[str, Any]:
    """The body of a create or update, once the payload schema and this revision accept it.

    Raises:
        ApiError: 400 listing every problem found.
    """
    errors = schemas.payload_errors(res, body)
    if not isinstance(body, dict):  # the payload schemas refuse it already; this tells the type checker
        raise ApiError(400, errors[0] if errors else NOT_AN_OBJECT, errors or None)
    if not errors and res.name == "lead":
        if "city_id" in body and Revision.R2019 not in sb.settings.revisions:
            errors.append("unknown field city_id")
        if "contact_lifecycle_stage_id" in body and Revision.R2021 not in sb.settings.revisions:
            errors.append("unknown field contact_lifecycle_stage_id")
    if not errors and isinstance(body.get("custom_data"), str):
        try:
            json.loads(body["custom_data"])
        except ValueError:
            errors.append("field custom_data: must be a string holding JSON")
    if errors:
        raise ApiError(400, errors[0], errors)
    return body


def _check_refs(sb: Sandbox, body: dict[str, Any], refs: dict[str, str]) -> None:
    for field, table in refs.items():
        value = body.get(field)
        if value is not None and not sb.store.exists(table, int(value)):
            raise ApiError(400, f"field {field}: no {table} with id {value}")


_REFS = {
    "lead": {"city_id": "city", "contact_lifecycle_stage_id": "contact_lifecycle_stage"},
    "unqualified_lead": {"contact_type_id": "contact_type"},
    "lead_audience_list": {"lead_id": "lead", "audience_list_id": "audience_list"},
}


def _create_contact(sb: Sandbox, res: Resource, body: dict[str, Any]) -> int:
    store = sb.store
    now = _now()
    with store.lock:
        rid = store.reserve_ids(res.name, 1)
        values: dict[str, Any] = {"id": rid, "name": body.get("name"), "creation_date": now}
        if "email" in body:
            values["email_id"] = store.insert(
                "email", {"email": body["email"]["email"], "status": 1, "register_date": now}
            )
        if "phone" in body:
            phone = body["phone"]
            values["phone_id"] = store.insert(
                "phone",
                {"extension": phone.get("extension"), "number": phone["number"], "is_valid": 1, "date_add": now},
            )
        opt_key = f"{res.name}_opt_in"
        if opt_key in body:
            opt = body[opt_key]
            values["opt_in"] = json.dumps(
                {
                    "id": rid,
                    f"{res.name}_id": rid,
                    "sms": opt.get("sms"),
                    "email": opt.get("email"),
                    "enviroment": opt.get("enviroment"),
                    "creation_date": now,
                },
                ensure_ascii=False,
            )
        if res.name == "lead":
            values["city_id"] = body.get("city_id")
            values["contact_lifecycle_stage_id"] = body.get("contact_lifecycle_stage_id")
            values["custom_data"] = body.get("custom_data")
        else:
            ct = body.get("contact_type_id")
            values["contact_type_id"] = None if ct is None else int(ct)
        return store.insert(res.name, values)


def _make_create(res: Resource) -> _Handler:
    async def create_record(request: Request) -> Response:
        sb = sandbox_of(request)
        sb.check_auth(request)
        body = _valid_body(sb, res, await read_json(request))
        _check_refs(sb, body, _REFS.get(res.name, {}))
        if res.name in ("lead", "unqualified_lead"):
            rid = _create_contact(sb, res, body)
        else:
            now = _now()
            values = dict(body)
            values.pop("id", None)
            if res.name == "email":
                values |= {"status": 1, "register_date": now}
            elif res.name == "phone":
                values |= {"is_valid": 1, "date_add": now}
            else:
                values["creation_date"] = now
            rid = sb.store.insert(res.name, values)
        return json_response({"success": True, "data": {"id": rid}})

    create_record.__doc__ = f"Create a {res.name.replace('_', ' ')}; answers its id."
    return create_record


def _make_update(res: Resource) -> _Handler:
    async def update_record(request: Request) -> Response:
        sb = sandbox_of(request)
        sb.check_auth(request)
        raw_body = await read_json(request)
        rid = _record_id(request, sb, res)
        body = _valid_body(sb, res, raw_body)
        if "id" in body and body["id"] != rid:
            raise ApiError(400, f"field id: {body['id']!r} does not match the id {rid} in the URL")
        values = {k: v for k, v in body.items() if k != "id"}
        sb.store.update(res.name, rid, values)
        return json_response({"success": True, "data": []})

    update_record.__doc__ = f"Update a {res.name.replace('_', ' ')}; answers an empty list."
    return update_record


def _make_not_allowed(allowed: list[str]) -> _Handler:
    allow = ", ".join(allowed) or "none"

    async def not_allowed(request: Request) -> Response:
        return error_response(
            405,
            f"Method Not Allowed: {request.method} {request.url.path} (allowed: {allow})",
            headers={"Allow": ", ".join(allowed)},
        )

    return not_allowed


def _payload_doc(res: Resource) -> dict[str, Any]:
    schema = schemas.payload_schema(res)
    schema.pop("$schema", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_resource_routes(app: FastAPI, res: Resource) -> None:
    """Add the routes of one resource, from its registry entry.

    Args:
        app: the application.
        res: the resource.
    """
    tag = res.stream_name
    list_paths = [f"/api{res.list_path}"] + ([f"/api/{res.path}"] if res.list_path_suffix else [])
    item_path = f"/api/{res.path}/{{record_id}}"
    coll = {"GET": (Verb.LIST, _make_list), "POST": (Verb.CREATE, _make_create)}
    item = {"GET": (Verb.RETRIEVE, _make_retrieve), "PUT": (Verb.UPDATE, _make_update)}
    for paths, verbs in ((list_paths, coll), ([item_path], item)):
        allowed = [m for m, (v, _) in verbs.items() if res.has(v)]
        for i, path in enumerate(paths):
            for method, (verb, factory) in verbs.items():
                if res.has(verb):
                    extra = _payload_doc(res) if method in ("POST", "PUT") else None
                    app.add_api_route(
                        path,
                        factory(res),
                        methods=[method],
                        tags=[tag],
                        openapi_extra=extra,
                        include_in_schema=i == 0,
                        name=f"{verb.value}_{res.name}_{i}",
                    )
            others = [m for m in ALL_METHODS if m not in allowed]
            app.add_api_route(
                path,
                _make_not_allowed(allowed),
                methods=others,
                include_in_schema=False,
                name=f"not_allowed_{res.name}_{path}",
            )


# ---- app ---------------------------------------------------------------
def create_app(settings: Settings | None = None) -> FastAPI:
    """A ready sandbox application (seeded, unless its database already is).

    Args:
        settings: the server's knobs (default: :class:`Settings` defaults).

    Returns:
        The application; its :class:`Sandbox` is ``app.state.sandbox``.
    """
    settings = settings or Settings()
    sandbox = Sandbox(settings)
    app = FastAPI(
        title="Closum sandbox",
        description="A local Closum-compatible API server. Get a token at POST /api/token "
        f"(revision {settings.revision}); the V2 API under /v2 takes ?api-key=. Admin routes are under /_admin.",
        version="1.0",
        redirect_slashes=False,
    )
    app.state.sandbox = sandbox

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, exc.errors, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        message = (
            STATUS_TEXT.get(exc.status_code, str(exc.detail))
            if exc.detail in (None, "", "Not Found", "Method Not Allowed")
            else str(exc.detail)
        )
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        lines = [
            f"field {'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        ]
        return error_response(400, lines[0] if lines else "Bad Request", lines)

    @app.exception_handler(Exception)
    async def _crash(_request: Request, _exc: Exception) -> Response:
        return error_response(500, STATUS_TEXT[500])

    app.add_api_route(
        "/api/token",
        token_endpoint,
        methods=["POST"],
        tags=["auth"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["api_username", "api_pw"],
                            "properties": {"api_username": {"type": "string"}, "api_pw": {"type": "string"}},
                        }
                    }
                },
            }
        },
    )
    app.add_api_route(
        "/api/token", _make_not_allowed(["POST"]), methods=["GET", "PUT", "PATCH", "DELETE"], include_in_schema=False
    )
    for res in sandbox.resources:
        add_resource_routes(app, res)
    add_v2_routes(app)

    app.include_router(admin_router)
    app.add_middleware(FaultMiddleware, faults=sandbox.faults, log=sandbox.log)
    # Added last, so outermost: a body too large is refused before any other work.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    quiet_dropped_connections()
    return app
