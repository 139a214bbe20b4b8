"""The sandbox's V2 API over HTTP: the api-key, lead/add's validation, update_enabled, the list, the answer shapes."""

from __future__ import annotations

import pytest
import requests


def _add(sandbox, body, *, key=None, **params):
    query = {"api-key": sandbox.api_key if key is None else key} | params
    if key == "":
        query.pop("api-key")
    return requests.post(sandbox.api_v2_url + "/lead/add/", params=query, json=body, timeout=10)


def _contact(**extra):
    return {"email": "rita@example.pt", "consent_email": True, "consent_sms": False} | extra


@pytest.mark.parametrize(("key", "message"), [("", "missing api-key"), ("wrong-key", "invalid api-key")])
def test_a_missing_or_wrong_key_is_refused_and_never_echoed(sandbox, key, message):
    r = _add(sandbox, _contact(), key=key)
    assert r.status_code == 401
    assert r.json() == {
        "status": False,
        "message": f"Unauthorized: {message}" + (" query parameter" if not key else ""),
    }
    assert "wrong-key" not in r.text
    listed = requests.get(sandbox.api_v2_url + "/lead/", params={"api-key": key} if key else {}, timeout=10)
    assert listed.status_code == 401


def test_the_request_log_shows_that_a_key_came_never_the_key(sandbox):
    _add(sandbox, _contact())
    (entry,) = sandbox.requests_log("/v2/lead/add/")
    assert entry["query"] == {"api-key": "***"}
    assert sandbox.api_key not in str(sandbox.requests_log())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"email": "a@example.pt", "consent_email": True}, "missing required field consent_sms"),
        ({"email": "a@example.pt", "consent_email": "yes", "consent_sms": False}, "field consent_email: 'yes'"),
        (
            {"name": "No contact", "consent_email": True, "consent_sms": True},
            "needs at least one of: email, mobile_number",
        ),
        (_contact(email="not an email"), "field email"),
        (_contact(mobile_number="912345678"), "field mobile_number: '912345678' does not match"),
        (_contact(mobile_number="+35191234567"), "'+35191234567' is not a valid phone number"),
        (_contact(birth_date="1990-02-30"), "field birth_date: '1990-02-30' is not a 'date'"),
        (_contact(birth_date="02/03/1990"), "field birth_date: '02/03/1990' does not match"),
        (_contact(contact_lifecycle_stage_id=10), "field contact_lifecycle_stage_id: 10 is greater than"),
        (_contact(custom_fields=["a"]), "field custom_fields"),
        (_contact(custom_fields={"nested": {"a": 1}}), "field custom_fields.nested"),
        (_contact(custom_data="{not json"), "field custom_data: must be a string holding JSON"),
        (_contact(tags="a;b"), "field tags"),
        (_contact(city="Porto"), "unknown field city"),
    ],
)
def test_lead_add_refuses_what_the_documentation_does_not_allow(sandbox, body, reason):
    before = len(sandbox.v2_leads())
    r = _add(sandbox, body)
    assert r.status_code == 400
    assert r.json()["status"] is False
    assert any(reason in line for line in r.json()["errors"]), r.json()
    assert len(sandbox.v2_leads()) == before


def test_lead_add_writes_a_lead_that_the_v1_api_serves_too(sandbox):
    body = _contact(
        name="Rita Sousa",
        mobile_number="+351912345678",
        contact_lifecycle_stage_id=3,
        tags=["Newsletter", "Feira 2026"],
        custom_fields={"origem": "site", "score": 7},
        custom_data='{"campanha": "natal"}',
        birth_date="1990-02-03",
    )
    r = _add(sandbox, body)
    assert r.status_code == 200
    assert r.json() == {"status": True, "message": "Lead added", "data": {"id": r.json()["data"]["id"]}}
    lead_id = r.json()["data"]["id"]
    listed = next(lead for lead in sandbox.v2_leads() if lead["id"] == lead_id)
    assert listed | {"creation_date": None} == {
        "id": lead_id,
        "name": "Rita Sousa",
        "email": "rita@example.pt",
        "mobile_number": "+351912345678",
        "consent_email": True,
        "consent_sms": False,
        "contact_lifecycle_stage_id": 3,
        "custom_data": '{"campanha": "natal"}',
        "custom_fields": {"origem": "site", "score": 7},
        "tags": ["Newsletter", "Feira 2026"],
        "birth_date": "1990-02-03",
        "creation_date": None,
    }
    v1 = next(lead for lead in sandbox.records("lead") if lead["id"] == lead_id)
    assert (v1["email"]["email"], v1["phone"]["extension"], v1["phone"]["number"]) == (
        "rita@example.pt",
        "00351",
        "912345678",
    )
    assert (v1["lead_opt_in"]["email"], v1["lead_opt_in"]["sms"]) == (True, False)


def test_an_existing_lead_is_refused_unless_update_enabled_then_updated(sandbox):
    first = _add(sandbox, _contact(tags=["A"], custom_fields={"x": "1"})).json()["data"]["id"]
    count = len(sandbox.v2_leads())

    again = _add(sandbox, _contact(email="RITA@Example.pt"))
    assert again.status_code == 400
    assert f"already exists (id {first})" in again.json()["message"]

    updated = _add(
        sandbox,
        _contact(email="RITA@example.pt", consent_sms=True, tags={"1": "B", "2": "a"}, custom_fields={"y": 2})
        | {"update_enabled": True},
    )
    assert updated.status_code == 200
    assert updated.json()["data"]["id"] == first
    assert updated.json()["message"] == "Lead updated"
    assert len(sandbox.v2_leads()) == count
    lead = next(lead for lead in sandbox.v2_leads() if lead["id"] == first)
    assert lead["tags"] == ["A", "B"]  # added to, each once whatever its case
    assert lead["custom_fields"] == {"x": "1", "y": 2}
    assert lead["consent_sms"] is True


def test_an_existing_lead_is_found_by_mobile_number_when_no_email_names_it(sandbox):
    first = _add(sandbox, {"mobile_number": "+351913000111", "consent_email": False, "consent_sms": True})
    again = _add(
        sandbox,
        {"mobile_number": "+351913000111", "consent_email": False, "consent_sms": False, "update_enabled": True},
    )
    assert again.json()["data"]["id"] == first.json()["data"]["id"]


@pytest.mark.parametrize(
    ("shape", "answer"),
    [
        ("status", {"status": True, "message": "Lead added"}),
        ("success_lead_id", {"success": True, "data": {"lead_id": None}}),
        ("unknown", {"result": "ok", "lead": {"id": None, "email": "rita@example.pt"}}),
    ],
)
def test_the_answer_has_the_shape_the_knob_says(sandbox_factory, shape, answer):
    sandbox = sandbox_factory(seed=0, lead_add_answer=shape)
    got = _add(sandbox, _contact()).json()
    lead_id = sandbox.v2_leads()[-1]["id"]
    for part in (got.get("data"), got.get("lead")):
        if isinstance(part, dict):
            part.update({k: None for k in ("id", "lead_id") if part.get(k) == lead_id})
    assert got == answer


def test_the_list_pages_every_lead_oldest_first(sandbox_factory):
    sandbox = sandbox_factory(seed=7)
    r = requests.get(
        sandbox.api_v2_url + "/lead/", params={"api-key": sandbox.api_key, "limit": 3, "page": 2}, timeout=10
    )
    answer = r.json()
    assert answer["status"] is True
    assert answer["pagination"] | {"count": None} == {
        "page_count": 3,
        "current_page": 2,
        "has_next_page": True,
        "has_prev_page": True,
        "count": None,
        "limit": 3,
    }
    ids = [lead["id"] for lead in sandbox.v2_leads()]
    assert [lead["id"] for lead in answer["data"]] == ids[3:6]
    assert ids == sorted(r["id"] for r in sandbox.records("lead"))


def test_other_methods_answer_405_and_faults_apply_to_v2_calls(sandbox):
    assert (
        requests.get(sandbox.api_v2_url + "/lead/add/", params={"api-key": sandbox.api_key}, timeout=10).status_code
        == 405
    )
    assert requests.post(sandbox.api_v2_url + "/lead/", timeout=10).status_code == 405
    sandbox.script_faults([{"method": "POST", "path": "/v2/lead/add/", "status": 503}])
    assert _add(sandbox, _contact()).status_code == 503
    assert _add(sandbox, _contact()).status_code == 200
