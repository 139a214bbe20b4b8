"""Matching on the server and lookups of names, against the sandbox over loopback HTTP.

Each test says what the target writes on the sandbox (read back with the admin
surface) for one match rule or one lookup.
"""

from __future__ import annotations

import json

import pytest
import requests
from test_target_support import lead, rejects, run_target, singer, target_config, writes

from closum_api.client import ClosumClient, Connection
from closum_api.errors import ClosumError, ClosumFatalError, ClosumSettingsError
from closum_api.registry import get
from closum_api.stop import StopEvent
from target_closum.index import Indexes, fold_email, fold_name, phone_digits, read_list
from target_closum.ledger import Ledger
from target_closum.lookups import extract
from target_closum.target import TargetClosum


def _api_post(sandbox, path, body):
    answer = requests.post(
        sandbox.api_url + path, json=body, headers={"Authorization": f"Bearer {sandbox.token()}"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["id"]


def _by_id(sandbox, resource):
    return {r["id"]: r for r in sandbox.records(resource)}


def _new(sandbox, resource, before):
    return [r for rid, r in _by_id(sandbox, resource).items() if rid not in before]


def _leads_map(**entry):
    return {"resource_map": {"leads": {"resource": "lead"} | entry}}


def _gets(sandbox, path):
    return [e for e in sandbox.requests_log(path) if e["method"] == "GET" and e["path"] == path]


# -- normalization ------------------------------------------------------------------
def test_names_emails_and_phones_compare_normalized():
    assert fold_name("  Águeda ") == fold_name("agueda") == "agueda"
    assert fold_name("Vila  Nova de\tGaia") == "vila nova de gaia"
    assert fold_email(" Ana@Example.COM ") == "ana@example.com"
    assert phone_digits("(+351) 912-345 678") == "351912345678"


def test_lookup_fields_are_taken_out_of_the_record():
    got = extract("lead", {"name": "A", "city": " Águeda ", "audience_lists": "VIP; Black Friday,vip", "x": 1})
    assert got.record == {"name": "A", "x": 1}
    assert got.names == {"city": "Águeda"}
    assert got.lists == ("VIP", "Black Friday")  # "vip" is the same list as "VIP"
    assert extract("lead", {"audience_lists": ["A", "B"]}).lists == ("A", "B")
    assert extract("lead", {"city": None, "audience_lists": ""}).names == {}
    assert "not both" in (extract("lead", {"city": "Águeda", "city_id": 2}).problem or "")
    assert "unqualified lead" in (extract("lead", {"contact_type": "Empresa"}).problem or "")
    assert "a list of names" in (extract("lead", {"audience_lists": {"a": 1}}).problem or "")
    assert extract("lead_audience_list", {"lead_email": "a@b.pt", "audience_list": "VIP"}).names == {
        "lead_email": "a@b.pt",
        "audience_list": "VIP",
    }


# -- match_on: settings checked at start --------------------------------------------
@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"resource": "lead", "match_on": ["name"]}, "resource_map['leads'].match_on: 'name' cannot identify a lead"),
        ({"resource": "lead", "match_on": []}, "resource_map['leads'].match_on must be a non-empty list"),
        ({"resource": "contact_type", "match_on": ["id"]}, "resource_map['leads'].match_on"),
        ({"resource": "phone", "match_on": ["extension"]}, "resource_map['leads'].match_on: a phone is matched on"),
    ],
)
def test_a_match_on_that_cannot_be_is_refused_at_start_with_one_line(sandbox, tmp_path, entry, words):
    with pytest.raises(ClosumSettingsError) as info:
        TargetClosum(config=target_config(sandbox, tmp_path, resource_map={"leads": entry}))
    assert words in str(info.value)
    assert "\n" not in str(info.value)


# -- match_on for leads ---------------------------------------------------------------
def test_leads_matched_on_email_are_not_created_again(sandbox, tmp_path):
    existing = sandbox.records("lead")[3]
    address = existing["email"]["email"]
    before = _by_id(sandbox, "lead")
    records = [
        lead(1, email={"email": f"  {address.upper()} "}),  # the same address, shouted and padded
        lead(2, email=" Ana.Nova@Example.com "),  # padded: trimmed, valid, created
        lead(3, email="ana.nova@example.com"),  # the lead this run just created
    ]
    run = run_target(target_config(sandbox, tmp_path, **_leads_map(match_on=["email"])), singer("leads", records))
    created = _new(sandbox, "lead", before)
    # Records 2 and 3 are written in parallel: one creates the lead, the other matches it. Sent trimmed.
    assert [r["email"]["email"].casefold() for r in created] == ["ana.nova@example.com"]
    tally = run.tally("leads")
    assert (tally["created"], tally["matched"], tally["rejected"]) == (1, 2, 0)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.get("leads", "pk:[1]").closum_id == existing["id"]
    assert ledger.get("leads", "pk:[3]").closum_id == created[0]["id"]
    assert "matched existing 2" in tally_line(run, "leads")


def tally_line(run, stream):
    return run.target.tallies[stream].line()


def test_leads_matched_on_phone_compare_digits(sandbox, tmp_path):
    existing = next(r for r in sandbox.records("lead") if r.get("phone") and "-" in r["phone"]["number"])
    digits = phone_digits(existing["phone"]["number"])
    spaced = f"{digits[:3]} {digits[3:6]} {digits[6:]}"
    before = _by_id(sandbox, "lead")
    records = [{"id": 1, "name": "P", "phone": {"extension": "001", "number": spaced}}]
    run = run_target(target_config(sandbox, tmp_path, **_leads_map(match_on=["phone"])), singer("leads", records))
    assert _new(sandbox, "lead", before) == []
    assert run.tally("leads")["matched"] == 1
    assert Ledger(tmp_path / "ledger.sqlite").get("leads", "pk:[1]").closum_id == existing["id"]


def test_leads_without_match_on_are_created_even_when_the_email_exists(sandbox, tmp_path):
    address = sandbox.records("lead")[0]["email"]["email"]
    before = _by_id(sandbox, "lead")
    run = run_target(target_config(sandbox, tmp_path), singer("leads", [lead(1, email=address)]))
    assert len(_new(sandbox, "lead", before)) == 1
    assert run.tally("leads")["matched"] == 0
    assert _gets(sandbox, "/api/lead") == []  # no index without match_on: no read of the list


def test_the_index_is_read_once_per_run_concurrently(sandbox, tmp_path):
    sandbox.add_records("lead", 475)  # 500 leads: 5 pages of 100
    sandbox.clear_log()
    records = [lead(n) for n in range(40)]
    config = target_config(sandbox, tmp_path, batch_size_rows=10, **_leads_map(match_on=["email"]))
    run = run_target(config, singer("leads", records))
    reads = _gets(sandbox, "/api/lead")
    pages = sorted(int(e["query"]["page"]) for e in reads if e["query"].get("direction") != "desc")
    assert pages == [1, 2, 3, 4, 5]  # four batches, one read
    assert run.tally("leads")["created"] == 40
    # And before success, the 40 it created read back (newest first, one page) to see that no other run doubled them.
    assert [int(e["query"]["page"]) for e in reads if e["query"].get("direction") == "desc"] == [1]


def test_upsert_of_a_matched_email_is_a_put_of_its_id(sandbox, tmp_path):
    existing = sandbox.records("email")[5]
    config = target_config(
        sandbox, tmp_path, resource_map={"emails": {"resource": "email", "action": "upsert", "match_on": ["email"]}}
    )
    sandbox.clear_log()
    run = run_target(config, singer("emails", [{"id": 1, "email": " " + existing["email"].upper()}]))
    [put] = writes(sandbox)
    assert (put["method"], put["path"]) == ("PUT", f"/api/email/{existing['id']}")
    assert run.tally("emails")["updated"] == 1
    assert Ledger(tmp_path / "ledger.sqlite").get("emails", "pk:[1]").closum_id == existing["id"]


def test_phones_match_on_number_and_extension(sandbox, tmp_path):
    existing = sandbox.records("phone")[0]
    config = target_config(
        sandbox, tmp_path, resource_map={"phones": {"resource": "phone", "match_on": ["number", "extension"]}}
    )
    before = _by_id(sandbox, "phone")
    same = {"id": 1, "extension": existing["extension"], "number": " " + existing["number"].replace("-", " ")}
    other_extension = {"id": 2, "extension": "44", "number": existing["number"]}
    run = run_target(config, singer("phones", [same, other_extension]))
    assert [(r["extension"], r["number"]) for r in _new(sandbox, "phone", before)] == [("44", existing["number"])]
    assert (run.tally("phones")["matched"], run.tally("phones")["created"]) == (1, 1)


# -- matched by default ----------------------------------------------------------------
def test_contact_types_audience_lists_and_memberships_are_matched_by_default(sandbox, tmp_path):
    membership = sandbox.records("lead_audience_list")[0]
    before = {name: _by_id(sandbox, name) for name in ("contact_type", "audience_list", "lead_audience_list")}
    text = (
        singer("contact_types", [{"id": 1, "label": "empresa"}, {"id": 2, "label": "Nova etiqueta"}])
        + singer("audience_lists", [{"id": 1, "name": "  clientes  PORTO"}, {"id": 2, "name": "Lista nova"}])
        + singer(
            "lead_audience_lists",
            [{"id": 1, "lead_id": membership["lead_id"], "audience_list_id": membership["audience_list_id"]}],
        )
    )
    run = run_target(target_config(sandbox, tmp_path), text)
    assert [r["label"] for r in _new(sandbox, "contact_type", before["contact_type"])] == ["Nova etiqueta"]
    assert [r["name"] for r in _new(sandbox, "audience_list", before["audience_list"])] == ["Lista nova"]
    assert _new(sandbox, "lead_audience_list", before["lead_audience_list"]) == []
    assert {s: run.tally(s)["matched"] for s in ("contact_types", "audience_lists", "lead_audience_lists")} == {
        "contact_types": 1,
        "audience_lists": 1,
        "lead_audience_lists": 1,
    }


def test_the_same_input_twice_with_two_ledgers_creates_nothing_the_second_time(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path, create_missing_references=True, **_leads_map(match_on=["email", "phone"]))
    leads = [
        {"id": 1, "name": "Ana", "email": "ana@crm.pt", "city": "abrantes", "audience_lists": "VIP;Nova lista"},
        {"id": 2, "name": "Rui", "phone": {"extension": "351", "number": "912 000 001"}, "audience_lists": ["VIP"]},
        {"id": 3, "name": "Eva", "email": "eva@crm.pt", "phone": "913000002", "contact_lifecycle_stage": "cliente"},
    ]
    text = (
        singer("contact_types", [{"id": 1, "label": "Parceiro VIP"}])
        + singer("leads", leads)
        + singer("lead_audience_lists", [{"id": 1, "lead_email": "EVA@crm.pt", "audience_list": "Black Friday"}])
    )
    first = run_target(config, text)
    assert first.tally("leads")["created"] == 3
    assert first.tally("leads")["references_created"] == 1  # "Nova lista"
    assert first.tally("leads.audience_lists")["created"] == 3
    assert first.tally("lead_audience_lists")["created"] == 1
    sandbox.clear_log()
    second = run_target(config | {"ledger_path": str(tmp_path / "other-ledger.sqlite")}, text)
    assert writes(sandbox) == []
    assert second.tally("leads")["matched"] == 3
    assert second.tally("leads.audience_lists")["matched"] == 3
    assert second.tally("lead_audience_lists")["matched"] == 1
    assert second.tally("contact_types")["matched"] == 1


# -- lookups ---------------------------------------------------------------------------
def test_city_and_lifecycle_stage_names_become_ids(sandbox, tmp_path):
    cities = {fold_name(c["city_name"]): c["id"] for c in sandbox.records("city")}
    stages = {fold_name(s["label"]): s["id"] for s in sandbox.records("contact_lifecycle_stage")}
    before = _by_id(sandbox, "lead")
    records = [
        lead(1, city="Agueda", contact_lifecycle_stage="marketing qualified LEAD"),
        lead(2, city="  vila nova  de gaia ", contact_lifecycle_stage="Não qualificado"),
    ]
    sandbox.clear_log()
    run = run_target(target_config(sandbox, tmp_path), singer("leads", records))
    created = sorted(_new(sandbox, "lead", before), key=lambda r: r["email"]["email"])
    assert [(r["city_id"], r["contact_lifecycle_stage_id"]) for r in created] == [
        (cities["agueda"], stages["marketing qualified lead"]),
        (cities["vila nova de gaia"], stages["nao qualificado"]),
    ]
    assert run.tally("leads")["created"] == 2
    # Each reference list is read once, not once per record.
    assert len(_gets(sandbox, "/api/city")) == 1
    assert len(_gets(sandbox, "/api/contact-lifecycle-stage/")) == 1


def test_contact_type_label_becomes_contact_type_id(sandbox, tmp_path):
    types = {t["label"]: t["id"] for t in sandbox.records("contact_type")}
    before = _by_id(sandbox, "unqualified_lead")
    records = [{"id": 1, "name": "U", "email": "u@crm.pt", "contact_type": "visitante DA feira"}]
    run_target(target_config(sandbox, tmp_path), singer("unqualified_leads", records))
    [created] = _new(sandbox, "unqualified_lead", before)
    assert created["contact_type_id"] == types["Visitante da feira"]


def test_audience_lists_of_a_lead_become_memberships(sandbox, tmp_path):
    lists = {a["name"]: a["id"] for a in sandbox.records("audience_list")}
    before = _by_id(sandbox, "lead_audience_list")
    leads_before = _by_id(sandbox, "lead")
    run = run_target(
        target_config(sandbox, tmp_path),
        singer("leads", [lead(1, audience_lists="vip ; black friday"), lead(2, audience_lists=["Reativação"])]),
    )
    by_email = {r["email"]["email"]: r["id"] for r in _new(sandbox, "lead", leads_before)}
    pairs = sorted((r["lead_id"], r["audience_list_id"]) for r in _new(sandbox, "lead_audience_list", before))
    assert pairs == sorted(
        [
            (by_email["lead1@example.com"], lists["VIP"]),
            (by_email["lead1@example.com"], lists["Black Friday"]),
            (by_email["lead2@example.com"], lists["Reativação"]),
        ]
    )
    assert run.tally("leads.audience_lists")["created"] == 3
    assert "stream leads.audience_lists → lead_audience_list" in tally_line(run, "leads.audience_lists")


def test_a_membership_names_its_lead_by_email_and_its_list_by_name(sandbox, tmp_path):
    target_lead = sandbox.records("lead")[7]
    lists = {a["name"]: a["id"] for a in sandbox.records("audience_list")}
    before = _by_id(sandbox, "lead_audience_list")
    record = {"id": 1, "lead_email": target_lead["email"]["email"].upper(), "audience_list": "webinar de marco"}
    run_target(target_config(sandbox, tmp_path), singer("lead_audience_lists", [record]))
    [created] = _new(sandbox, "lead_audience_list", before)
    assert (created["lead_id"], created["audience_list_id"]) == (target_lead["id"], lists["Webinar de Março"])


def test_missing_references_are_created_when_asked(sandbox, tmp_path):
    before = {name: _by_id(sandbox, name) for name in ("contact_type", "audience_list", "lead_audience_list")}
    config = target_config(sandbox, tmp_path, create_missing_references=True)
    text = singer(
        "unqualified_leads",
        [
            {"id": 1, "name": "U1", "email": "u1@crm.pt", "contact_type": "Distribuidor"},
            {"id": 2, "name": "U2", "email": "u2@crm.pt", "contact_type": "distribuidor"},
        ],
    ) + singer("leads", [lead(1, audience_lists="Feira 2026"), lead(2, audience_lists="FEIRA 2026")])
    run = run_target(config, text)
    [new_type] = _new(sandbox, "contact_type", before["contact_type"])
    [new_list] = _new(sandbox, "audience_list", before["audience_list"])
    assert new_type["label"] == "Distribuidor"
    assert new_list["name"] == "Feira 2026"
    assert {r["contact_type_id"] for r in sandbox.records("unqualified_lead")[-2:]} == {new_type["id"]}
    assert {r["audience_list_id"] for r in _new(sandbox, "lead_audience_list", before["lead_audience_list"])} == {
        new_list["id"]
    }
    assert (run.tally("unqualified_leads")["references_created"], run.tally("leads")["references_created"]) == (1, 1)
    assert "references created 1" in tally_line(run, "leads")


def test_names_that_resolve_to_nothing_are_rejected_with_candidates(sandbox, tmp_path):
    before = _by_id(sandbox, "lead")
    records = [
        lead(1, city="Abrantez"),
        lead(2, audience_lists="Clientes Portto"),
        lead(3, contact_lifecycle_stage="Evangelist"),
        lead(4, city="Águeda"),
    ]
    text = singer("leads", records) + singer(
        "lead_audience_lists", [{"id": 9, "lead_email": "nobody@nowhere.pt", "audience_list": "VIP"}]
    )
    run = run_target(target_config(sandbox, tmp_path, max_rejected_share=1), text)
    assert len(_new(sandbox, "lead", before)) == 1
    by_id = {line["record"]["id"]: line for line in rejects(tmp_path / "rejects.jsonl")}
    assert by_id[1]["message"].startswith("city 'Abrantez' not found; did you mean Abrantes")
    assert by_id[2]["message"].startswith("audience_lists: audience list 'Clientes Portto' not found; did you mean")
    assert "Clientes Porto" in by_id[2]["message"]
    assert "did you mean Evangelista" in by_id[3]["message"]
    assert by_id[9]["message"].startswith("lead_email 'nobody@nowhere.pt' not found")
    assert (run.tally("leads")["rejected"], run.tally("lead_audience_lists")["rejected"]) == (3, 1)


def test_an_ambiguous_name_is_rejected(sandbox, tmp_path):
    first = _api_post(sandbox, "/contact-type", {"label": "Sócio"})
    second = _api_post(sandbox, "/contact-type", {"label": "socio"})
    records = [
        {"id": 1, "name": "U", "email": "u@crm.pt", "contact_type": "SOCIO"},
        {"id": 2, "name": "V", "email": "v@crm.pt", "contact_type": "socio"},  # spelled exactly as one: that one
    ]
    before = _by_id(sandbox, "unqualified_lead")
    run_target(target_config(sandbox, tmp_path), singer("unqualified_leads", records))
    [line] = rejects(tmp_path / "rejects.jsonl")
    assert line["message"].startswith("contact_type 'SOCIO' is ambiguous: 2 contact types")
    assert f"(id {first})" in line["message"]
    [created] = _new(sandbox, "unqualified_lead", before)
    assert created["contact_type_id"] == second


def test_a_lookup_the_revision_lacks_ends_the_run_with_one_line(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(revision="2021")
    before = len(sandbox.records("lead"))
    with pytest.raises(ClosumError) as info:
        run_target(target_config(sandbox, tmp_path), singer("leads", [lead(1), lead(2, city="Águeda")]))
    message = str(info.value)
    assert "stream leads: field city needs Closum's cities" in message
    assert "404 for GET /city" in message
    assert "\n" not in message
    assert len(sandbox.records("lead")) == before


def test_audience_lists_on_a_2019_account_end_the_run_with_one_line(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(revision="2019")
    with pytest.raises(ClosumError, match=r"field audience_lists needs Closum's audience lists.*404"):
        run_target(target_config(sandbox, tmp_path), singer("leads", [lead(1, audience_lists="VIP")]))


def test_a_lookup_field_that_does_not_apply_is_rejected_with_its_reason(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path, max_rejected_share=1)  # its one record is rejected
    run = run_target(config, singer("leads", [lead(1, contact_type="Empresa")]))
    [line] = rejects(tmp_path / "rejects.jsonl")
    assert "field contact_type: a lead has no contact type" in line["message"]
    assert run.tally("leads")["rejected"] == 1


# -- ids from another account ---------------------------------------------------------
def test_ids_of_records_this_target_loaded_are_translated(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path)
    before = {name: _by_id(sandbox, name) for name in ("unqualified_lead", "lead_audience_list")}
    text = (
        singer("contact_types", [{"id": 7001, "label": "Tipo da origem"}])
        + singer("audience_lists", [{"id": 8001, "name": "Lista da origem"}])
        + singer("leads", [lead(9001)])
        + singer("unqualified_leads", [{"id": 1, "name": "U", "email": "u@crm.pt", "contact_type_id": 7001}])
        + singer("lead_audience_lists", [{"id": 1, "lead_id": 9001, "audience_list_id": 8001}])
    )
    run_target(config, text)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    type_id = ledger.get("contact_types", "pk:[7001]").closum_id
    list_id = ledger.get("audience_lists", "pk:[8001]").closum_id
    lead_id = ledger.get("leads", "pk:[9001]").closum_id
    [unq] = _new(sandbox, "unqualified_lead", before["unqualified_lead"])
    assert unq["contact_type_id"] == type_id
    [link] = _new(sandbox, "lead_audience_list", before["lead_audience_list"])
    assert (link["lead_id"], link["audience_list_id"]) == (lead_id, list_id)


# -- parents before children ------------------------------------------------------------
def _interleaved(n):
    """leads and their memberships by email, record by record, one STATE after each pair."""
    out = [
        {"type": "SCHEMA", "stream": s, "schema": {"type": "object", "properties": {}}, "key_properties": ["id"]}
        for s in ("leads", "lead_audience_lists")
    ]
    for i in range(n):
        out.append({"type": "RECORD", "stream": "leads", "record": lead(i)})
        out.append(
            {
                "type": "RECORD",
                "stream": "lead_audience_lists",
                "record": {"id": i, "lead_email": f"lead{i}@example.com", "audience_list": "VIP"},
            }
        )
        out.append({"type": "STATE", "value": {"bookmarks": {"leads": {"done": i}}}})
    return "".join(json.dumps(m) + "\n" for m in out)


@pytest.mark.parametrize("batch_size_rows", [1, 3, 1000])
def test_a_membership_waits_for_the_lead_it_names(sandbox, tmp_path, batch_size_rows):
    lists = {a["name"]: a["id"] for a in sandbox.records("audience_list")}
    before = _by_id(sandbox, "lead_audience_list")
    leads_before = _by_id(sandbox, "lead")
    run = run_target(target_config(sandbox, tmp_path, batch_size_rows=batch_size_rows), _interleaved(8))
    assert rejects(tmp_path / "rejects.jsonl") == []
    new_leads = {r["id"] for r in _new(sandbox, "lead", leads_before)}
    links = _new(sandbox, "lead_audience_list", before)
    assert {r["lead_id"] for r in links} == new_leads
    assert {r["audience_list_id"] for r in links} == {lists["VIP"]}
    assert run.tally("lead_audience_lists")["created"] == 8
    assert run.states[-1] == {"bookmarks": {"leads": {"done": 7}}}
    # Every membership was posted after its lead: before the k-th membership, at least k leads.
    order = [e["path"] for e in sandbox.requests_log("/api/lead") if e["method"] == "POST"]
    for k, at in enumerate((i for i, path in enumerate(order) if path == "/api/lead-audience-list"), 1):
        assert order[:at].count("/api/lead") >= k


def test_the_index_reads_every_page_when_the_server_serves_fewer_records_than_asked(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(max_page_size=30)
    sandbox.add_records("lead", 50)  # 75 leads: three pages of (at most) 30
    leads = sorted(sandbox.records("lead"), key=lambda r: r["id"])
    last = next(r for r in reversed(leads) if r.get("email"))
    assert leads.index(last) >= 60  # on the third page
    before = _by_id(sandbox, "lead")
    config = target_config(sandbox, tmp_path, **_leads_map(match_on=["email"]))
    run = run_target(config, singer("leads", [lead(1, email=last["email"]["email"])]))
    assert _new(sandbox, "lead", before) == []
    assert run.tally("leads")["matched"] == 1


def test_the_summary_metric_carries_matched_and_references_created(sandbox, tmp_path, caplog):
    caplog.set_level("INFO")
    config = target_config(sandbox, tmp_path, create_missing_references=True)
    run_target(config, singer("leads", [lead(1, audience_lists="VIP;Lista do teste")]))
    run_target(
        config | {"ledger_path": str(tmp_path / "second.sqlite")},
        singer("contact_types", [{"id": 1, "label": "Empresa"}]),
    )
    metrics = [
        json.loads(r.getMessage().removeprefix("METRIC: "))["value"]
        for r in caplog.records
        if "closum_load_summary" in r.getMessage()
    ]
    by_stream = {m["stream"]: m for m in metrics}
    assert (by_stream["leads"]["references_created"], by_stream["leads"]["created"]) == (1, 1)
    assert by_stream["leads.audience_lists"]["created"] == 2
    assert (by_stream["contact_types"]["matched"], by_stream["contact_types"]["created"]) == (1, 0)
    assert "matched existing 1, references created 0" in caplog.text


def test_an_index_that_cannot_be_read_ends_the_run_with_one_line_and_writes_nothing(sandbox, tmp_path):
    sandbox.script_faults([{"method": "GET", "path": "/api/lead", "status": 403}])
    before = len(sandbox.records("lead"))
    config = target_config(sandbox, tmp_path, **_leads_map(match_on=["email"]))
    with pytest.raises(ClosumError) as info:
        run_target(config, singer("leads", [lead(1)], final_state={"bookmarks": {"leads": 1}}))
    assert str(info.value).startswith("stream leads: could not read what Closum holds")
    assert "403" in str(info.value)
    assert len(sandbox.records("lead")) == before


def test_a_dry_run_with_lookups_and_match_on_sends_nothing(sandbox, tmp_path):
    sandbox.clear_log()
    config = target_config(sandbox, tmp_path, dry_run=True, **_leads_map(match_on=["email"]))
    run = run_target(config, singer("leads", [lead(1, city="Águeda", audience_lists="VIP"), lead(2, city_id=2)]))
    assert sandbox.requests_log("/api") == []
    assert run.tally("leads")["would_create"] == 2


def test_a_list_or_contact_type_loaded_in_the_same_run_is_written_before_the_records_naming_it(sandbox, tmp_path):
    before = {name: _by_id(sandbox, name) for name in ("audience_list", "contact_type", "lead_audience_list")}
    text = (
        singer("audience_lists", [{"id": 1, "name": "Lista da feira"}])
        + singer("contact_types", [{"id": 1, "label": "Expositor"}])
        + singer("leads", [lead(1, audience_lists="lista DA feira")])
        + singer("unqualified_leads", [{"id": 1, "name": "U", "email": "u@crm.pt", "contact_type": "expositor"}])
    )
    run = run_target(target_config(sandbox, tmp_path), text)  # no create_missing_references: found, not created
    [new_list] = _new(sandbox, "audience_list", before["audience_list"])
    [new_type] = _new(sandbox, "contact_type", before["contact_type"])
    [link] = _new(sandbox, "lead_audience_list", before["lead_audience_list"])
    assert link["audience_list_id"] == new_list["id"]
    assert sandbox.records("unqualified_lead")[-1]["contact_type_id"] == new_type["id"]
    assert run.tally("leads")["references_created"] == 0
    assert rejects(tmp_path / "rejects.jsonl") == []


def test_a_membership_left_pending_by_a_killed_run_is_settled_once(sandbox, tmp_path):
    links_before = sandbox.records("lead_audience_list")
    pairs_before = {(r["lead_id"], r["audience_list_id"]) for r in links_before}
    lead_ids = [r["id"] for r in sandbox.records("lead")]
    list_ids = [a["id"] for a in sandbox.records("audience_list")]
    lead_id, list_id = next((ld, ls) for ld in lead_ids for ls in list_ids if (ld, ls) not in pairs_before)
    payload = {"lead_id": lead_id, "audience_list_id": list_id}
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.mark_pending(
        "leads.audience_lists", f"pk:[{lead_id},{list_id}]", "lead_audience_list", json.dumps(payload), "h"
    )
    ledger.close()
    run = run_target(target_config(sandbox, tmp_path), singer("leads", [lead(1)]))
    pairs = [(r["lead_id"], r["audience_list_id"]) for r in sandbox.records("lead_audience_list")]
    assert pairs.count((lead_id, list_id)) == 1
    assert len(pairs) == len(links_before) + 1
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 0
    assert run.tally("leads.audience_lists")["recovered"] == 1


# -- the run's own writes in the indexes ------------------------------------------
@pytest.fixture
def api_client(sandbox):
    client = ClosumClient(
        Connection(sandbox.api_url, "sandbox", "sandbox", timeout=5, max_tries=6, backoff_base=0.05),
        stop=StopEvent(),
    )
    yield client
    client.close()


def test_writes_no_index_reads_are_not_kept(api_client):
    indexes = Indexes(lambda resource: read_list(api_client, resource))
    for n in range(500):
        indexes.note("lead", {"email": {"email": f"kept{n}@example.com"}}, 100_000 + n)
    assert indexes._pending == {}
    assert indexes._built == {}  # nothing read, nothing held per record
    index = indexes.get(get("lead"), ["email"])
    assert index.ids(("kept0@example.com",)) == []  # only what the server holds
    indexes.note("lead", {"email": {"email": "after@example.com"}}, 200_000)
    assert index.ids(("after@example.com",)) == [200_000]  # a write after the read goes to the index
    assert indexes._pending == {}


def _list_gets(sandbox, path):
    return [(r["query"].get("limit"), r["status"]) for r in sandbox.requests_log(path) if r["path"] == path]


def test_the_index_read_falls_back_once_to_the_documented_page_size(sandbox, api_client):
    sandbox.add_records("lead", 40)  # more than one page of 25
    sandbox.script_faults([{"method": "GET", "path": "/api/lead", "status": 400, "body": "json"}])
    got = [r["id"] for r in read_list(api_client, get("lead"))]
    assert sorted(got) == sorted(r["id"] for r in sandbox.records("lead"))
    gets = _list_gets(sandbox, "/api/lead")
    assert gets[0] == ("100", 400)
    assert len(gets) > 2
    assert all(got == ("25", 200) for got in gets[1:])


@pytest.mark.parametrize(("status", "page_size"), [(400, 25), (403, 100)])
def test_the_index_read_asks_again_only_after_a_400_to_another_size(sandbox, api_client, status, page_size):
    sandbox.script_faults([{"method": "GET", "path": "/api/lead", "status": status, "body": "json", "times": 2}])
    with pytest.raises(ClosumFatalError) as info:
        list(read_list(api_client, get("lead"), page_size=page_size))
    assert info.value.status == status
    assert _list_gets(sandbox, "/api/lead") == [(str(page_size), status)]


def test_a_write_noted_while_the_index_is_read_is_in_the_index(sandbox, api_client):
    lead_resource = get("lead")
    noted: list[int] = []

    def read_then_write(resource):
        yield from read_list(api_client, resource)
        # the list is read, the index not yet published: a write now is in neither
        noted.append(_api_post(sandbox, "/lead", {"name": "Late", "email": {"email": "late@example.com"}}))
        indexes.note("lead", {"email": {"email": "Late@Example.com "}}, noted[0])

    indexes = Indexes(read_then_write)
    index = indexes.get(lead_resource, ["email"])
    assert noted
    assert index.ids(("late@example.com",)) == noted
    assert indexes._pending == {}
    assert indexes.get(lead_resource, ["email"]) is index  # read once
