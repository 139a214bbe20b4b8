"""target-closum against the sandbox over loopback HTTP: creates, quirks, rejects, updates, replay, dry run."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import secrets

import pytest
from test_target_support import lead, open_schema, posts, rejects, run_target, singer, target_config, writes

from closum_api.errors import ClosumSettingsError
from target_closum.target import TargetClosum


def _new(sandbox, resource):
    return {r["id"]: r for r in sandbox.records(resource)}


def test_lead_create_with_payload_quirks(sandbox, tmp_path):
    before = _new(sandbox, "lead")
    record = {
        "id": 900001,
        "creation_date": "2019-01-01T10:00:00+00:00",
        "name": "Sylvia L. Hook",
        "email": "sylvialhook@closum.com",  # a plain string: wrapped
        "phone": {"id": 77, "extension": "001", "number": "517-388-1452"},
        "lead_opt_in": {
            "id": 5,
            "lead_id": 900001,
            "sms": True,
            "email": True,
            "enviroment": json.dumps({"HTTP_REFERER": "https://www.google.com", "REMOTE_PORT": "1364"}),
        },
        "custom_data": {"source": "csv"},
    }
    run = run_target(target_config(sandbox, tmp_path), singer("leads", [record]))
    new = {k: v for k, v in _new(sandbox, "lead").items() if k not in before}
    assert len(new) == 1
    created = next(iter(new.values()))
    assert created["id"] != 900001  # the input id is never sent
    assert created["name"] == "Sylvia L. Hook"
    assert created["email"]["email"] == "sylvialhook@closum.com"
    assert created["phone"]["extension"] == "001"
    assert created["lead_opt_in"]["enviroment"] == {"HTTP_REFERER": "https://www.google.com", "REMOTE_PORT": "1364"}
    assert json.loads(created["custom_data"]) == {"source": "csv"}
    assert created["creation_date"] != "2019-01-01T10:00:00+00:00"
    assert run.tally("leads")["created"] == 1
    assert rejects(tmp_path / "rejects.jsonl") == []


def test_every_writable_resource_is_created(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path)
    counts = {
        name: len(sandbox.records(name))
        for name in ("contact_type", "email", "phone", "audience_list", "unqualified_lead", "lead_audience_list")
    }
    run_target(
        config, singer("contact_types", [{"id": 1, "label": "Partners", "creation_date": "2018-01-01T10:00:00+00:00"}])
    )
    contact_type_id = max(r["id"] for r in sandbox.records("contact_type"))
    text = (
        singer(
            "emails", [{"id": 1, "email": "one@example.com", "status": 1, "register_date": "2018-01-01T01:01:01+00:00"}]
        )
        + singer(
            "phones",
            [
                {
                    "id": 1,
                    "extension": "001",
                    "number": "517-388-1452",
                    "is_valid": 1,
                    "date_add": "2018-01-01T10:00:00+00:00",
                }
            ],
        )
        + singer("audience_lists", [{"id": 3, "name": "Newsletter"}])
        + singer(
            "unqualified_leads",
            [
                {
                    "id": 4,
                    "name": "U",
                    "email": "u@example.com",
                    "contact_type_id": str(contact_type_id),
                    "unqualified_lead_opt_in": {"sms": False, "email": True},
                }
            ],
        )
    )
    run = run_target(config, text)
    lead_id = sandbox.records("lead")[0]["id"]
    list_id = max(r["id"] for r in sandbox.records("audience_list"))
    run_target(config, singer("lead_audience_lists", [{"id": 9, "lead_id": str(lead_id), "audience_list_id": list_id}]))
    after = {name: sandbox.records(name) for name in counts}
    assert {name: len(after[name]) - counts[name] for name in counts} == {
        "contact_type": 1,
        "email": 1 + 1,  # the email resource, plus the unqualified lead's email
        "phone": 1,
        "audience_list": 1,
        "unqualified_lead": 1,
        "lead_audience_list": 1,
    }
    phone = max(after["phone"], key=lambda r: r["id"])
    assert phone["extension"] == "001"
    unq = max(after["unqualified_lead"], key=lambda r: r["id"])
    assert unq["contact_type_id"] == contact_type_id
    link = max(after["lead_audience_list"], key=lambda r: r["id"])
    assert (link["lead_id"], link["audience_list_id"]) == (lead_id, list_id)
    assert {
        s: run.tally(s)["created"] for s in ("emails", "phones", "audience_lists", "unqualified_leads")
    } == dict.fromkeys(("emails", "phones", "audience_lists", "unqualified_leads"), 1)
    assert rejects(tmp_path / "rejects.jsonl") == []


def test_bad_records_go_to_the_rejects_file_and_the_run_goes_on(sandbox, tmp_path):
    before = len(sandbox.records("lead"))
    records = [
        lead(1),
        {"id": 2, "name": "No contact"},  # neither email nor phone: validation
        lead(3, custom_data="{not json"),  # the server answers 400
        {"id": 4, "name": "Bad mail", "email": "not-an-address"},
        lead(5, favourite_colour="blue"),  # a field Closum does not know
        lead(6),
    ]
    run = run_target(target_config(sandbox, tmp_path, max_rejected_share=1), singer("leads", records))
    assert len(sandbox.records("lead")) - before == 2
    lines = rejects(tmp_path / "rejects.jsonl")
    by_id = {line["record"]["id"]: line for line in lines}
    assert set(by_id) == {2, 3, 4, 5}
    for line in lines:
        assert set(line) == {"stream", "record", "payload", "status", "message", "time"}
        assert line["stream"] == "leads"
        assert "\n" not in line["message"]
    assert by_id[2]["status"] is None
    assert "needs at least one of" in by_id[2]["message"]
    assert by_id[4]["status"] is None
    assert "email.email" in by_id[4]["message"]
    assert by_id[5]["status"] is None
    assert "favourite_colour" in by_id[5]["message"]
    assert by_id[3]["status"] == 400
    assert "custom_data" in by_id[3]["message"]
    assert by_id[3]["payload"]["email"] == {"email": "lead3@example.com"}
    assert (run.tally("leads")["created"], run.tally("leads")["rejected"]) == (2, 4)


def test_record_not_matching_its_stream_schema_is_rejected_not_fatal(sandbox, tmp_path):
    schema = {"type": "object", "properties": {"id": {"type": "integer"}, "label": {"type": "string"}}}
    run = run_target(
        target_config(sandbox, tmp_path),
        singer("contact_types", [{"id": 1, "label": "ok"}, {"id": "two", "label": 5}], schema=schema),
    )
    [line] = rejects(tmp_path / "rejects.jsonl")
    assert line["status"] is None
    assert "stream's schema" in line["message"]
    assert run.tally("contact_types")["created"] == 1


def test_replay_writes_nothing_new(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path)
    text = singer("leads", [lead(n) for n in range(1, 31)]) + singer(
        "contact_types", [{"label": f"T{n}"} for n in range(5)], key_properties=()
    )
    first = run_target(config, text)
    assert first.tally("leads")["created"] == 30
    assert first.tally("contact_types")["created"] == 5
    sandbox.clear_log()
    second = run_target(config, text)
    assert writes(sandbox) == []
    assert second.tally("leads")["skipped"] == 30
    assert second.tally("leads")["created"] == 0
    assert second.tally("contact_types")["skipped"] == 5


def test_dry_run_writes_nothing(sandbox, tmp_path, caplog):
    config = target_config(sandbox, tmp_path, dry_run=True)
    caplog.set_level(logging.INFO)
    run = run_target(config, singer("leads", [lead(1), lead(2), {"id": 3, "name": "bad"}]))
    assert writes(sandbox) == []
    assert sandbox.requests_log("/api") == []  # not even a token
    assert not (tmp_path / "ledger.sqlite").exists()
    assert not (tmp_path / "rejects.jsonl").exists()
    tally = run.tally("leads")
    assert (tally["would_create"], tally["rejected"], tally["created"]) == (2, 1, 0)
    assert any("DRY RUN" in r.getMessage() and "would create 2" in r.getMessage() for r in caplog.records)


def test_dry_run_after_a_real_run_counts_already_loaded(sandbox, tmp_path):
    text = singer("leads", [lead(1), lead(2)])
    run_target(target_config(sandbox, tmp_path), text)
    sandbox.clear_log()
    run = run_target(
        target_config(sandbox, tmp_path, dry_run=True), text + singer("leads", [lead(1), lead(2), lead(3)])
    )
    assert writes(sandbox) == []
    tally = run.tally("leads")
    assert (tally["skipped"], tally["would_create"]) == (4, 1)


def test_update_puts_by_record_id(sandbox, tmp_path):
    email = sandbox.records("email")[0]
    phone = sandbox.records("phone")[0]
    contact_type = sandbox.records("contact_type")[0]
    config = target_config(
        sandbox,
        tmp_path,
        resource_map={
            "crm_mails": {"resource": "email", "action": "update"},
            "crm_phones": {"resource": "phone", "action": "update"},
            "crm_types": {"resource": "contact_type", "action": "update"},
        },
    )
    text = (
        singer("crm_mails", [{"id": email["id"], "email": "changed@example.com", "status": 1}])
        + singer("crm_phones", [{"id": str(phone["id"]), "extension": "0044", "number": "20 7946 0000"}])
        + singer(
            "crm_types",
            [{"id": contact_type["id"], "label": "Renamed"}, {"id": 999999, "label": "Ghost"}, {"label": "No id"}],
        )
    )
    run = run_target(config, text)
    puts = {e["path"] for e in sandbox.requests_log("/api") if e["method"] == "PUT"}
    assert puts >= {f"/api/email/{email['id']}", f"/api/phone/{phone['id']}", f"/api/contact-type/{contact_type['id']}"}
    assert posts(sandbox, "/api/email") == []
    assert posts(sandbox, "/api/contact-type") == []
    assert {r["id"]: r for r in sandbox.records("email")}[email["id"]]["email"] == "changed@example.com"
    assert {r["id"]: r for r in sandbox.records("phone")}[phone["id"]]["extension"] == "0044"
    assert {r["id"]: r for r in sandbox.records("contact_type")}[contact_type["id"]]["label"] == "Renamed"
    by_label = {line["record"]["label"]: line for line in rejects(tmp_path / "rejects.jsonl")}
    assert by_label["Ghost"]["status"] == 404
    assert by_label["No id"]["status"] is None
    assert "id" in by_label["No id"]["message"]
    assert run.tally("crm_types")["updated"] == 1
    assert run.tally("crm_types")["rejected"] == 2


def test_upsert_creates_then_updates_the_same_key(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path, resource_map={"labels": {"resource": "contact_type", "action": "upsert"}})
    before = len(sandbox.records("contact_type"))
    schema = open_schema("key", "label")
    first = run_target(
        config,
        singer(
            "labels",
            [{"key": "a", "label": "Alpha"}, {"key": "b", "label": "Beta"}],
            schema=schema,
            key_properties=["key"],
        ),
    )
    assert first.tally("labels")["created"] == 2
    assert len(sandbox.records("contact_type")) == before + 2
    sandbox.clear_log()
    second = run_target(
        config,
        singer(
            "labels",
            [{"key": "a", "label": "Alpha 2"}, {"key": "b", "label": "Beta"}, {"key": "c", "label": "Gamma"}],
            schema=schema,
            key_properties=["key"],
        ),
    )
    tally = second.tally("labels")
    assert (tally["updated"], tally["skipped"], tally["created"]) == (1, 1, 1)
    assert len(sandbox.records("contact_type")) == before + 3
    assert sorted(e["method"] for e in writes(sandbox)) == ["POST", "PUT"]
    assert "Alpha 2" in {r["label"] for r in sandbox.records("contact_type")}
    assert "Alpha" not in {r["label"] for r in sandbox.records("contact_type")}


def test_load_method_upsert_makes_updatable_streams_upsert_with_the_given_id(sandbox, tmp_path):
    email = sandbox.records("email")[1]
    config = target_config(sandbox, tmp_path, load_method="upsert")
    run = run_target(
        config, singer("emails", [{"id": email["id"], "email": "upserted@example.com"}]) + singer("leads", [lead(1)])
    )
    assert run.target.tallies["emails"].action == "upsert"
    assert run.target.tallies["leads"].action == "create"
    assert {r["id"]: r for r in sandbox.records("email")}[email["id"]]["email"] == "upserted@example.com"
    assert run.tally("emails")["updated"] == 1


def test_update_on_a_create_only_resource_fails_at_start():
    with pytest.raises(ClosumSettingsError) as info:
        TargetClosum(
            config={
                "api_username": "u",
                "api_pw": "p",
                "resource_map": {"people": {"resource": "lead", "action": "update"}},
            }
        )
    assert "create-only" in str(info.value)
    assert "people" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("stream", ["cities", "contact_lifecycle_stages", "invoices"])
def test_unwritable_stream_fails_at_its_schema_message(sandbox, tmp_path, stream):
    target = TargetClosum(config=target_config(sandbox, tmp_path))
    text = singer(stream, [{"id": 1}]) + singer("leads", [lead(1)])
    with pytest.raises(ClosumSettingsError) as info:
        target.listen(io.StringIO(text))
    assert repr(stream) in str(info.value)
    assert "resource_map" in str(info.value)
    assert writes(sandbox) == []


def test_state_is_emitted_only_after_the_records_before_it_are_written(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(latency_ms=20)
    before = len(sandbox.records("lead"))
    config = target_config(sandbox, tmp_path, batch_size_rows=10)
    target = TargetClosum(config=config)
    seen: list[tuple[dict, int]] = []
    real = target._write_state_message

    def spy(state: dict) -> None:
        seen.append((state, len(sandbox.records("lead")) - before))
        real(state)

    target._write_state_message = spy
    text = singer(
        "leads", [lead(n) for n in range(1, 36)], state_every=10, final_state={"bookmarks": {"leads": {"done": 35}}}
    )
    target.max_parallelism = 4
    with contextlib.redirect_stdout(io.StringIO()):
        target.listen(io.StringIO(text))
    assert seen, "no STATE was emitted"
    for state, written in seen:
        assert written >= state["bookmarks"]["leads"]["done"]
    assert seen[-1] == ({"bookmarks": {"leads": {"done": 35}}}, 35)


def test_secrets_never_reach_the_logs(sandbox_factory, tmp_path, caplog, capsys):
    secret = f"pw-{secrets.token_hex(8)}-value"
    sandbox = sandbox_factory(password=secret)
    caplog.set_level(logging.DEBUG)
    target = TargetClosum(config=target_config(sandbox, tmp_path, max_parallel_requests=1))
    auth = target.client.auth
    tokens: set[str] = set()
    real_token, real_create = auth.token, target.client.create

    def token(budget=None) -> str:
        value = real_token(budget)
        tokens.add(value)
        return value

    def create(resource, payload, **kwargs):
        if len(tokens) == 1:
            sandbox.revoke_tokens()  # make the run renew its token after a 401
        return real_create(resource, payload, **kwargs)

    auth.token = token
    target.client.create = create
    text = singer("leads", [lead(1), {"id": 2, "name": "bad"}, lead(3, custom_data="{x")]) + singer(
        "emails", [{"email": "x@example.com"}], key_properties=()
    )
    with contextlib.redirect_stdout(io.StringIO()):
        target.listen(io.StringIO(text))
    assert len(tokens) == 2  # the first token, and the one renewed after the 401
    captured = capsys.readouterr()
    text_out = caplog.text + captured.out + captured.err + (tmp_path / "rejects.jsonl").read_text()
    assert "renewing the token" in caplog.text
    assert secret not in text_out
    for value in tokens:
        assert value not in text_out
    assert "created 1" in caplog.text


def test_writes_for_one_key_stay_in_order_within_a_parallel_batch(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path, resource_map={"labels": {"resource": "contact_type", "action": "upsert"}})
    before = len(sandbox.records("contact_type"))
    records = []
    for version in range(4):
        records += [{"key": f"k{k}", "label": f"k{k} v{version}"} for k in range(6)]
    run = run_target(config, singer("labels", records, schema=open_schema("key", "label"), key_properties=["key"]))
    new = sandbox.records("contact_type")[before:]
    assert sorted(r["label"] for r in new) == [f"k{k} v3" for k in range(6)]
    assert len(posts(sandbox, "/api/contact-type")) == 6
    tally = run.tally("labels")
    assert (tally["created"], tally["updated"]) == (6, 18)
