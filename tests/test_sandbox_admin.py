"""The sandbox's /_admin surface, persistence with --db, and the test helpers."""

from __future__ import annotations

import time

import requests

from closum_sandbox.testing import SandboxServer


def test_health(sandbox):
    r = requests.get(sandbox.url + "/_admin/health", timeout=5)
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_requests_log_and_clear(sandbox):
    h = {"Authorization": f"Bearer {sandbox.token()}"}
    requests.get(sandbox.api_url + "/lead", params={"limit": 3, "sort": "name"}, headers=h, timeout=5)
    requests.get(sandbox.api_url + "/lead/999999", headers=h, timeout=5)
    requests.get(sandbox.url + "/_admin/health", timeout=5)
    log = sandbox.requests_log()
    assert [(e["method"], e["path"], e["status"]) for e in log] == [
        ("POST", "/api/token", 200),
        ("GET", "/api/lead", 200),
        ("GET", "/api/lead/999999", 404),
    ]
    assert log[1]["query"] == {"limit": "3", "sort": "name"}
    assert all(e["after_write_fault"] is False for e in log)
    assert [e["path"] for e in sandbox.requests_log("/api/lead/")] == ["/api/lead/999999"]
    # Passwords and tokens are never recorded.
    assert "sandbox" not in str(log)
    assert h["Authorization"][7:] not in str(log)
    sandbox.clear_log()
    assert sandbox.requests_log() == []


def test_reset_with_and_without_seed(sandbox):
    h = {"Authorization": f"Bearer {sandbox.token()}"}
    requests.post(sandbox.api_url + "/email", json={"email": "x@y.pt"}, headers=h, timeout=5)
    original = sandbox.records("lead")
    sandbox.reset(seed=3)
    assert len(sandbox.records("lead")) == 3
    sandbox.reset()
    assert sandbox.records("lead") == original
    # The token survives a reset.
    assert requests.get(sandbox.api_url + "/lead", headers=h, timeout=5).status_code == 200
    r = requests.post(sandbox.url + "/_admin/reset", json={"seed": -1}, timeout=5)
    assert r.status_code == 400
    assert r.json()["success"] is False


def test_config_get_patch(sandbox):
    cfg = requests.get(sandbox.url + "/_admin/config", timeout=5).json()
    assert cfg["max_page_size"] == 1000
    assert "password" not in cfg
    new = sandbox.configure(latency_ms=5, max_page_size=3, token_ttl=60, fail_rate=0, rate_limit=0)
    assert new["latency_ms"] == 5
    assert new["max_page_size"] == 3
    assert new["token_ttl"] == 60
    h = {"Authorization": f"Bearer {sandbox.token()}"}
    assert len(requests.get(sandbox.api_url + "/lead", params={"limit": 50}, headers=h, timeout=5).json()["data"]) == 3
    r = requests.post(sandbox.api_url + "/token", json={"api_username": "sandbox", "api_pw": "sandbox"}, timeout=5)
    assert r.json()["data"]["expires_in"] == 60
    for bad in ({"fail_rate": 2}, {"max_page_size": 0}, {"nope": 1}, {"latency_ms": "x"}):
        r = requests.patch(sandbox.url + "/_admin/config", json=bad, timeout=5)
        assert r.status_code == 400
        assert r.json()["success"] is False


def test_config_patch_names_every_changeable_knob(sandbox):
    r = requests.patch(sandbox.url + "/_admin/config", json={"nope": 1}, timeout=5)
    assert r.status_code == 400
    assert r.json()["message"] == (
        "unknown field nope; changeable: latency_ms, fail_rate, fail_every, pagination_lie, rate_limit, "
        "max_page_size, token_ttl, fault_seed, opt_ins_on_retrieve, lead_add_answer"
    )


def test_opt_ins_on_retrieve_switch(sandbox):
    h = {"Authorization": f"Bearer {sandbox.token()}"}
    with_opt_in = next(r for r in sandbox.records("lead") if r.get("lead_opt_in"))
    url = f"{sandbox.api_url}/lead/{with_opt_in['id']}"
    assert requests.get(url, headers=h, timeout=5).json()["data"]["lead_opt_in"] == with_opt_in["lead_opt_in"]

    assert sandbox.configure(opt_ins_on_retrieve=False)["opt_ins_on_retrieve"] is False
    served = requests.get(url, headers=h, timeout=5).json()["data"]
    assert "lead_opt_in" not in served
    assert served == {k: v for k, v in with_opt_in.items() if k != "lead_opt_in"}
    # The admin view still shows what is stored.
    assert any(r.get("lead_opt_in") for r in sandbox.records("lead"))
    for bad in ({"opt_ins_on_retrieve": 0}, {"opt_ins_on_retrieve": "no"}, {"opt_ins_on_retrieve": None}):
        r = requests.patch(sandbox.url + "/_admin/config", json=bad, timeout=5)
        assert r.status_code == 400
        assert "opt_ins_on_retrieve" in r.json()["message"]

    sandbox.configure(opt_ins_on_retrieve=True)
    assert requests.get(url, headers=h, timeout=5).json()["data"]["lead_opt_in"] == with_opt_in["lead_opt_in"]


def test_revoke_tokens(sandbox):
    h = {"Authorization": f"Bearer {sandbox.token()}"}
    sandbox.revoke_tokens()
    assert requests.get(sandbox.api_url + "/city", headers=h, timeout=5).status_code == 401


def test_add_records_and_list_all(sandbox):
    ids = sandbox.add_records("lead", 500)
    assert len(ids) == 500
    assert ids == list(range(26, 526))
    leads = sandbox.records("lead")
    assert len(leads) == 525
    assert leads[-1]["id"] == 525
    assert sandbox.add_records("audience_list", 2)[0] >= 289701
    assert len(sandbox.add_records("lead_audience_list", 3)) == 3
    assert len(sandbox.add_records("email", 4)) == 4
    r = requests.post(sandbox.url + "/_admin/records/contact_lifecycle_stage", json={"count": 1}, timeout=5)
    assert r.status_code == 400
    r = requests.post(sandbox.url + "/_admin/records/lead", json={"count": 0}, timeout=5)
    assert r.status_code == 400
    r = requests.get(sandbox.url + "/_admin/records/nothing", timeout=5)
    assert r.status_code == 404
    cities = sandbox.records("cities")  # the stream name works too
    assert cities[0] == {"id": 1, "city_name": "Abrantes"}


def test_admin_records_as_a_list_serves_them(sandbox):
    """``?shape=list``: each record exactly as the list endpoint serves it, not as its retrieve."""
    h = {"Authorization": f"Bearer {sandbox.token()}"}
    for resource, path in (("lead", "/lead"), ("contact_type", "/contact-type")):
        served = requests.get(sandbox.api_url + path, params={"limit": 100}, headers=h, timeout=5).json()["data"]
        assert sandbox.records(resource, listed=True)[: len(served)] == sorted(served, key=lambda r: r["id"])
        assert sandbox.records(resource, listed=True) != sandbox.records(resource)  # retrieves differ
    r = requests.get(sandbox.url + "/_admin/records/lead", params={"shape": "tree"}, timeout=5)
    assert r.status_code == 400
    assert "shape" in r.json()["message"]


def test_admin_records_other_revision_404(sandbox_factory):
    sb = sandbox_factory(revision="2021", seed=1)
    assert requests.get(sb.url + "/_admin/records/city", timeout=5).status_code == 404


def test_add_records_is_fast(sandbox):
    t = time.perf_counter()
    assert len(sandbox.add_records("lead", 20_000)) == 20_000
    assert time.perf_counter() - t < 5
    h = {"Authorization": f"Bearer {sandbox.token()}"}
    t = time.perf_counter()
    body = requests.get(sandbox.api_url + "/lead", params={"limit": 100, "page": 200}, headers=h, timeout=5).json()
    assert time.perf_counter() - t < 0.5
    assert body["data"][0]["id"] == 19901
    assert body["pagination"]["count"] == 20_025


def test_config_helper(sandbox):
    cfg = sandbox.config(start_date="2020-01-01")
    assert cfg == {
        "api_url": sandbox.api_url,
        "api_username": "sandbox",
        "api_pw": "sandbox",
        "start_date": "2020-01-01",
    }
    assert sandbox.api_url == sandbox.url + "/api"
    assert sandbox.url.startswith("http://127.0.0.1:")


def test_persistence_across_restart(tmp_path):
    db = tmp_path / "sandbox.sqlite"
    with SandboxServer(db=db, seed=5) as sb:
        h = {"Authorization": f"Bearer {sb.token()}"}
        rid = requests.post(sb.api_url + "/email", json={"email": "persist@sapo.pt"}, headers=h, timeout=5).json()[
            "data"
        ]["id"]
        leads = sb.records("lead")
    assert db.exists()
    with SandboxServer(db=db, seed=50) as sb:  # an existing database is not seeded again
        assert sb.records("lead") == leads
        h = {"Authorization": f"Bearer {sb.token()}"}
        r = requests.get(f"{sb.api_url}/email/{rid}", headers=h, timeout=5)
        assert r.json()["data"]["email"] == "persist@sapo.pt"
        nxt = requests.post(sb.api_url + "/email", json={"email": "b@c.pt"}, headers=h, timeout=5).json()["data"]["id"]
        assert nxt == rid + 1


def test_in_memory_is_fresh_each_start(sandbox_factory):
    a = sandbox_factory(seed=2)
    a.add_records("lead", 3)
    b = sandbox_factory(seed=2)
    assert len(b.records("lead")) == 2


def _api(sandbox, path, **params):
    h = {"Authorization": f"Bearer {sandbox.token()}"}
    return requests.get(sandbox.api_url + path, params=params, headers=h, timeout=5)


def test_edit_a_lead_as_in_closums_ui(sandbox):
    lead = sandbox.records("lead")[3]
    stage = 2 if lead["contact_lifecycle_stage_id"] != 2 else 3
    edited = sandbox.edit_record(
        "lead",
        lead["id"],
        contact_lifecycle_stage_id=stage,
        custom_data='{"score": 90}',
        name="Outro Nome",
        email={"email": "novo@example.pt"},
        phone={"number": "912 000 111"},
    )
    served = _api(sandbox, f"/lead/{lead['id']}").json()["data"]
    assert served == edited
    assert served["contact_lifecycle_stage_id"] == stage
    assert served["custom_data"] == '{"score": 90}'
    assert served["name"] == "Outro Nome"
    assert served["email"] == {"id": lead["email"]["id"], "email": "novo@example.pt"}
    assert served["phone"]["number"] == "912 000 111"
    assert served["phone"]["extension"] == lead["phone"]["extension"]
    # The email record itself changed with it, as the list shows; other leads did not.
    email = _api(sandbox, f"/email/{lead['email']['id']}").json()["data"]
    assert email["email"] == "novo@example.pt"
    before = {r["id"]: r for r in sandbox.records("lead")}
    assert all(before[r["id"]] == r for r in sandbox.records("lead") if r["id"] != lead["id"])


def test_change_and_withdraw_an_opt_in(sandbox):
    lead = next(r for r in sandbox.records("lead") if r.get("lead_opt_in"))
    given = lead["lead_opt_in"]
    changed = sandbox.set_opt_in("lead", lead["id"], {"sms": not given["sms"]})
    assert changed["lead_opt_in"] == given | {"sms": not given["sms"]}
    assert _api(sandbox, f"/lead/{lead['id']}").json()["data"]["lead_opt_in"] == changed["lead_opt_in"]
    withdrawn = sandbox.set_opt_in("lead", lead["id"], None)
    assert "lead_opt_in" not in withdrawn
    assert "lead_opt_in" not in _api(sandbox, f"/lead/{lead['id']}").json()["data"]
    # Given again: a new opt-in keyed by the lead.
    again = sandbox.set_opt_in("lead", lead["id"], {"sms": True, "email": False})
    assert again["lead_opt_in"]["lead_id"] == lead["id"]
    assert (again["lead_opt_in"]["sms"], again["lead_opt_in"]["email"]) == (True, False)


def test_edit_other_resources(sandbox):
    email = sandbox.records("email")[0]
    assert sandbox.edit_record("email", email["id"], email="z@y.pt")["email"] == "z@y.pt"
    ct = sandbox.records("contact_type")[0]
    assert sandbox.edit_record("contact_type", ct["id"], label="VIP")["label"] == "VIP"
    assert _api(sandbox, "/contact-type", limit=1).json()["data"][0]["label"] == "VIP"


def test_edit_refuses_what_closum_would_not_hold(sandbox):
    lead_id = sandbox.records("lead")[0]["id"]
    url = f"{sandbox.url}/_admin/records/lead/{lead_id}"
    for body in (
        {"id": 5},
        {"colour": "red"},
        {"custom_data": "not json"},
        {"contact_lifecycle_stage_id": 999999},
        {"email": {"address": "x"}},
        {"lead_opt_in": {"whatsapp": True}},
    ):
        r = requests.patch(url, json=body, timeout=5)
        assert r.status_code == 400, body
        assert r.json()["success"] is False
    assert requests.patch(f"{sandbox.url}/_admin/records/lead/999999", json={"name": "x"}, timeout=5).status_code == 404
    assert requests.delete(f"{sandbox.url}/_admin/records/lead/999999", timeout=5).status_code == 404


def test_delete_shifts_pages_and_retrieve_answers_404(sandbox):
    ids = [r["id"] for r in sandbox.records("lead")]
    page2 = [r["id"] for r in _api(sandbox, "/lead", limit=5, page=2).json()["data"]]
    assert page2 == ids[5:10]
    sandbox.delete_record("lead", ids[0])
    assert _api(sandbox, f"/lead/{ids[0]}").status_code == 404
    answer = _api(sandbox, "/lead", limit=5, page=2).json()
    assert [r["id"] for r in answer["data"]] == ids[6:11]
    assert answer["pagination"]["count"] == len(ids) - 1
    assert [r["id"] for r in sandbox.records("lead")] == ids[1:]
    emails = [r["id"] for r in sandbox.records("email")]
    sandbox.delete_record("email", emails[0])
    assert [r["id"] for r in sandbox.records("email")] == emails[1:]
