"""target-closum writing contacts through Closum's V2 API (lead/add, api-key) against the sandbox over HTTP."""

from __future__ import annotations

import io
import json
import logging
import socket
import sqlite3

import pytest
import requests
from test_target_support import rejects, run_target, run_target_process, singer

from closum_api import redact, v2
from closum_api.errors import ClosumFatalError, ClosumSettingsError, server_message

#: a key no other text of a run contains by chance
KEY = "k3y-V2-0123456789abcdef"


def v2_config(sandbox, tmp_path, **overrides):
    """Only the V2 key: no api_username/api_pw (the config a V2-only customer has)."""
    return (
        sandbox.key_config(
            ledger_path=str(tmp_path / "ledger.sqlite"),
            rejects_path=str(tmp_path / "rejects.jsonl"),
            backoff_base_seconds=0.05,
            max_retries=4,
            request_timeout=10,
            max_rejected_share=1,  # each test counts its rejects itself
        )
        | overrides
    )


def contact(n, **extra):
    return (
        {"id": n, "name": f"Contact {n}", "email": f"contact{n}@example.pt", "consent_email": True}
        | {"consent_sms": False}
        | extra
    )


def added(sandbox, before):
    """The V2 leads the sandbox holds that ``before`` (ids) did not."""
    return [lead for lead in sandbox.v2_leads() if lead["id"] not in before]


def ids(sandbox):
    return {lead["id"] for lead in sandbox.v2_leads()}


def adds(sandbox):
    return [e for e in sandbox.requests_log("/v2/lead/add/") if e["method"] == "POST"]


@pytest.fixture
def loglevel_debug(monkeypatch):
    """The target processes run at DEBUG (the environment is passed on): every URL the HTTP library logs."""
    monkeypatch.setenv("LOGLEVEL", "DEBUG")


def test_forty_good_and_two_bad_contacts_then_the_same_input_from_a_machine_without_the_ledger(
    sandbox_factory, tmp_path, loglevel_debug
):
    _ = loglevel_debug
    sandbox = sandbox_factory(api_key=KEY)
    before = ids(sandbox)
    good = [
        contact(
            n,
            email=f"  Contact.{n}@Example.PT " if n % 2 else f"contact.{n}@example.pt",
            tags=["Newsletter", "Feira 2026"] if n % 3 == 0 else "Newsletter; Site" if n % 3 == 1 else "Site,VIP",
            mobile_number=f"+351 912 {n:03d} 000" if n % 4 == 0 else None,
        )
        for n in range(1, 41)
    ]
    bad = [
        {"id": 41, "name": "No consent", "email": "noconsent@example.pt"},
        contact(42, email=None, mobile_number="12345"),
    ]
    text = singer("contacts", good + bad)
    config = v2_config(sandbox, tmp_path)
    del config["max_rejected_share"]  # the default
    code, out, err = run_target_process(config, tmp_path, text, timeout=120)

    assert code == 0, err
    new = added(sandbox, before)
    assert len(new) == 40
    by_email = {lead["email"]: lead for lead in new}
    assert set(by_email) == {f"contact.{n}@example.pt" for n in range(1, 41)}  # trimmed and case-folded
    assert by_email["contact.3@example.pt"]["tags"] == ["Newsletter", "Feira 2026"]
    assert by_email["contact.1@example.pt"]["tags"] == ["Newsletter", "Site"]
    assert by_email["contact.2@example.pt"]["tags"] == ["Site", "VIP"]
    assert by_email["contact.4@example.pt"]["mobile_number"] == "+351912004000"
    assert "stream contacts → contact (create): created 40, updated 0, skipped as already loaded 0, rejected 2" in err
    reasons = {r["record"]["id"]: r["message"] for r in rejects(tmp_path / "rejects.jsonl")}
    assert "missing required field consent_email and consent_sms" in reasons[41]
    assert "set default_consent_email and default_consent_sms" in reasons[41]
    assert reasons[42] == (
        "field mobile_number: '12345' is not a valid phone number "
        "(too short; a number without a country code is read as PT's)"
    )
    # The DEBUG log of the HTTP library shows each URL, the key masked; the key is nowhere.
    assert "/v2/lead/add/?api-key=***" in err
    assert KEY not in out + err + (tmp_path / "rejects.jsonl").read_text()
    ledger_bytes = (tmp_path / "ledger.sqlite").read_bytes()
    assert KEY.encode() not in ledger_bytes

    # The same input from a machine without the ledger: 40 adds, each an update in Closum; nothing new.
    again = tmp_path / "second-machine"
    again.mkdir()
    posts_before = len(adds(sandbox))
    config2 = v2_config(sandbox, again)
    del config2["max_rejected_share"]
    code, _out, err = run_target_process(config2, again, text, timeout=120)
    assert code == 0, err
    assert len(added(sandbox, before)) == 40
    assert len(adds(sandbox)) - posts_before == 40
    assert all(e["status"] == 200 for e in adds(sandbox))


def test_a_rerun_with_the_ledger_sends_nothing_and_a_changed_record_again(sandbox, tmp_path):
    config = v2_config(sandbox, tmp_path)
    records = [contact(1, tags="A"), contact(2)]
    run_target(config, singer("contacts", records))
    sandbox.clear_log()
    run = run_target(config, singer("contacts", records))
    assert adds(sandbox) == []
    assert run.tally("contacts")["skipped"] == 2

    run = run_target(config, singer("contacts", [contact(1, tags="A;B"), contact(2)]))
    assert len(adds(sandbox)) == 1
    assert (run.tally("contacts")["updated"], run.tally("contacts")["skipped"]) == (1, 1)
    lead = next(lead for lead in sandbox.v2_leads() if lead["email"] == "contact1@example.pt")
    assert lead["tags"] == ["A", "B"]


def test_consent_defaults_and_the_ways_a_consent_is_written(sandbox, tmp_path):
    before = ids(sandbox)
    records = [
        {"id": 1, "email": "a@example.pt"},
        {"id": 2, "email": "b@example.pt", "consent_email": "yes", "consent_sms": "não"},
        {"id": 3, "email": "c@example.pt", "consent_email": 1, "consent_sms": "TRUE"},
        {"id": 4, "email": "d@example.pt", "consent_email": "maybe", "consent_sms": True},
    ]
    config = v2_config(sandbox, tmp_path, default_consent_email=False, default_consent_sms=True)
    run = run_target(config, singer("contacts", records))
    got = {lead["email"]: (lead["consent_email"], lead["consent_sms"]) for lead in added(sandbox, before)}
    assert got == {"a@example.pt": (False, True), "b@example.pt": (True, False), "c@example.pt": (True, True)}
    [reject] = rejects(tmp_path / "rejects.jsonl")
    assert reject["message"] == "field consent_email: 'maybe' is not of type 'boolean'"
    assert run.tally("contacts")["rejected"] == 1


def test_a_contact_needs_an_email_or_a_mobile_number(sandbox, tmp_path):
    run_target(v2_config(sandbox, tmp_path), singer("contacts", [contact(1, email=None, name="Nobody")]))
    [reject] = rejects(tmp_path / "rejects.jsonl")
    assert reject["message"] == "needs at least one of: email, mobile_number"


def test_phones_the_way_people_type_them_are_one_number(sandbox, tmp_path):
    before = ids(sandbox)
    records = [
        {"id": 1, "mobile_number": "+351 912 345 678"},
        {"id": 2, "mobile_number": "00351912345678"},
        {"id": 3, "mobile_number": "912 345 678"},
        {"id": 4, "mobile_number": 912345678},
        {"id": 5, "mobile_number": "+34 612 34 56 78"},
        {"id": 6, "mobile_number": "ligar depois"},
    ]
    consents = {"consent_email": False, "consent_sms": True}
    run = run_target(v2_config(sandbox, tmp_path), singer("contacts", [r | consents for r in records]))
    new = added(sandbox, before)
    assert sorted(lead["mobile_number"] for lead in new) == ["+34612345678", "+351912345678"]
    assert run.tally("contacts")["created"] == 5  # four adds of one number: Closum updated the first
    [reject] = rejects(tmp_path / "rejects.jsonl")
    assert reject["message"].startswith("field mobile_number: 'ligar depois' is not a valid phone number")


def test_default_phone_region_reads_numbers_without_a_country_code(sandbox, tmp_path):
    before = ids(sandbox)
    config = v2_config(sandbox, tmp_path, default_phone_region="es")
    run_target(
        config,
        singer("contacts", [{"id": 1, "mobile_number": "612 345 678", "consent_email": True, "consent_sms": True}]),
    )
    assert [lead["mobile_number"] for lead in added(sandbox, before)] == ["+34612345678"]


def test_an_unknown_phone_region_ends_the_run_at_start(sandbox, tmp_path):
    code, _out, err = run_target_process(v2_config(sandbox, tmp_path, default_phone_region="XX"), tmp_path, "")
    assert code == 1
    assert "default_phone_region: 'XX' is not a region code" in err


def test_stage_by_label_among_the_documented_nine_without_v1_credentials(sandbox, tmp_path):
    before = ids(sandbox)
    records = [
        contact(1, contact_lifecycle_stage="cliente"),
        contact(2, contact_lifecycle_stage="  Marketing qualified LEAD "),
        contact(3, contact_lifecycle_stage_id="4"),
        contact(4, contact_lifecycle_stage="Clientes"),
    ]
    run_target(v2_config(sandbox, tmp_path), singer("contacts", records))
    got = {lead["email"]: lead["contact_lifecycle_stage_id"] for lead in added(sandbox, before)}
    assert got == {"contact1@example.pt": 7, "contact2@example.pt": 4, "contact3@example.pt": 4}
    [reject] = rejects(tmp_path / "rejects.jsonl")
    assert reject["message"] == "contact_lifecycle_stage 'Clientes' not found; did you mean Cliente?"
    assert sandbox.requests_log("/api") == []  # no V1 call at all


def test_stage_by_label_in_the_accounts_list_with_v1_credentials(sandbox, tmp_path):
    before = ids(sandbox)
    config = v2_config(sandbox, tmp_path) | sandbox.config()
    run_target(config, singer("contacts", [contact(1, contact_lifecycle_stage="Oportunidade")]))
    assert [lead["contact_lifecycle_stage_id"] for lead in added(sandbox, before)] == [6]
    assert [e["path"] for e in sandbox.requests_log("/api") if e["method"] == "GET"] == [
        "/api/contact-lifecycle-stage/"
    ]


def test_tags_custom_fields_custom_data_and_birth_date(sandbox, tmp_path):
    before = ids(sandbox)
    records = [
        contact(
            1,
            tags=[" Newsletter ", "newsletter", "Feira  2026", 2026],
            custom_fields={"origem": "site", "score": 7},
            custom_data={"campanha": "natal"},
            birth_date="1990-02-03T00:00:00+00:00",
        ),
        contact(2, tags="", custom_fields='{"origem": "loja"}', birth_date="1985-12-31"),
        contact(3, tags={"a": 1}),
        contact(4, birth_date="31/12/1985"),
        contact(5, custom_fields={"nested": {"x": 1}}),
    ]
    run_target(v2_config(sandbox, tmp_path), singer("contacts", records))
    got = {lead["email"]: lead for lead in added(sandbox, before)}
    first, second = got["contact1@example.pt"], got["contact2@example.pt"]
    assert first["tags"] == ["Newsletter", "Feira 2026", "2026"]
    assert first["custom_fields"] == {"origem": "site", "score": 7}
    assert json.loads(first["custom_data"]) == {"campanha": "natal"}
    assert first["birth_date"] == "1990-02-03"
    assert (second["tags"], second["custom_fields"], second["birth_date"]) == ([], {"origem": "loja"}, "1985-12-31")
    reasons = {r["record"]["id"]: r["message"] for r in rejects(tmp_path / "rejects.jsonl")}
    assert reasons[3] == "field tags: give a list of names, or one string of names separated by ; or ,"
    assert reasons[4].startswith("field birth_date: '31/12/1985' does not match '^[0-9]{4}-[0-9]{2}-[0-9]{2}$'")
    assert reasons[5].startswith("field custom_fields.nested: {'x': 1} is not of type")


def test_fields_a_v2_contact_has_not_are_refused_by_name(sandbox, tmp_path):
    records = [contact(1, audience_lists="Newsletter"), contact(2, city="Porto"), contact(3, favourite_colour="blue")]
    run_target(v2_config(sandbox, tmp_path), singer("contacts", records))
    reasons = {r["record"]["id"]: r["message"] for r in rejects(tmp_path / "rejects.jsonl")}
    assert reasons == {
        1: "field audience_lists: Closum's V2 API has tags, not audience lists: give the names as tags",
        2: "field city: Closum's V2 lead/add takes no city; drop the field",
        3: "unknown field favourite_colour",
    }


def test_update_enabled_updates_a_contact_closum_has_and_off_it_is_refused(sandbox, tmp_path):
    existing = sandbox.records("lead")[0]
    email = existing["email"]["email"] if existing["email"] else None
    assert email is not None
    count = len(sandbox.v2_leads())
    run = run_target(v2_config(sandbox, tmp_path), singer("contacts", [contact(1, email=email.upper(), tags="VIP")]))
    assert len(sandbox.v2_leads()) == count
    assert run.tally("contacts")["created"] == 1
    assert next(lead for lead in sandbox.v2_leads() if lead["id"] == existing["id"])["tags"] == ["VIP"]

    other = tmp_path / "off"
    other.mkdir()
    run = run_target(v2_config(sandbox, other, update_enabled=False), singer("contacts", [contact(1, email=email)]))
    [reject] = rejects(other / "rejects.jsonl")
    assert reject["status"] == 400
    assert f"already exists (id {existing['id']})" in reject["message"]
    assert run.tally("contacts")["rejected"] == 1
    assert len(sandbox.v2_leads()) == count


@pytest.mark.parametrize(
    ("shape", "closum_id"), [("status_id", True), ("success_lead_id", True), ("status", False), ("unknown", False)]
)
def test_every_answer_shape_is_read_and_an_unknown_one_logged_once_by_its_keys(
    sandbox_factory, tmp_path, caplog, shape, closum_id
):
    sandbox = sandbox_factory(seed=0, lead_add_answer=shape)
    caplog.set_level(logging.INFO)
    run = run_target(v2_config(sandbox, tmp_path), singer("contacts", [contact(1), contact(2), contact(3)]))
    assert run.tally("contacts")["created"] == 3
    leads = {lead["email"]: lead["id"] for lead in sandbox.v2_leads()}
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        rows = db.execute("SELECT record_key, state, closum_id, action FROM writes ORDER BY record_key").fetchall()
    expected = [leads[f"contact{n}@example.pt"] if closum_id else None for n in (1, 2, 3)]
    assert [(state, cid, action) for _, state, cid, action in rows] == [("done", cid, "add") for cid in expected]
    warned = [r.getMessage() for r in caplog.records if r.name == "closum_api.v2"]
    if shape == "unknown":
        assert len(warned) == 1
        assert "{'result': str, 'lead': {'id': int, 'email': str}}" in warned[0]
        assert "@example.pt" not in warned[0]
    else:
        assert warned == []


def test_transient_failures_are_retried_and_an_add_answered_late_is_written_once(sandbox, tmp_path):
    before = ids(sandbox)
    sandbox.script_faults(
        [
            {"method": "POST", "path": "/v2/lead/add/", "status": 503},
            {"method": "POST", "path": "/v2/lead/add/", "status": 500, "after_write": True},
        ]
    )
    run = run_target(v2_config(sandbox, tmp_path), singer("contacts", [contact(1)]))
    assert len(adds(sandbox)) == 3
    assert [lead["email"] for lead in added(sandbox, before)] == ["contact1@example.pt"]
    assert run.tally("contacts")["created"] == 1


def test_without_update_enabled_a_lost_answer_stays_pending_until_a_run_may_resend_it(sandbox, tmp_path):
    before = ids(sandbox)
    sandbox.script_faults([{"method": "POST", "path": "/v2/lead/add/", "status": 502, "after_write": True}])
    config = v2_config(sandbox, tmp_path, update_enabled=False)
    code, _out, err = run_target_process(config, tmp_path, singer("contacts", [contact(1)]))
    assert code == 1
    assert "may have been written by Closum" in err
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        assert db.execute("SELECT state FROM writes").fetchall() == [("pending",)]

    code, _out, err = run_target_process(config, tmp_path, singer("contacts", [contact(1)]))
    assert code == 1
    assert "Rerun with update_enabled on" in err

    run = run_target(v2_config(sandbox, tmp_path), singer("contacts", [contact(1)]))
    assert run.tally("contacts")["recovered"] == 1
    assert run.tally("contacts")["skipped"] == 1
    assert [lead["email"] for lead in added(sandbox, before)] == ["contact1@example.pt"]


def test_a_refused_key_ends_the_run_with_one_line_without_the_key(sandbox, tmp_path):
    config = v2_config(sandbox, tmp_path, api_key="wr0ng-" + KEY)
    code, out, err = run_target_process(config, tmp_path, singer("contacts", [contact(1)]))
    assert code == 1
    [line] = [line for line in err.splitlines() if "target-closum failed" in line]
    assert "Closum refused the api_key" in line
    assert KEY not in out + err


def test_a_wrong_api_v2_url_ends_the_run_with_one_line(sandbox, tmp_path):
    config = v2_config(sandbox, tmp_path, api_v2_url=sandbox.url + "/v3")
    code, _out, err = run_target_process(config, tmp_path, singer("contacts", [contact(1)]))
    assert code == 1
    [line] = [line for line in err.splitlines() if "target-closum failed" in line]
    assert f"POST {sandbox.url}/v3/lead/add/ answered 404 Not Found" in line
    assert "check api_v2_url" in line
    assert "api-key" not in line


@pytest.mark.parametrize(
    ("config", "stream", "needle"),
    [
        ("key", "leads", "only api_key is set"),
        ("v1", "contacts", "set api_key"),
        ("none", "contacts", "no credentials: give api_username and api_pw"),
        ("key_and_user", "contacts", "api_pw: not set, but api_username is"),
        ("key_in_url", "contacts", "api_v2_url: 'http://127.0.0.1/v2?api-key=***' has a query"),
    ],
)
def test_credentials_that_cannot_write_the_stream_end_the_run_with_one_line(sandbox, tmp_path, config, stream, needle):
    configs = {
        "key": v2_config(sandbox, tmp_path),
        "v1": sandbox.config(ledger_path=str(tmp_path / "l.sqlite"), rejects_path=str(tmp_path / "r.jsonl")),
        "none": {"api_url": sandbox.api_url},
        "key_and_user": v2_config(sandbox, tmp_path, api_username="someone"),
        "key_in_url": v2_config(sandbox, tmp_path, api_v2_url=f"http://127.0.0.1/v2?api-key={KEY}"),
    }
    code, out, err = run_target_process(configs[config], tmp_path, singer(stream, [contact(1)]))
    assert code == 1
    [line] = [line for line in err.splitlines() if "target-closum failed" in line]
    assert needle in line
    assert KEY not in out + err


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"resource": "contact", "action": "upsert"}, "action 'upsert' does not apply"),
        ({"resource": "contact", "match_on": ["email"]}, "match_on does not apply"),
    ],
)
def test_actions_and_match_on_do_not_apply_to_contacts(sandbox, tmp_path, entry, needle):
    with pytest.raises(ClosumSettingsError, match=needle):
        run_target(v2_config(sandbox, tmp_path, resource_map={"people": entry}), singer("people", [contact(1)]))


def test_any_stream_maps_to_contact_and_a_dry_run_sends_nothing(sandbox, tmp_path):
    config = v2_config(sandbox, tmp_path, resource_map={"crm": {"resource": "contact"}}, dry_run=True)
    run = run_target(config, singer("crm", [contact(1), contact(2, email=None)]))
    assert (run.tally("crm")["would_create"], run.tally("crm")["rejected"]) == (1, 1)
    assert sandbox.requests_log("/v2") == []


def test_a_leads_phone_typed_as_one_string_is_split_as_the_reference_shows(sandbox, tmp_path):
    config = sandbox.config(ledger_path=str(tmp_path / "l.sqlite"), rejects_path=str(tmp_path / "r.jsonl"))
    before = {lead["id"] for lead in sandbox.records("lead")}
    records = [
        {"id": 1, "name": "A", "phone": "+351 912 345 678"},
        {"id": 2, "name": "B", "phone": "00351 913 000 111"},
        {"id": 3, "name": "C", "phone": "ligar depois"},
        {"id": 4, "name": "D", "phone": {"extension": "001", "number": "517-388-1452"}},
    ]
    run_target(config, singer("leads", records))
    phones = sorted(
        (lead["phone"]["extension"], lead["phone"]["number"])
        for lead in sandbox.records("lead")
        if lead["id"] not in before
    )
    assert phones == [("001", "517-388-1452"), ("00351", "912345678"), ("00351", "913000111")]  # an object as given
    [reject] = rejects(tmp_path / "r.jsonl")
    assert reject["message"].startswith("field phone: 'ligar depois' is not a valid phone number")


def test_a_failed_connection_at_debug_shows_its_traceback_without_the_key(sandbox, tmp_path, loglevel_debug):
    _ = loglevel_debug
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = free.getsockname()[1]
    config = v2_config(sandbox, tmp_path, api_key=KEY, api_v2_url=f"http://127.0.0.1:{closed}/v2", max_retries=0)
    code, out, err = run_target_process(config, tmp_path, singer("contacts", [contact(1)]))
    assert code == 1
    [line] = [line for line in err.splitlines() if "target-closum failed" in line]
    assert f"cannot reach http://127.0.0.1:{closed}/v2 after 1 try: connection refused" in line
    assert "Traceback" in err  # at DEBUG
    assert KEY not in out + err


def test_a_logged_traceback_that_quotes_a_url_with_the_key_is_scrubbed():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("test_target_v2.scrub")
    logger.addHandler(handler)
    logger.propagate = False
    root_handlers = logging.getLogger().handlers
    try:
        logging.getLogger().handlers = [handler]
        redact.guard_logs()
        try:
            requests.get(f"http://127.0.0.1:1/v2/lead/?api-key={KEY}", timeout=1)
        except requests.ConnectionError:
            logger.exception("failed: %s", f"/v2/lead/?api-key={KEY}")
    finally:
        logging.getLogger().handlers = root_handlers
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert "failed: /v2/lead/?api-key=***" in text
    assert "url: /v2/lead/?api-key=***" in text  # the exception's own message, in the traceback
    assert KEY not in text


def test_what_a_server_says_is_shown_without_the_key():
    redact.remember(KEY)
    answer = requests.Response()
    answer.status_code = 400
    answer._content = json.dumps({"message": f"invalid key {KEY} in /v2/lead/add/?api-key={KEY}&x=1"}).encode()
    assert server_message(answer) == "invalid key *** in /v2/lead/add/?api-key=***&x=1"
    assert redact.scrub("GET /v2/lead/?API_KEY=abc&page=2") == "GET /v2/lead/?API_KEY=***&page=2"


@pytest.mark.parametrize(
    ("answer", "written", "closum_id"),
    [
        ({"status": True, "data": {"id": 7}}, True, 7),
        ({"success": "ok", "id": "8"}, True, 8),
        ({"status": 1, "data": {"lead_id": 9}}, True, 9),
        ({"status": True, "message": "Lead added"}, True, None),
        ({"status": False, "message": "email invalid"}, False, None),
        ({"success": "error", "message": "no"}, False, None),
        ({"result": "ok"}, True, None),
        ({"error": "quota exceeded"}, False, None),
    ],
)
def test_an_answer_is_read_for_what_it_may_say(answer, written, closum_id):
    response = requests.Response()
    response.status_code = 200
    response._content = json.dumps(answer).encode()
    try:
        read = v2.AnswerReader().read("POST /lead/add/", v2.check_answer("POST", "/lead/add/", response))
    except ClosumFatalError:
        assert not written
    else:
        assert written
        assert read.closum_id == closum_id
