"""Load the JSON Schemas that describe Closum resources.

The schemas live in the repository's top-level ``schemas/`` folder; a wheel
carries them as ``closum_api/schemas`` (see ``pyproject.toml``).
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import jsonschema

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from closum_api.registry import OptIn, Resource

#: any JSON value, as ``json.loads`` gives it
JsonValue: TypeAlias = "str | int | float | bool | Mapping[str, JsonValue] | Sequence[JsonValue] | None"


@functools.cache
def schemas_dir() -> Path:
    """The folder holding ``records/`` and ``payloads/``."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "schemas", here.parent / "schemas"):
        if (candidate / "records").is_dir():
            return candidate
    msg = f"Closum schemas not found next to {here}; the package is installed incompletely"
    raise FileNotFoundError(msg)


@functools.cache
def _load(relative: str) -> dict[str, Any]:
    """A schema file, parsed once; callers that hand it out copy it."""
    path = schemas_dir() / relative
    schema = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(schema, dict):
        msg = f"{path} is not a JSON Schema object"
        raise TypeError(msg)
    return schema


def record_schema(resource: Resource | OptIn) -> dict[str, Any]:
    """A fresh copy of the schema of records as the API serves them.

    Args:
        resource: the resource, or the opt-in.

    Returns:
        Its record schema, free for the caller to change.
    """
    return copy.deepcopy(_load(resource.record_schema_file))


def payload_schema(resource: Resource) -> dict[str, Any]:
    """A fresh copy of the create/update body schema of a writable resource.

    Args:
        resource: a writable resource.

    Returns:
        Its payload schema, free for the caller to change.

    Raises:
        ValueError: the resource cannot be written.
    """
    if resource.payload_schema_file is None:
        msg = f"Closum resource {resource.name!r} cannot be written"
        raise ValueError(msg)
    return copy.deepcopy(_load(resource.payload_schema_file))


@functools.cache
def payload_validator(resource: Resource) -> jsonschema.protocols.Validator:
    """A compiled validator for a resource's payload schema.

    Args:
        resource: a writable resource.

    Returns:
        The validator, built once per resource, with format checks on.
    """
    schema = _load(resource.payload_schema_file or "")
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def payload_errors(resource: Resource, payload: JsonValue) -> list[str]:
    """Every reason a payload is refused, one short line each, best first.

    Args:
        resource: a writable resource.
        payload: the body to check, any JSON value.

    Returns:
        One line per error, naming the field (``email.email``) and what is
        wrong with it; an empty list means the payload is valid.
    """
    validator = payload_validator(resource)
    errors = sorted(validator.iter_errors(payload), key=lambda e: (len(e.path), (e.path and str(e.path[0])) or ""))
    return [describe_error(e) for e in errors]


def describe_error(error: jsonschema.ValidationError) -> str:
    """One line for a validation error, naming the field.

    Args:
        error: what ``jsonschema`` found.

    Returns:
        The line: ``missing required field email``, ``field phone: ...``.
    """
    field = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        extra = sorted(set(error.instance) - set(known))
        names = ", ".join(f"{field}.{x}" if field else x for x in extra)
        return f"unknown field {names}"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        name = f"{field}.{missing}" if field else missing
        return f"missing required field {name}"
    if error.validator == "anyOf" and not field and isinstance(error.validator_value, list):
        options = [" or ".join(s.get("required", [])) for s in error.validator_value]
        return "needs at least one of: " + ", ".join(options)
    where = field or "body"
    detail = error.message
    if error.validator == "pattern":
        detail = f"{error.instance!r} does not match {error.validator_value!r}"
    return f"field {where}: {detail}"
