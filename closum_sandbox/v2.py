"""The sandbox's V2 API: ``POST /v2/lead/add/`` and ``GET /v2/lead/``, the key in the ``api-key`` query parameter.

What Closum's V2 documentation says is enforced strictly (as stripe-mock does
for Stripe's): the key (401 when missing or wrong), the body's fields and
types (:file:`schemas/payloads/contact.json`: ``consent_email`` and
``consent_sms`` required booleans, ``email`` or ``mobile_number``,
``contact_lifecycle_stage_id`` 1 to 9 and existing, ``birth_date`` a real
``Y-m-d`` date, ``custom_fields`` an object, no unknown field). What it does
not say, the sandbox decides, and docs/sandbox.md lists each choice:

- ``mobile_number`` must be E.164 and a possible number (``phonenumbers``);
- ``tags`` a list of names (or an object of numbered keys, the documented
  ``tags[N]`` form in JSON); ``custom_data`` a string holding JSON, or an object;
- an existing lead is the oldest with the same email (case-insensitive), else
  with the same mobile number. ``update_enabled: true`` updates it (fields
  given replace the stored ones, tags and custom fields are added to them);
  without it, the add is refused with 400 (public clients set it "to avoid
  errors if the lead already exists");
- the answer's shape is the ``lead_add_answer`` knob; errors are
  ``{"status": false, "message": ..., "errors": [...]}``;
- the list is the sandbox's own: V1's paging (``limit``, ``page``) over every
  lead, oldest first, each in the flat lead/add shape (:file:`schemas/records/contact.json`).

A lead written here is a lead of the V1 API too (same store): its email and
phone are rows of ``/api/email`` and ``/api/phone`` (the phone split as V1
has it, extension ``00351`` and the national number), its consents its
opt-in's ``email`` and ``sms``.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import phonenumbers
from fastapi import FastAPI, Request
from fastapi.responses import Response

from closum_api import registry, schemas
from closum_api.redact import KEY_PARAM
from closum_sandbox.responses import DEFAULT_LIMIT, STATUS_TEXT, ApiError, json_response, positive_int, read_json
from closum_sandbox.state import sandbox_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from closum_sandbox.state import Sandbox

#: the V2 resource the sandbox serves
CONTACT = registry.get("contact")
PREFIX = "/v2"
ADD_PATH = PREFIX + CONTACT.create_path
LIST_PATH = PREFIX + CONTACT.list_path
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _error(exc: ApiError) -> Response:
    body: dict[str, Any] = {"status": False, "message": exc.message}
    if exc.errors:
        body["errors"] = exc.errors
    return json_response(body, exc.status, exc.headers)


def _v2(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """The handler, its errors answered in the V2 envelope."""

    async def answer(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(exc)

    answer.__doc__ = handler.__doc__
    return answer


def check_key(request: Request, sb: Sandbox) -> None:
    """Refuse a request without the sandbox's api-key (never echoing what came).

    Raises:
        ApiError: 401.
    """
    key = request.query_params.get(KEY_PARAM)
    if not key:
        raise ApiError(401, f"Unauthorized: missing {KEY_PARAM} query parameter")
    if key != sb.settings.api_key:
        raise ApiError(401, f"Unauthorized: invalid {KEY_PARAM}")


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _problems(sb: Sandbox, body: dict[str, Any]) -> list[str]:
    """What the payload schema cannot check: JSON in custom_data, a possible phone, an existing stage."""
    problems = []
    data = body.get("custom_data")
    if isinstance(data, str):
        try:
            json.loads(data)
        except ValueError:
            problems.append("field custom_data: must be a string holding JSON, or an object")
    mobile = body.get("mobile_number")
    if isinstance(mobile, str):
        try:
            possible = phonenumbers.is_valid_number(phonenumbers.parse(mobile, None))
        except phonenumbers.NumberParseException:
            possible = False
        if not possible:
            problems.append(f"field mobile_number: {mobile!r} is not a valid phone number")
    stage = body.get("contact_lifecycle_stage_id")
    if isinstance(stage, int) and not sb.store.exists("contact_lifecycle_stage", stage):
        problems.append(f"field contact_lifecycle_stage_id: no contact lifecycle stage with id {stage}")
    return problems


def _tags(value: object) -> list[str]:
    """Tag names of a list or of the ``tags[N]`` object, in order, each once (case-insensitively)."""
    if isinstance(value, dict):
        items = [value[k] for k in sorted(value, key=int)]
    else:
        items = list(value) if isinstance(value, list) else []
    names: list[str] = []
    for item in items:
        if isinstance(item, str) and item.strip() and item.strip().casefold() not in {n.casefold() for n in names}:
            names.append(item.strip())
    return names


def _existing(sb: Sandbox, body: dict[str, Any]) -> int | None:
    """The lead the body names: by email, else by mobile number."""
    if isinstance(body.get("email"), str):
        found = sb.store.lead_with_email(body["email"])
        if found is not None:
            return found
    if isinstance(body.get("mobile_number"), str):
        number = phonenumbers.parse(body["mobile_number"], None)
        return sb.store.lead_with_phone(str(number.country_code), str(phonenumbers.national_significant_number(number)))
    return None


def _lead_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the store's fields of a lead (nested email, phone and opt-in, as V1 has them)."""
    fields: dict[str, Any] = {}
    if "name" in body:
        fields["name"] = body["name"]
    if "email" in body:
        fields["email"] = {"email": body["email"].strip()}
    if "mobile_number" in body:
        number = phonenumbers.parse(body["mobile_number"], None)
        fields["phone"] = {
            "extension": f"00{number.country_code}",
            "number": phonenumbers.national_significant_number(number),
        }
    fields["lead_opt_in"] = {"email": body["consent_email"], "sms": body["consent_sms"]}
    if "contact_lifecycle_stage_id" in body:
        fields["contact_lifecycle_stage_id"] = body["contact_lifecycle_stage_id"]
    if "custom_data" in body:
        data = body["custom_data"]
        fields["custom_data"] = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return fields


def _write_v2_fields(sb: Sandbox, lead_id: int, body: dict[str, Any]) -> None:
    """Tags and custom fields added to what the lead has; the birth date replaced when given."""
    store = sb.store
    with store.lock:
        sql = "SELECT tags, custom_fields, birth_date FROM lead_v2 WHERE id = ?"
        row = store.conn.execute(sql, (lead_id,)).fetchone()
        tags = json.loads(row["tags"]) if row is not None and row["tags"] else []
        custom = json.loads(row["custom_fields"]) if row is not None and row["custom_fields"] else {}
        values = {
            "tags": json.dumps(_tags(tags + _tags(body.get("tags"))), ensure_ascii=False),
            "custom_fields": json.dumps(custom | body.get("custom_fields", {}), ensure_ascii=False),
            "birth_date": body.get("birth_date", row["birth_date"] if row is not None else None),
        }
        if row is None:
            store.insert("lead_v2", {"id": lead_id} | values)
        else:
            store.update("lead_v2", lead_id, values)


def _answer(sb: Sandbox, lead_id: int, body: dict[str, Any], *, updated: bool) -> Response:
    message = "Lead updated" if updated else "Lead added"
    shape = sb.settings.lead_add_answer
    if shape == "status":
        return json_response({"status": True, "message": message})
    if shape == "success_lead_id":
        return json_response({"success": True, "data": {"lead_id": lead_id}})
    if shape == "unknown":
        return json_response({"result": "ok", "lead": {"id": lead_id, "email": body.get("email")}})
    return json_response({"status": True, "message": message, "data": {"id": lead_id}})


async def lead_add(request: Request) -> Response:
    """Add a lead (V2): the body of the V2 documentation; ``update_enabled`` updates the lead it names."""
    sb = sandbox_of(request)
    check_key(request, sb)
    body = await read_json(request)
    errors = schemas.payload_errors(CONTACT, body)
    if not isinstance(body, dict):  # the schema refuses it already; this tells the type checker
        raise ApiError(400, errors[0] if errors else "Bad Request: the body must be a JSON object", errors or None)
    errors = errors or _problems(sb, body)
    if errors:
        raise ApiError(400, errors[0], errors)
    store = sb.store
    with store.lock:  # one lead per email, even for adds that arrive together
        lead_id = _existing(sb, body)
        if lead_id is not None and body.get("update_enabled") is not True:
            msg = f"Bad Request: a lead with this email or mobile number already exists (id {lead_id})"
            raise ApiError(400, msg, [msg, "send update_enabled: true to update it"])
        updated = lead_id is not None
        if lead_id is None:
            lead_id = store.insert("lead", {"creation_date": _now()})
            store.edit("lead", lead_id, {"lead_opt_in": {"enviroment": None}})
        store.edit("lead", lead_id, _lead_fields(body))
        _write_v2_fields(sb, lead_id, body)
    return _answer(sb, lead_id, body, updated=updated)


async def lead_list(request: Request) -> Response:
    """List leads (V2; the sandbox's own shape and paging: ``limit``, ``page``), oldest first."""
    sb = sandbox_of(request)
    check_key(request, sb)
    limit = min(positive_int(request.query_params, "limit", DEFAULT_LIMIT), sb.settings.max_page_size)
    page = positive_int(request.query_params, "page", 1)
    data, count = sb.store.v2_page(limit, page)
    page_count = max(1, math.ceil(count / limit))
    pagination = {
        "page_count": page_count,
        "current_page": page,
        "has_next_page": page < page_count,
        "has_prev_page": page > 1,
        "count": count,
        "limit": limit,
    }
    return json_response({"status": True, "data": data, "pagination": pagination})


def _not_allowed(allowed: str) -> Callable[[Request], Awaitable[Response]]:
    async def not_allowed(request: Request) -> Response:
        msg = f"{STATUS_TEXT[405]} ({request.method} {request.url.path}; allowed: {allowed})"
        return _error(ApiError(405, msg, headers={"Allow": allowed}))

    return not_allowed


def add_v2_routes(app: FastAPI) -> None:
    """Add the V2 routes (each path answers 405 to the methods it does not have).

    Args:
        app: the application.
    """
    payload = schemas.payload_schema(CONTACT)
    payload.pop("$schema", None)
    body_doc = {"requestBody": {"required": True, "content": {"application/json": {"schema": payload}}}}
    for path, method, handler, extra in (
        (ADD_PATH, "POST", lead_add, body_doc),
        (LIST_PATH, "GET", lead_list, None),
    ):
        app.add_api_route(path, _v2(handler), methods=[method], tags=["v2"], openapi_extra=extra)
        others = [m for m in _METHODS if m != method]
        app.add_api_route(path, _not_allowed(method), methods=others, include_in_schema=False)
