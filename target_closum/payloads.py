"""Turn an input record into the body Closum wants, per resource.

What happens to a record, in order:

- Singer metadata (``_sdc_*``) and read-only fields are dropped: the
  registry's ``read_only`` list for the resource (``id`` among them; the id of
  an update travels in the URL) plus the served-only ``creation_date``,
  ``register_date``, ``date_add``, ``is_valid`` and ``status``; nested ``id``
  inside ``email``/``phone``/opt-ins; the opt-in's ``lead_id`` /
  ``unqualified_lead_id`` / ``creation_date``.
- Null values are dropped (a null is the same as an absent field to Closum).
- Surrounding whitespace of an email address is trimmed (before validation,
  matching and sending): a CRM export's " Ana@Example.com " is valid.
- Nested ``email`` / ``phone`` / ``lead_opt_in`` / ``unqualified_lead_opt_in``
  are shaped as the API wants: a plain string ``email`` becomes
  ``{"email": ...}`` (and a plain ``phone`` ``{"number": ...}``); a JSON string
  ``enviroment`` (the service's spelling, passed through) is parsed to an object.
- Integer ids given as digit strings (``contact_type_id: "1"``) are sent as
  integers. Phone ``extension``/``number`` stay strings: ``"001"`` keeps its zeros.
- ``custom_data`` given as an object or list is JSON-encoded to a string.
- The stream's key properties that Closum does not know are dropped (they
  key the ledger).
- Any other field is kept, so the payload validation names it and the record
  is rejected rather than silently changed.

- A contact's ``phone`` given as one string is parsed (:mod:`target_closum.phones`,
  in ``default_phone_region``) and sent split as the reference's examples have it,
  ``{"extension": "00351", "number": "912345678"}``; a phone given as an object is sent as given.
- A V2 contact (``contact``, Closum's ``lead/add``) is flat: its email trimmed and
  case-folded, ``mobile_number`` parsed and sent in E.164, ``consent_email`` and
  ``consent_sms`` as booleans (``"true"``, ``"yes"``, ``1``... read as such; a
  missing one takes ``default_consent_email``/``default_consent_sms`` when set,
  else the record is refused), ``tags`` a list of names (given as a list, or one
  string separated by ``;`` or ``,``), ``custom_fields`` an object (or a string
  holding one), and ``birth_date`` a ``Y-m-d`` date (a timestamp's date part).
  (Its ``update_enabled`` is the setting's, added as it is sent: it is not the contact's data.)

Which shaping a resource gets is its :attr:`target_closum.rules.Rules.shape`; the
settings it reads are a :class:`PayloadOptions`. A record that cannot be shaped
raises :class:`PayloadError`, whose message is the reject's reason.
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import json
import math
import re
import typing as t
from dataclasses import dataclass

from closum_api import registry
from closum_api.schemas import payload_errors, payload_schema
from target_closum.phones import DEFAULT_REGION, PhoneError, parse
from target_closum.rules import Shape, rules_for

if t.TYPE_CHECKING:
    from closum_api.registry import Resource

# Served by Closum on some resource, never accepted in a body.
SERVED_ONLY = frozenset({"creation_date", "register_date", "date_add", "is_valid", "status"})
OPT_IN_READ_ONLY = frozenset({"id", "lead_id", "unqualified_lead_id", "creation_date"})
INTEGER_FIELDS = frozenset({"contact_type_id", "city_id", "contact_lifecycle_stage_id", "lead_id", "audience_list_id"})
#: The field of a contact's payload holding its opt-in (``lead_opt_in``), from the registry.
OPT_IN_KEY = {opt_in.parent.name: opt_in.name for opt_in in registry.OPT_INS}
#: A V2 contact's consent flags, and the setting that gives each a default.
CONSENTS = {"consent_email": "default_consent_email", "consent_sms": "default_consent_sms"}
_TRUE_WORDS = frozenset({"true", "yes", "y", "1", "sim", "s"})
_FALSE_WORDS = frozenset({"false", "no", "n", "0", "não", "nao"})
_NAME_SEPARATORS = re.compile(r"[;,]")
_TIMESTAMP_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})[T ]")


class PayloadError(ValueError):
    """A record that cannot be made into a payload; the message is the reject's reason."""


@dataclass(frozen=True)
class PayloadOptions:
    """The settings that shape payloads.

    Attributes:
        phone_region: the region of phone numbers written without a country code (``default_phone_region``).
        consent_email: a V2 contact's ``consent_email`` when its record has none (None: the record is refused).
        consent_sms: the same for ``consent_sms``.
    """

    phone_region: str = DEFAULT_REGION
    consent_email: bool | None = None
    consent_sms: bool | None = None


DEFAULT_OPTIONS = PayloadOptions()


def json_default(value: object) -> object:
    """How ``json.dumps`` writes what JSON has no type for: a Decimal as a number, anything else as text."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def canonical_json(value: object) -> str:
    """Compact JSON with sorted keys: the same data always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=json_default)


def pk_key(values: t.Sequence[object]) -> str:
    """The ledger key of a record known by its primary key values (``pk:[7]``).

    Args:
        values: the key properties' values, in the stream's key order.

    Returns:
        The key, the same text for the same values wherever it is built.
    """
    return "pk:" + canonical_json(list(values))


def payload_hash(payload: t.Mapping[str, t.Any]) -> str:
    """The SHA-256 of the payload's canonical JSON: equal payloads, equal hashes."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def _as_int(value: object) -> object:
    """``"1"`` → 1, ``1.0`` → 1; anything else unchanged (validation decides)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, (float, decimal.Decimal)) and value == int(value):
        return int(value)
    return value


def _as_text(value: object) -> object:
    """Numbers given for phone parts become text; strings are never touched."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, decimal.Decimal)) or (isinstance(value, float) and value == int(value)):
        return str(int(value))
    return value


def _drop_nulls(obj: dict[str, t.Any]) -> dict[str, t.Any]:
    return {k: v for k, v in obj.items() if v is not None}


def _trimmed(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _email_object(value: object) -> object:
    if isinstance(value, str):
        return {"email": value.strip()}
    if isinstance(value, t.Mapping):
        obj = _drop_nulls({k: v for k, v in value.items() if k != "id"})
        if "email" in obj:
            obj["email"] = _trimmed(obj["email"])
        return obj or None
    return value


def _phone_object(value: object) -> object:
    # A phone typed as one string was parsed before (_shape_lead): only objects and what cannot be one reach here.
    if isinstance(value, t.Mapping):
        obj = _drop_nulls({k: v for k, v in value.items() if k != "id"})
        for part in ("extension", "number"):
            if part in obj:
                obj[part] = _as_text(obj[part])
        return obj or None
    return value


def _opt_in_object(value: object) -> object:
    if isinstance(value, str):
        value = _parse_json(value)
    if not isinstance(value, t.Mapping):
        return value
    obj = _drop_nulls({k: v for k, v in value.items() if k not in OPT_IN_READ_ONLY})
    env = obj.get("enviroment")
    if isinstance(env, str):
        obj["enviroment"] = _parse_json(env)
    if isinstance(obj.get("enviroment"), t.Mapping):
        obj["enviroment"] = _drop_nulls(dict(obj["enviroment"]))
    return obj or None


def _parse_json(text: str) -> object:
    """A JSON string parsed; the text itself when it is not JSON (validation then says so)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@functools.cache
def _payload_fields(resource_name: str) -> frozenset[str]:
    return frozenset(payload_schema(registry.get(resource_name)).get("properties", {}))


def build_payload(
    resource: Resource,
    record: t.Mapping[str, t.Any],
    key_properties: t.Iterable[str] = (),
    *,
    options: PayloadOptions = DEFAULT_OPTIONS,
) -> dict[str, t.Any]:
    """The request body for ``resource`` built from an input record (never the id).

    ``key_properties`` the payload schema does not know (a CSV's own key column)
    are dropped too: they serve as the ledger key, not as data for Closum.

    Raises:
        PayloadError: the record cannot be shaped (an impossible phone number, a V2 contact without consent).
    """
    known = _payload_fields(resource.name)
    drop = SERVED_ONLY | set(resource.read_only) | {"id"} | (set(key_properties) - known)
    payload: dict[str, t.Any] = {}
    for key, value in record.items():
        if key.startswith("_sdc_") or key in drop or value is None:
            continue
        payload[key] = value

    shape = _SHAPERS.get(rules_for(resource).shape)
    if shape is not None:
        shape(resource, payload, options)
    for key in INTEGER_FIELDS & payload.keys():
        payload[key] = _as_int(payload[key])
    return {k: v for k, v in payload.items() if v is not None}


def _shape_lead(resource: Resource, payload: dict[str, t.Any], options: PayloadOptions) -> None:
    """Nested email, phone and opt-in as the API wants them; custom_data as a JSON string."""
    if "email" in payload:
        payload["email"] = _email_object(payload["email"])
    if isinstance(payload.get("phone"), (str, int)) and not isinstance(payload["phone"], bool):
        try:
            phone = parse(payload["phone"], options.phone_region)
        except PhoneError as exc:
            raise PayloadError(str(exc)) from None
        payload["phone"] = {"extension": phone.extension, "number": phone.national}
    elif "phone" in payload:
        payload["phone"] = _phone_object(payload["phone"])
    opt_key = OPT_IN_KEY[resource.name]
    if opt_key in payload:
        payload[opt_key] = _opt_in_object(payload[opt_key])
    if isinstance(payload.get("custom_data"), (t.Mapping, list)):
        payload["custom_data"] = json.dumps(payload["custom_data"], ensure_ascii=False, default=json_default)


def _plain_email(value: object) -> object:
    """An email given as ``{"email": ...}`` (a lead's nested shape) as the plain address, trimmed."""
    if isinstance(value, t.Mapping) and set(value) - {"id"} == {"email"}:
        value = value["email"]
    return _trimmed(value)


def _shape_email(_resource: Resource, payload: dict[str, t.Any], _options: PayloadOptions) -> None:
    """An email given as ``{"email": ...}`` (a lead's nested shape) becomes the plain address."""
    if "email" in payload:
        payload["email"] = _plain_email(payload["email"])


def _shape_phone(_resource: Resource, payload: dict[str, t.Any], _options: PayloadOptions) -> None:
    """Phone parts given as numbers become text."""
    for part in ("extension", "number"):
        if part in payload:
            payload[part] = _as_text(payload[part])


def _shape_contact_v2(_resource: Resource, payload: dict[str, t.Any], options: PayloadOptions) -> None:
    """A V2 contact: flat fields as lead/add takes them (see the module's docstring).

    Raises:
        PayloadError: an impossible phone number, tags that are not names, or a consent flag missing without default.
    """
    email = _plain_email(payload.get("email"))
    if isinstance(email, str):
        payload["email"] = email.casefold()
    if "mobile_number" in payload:
        try:
            payload["mobile_number"] = parse(payload["mobile_number"], options.phone_region, field="mobile_number").e164
        except PhoneError as exc:
            raise PayloadError(str(exc)) from None
    _consents(payload, options)
    if "tags" in payload:
        tags = _tag_names(payload["tags"])
        if tags is None:
            msg = "field tags: give a list of names, or one string of names separated by ; or ,"
            raise PayloadError(msg)
        payload["tags"] = tags or None
    if isinstance(payload.get("custom_fields"), str):
        payload["custom_fields"] = _parse_json(payload["custom_fields"])
    if isinstance(payload.get("custom_data"), (t.Mapping, list)):
        payload["custom_data"] = json.dumps(payload["custom_data"], ensure_ascii=False, default=json_default)
    birth = payload.get("birth_date")
    if isinstance(birth, str):
        day = _TIMESTAMP_DATE.match(birth.strip())
        payload["birth_date"] = day.group(1) if day else birth.strip()


def _consents(payload: dict[str, t.Any], options: PayloadOptions) -> None:
    """Both consent flags as booleans, a missing one its default.

    Raises:
        PayloadError: one is missing and has no default.
    """
    missing = []
    for field, setting in CONSENTS.items():
        if field in payload:
            payload[field] = _as_bool(payload[field])
            continue
        default = options.consent_email if field == "consent_email" else options.consent_sms
        if default is None:
            missing.append((field, setting))
        else:
            payload[field] = default
    if missing:
        fields = " and ".join(f for f, _ in missing)
        settings = " and ".join(s for _, s in missing)
        msg = (
            f"missing required field {fields}: Closum's V2 API needs each contact's consent (true or false); "
            f"give it in the record, or set {settings}"
        )
        raise PayloadError(msg)


def _as_bool(value: object) -> object:
    """``"yes"``, ``"true"``, ``1`` → True; ``"no"``, ``"false"``, ``0`` → False; anything else unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, decimal.Decimal)) and value in {0, 1}:
        return bool(value)
    if isinstance(value, str):
        word = value.strip().casefold()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return value


def split_names(value: object, *, clean: t.Callable[[str], str], key: t.Callable[[str], object]) -> list[str] | None:
    """The names of a list, or of a string separated by ``;`` or ``,``; None when ``value`` is not names.

    Args:
        value: a list of names (strings or numbers; None items passed over), or one string.
        clean: how a name is tidied (an empty one is dropped).
        key: what two names are the same by: each is kept once, the first time.
    """
    if isinstance(value, str):
        items: list[object] = list(_NAME_SEPARATORS.split(value))
    elif isinstance(value, list):
        items = list(value)
    else:
        return None
    names: list[str] = []
    seen: set[object] = set()
    for item in items:
        if item is None:
            continue
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            return None
        name = clean(str(item))
        if name and key(name) not in seen:
            seen.add(key(name))
            names.append(name)
    return names


def _tag_names(value: object) -> list[str] | None:
    """The tag names of a list or of a string separated by ``;`` or ``,``, whitespace collapsed, each once."""
    return split_names(value, clean=lambda name: " ".join(name.split()), key=str.casefold)


_SHAPERS: dict[Shape, t.Callable[[Resource, dict[str, t.Any], PayloadOptions], None]] = {
    Shape.CONTACT: _shape_lead,
    Shape.EMAIL: _shape_email,
    Shape.PHONE: _shape_phone,
    Shape.CONTACT_V2: _shape_contact_v2,
}


def validation_message(resource: Resource, payload: t.Mapping[str, t.Any]) -> str | None:
    """One line with every reason the payload is refused, or None when valid."""
    try:
        errors = payload_errors(resource, payload)
    except TypeError as exc:  # a value JSON Schema cannot even look at
        return f"payload is not JSON data: {exc}"
    return "; ".join(errors) if errors else None


def unsendable(record: t.Mapping[str, t.Any]) -> str | None:
    """Why a record cannot be sent as JSON in UTF-8, naming the field; None when it can.

    A lone surrogate (U+D800 to U+DFFF unpaired, which some exports write) cannot be encoded, and
    NaN or Infinity are not JSON: such a record is set aside, not a stop of the run.

    Args:
        record: the record as received.

    Returns:
        The reason, or None.
    """
    try:
        json.dumps(record, ensure_ascii=False, allow_nan=False, default=json_default).encode("utf-8")
    except UnicodeEncodeError:
        field = _first_field(record, lambda v: isinstance(v, str) and _has_surrogate(v))
        return (
            f"field {field}: text with a lone surrogate (an unpaired \\ud800-\\udfff escape), which cannot be "
            "encoded as UTF-8; fix the export's text encoding"
        )
    except ValueError:
        field = _first_field(record, lambda v: isinstance(v, float) and not math.isfinite(v))
        return f"field {field}: NaN or Infinity, which JSON cannot carry"
    return None


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def _first_field(value: object, bad: t.Callable[[object], bool], path: str = "") -> str:
    """The dotted path of the first value (key or value) ``bad`` says is bad, or ``?``."""
    if isinstance(value, t.Mapping):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if bad(key) or bad(item):
                return here
            found = _first_field(item, bad, here)
            if found != "?":
                return found
    elif isinstance(value, (list, tuple)):
        for number, item in enumerate(value):
            here = f"{path}[{number}]"
            if bad(item):
                return here
            found = _first_field(item, bad, here)
            if found != "?":
                return found
    return "?"


def record_id(record: t.Mapping[str, t.Any]) -> int | None:
    """The Closum id a record names (for update / upsert), if any."""
    value = _as_int(record.get("id"))
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None
