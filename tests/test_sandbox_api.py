"""The sandbox's /api surface over real HTTP: auth, envelopes, lists, records, writes, errors."""

from __future__ import annotations

import math
import time

import jsonschema
import pytest
import requests

from closum_api import registry, schemas
from closum_api.registry import Revision, Verb

LEAD = {
    "name": "Sylvia L. Hook",
    "email": {"email": "sylvialhook@closum.com"},
    "phone": {"extension": "001", "number": "517-388-1452"},
    "lead_opt_in": {"sms": True, "email": False, "enviroment": {"REMOTE_ADDR": "192.168.1.1"}},
    "city_id": 1,
    "custom_data": '{"origem": "feira"}',
}


class Api:
    """A tiny authenticated client for one sandbox."""

    def __init__(self, server) -> None:
        self.server = server
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {server.token()}"

    def get(self, path, **kw):
        return self.http.get(self.server.api_url + path, timeout=10, **kw)

    def post(self, path, **kw):
        return self.http.post(self.server.api_url + path, timeout=10, **kw)

    def put(self, path, **kw):
        return self.http.put(self.server.api_url + path, timeout=10, **kw)


@pytest.fixture
def api(sandbox):
    return Api(sandbox)


def assert_error(r, status, *words):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["success"] is False
    assert isinstance(body["message"], str)
    assert "\n" not in body["message"]
    for word in words:
        assert word in body["message"]
    return body


def validator(resource):
    schema = schemas.record_schema(resource)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def assert_valid(resource, record):
    validator(resource).validate(record)
    # Nothing outside the schema is served.
    props = schemas.record_schema(resource)["properties"]
    assert set(record) <= set(props), set(record) - set(props)


# ---- token ---------------------------------------------------------------
def test_token_shape(sandbox):
    r = requests.post(sandbox.api_url + "/token", json={"api_username": "sandbox", "api_pw": "sandbox"}, timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert set(body["data"]) == {"token", "expires_in", "expiration_date"}
    assert body["data"]["expires_in"] == 3600
    assert body["data"]["expiration_date"].endswith("+00:00")
    assert len(body["data"]["token"]) >= 20


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"api_username": "sandbox", "api_pw": "wrong"}, 401),
        ({"api_username": "other", "api_pw": "sandbox"}, 401),
        ({"api_username": "sandbox"}, 400),
        ({"api_pw": "sandbox"}, 400),
        ([], 400),
    ],
)
def test_token_refused(sandbox, body, status):
    r = requests.post(sandbox.api_url + "/token", json=body, timeout=5)
    assert_error(r, status)


def test_token_bad_json(sandbox):
    r = requests.post(sandbox.api_url + "/token", data=b"{not json", timeout=5)
    assert_error(r, 400, "JSON")


def test_token_wrong_verb(sandbox):
    assert_error(requests.get(sandbox.api_url + "/token", timeout=5), 405)


def test_custom_credentials(sandbox_factory):
    sb = sandbox_factory(username="u1", password="p1", seed=0)
    ok = requests.post(sb.api_url + "/token", json={"api_username": "u1", "api_pw": "p1"}, timeout=5)
    assert ok.status_code == 200
    bad = requests.post(sb.api_url + "/token", json={"api_username": "sandbox", "api_pw": "sandbox"}, timeout=5)
    assert_error(bad, 401)


# ---- 401 -----------------------------------------------------------------
def test_missing_token_401(sandbox):
    assert_error(requests.get(sandbox.api_url + "/lead", timeout=5), 401)


def test_wrong_token_401(sandbox):
    r = requests.get(sandbox.api_url + "/lead", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert_error(r, 401)
    r = requests.get(sandbox.api_url + "/lead", headers={"Authorization": "Basic abc"}, timeout=5)
    assert_error(r, 401)


def test_expired_token_401(sandbox_factory):
    sb = sandbox_factory(token_ttl=1, seed=0)
    token = sb.token()
    h = {"Authorization": f"Bearer {token}"}
    assert requests.get(sb.api_url + "/lead", headers=h, timeout=5).status_code == 200
    time.sleep(1.05)
    assert_error(requests.get(sb.api_url + "/lead", headers=h, timeout=5), 401)


def test_revoked_token_401(sandbox, api):
    assert api.get("/lead").status_code == 200
    sandbox.revoke_tokens()
    assert_error(api.get("/lead"), 401)
    assert_error(api.post("/email", json={"email": "a@b.pt"}), 401)


# ---- lists ---------------------------------------------------------------
def served(revision):
    return registry.RESOURCES if revision == "both" else registry.for_revision(revision)


@pytest.mark.parametrize("resource", registry.RESOURCES, ids=lambda r: r.name)
def test_list_envelope_and_records_valid(api, resource):
    r = api.get(resource.list_path, params={"limit": 100})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"success", "data", "pagination"}
    assert body["success"] is True
    assert set(body["pagination"]) == {"page_count", "current_page", "has_next_page", "has_prev_page", "count", "limit"}
    assert body["pagination"]["limit"] is None
    assert body["data"], resource.name
    for record in body["data"]:
        assert_valid(resource, record)
        for nested in ("email", "phone"):
            if isinstance(record.get(nested), dict):
                assert "id" not in record[nested]
        assert f"{resource.name}_opt_in" not in record


@pytest.mark.parametrize("resource", [r for r in registry.RESOURCES if r.has(Verb.RETRIEVE)], ids=lambda r: r.name)
def test_retrieve_records_valid(api, sandbox, resource):
    first = api.get(resource.list_path).json()["data"][0]
    r = api.get(resource.item_path(first["id"]))
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"success", "data"}
    assert_valid(resource, body["data"])
    stored = sandbox.records(resource.name)
    assert stored[0] == body["data"]
    for record in stored:
        assert_valid(resource, record)


def test_lead_list_item_exact_shape(api):
    item = api.get("/lead").json()["data"][0]
    assert set(item) == {
        "id",
        "name",
        "city_id",
        "contact_lifecycle_stage_id",
        "custom_data",
        "creation_date",
        "phone",
        "email",
    }
    assert set(item["phone"]) == {"extension", "number"}
    assert set(item["email"]) == {"email"}
    assert item["creation_date"].endswith("+00:00")


def test_lead_retrieve_shape_with_opt_in(api):
    rid = api.post("/lead", json=LEAD).json()["data"]["id"]
    lead = api.get(f"/lead/{rid}").json()["data"]
    assert lead["email"]["email"] == "sylvialhook@closum.com"
    assert isinstance(lead["email"]["id"], int)
    assert lead["phone"] == {"id": lead["phone"]["id"], "extension": "001", "number": "517-388-1452"}
    assert lead["lead_opt_in"]["sms"] is True
    assert lead["lead_opt_in"]["email"] is False
    assert lead["lead_opt_in"]["enviroment"] == {"REMOTE_ADDR": "192.168.1.1"}
    assert lead["city_id"] == 1
    assert lead["custom_data"] == '{"origem": "feira"}'
    # The nested ids are real email / phone records.
    email = api.get(f"/email/{lead['email']['id']}").json()["data"]
    assert email["email"] == "sylvialhook@closum.com"
    assert email["status"] == 1
    phone = api.get(f"/phone/{lead['phone']['id']}").json()["data"]
    assert phone["extension"] == "001"
    assert phone["is_valid"] == 1
    assert_valid(registry.get("lead"), lead)


def test_seeded_data_is_realistic_and_deterministic(sandbox_factory):
    a, b = sandbox_factory(seed=30), sandbox_factory(seed=30)
    leads = a.records("lead")
    assert leads == b.records("lead")
    assert len(leads) == 30
    cities = {c["city_name"] for c in a.records("city")}
    assert {"Abrantes", "Aveiro", "Braga", "Coimbra", "Évora"} <= cities
    stages = a.records("contact_lifecycle_stage")
    assert [(s["id"], s["label"]) for s in stages] == list(
        enumerate(
            [
                "Não Qualificado",
                "Subscritor",
                "Lead",
                "Marketing Qualified Lead",
                "Sales Qualified Lead",
                "Oportunidade",
                "Cliente",
                "Evangelista",
                "Outro",
            ],
            start=1,
        )
    )
    phones = a.records("phone")
    assert {p["extension"] for p in phones} == {"351", "001"}
    assert all(isinstance(p["is_valid"], int) and p["is_valid"] == 1 for p in phones)
    assert all("@" in e["email"] for e in a.records("email"))
    assert any(lead.get("lead_opt_in") for lead in leads)
    assert min(r["id"] for r in a.records("audience_list")) >= 289701
    assert min(r["id"] for r in a.records("lead_audience_list")) >= 289701


def test_pagination_walk(api):
    seen, page = [], 1
    while True:
        body = api.get("/lead", params={"limit": 7, "page": page}).json()
        p = body["pagination"]
        assert p["current_page"] == page
        assert p["count"] == 25
        assert p["page_count"] == 4
        assert p["has_prev_page"] == (page > 1)
        seen += [r["id"] for r in body["data"]]
        if not p["has_next_page"]:
            break
        page += 1
    assert page == 4
    assert len(body["data"]) == 4  # exact last page: 25 = 3 * 7 + 4
    assert seen == sorted(seen)
    assert len(set(seen)) == 25


def test_exact_last_page(api):
    body = api.get("/lead", params={"limit": 5, "page": 5}).json()
    assert len(body["data"]) == 5
    assert body["pagination"]["has_next_page"] is False
    assert body["pagination"]["page_count"] == 5


def test_default_page_and_limit(api):
    body = api.get("/lead").json()
    assert len(body["data"]) == 25
    assert body["pagination"]["page_count"] == 1
    assert body["pagination"]["current_page"] == 1


def test_page_past_end(api):
    body = api.get("/lead", params={"limit": 10, "page": 9}).json()
    assert body["data"] == []
    assert body["pagination"] == {
        "page_count": 3,
        "current_page": 9,
        "has_next_page": False,
        "has_prev_page": True,
        "count": 25,
        "limit": None,
    }


def test_empty_resource(sandbox, api):
    sandbox.reset(seed=0)
    body = api.get("/lead").json()
    assert body["data"] == []
    assert body["pagination"] == {
        "page_count": 1,
        "current_page": 1,
        "has_next_page": False,
        "has_prev_page": False,
        "count": 0,
        "limit": None,
    }
    assert api.get("/contact-lifecycle-stage/").json()["pagination"]["count"] == 9


def test_limit_capped_by_max_page_size(sandbox_factory):
    sb = sandbox_factory(max_page_size=10)
    body = Api(sb).get("/lead", params={"limit": 20}).json()
    assert len(body["data"]) == 10
    assert body["pagination"]["count"] == 25
    assert body["pagination"]["limit"] is None
    assert body["pagination"]["page_count"] == math.ceil(25 / 10)


def test_sort_desc_and_other_field(api):
    ids = [r["id"] for r in api.get("/lead", params={"direction": "DESC"}).json()["data"]]
    assert ids == sorted(ids, reverse=True)
    names = api.get("/city", params={"sort": "city_name", "limit": 1000}).json()["data"]
    assert [c["city_name"] for c in names] == sorted(c["city_name"] for c in names)
    dates = api.get("/lead", params={"sort": "creation_date", "direction": "desc"}).json()["data"]
    assert [d["creation_date"] for d in dates] == sorted((d["creation_date"] for d in dates), reverse=True)
    emails = api.get("/lead", params={"sort": "email"}).json()["data"]
    keys = [(e["email"] or {}).get("email") or "" for e in emails]
    assert keys == sorted(keys)


def test_sort_ties_broken_by_id(api):
    rows = api.get("/lead-audience-list", params={"sort": "audience_list_id"}).json()["data"]
    keys = [(r["audience_list_id"], r["id"]) for r in rows]
    assert keys == sorted(keys)


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"page": "0"}, "page"),
        ({"page": "x"}, "page"),
        ({"page": "-1"}, "page"),
        ({"page": "1.5"}, "page"),
        ({"limit": "0"}, "limit"),
        ({"limit": "abc"}, "limit"),
        ({"sort": "nope"}, "sort"),
        ({"direction": "up"}, "direction"),
    ],
)
def test_bad_list_query_400(api, params, word):
    assert_error(api.get("/lead", params=params), 400, word)


def test_sort_by_field_of_other_revision_400(sandbox_factory):
    api = Api(sandbox_factory(revision="2021", seed=3))
    assert_error(api.get("/lead", params={"sort": "city_id"}), 400)
    assert api.get("/lead", params={"sort": "contact_lifecycle_stage_id"}).status_code == 200


def test_lifecycle_stage_with_and_without_slash(api):
    a = api.get("/contact-lifecycle-stage/").json()
    b = api.get("/contact-lifecycle-stage").json()
    assert a == b
    assert a["pagination"]["count"] == 9


# ---- revisions -----------------------------------------------------------
@pytest.mark.parametrize("revision", ["2019", "2021"])
def test_other_revision_404(sandbox_factory, revision):
    sb = sandbox_factory(revision=revision, seed=2)
    api = Api(sb)
    for res in registry.RESOURCES:
        r = api.get(res.list_path)
        if Revision(revision) in res.revisions:
            assert r.status_code == 200, res.name
        else:
            assert_error(r, 404)
            assert_error(api.get(res.item_path(1)), 404)
            assert_error(api.post(res.list_path, json={}), 404)


def test_lead_fields_per_revision(sandbox_factory):
    l19 = Api(sandbox_factory(revision="2019", seed=2)).get("/lead").json()["data"][0]
    l21 = Api(sandbox_factory(revision="2021", seed=2)).get("/lead").json()["data"][0]
    assert "city_id" in l19
    assert "contact_lifecycle_stage_id" not in l19
    assert "contact_lifecycle_stage_id" in l21
    assert "city_id" not in l21


def test_city_id_on_2021_server_is_unknown_field(sandbox_factory):
    api = Api(sandbox_factory(revision="2021", seed=2))
    assert_error(api.post("/lead", json={"email": {"email": "a@b.pt"}, "city_id": 1}), 400, "city_id")
    r = api.post("/lead", json={"email": {"email": "a@b.pt"}, "contact_lifecycle_stage_id": 3})
    assert r.status_code == 200
    lead = api.get(f"/lead/{r.json()['data']['id']}").json()["data"]
    assert lead["contact_lifecycle_stage_id"] == 3


def test_lifecycle_stage_on_2019_server_is_unknown_field(sandbox_factory):
    api = Api(sandbox_factory(revision="2019", seed=2))
    assert_error(
        api.post("/lead", json={"email": {"email": "a@b.pt"}, "contact_lifecycle_stage_id": 3}),
        400,
        "contact_lifecycle_stage_id",
    )


# ---- 404 / 405 -----------------------------------------------------------
def test_unknown_id_404(api):
    assert_error(api.get("/lead/999999"), 404)
    assert_error(api.get("/lead/abc"), 404)
    assert_error(api.put("/email/999999", json={"email": "a@b.pt"}), 404)


def test_unknown_path_404(api):
    assert_error(api.get("/nothing"), 404)
    assert_error(api.get("/lead/1/extra"), 404)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/city"),
        ("PUT", "/lead/1"),
        ("GET", "/city/1"),
        ("POST", "/contact-lifecycle-stage/"),
        ("POST", "/contact-lifecycle-stage"),
        ("PUT", "/unqualified-lead/1"),
        ("DELETE", "/lead/1"),
        ("PUT", "/audience-list/289701"),
        ("PATCH", "/email/1"),
        ("DELETE", "/email"),
        ("GET", "/contact-lifecycle-stage/1"),
    ],
)
def test_missing_verb_405(api, method, path):
    r = api.http.request(method, api.server.api_url + path, json={}, timeout=5)
    assert_error(r, 405)


def test_405_covers_every_missing_registry_verb(api):
    for res in registry.RESOURCES:
        if not res.has(Verb.CREATE):
            assert api.post(res.list_path, json={}).status_code == 405, res.name
        if not res.has(Verb.UPDATE):
            assert api.put(res.item_path(1), json={}).status_code == 405, res.name
        if not res.has(Verb.RETRIEVE):
            assert api.get(res.item_path(1)).status_code == 405, res.name


# ---- creates -------------------------------------------------------------
def test_create_lead_answers_id_and_is_listed(api):
    r = api.post("/lead", json=LEAD)
    assert r.status_code == 200
    assert r.json() == {"success": True, "data": {"id": 26}}
    last = api.get("/lead", params={"direction": "desc", "limit": 1}).json()["data"][0]
    assert last["id"] == 26
    assert last["email"] == {"email": "sylvialhook@closum.com"}
    assert last["phone"] == {"extension": "001", "number": "517-388-1452"}


def test_create_unqualified_lead_contact_type_string(api):
    body = {
        "name": "Ana",
        "phone": {"extension": "351", "number": "916912468"},
        "contact_type_id": "1",
        "unqualified_lead_opt_in": {"sms": False},
    }
    rid = api.post("/unqualified-lead", json=body).json()["data"]["id"]
    rec = api.get(f"/unqualified-lead/{rid}").json()["data"]
    assert rec["contact_type_id"] == 1
    assert rec["email"] is None
    assert rec["phone"]["number"] == "916912468"
    assert rec["unqualified_lead_opt_in"]["sms"] is False
    assert_valid(registry.get("unqualified_lead"), rec)


@pytest.mark.parametrize(
    ("path", "body", "word"),
    [
        ("/lead", {"name": "x", "email": {"email": "x"}}, "email.email"),
        ("/lead", {"name": "x"}, "email"),
        ("/lead", {"email": {"email": "a@b.pt"}, "nope": 1}, "nope"),
        ("/lead", {"phone": {"extension": "+351", "number": "1234"}}, "phone.extension"),
        ("/lead", {"email": {"email": "a@b.pt"}, "city_id": 99999}, "city_id"),
        ("/lead", {"email": {"email": "a@b.pt"}, "contact_lifecycle_stage_id": 10}, "contact_lifecycle_stage_id"),
        ("/lead", {"email": {"email": "a@b.pt"}, "custom_data": "not json"}, "custom_data"),
        ("/unqualified-lead", {"email": {"email": "a@b.pt"}, "contact_type_id": "999"}, "contact_type_id"),
        ("/email", {"email": "no-at-sign"}, "email"),
        ("/email", {}, "email"),
        ("/phone", {"number": "123"}, "extension"),
        ("/contact-type", {"label": ""}, "label"),
        ("/audience-list", {}, "name"),
        ("/lead-audience-list", {"lead_id": 1, "audience_list_id": 5}, "audience_list_id"),
        ("/lead-audience-list", {"lead_id": 999999, "audience_list_id": 289701}, "lead_id"),
        ("/email", [], "body"),
    ],
)
def test_bad_body_400(api, path, body, word):
    err = assert_error(api.post(path, json=body), 400, word)
    if "errors" in err:
        assert err["message"] == err["errors"][0]


def test_validation_message_names_field(api):
    err = assert_error(api.post("/lead", json={"email": {"email": "x"}}), 400)
    assert err["message"].startswith("field email.email: 'x' does not match")
    assert err["errors"] == [err["message"]]


@pytest.mark.parametrize("raw", [b"{bad", b"", b"[1,", b"\xff\xfe"])
def test_bad_json_400(api, raw):
    r = api.post("/email", data=raw, headers={"Content-Type": "application/json"})
    assert_error(r, 400)
    assert r.status_code != 422


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/email", {"email": "novo@sapo.pt"}),
        ("/phone", {"extension": "351", "number": "912345678"}),
        ("/contact-type", {"label": "Parceiro novo"}),
        ("/audience-list", {"name": "Lista nova"}),
        ("/lead-audience-list", {"lead_id": 1, "audience_list_id": 289701}),
    ],
)
def test_create_and_retrieve(api, path, body):
    r = api.post(path, json=body)
    assert r.status_code == 200
    assert set(r.json()) == {"success", "data"}
    assert set(r.json()["data"]) == {"id"}
    rid = r.json()["data"]["id"]
    rec = api.get(f"{path}/{rid}").json()["data"]
    for key, value in body.items():
        assert rec[key] == value
    assert_valid(registry.get(path.strip("/")), rec)


def test_2021_ids_large_even_from_empty(sandbox_factory):
    sb = sandbox_factory(seed=0)
    api = Api(sb)
    rid = api.post("/audience-list", json={"name": "A"}).json()["data"]["id"]
    assert rid >= 289701
    lead = api.post("/lead", json={"email": {"email": "a@b.pt"}}).json()["data"]["id"]
    mid = api.post("/lead-audience-list", json={"lead_id": lead, "audience_list_id": rid}).json()["data"]["id"]
    assert mid >= 289701


# ---- updates -------------------------------------------------------------
def test_update_email_reflects_in_lead(api):
    lead = api.get("/lead/1").json()["data"]
    eid = lead["email"]["id"]
    r = api.put(f"/email/{eid}", json={"id": eid, "email": "update.sylvialhook@closum.com"})
    assert r.status_code == 200
    assert r.json() == {"success": True, "data": []}
    assert api.get(f"/email/{eid}").json()["data"]["email"] == "update.sylvialhook@closum.com"
    assert api.get("/lead/1").json()["data"]["email"]["email"] == "update.sylvialhook@closum.com"


def test_update_phone_and_contact_type(api):
    assert api.put("/phone/1", json={"id": 1, "extension": "001", "number": "517-388-1452"}).json()["data"] == []
    assert api.get("/phone/1").json()["data"]["number"] == "517-388-1452"
    assert api.put("/contact-type/1", json={"label": "Atualizado"}).status_code == 200
    ct = api.get("/contact-type/1").json()["data"]
    assert ct["label"] == "Atualizado"
    assert "date_add" in ct
    assert "creation_date" not in ct


def test_update_id_mismatch_400(api):
    assert_error(api.put("/email/1", json={"id": 2, "email": "a@b.pt"}), 400, "id")


def test_update_bad_body_400(api):
    assert_error(api.put("/phone/1", json={"number": "12"}), 400)
    assert_error(api.put("/contact-type/1", data=b"{", headers={"Content-Type": "application/json"}), 400)


def test_docs_and_openapi(sandbox):
    assert requests.get(sandbox.url + "/docs", timeout=5).status_code == 200
    spec = requests.get(sandbox.url + "/openapi.json", timeout=5).json()
    assert "/api/lead" in spec["paths"]
    assert "/api/contact-lifecycle-stage/" in spec["paths"]
