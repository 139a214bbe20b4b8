"""Every JSON example of the vendor's API reference against our schemas.

Request bodies (``-d '{...}'``) must validate against the payload schema of
the resource their curl command calls, response ``data`` (list items and
retrieved objects) against its record schema, and the token example against
the token shape. The examples are data files under
``tests/data/reference_examples/``, extracted from the reference once by
``scripts/extract_reference_examples.py`` (see the README there); the
reference itself is not needed.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import jsonschema
import pytest

from closum_api import registry, schemas

if TYPE_CHECKING:
    from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = Path(__file__).resolve().parent / "data" / "reference_examples"
EXTRACTOR = ROOT / "scripts" / "extract_reference_examples.py"

#: Curl commands in the reference: token 1, lead 3, unqualified lead 3, city 1, email 4, phone 4, contact type 4.
EXPECTED_COMMANDS = 20
EXPECTED_BODIES = 9


def load_extractor() -> ModuleType:
    """scripts/extract_reference_examples.py (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("extract_reference_examples", EXTRACTOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


extractor = load_extractor()


class Example(extractor.Example):
    """One data file: the script's example (method, url, line, body, response, path), as the tests look at it."""

    @property
    def resource(self):
        return None if self.path == "token" else registry.BY_PATH[self.path.split("/")[0]]

    @property
    def is_item(self) -> bool:
        return "/" in self.path

    def __str__(self) -> str:
        return f"{self.method} /api/{self.path} (line {self.line} of the reference)"


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    files = sorted(EXAMPLES_DIR.glob("*.json"))
    return [Example(**json.loads(f.read_text(encoding="utf-8"))) for f in files]


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
            assert set(resp["data"]) == {"id"}, str(ex)
            assert isinstance(resp["data"]["id"], int), str(ex)
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
    clean_json = extractor.clean_json
    assert clean_json('{"data": [{"id": 1}, {\n...\n},\n], "x": {"a": 1,}}') == {"data": [{"id": 1}], "x": {"a": 1}}


REFERENCE_EXCERPT = """\
List All Cities
curl -X GET \\
https://api.closum.com/api/city \\
-H 'Authorization: Bearer your.bearer.token'
The above command returns JSON structured like this:
{
"success": true,
"data": [
{"id": 1, "name": "Lisboa"},
{
...
},
],
"pagination": {"page_count": 1}
}
Create a City
curl -X POST \\
curl -X POST \\
https://api.closum.com/api/city \\
-d '{
"name": "Porto",
}'
The above command returns JSON structured like this:
{
"success": true,
"data": {"id": 2}
}
"""


def test_extractor_reads_commands_bodies_and_responses(tmp_path):
    """The script that made the data files reads the reference's layout as the files say."""
    found = extractor.extract_examples(REFERENCE_EXCERPT)
    assert [(e.method, e.url, e.line) for e in found] == [
        ("GET", "https://api.closum.com/api/city", 2),
        ("POST", "https://api.closum.com/api/city", 17),
    ]
    assert found[0].body is None
    assert found[0].response == {
        "success": True,
        "data": [{"id": 1, "name": "Lisboa"}],
        "pagination": {"page_count": 1},
    }
    assert found[1].body == {"name": "Porto"}
    assert found[1].response == {"success": True, "data": {"id": 2}}

    reference = tmp_path / "reference.txt"
    reference.write_text(REFERENCE_EXCERPT, encoding="utf-8")
    assert extractor.main([str(reference), "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*.json"))
    assert written == ["01-get-city.json", "02-post-city.json"]
    loaded = Example(**json.loads((tmp_path / "out" / "02-post-city.json").read_text(encoding="utf-8")))
    assert (loaded.method, loaded.path, loaded.body) == ("POST", "city", {"name": "Porto"})


@pytest.mark.parametrize("opt_in", registry.OPT_INS, ids=lambda o: o.name)
def test_the_reference_opt_ins_are_records_of_the_consent_streams(examples, opt_in):
    """The opt-in objects of the reference's create examples, keyed by their contact, are valid records."""
    bodies = [e.body for e in examples if e.method == "POST" and e.resource is opt_in.parent]
    opt_ins = [b[opt_in.name] for b in bodies if isinstance(b, dict) and opt_in.name in b]
    assert opt_ins, f"no {opt_in.name} in the reference's examples"
    validator = record_validator(opt_in)
    for served in opt_ins:
        record = served | {opt_in.key: 1}
        assert not list(validator.iter_errors(record)), record
        assert isinstance(record["enviroment"], dict)
    assert not validator.is_valid({"sms": True}), f"a record without {opt_in.key} must be refused"
    assert not validator.is_valid({opt_in.key: 1, "enviroment": "not an object"})


@pytest.mark.parametrize("opt_in", registry.OPT_INS, ids=lambda o: o.name)
def test_the_consent_streams_carry_the_fields_of_the_nested_opt_in(opt_in):
    """lead_opt_in.json and lead.json's nested lead_opt_in describe the same fields, the key and the tombstone aside."""
    nested = schemas.record_schema(opt_in.parent)["properties"][opt_in.name]["properties"]
    own = schemas.record_schema(opt_in)["properties"]
    assert set(own) - {opt_in.key, "_sdc_deleted_at"} == set(nested) - {"lead_id", "unqualified_lead_id"}
    for field in ("id", "sms", "email", "creation_date"):
        assert own[field] == nested[field], field
    assert own["enviroment"]["properties"] == nested["enviroment"]["properties"]


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "schemas" / "records").glob("*.json")))
def test_every_record_schema_declares_the_tombstone(name):
    """A deleted record is emitted as its key and _sdc_deleted_at: every stream must accept that shape."""
    schema = json.loads((ROOT / "schemas" / "records" / f"{name}.json").read_text())
    assert schema["properties"]["_sdc_deleted_at"]["format"] == "date-time"
    assert "null" in schema["properties"]["_sdc_deleted_at"]["type"]
    key = {"lead_opt_in": "lead_id", "unqualified_lead_opt_in": "unqualified_lead_id"}.get(name, "id")
    jsonschema.Draft7Validator(schema).validate({key: 7, "_sdc_deleted_at": "2026-01-01T10:00:00+00:00"})
