"""Unit tests of the target's pure parts: mapping rules, payload building, the ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import closum_api
from closum_api import registry
from closum_api.errors import ClosumSettingsError
from target_closum.index import KeyRule
from target_closum.ledger import Ledger
from target_closum.payloads import build_payload, validation_message
from target_closum.rules import rules_for
from target_closum.settings import TargetSettings
from target_closum.target import TargetClosum

LEAD = registry.get("lead")
UNQ = registry.get("unqualified_lead")


@pytest.mark.parametrize(
    ("stream", "resource"),
    [
        ("leads", "lead"),
        ("lead", "lead"),
        ("emails", "email"),
        ("contact_types", "contact_type"),
        ("contact-type", "contact_type"),
        ("contact-types", "contact_type"),
        ("unqualified-leads", "unqualified_lead"),
        ("lead_audience_lists", "lead_audience_list"),
        ("audience-list", "audience_list"),
    ],
)
def test_streams_named_like_a_resource_map_to_it_with_create(stream, resource):
    mapping = TargetSettings.from_config({}).mapping_for(stream)
    assert (mapping.resource.name, mapping.action) == (resource, "create")


def test_resource_map_wins_and_load_method_upsert_only_defaults_updatable_resources():
    config = {
        "load_method": "upsert",
        "resource_map": {"crm_people": {"resource": "lead"}, "mails": {"resource": "email", "action": "create"}},
    }
    assert TargetSettings.from_config(config).mapping_for("crm_people").action == "create"  # lead is create-only
    assert TargetSettings.from_config(config).mapping_for("mails").action == "create"  # resource_map wins
    assert TargetSettings.from_config(config).mapping_for("phones").action == "upsert"


def refusal_of(stream: str) -> str:
    """The config error for a stream the target does not write: one line naming it and saying to deselect it."""
    with pytest.raises(ClosumSettingsError) as info:
        TargetSettings.from_config({}).mapping_for(stream)
    message = str(info.value)
    assert "\n" not in message
    assert repr(stream) in message
    assert "deselect" in message.lower()
    return message


@pytest.mark.parametrize("stream", ["cities", "contact_lifecycle_stages", "orders"])
def test_unwritable_streams_are_refused_with_one_line_naming_the_stream(stream):
    assert "resource_map" in refusal_of(stream)


@pytest.mark.parametrize("stream", ["lead_opt_ins", "unqualified_lead_opt_ins"])
def test_the_taps_consent_streams_are_never_written_on_their_own(stream):
    assert "opt-in only inside" in refusal_of(stream)


@pytest.mark.parametrize("resource", ["lead", "unqualified_lead", "audience_list", "lead_audience_list"])
@pytest.mark.parametrize("action", ["update", "upsert"])
def test_update_on_a_create_only_resource_is_a_config_error(resource, action):
    with pytest.raises(ClosumSettingsError, match="create-only"):
        TargetSettings.from_config({"resource_map": {"s": {"resource": resource, "action": action}}})


def test_overwrite_is_refused():
    with pytest.raises(ClosumSettingsError, match=r"cannot delete|no endpoint that deletes"):
        TargetSettings.from_config({"load_method": "overwrite"})


def test_one_settings_object_holds_the_shared_settings_with_the_defaults_the_settings_declare():
    declared = TargetClosum.config_jsonschema["properties"]
    settings = TargetSettings.from_config({"api_key": "k"})
    connection = settings.shared.connection
    assert settings.shared.max_parallel_requests == declared["max_parallel_requests"]["default"]
    assert connection.max_tries == declared["max_retries"]["default"] + 1
    assert connection.api_v2_url == declared["api_v2_url"]["default"]
    assert connection.user_agent == f"target-closum/{closum_api.__version__}"
    assert settings.batch_size_rows == declared["batch_size_rows"]["default"]
    given = TargetSettings.from_config({"api_key": "k", "max_parallel_requests": 3, "user_agent": "mine/1"})
    assert (given.shared.max_parallel_requests, given.shared.connection.user_agent) == (3, "mine/1")


def test_lead_payload_quirks():
    record = {
        "id": 7,
        "creation_date": "2020-01-01T00:00:00+00:00",
        "_sdc_extracted_at": "2020-01-01T00:00:00+00:00",
        "name": "Sylvia",
        "email": "sylvia@example.com",
        "phone": {"id": 3, "extension": "001", "number": "517-388-1452"},
        "lead_opt_in": {
            "id": 1,
            "lead_id": 7,
            "creation_date": "2020-01-01T00:00:00+00:00",
            "sms": True,
            "email": None,
            "enviroment": json.dumps({"REMOTE_ADDR": "192.168.1.1", "REQUEST_URI": "/"}),
        },
        "custom_data": {"plan": "gold"},
        "city_id": "40",
        "contact_lifecycle_stage_id": None,
    }
    payload = build_payload(LEAD, record)
    assert payload == {
        "name": "Sylvia",
        "email": {"email": "sylvia@example.com"},
        "phone": {"extension": "001", "number": "517-388-1452"},
        "lead_opt_in": {"sms": True, "enviroment": {"REMOTE_ADDR": "192.168.1.1", "REQUEST_URI": "/"}},
        "custom_data": '{"plan": "gold"}',
        "city_id": 40,
    }
    assert validation_message(LEAD, payload) is None


def test_unqualified_lead_contact_type_id_string_becomes_int_and_city_is_dropped():
    payload = build_payload(UNQ, {"email": {"id": 2, "email": "a@b.co"}, "contact_type_id": "1", "city_id": 4})
    assert payload == {"email": {"email": "a@b.co"}, "contact_type_id": 1}


def test_unknown_non_null_fields_are_kept_so_validation_names_them():
    payload = build_payload(LEAD, {"email": "a@b.co", "favourite_colour": "blue", "nickname": None})
    assert "nickname" not in payload
    assert "favourite_colour" in validation_message(LEAD, payload)


def test_phone_extension_keeps_leading_zeros_and_numbers_become_text():
    phone = registry.get("phone")
    assert build_payload(phone, {"id": 1, "extension": "001", "number": 5551234, "is_valid": 1}) == {
        "extension": "001",
        "number": "5551234",
    }


def same_record(resource, payload, served) -> bool:
    """The one rule of reconciliation and match_on: the resource's identity fields, folded."""
    rule = KeyRule(resource.name, rules_for(resource).identity)
    return rule.same(rule.key(payload), rule.key(served))


def test_one_rule_says_what_is_the_same_record_for_reconciliation_and_match_on():
    payload = build_payload(LEAD, {"name": "Zé Águeda", "email": " X@Example.com", "phone": {"number": "123-4567"}})
    served = {
        "id": 9,
        "name": "ze  agueda",
        "email": {"email": "x@example.com"},
        "phone": {"extension": None, "number": "1234567"},
    }
    assert same_record(LEAD, payload, served)  # case, accents, spaces and phone punctuation aside, as match_on
    assert not same_record(LEAD, payload, served | {"name": "Y"})
    assert not same_record(LEAD, payload, served | {"email": {"email": "y@example.com"}})
    # What the payload does not give matches anything: a lead sent without a phone is found by its email and name.
    assert same_record(LEAD, build_payload(LEAD, {"name": "Zé Águeda", "email": "x@example.com"}), served)
    # match_on's fields are among the identity's, and both fold the same way.
    for resource in registry.RESOURCES:
        assert set(rules_for(resource).match_fields) <= set(rules_for(resource).identity)
    link = registry.get("lead_audience_list")
    assert same_record(link, {"lead_id": 1, "audience_list_id": 2}, {"id": 5, "lead_id": 1, "audience_list_id": 2})
    assert not same_record(link, {"lead_id": 1, "audience_list_id": 2}, {"id": 5, "lead_id": 1, "audience_list_id": 3})


def test_ledger_intents_survive_reopening(tmp_path):
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    ledger.mark_pending("leads", "pk:[1]", "lead", '{"name":"a"}', "h1")
    ledger.mark_pending("leads", "pk:[2]", "lead", '{"name":"b"}', "h2")
    ledger.mark_done("leads", "pk:[2]", "lead", 42, "h2", "create")
    ledger.close()
    again = Ledger(path)
    assert [e.record_key for e in again.pending("leads")] == ["pk:[1]"]
    assert again.get("leads", "pk:[2]").closum_id == 42
    assert again.claimed("lead", 42)
    assert not again.claimed("lead", 43)
    again.forget("leads", "pk:[1]")
    assert again.pending("leads") == []
    again.close()
    read_only = Ledger(path, read_only=True)
    with pytest.raises(RuntimeError):
        read_only.mark_done("leads", "pk:[3]", "lead", 1, "h", "create")
    assert Ledger(tmp_path / "absent.sqlite", read_only=True).get("leads", "pk:[1]") is None
    assert not (tmp_path / "absent.sqlite").exists()


def test_readme_section_lists_every_setting_with_its_description():
    text = (Path(__file__).resolve().parents[1] / "docs" / "target.md").read_text(encoding="utf-8")
    sdk_generic = {"add_record_metadata", "validate_records", "stream_maps", "stream_map_config", "faker_config"}
    for name, prop in TargetClosum.config_jsonschema["properties"].items():
        if name in sdk_generic or name.startswith(("flattening_", "batch_config", "process_activate")):
            continue  # the SDK's own generic settings, described by --about
        assert prop.get("description"), f"setting {name} has no description"
        assert f"| `{name}` |" in text, f"setting {name} is missing from docs/target.md"
