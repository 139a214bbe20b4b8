"""Every JSON example of the vendor's API reference against our schemas.

Request bodies (``-d '{...}'``) must validate against the payload schema of
the resource their curl command calls, response ``data`` (list items and
retrieved objects) against its record schema, and the token example against
the token shape. The reference lives in ``shared/`` beside the repository.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from closum_api import registry, schemas

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REFERENCE = SHARED / "closum-api-reference.txt"

#: Curl commands in the reference: token 1, lead 3, unqualified lead 3, city 1, email 4, phone 4, contact type 4.
EXPECTED_COMMANDS = 20
EXPECTED_BODIES = 9


@dataclass
class Example:
    method: str
    url: str
    line: int
    body: Any = None
    response: Any = None
    raw: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.url.split("/api/", 1)[1].strip("/")

    @property
    def resource(self):
        return None if self.path == "token" else registry.BY_PATH[self.path.split("/")[0]]

    @property
    def is_item(self) -> bool:
        return "/" in self.path

    def __str__(self) -> str:
        return f"{self.method} /api/{self.path} (line {self.line})"


def clean_json(text: str) -> Any:
    """Parse an example: drop ``{ ... }`` placeholders and trailing commas."""
    text = re.sub(r"\{\s*\.\.\.\s*\}\s*,?", "", text)
    text = re.sub(r",(\s*[\]}])", r"\1", text)
    return json.loads(text)


def _balanced(lines: list[str], start: int) -> tuple[str, int]:
    """The JSON text starting at ``lines[start]``, up to its closing brace."""
    depth, out = 0, []
    for i in range(start, len(lines)):
        line = lines[i]
        out.append(line)
        depth += line.count("{") + line.count("[") - line.count("}") - line.count("]")
        if depth <= 0:
            return "\n".join(out), i
    raise AssertionError(f"unbalanced JSON example starting at line {start + 1}")


def extract_examples(text: str) -> list[Example]:
    lines = text.splitlines()
    examples: list[Example] = []
    current: Example | None = None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        m = re.match(r"curl -X (\w+)", line)
        if m:
            if current is None or current.url:
                current = Example(method=m.group(1), url="", line=i + 1)
                examples.append(current)
        elif current is not None and line.startswith("https://api.closum.com/api/") and not current.url:
            current.url = line.rstrip(" \\")
        elif current is not None and line.startswith("-d '"):
            lines[i] = lines[i].split("-d '", 1)[1]
            raw, end = _balanced(lines, i)
            current.body = clean_json(raw.rstrip().rstrip("'"))
            i = end
        elif current is not None and "The above command returns JSON" in line:
            raw, end = _balanced(lines, i + 1)
            current.response = clean_json(raw)
            i = end
        i += 1
    return examples


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    if not REFERENCE.is_file():
        pytest.fail(f"the Closum API reference is missing: expected {REFERENCE} (shared/ beside the repository)")
    return extract_examples(REFERENCE.read_text(encoding="utf-8"))


def record_validator(resource):
    schema = schemas.record_schema(resource)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


TOKEN_SCHEMA = {
    "type": "object",
    "required": ["success", "data"],
    "properties": {
        "success": {"const": True},
        "data": {
            "type": "object",
            "required": ["token", "expires_in", "expiration_date"],
            "additionalProperties": False,
            "properties": {
                "token": {"type": "string", "minLength": 1},
                "expires_in": {"type": "integer", "minimum": 1},
                "expiration_date": {"type": "string", "format": "date-time"},
            },
        },
    },
}

PAGINATION_KEYS = {"page_count", "current_page", "has_next_page", "has_prev_page", "count", "limit"}


def test_every_example_found(examples):
    assert len(examples) == EXPECTED_COMMANDS, [str(e) for e in examples]
    assert all(e.url for e in examples)
    assert all(e.response is not None for e in examples), [str(e) for e in examples if e.response is None]
    assert sum(e.body is not None for e in examples) == EXPECTED_BODIES
    covered = {e.resource.name for e in examples if e.resource}
    assert covered == {r.name for r in registry.RESOURCES if registry.Revision.R2019 in r.revisions}


def test_request_bodies_valid(examples):
    checked = 0
    for ex in examples:
        if ex.body is None:
            continue
        if ex.resource is None:
            assert set(ex.body) == {"api_username", "api_pw"}, str(ex)
        else:
            assert schemas.payload_errors(ex.resource, ex.body) == [], str(ex)
        checked += 1
    assert checked == EXPECTED_BODIES


def test_responses_valid(examples):
    kinds = {"token": 0, "list": 0, "retrieve": 0, "create": 0, "update": 0}
    for ex in examples:
        resp = ex.response
        assert resp["success"] is True, str(ex)
        if ex.resource is None:
            v = jsonschema.Draft7Validator(TOKEN_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
            v.validate(resp)
            kinds["token"] += 1
        elif ex.method == "GET" and not ex.is_item:
            assert set(resp["pagination"]) == PAGINATION_KEYS, str(ex)
            assert resp["pagination"]["limit"] is None
            assert resp["data"], str(ex)
            for item in resp["data"]:
                record_validator(ex.resource).validate(item)
            kinds["list"] += 1
        elif ex.method == "GET":
            record_validator(ex.resource).validate(resp["data"])
            kinds["retrieve"] += 1
        elif ex.method == "POST":
            assert set(resp["data"]) == {"id"} and isinstance(resp["data"]["id"], int), str(ex)
            kinds["create"] += 1
        elif ex.method == "PUT":
            assert resp["data"] == [], str(ex)
            kinds["update"] += 1
    assert kinds == {"token": 1, "list": 6, "retrieve": 5, "create": 5, "update": 3}


def test_record_schemas_reject_wrong_types(examples):
    """The schemas are not vacuous: a mangled example fails."""
    lead_list = next(e for e in examples if e.path == "lead")
    item = dict(lead_list.response["data"][0], id="1")
    with pytest.raises(jsonschema.ValidationError):
        record_validator(lead_list.resource).validate(item)
    lead_create = next(e for e in examples if e.path == "lead" and e.method == "POST")
    assert schemas.payload_errors(lead_create.resource, dict(lead_create.body, phone={"extension": 1}))


def test_clean_json_handles_placeholders():
    assert clean_json('{"data": [{"id": 1}, {\n...\n},\n], "x": {"a": 1,}}') == {"data": [{"id": 1}], "x": {"a": 1}}
