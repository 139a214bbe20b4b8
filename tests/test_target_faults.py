"""A misbehaving API: retried faults, ambiguous creates reconciled, intents left by a dead run."""

from __future__ import annotations

import contextlib
import io
import json
import time

import pytest
import requests
from test_target_support import lead, posts, rejects, run_target, singer, target_config

from closum_api import registry
from closum_api.errors import ClosumAuthError, ClosumError
from target_closum.ledger import Ledger
from target_closum.payloads import build_payload, canonical_json, payload_hash
from target_closum.target import TargetClosum


def _emails(sandbox) -> list[str]:
    return [r["email"]["email"] for r in sandbox.records("lead") if r.get("email")]


def test_random_500_and_503_lose_nothing_and_double_nothing(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(fail_rate=0.3, fault_seed=7)
    before = len(sandbox.records("lead"))
    n = 60
    run = run_target(target_config(sandbox, tmp_path, max_retries=10), singer("leads", [lead(i) for i in range(n)]))
    assert len(sandbox.records("lead")) - before == n
    mails = _emails(sandbox)
    assert all(mails.count(f"lead{i}@example.com") == 1 for i in range(n))
    assert rejects(tmp_path / "rejects.jsonl") == []
    failed = [e for e in sandbox.requests_log("/api/lead") if e["status"] >= 500]
    assert failed, "the fault knob did not fire; the test would prove nothing"
    assert run.tally("leads")["created"] == n


def test_scripted_503_and_429_are_retried_honouring_retry_after(sandbox, tmp_path):
    sandbox.script_faults(
        [
            {"method": "POST", "path": "/api/email", "status": 503, "body": "html", "times": 3},
            {"method": "POST", "path": "/api/email", "status": 429, "retry_after": 1, "times": 1},
        ]
    )
    before = len(sandbox.records("email"))
    start = time.monotonic()
    run = run_target(
        # A fixed pace: after the 429 the adaptive one would send the rest at the ~1/s answered so far
        # (its own tests are in test_api_budget.py); here only the retries and their Retry-After matter.
        target_config(sandbox, tmp_path, max_requests_per_second=100),
        singer("emails", [{"email": f"m{i}@example.com"} for i in range(5)], key_properties=()),
    )
    assert time.monotonic() - start >= 1.0  # Retry-After: 1 was honoured
    assert len(sandbox.records("email")) - before == 5
    statuses = [e["status"] for e in posts(sandbox, "/api/email")]
    assert statuses.count(503) == 3
    assert statuses.count(429) == 1
    assert statuses.count(200) == 5
    assert run.tally("emails")["created"] == 5


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "after_write": True},
        {"status": 502, "body": "html", "after_write": True},
        {"status": 504, "body": "empty", "after_write": True},
        {"drop_connection": True, "after_write": True},
    ],
    ids=["500", "502-html", "504-empty", "dropped"],
)
def test_ambiguous_create_that_happened_is_reconciled_not_repeated(sandbox, tmp_path, fault):
    sandbox.script_faults([{"method": "POST", "path": "/api/lead"} | fault])
    before = len(sandbox.records("lead"))
    run = run_target(target_config(sandbox, tmp_path), singer("leads", [lead(i) for i in range(10)]))
    assert len(sandbox.records("lead")) - before == 10
    assert len(posts(sandbox, "/api/lead")) == 10  # nothing resent
    assert sorted(_emails(sandbox)[-10:]) == sorted(f"lead{i}@example.com" for i in range(10))
    assert run.tally("leads")["reconciled"] == 1
    assert run.tally("leads")["created"] == 10
    searches = [e for e in sandbox.requests_log("/api/lead") if e["method"] == "GET"]
    assert searches
    assert all(e["query"].get("direction") == "desc" and e["query"].get("sort") == "id" for e in searches)


def test_create_answered_200_without_the_envelope_ends_the_run_and_stays_pending(sandbox, tmp_path):
    # A 2xx that is not the envelope: asking the server again cannot tell, so the run stops at once.
    sandbox.script_faults([{"method": "POST", "path": "/api/lead", "status": 200, "body": "html", "after_write": True}])
    config = target_config(sandbox, tmp_path, max_parallel_requests=1)
    before = len(sandbox.records("lead"))
    start = time.monotonic()
    with pytest.raises(ClosumError) as failed:
        run_target(config, singer("leads", [lead(i) for i in range(3)]))
    assert time.monotonic() - start < 10
    message = str(failed.value)
    assert "\n" not in message
    assert "POST /lead answered 200 with an HTML page, not JSON" in message
    assert "stays pending" in message
    assert len(posts(sandbox, "/api/lead")) == 1  # never retried
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 1
    # The next run finds the record the lost answer created and sends only the others.
    sandbox.clear_log()
    run = run_target(config, singer("leads", [lead(i) for i in range(3)]))
    assert len(sandbox.records("lead")) - before == 3
    assert len(posts(sandbox, "/api/lead")) == 2
    assert (run.tally("leads")["recovered"], run.tally("leads")["created"]) == (1, 2)
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 0


def test_ambiguous_create_that_did_not_happen_is_created_once(sandbox, tmp_path):
    sandbox.script_faults([{"method": "POST", "path": "/api/phone", "status": 500, "after_write": False}])
    before = len(sandbox.records("phone"))
    phones = [{"extension": "001", "number": f"555-000{i}"} for i in range(4)]
    run = run_target(target_config(sandbox, tmp_path), singer("phones", phones, key_properties=()))
    assert len(sandbox.records("phone")) - before == 4
    assert len(posts(sandbox, "/api/phone")) == 5
    assert run.tally("phones")["reconciled"] == 0


def test_reconcile_never_takes_an_id_the_ledger_already_owns(sandbox, tmp_path):
    # Two input records with the same identity: the second's create is lost before the write.
    # (Phones: they are matched only when match_on asks, so the second record is created.)
    same = {"extension": "351", "number": "912000111"}
    sandbox.script_faults([{"method": "POST", "path": "/api/phone", "status": 500, "after_write": False}])
    config = target_config(sandbox, tmp_path, max_parallel_requests=1)
    run_target(config, singer("phones", [{"id": 1} | same]))
    before = len(sandbox.records("phone"))
    sandbox.script_faults([{"method": "POST", "path": "/api/phone", "status": 500, "after_write": False}])
    run = run_target(config, singer("phones", [{"id": 1} | same, {"id": 2} | same]))
    assert len(sandbox.records("phone")) - before == 1
    assert run.tally("phones")["created"] == 1
    assert run.tally("phones")["skipped"] == 1


def test_pending_intents_of_a_dead_run_are_settled_before_new_writes(sandbox, tmp_path):
    resource = registry.get("lead")
    config = target_config(sandbox, tmp_path)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    written, lost = lead(1), lead(2)
    for record in (written, lost):
        payload = build_payload(resource, record, ["id"])
        ledger.mark_pending(
            "leads", "pk:" + canonical_json([record["id"]]), "lead", canonical_json(payload), payload_hash(payload)
        )
    ledger.close()
    # The dead run's first POST reached Closum; its second did not.
    token = sandbox.token()
    answer = requests.post(
        sandbox.api_url + "/lead",
        json=build_payload(resource, written, ["id"]),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200
    before = len(sandbox.records("lead"))
    sandbox.clear_log()
    run = run_target(config, singer("leads", [written, lost, lead(3)]))
    assert len(sandbox.records("lead")) - before == 2  # lead 2 and lead 3
    assert sorted(_emails(sandbox)).count("lead1@example.com") == 1
    assert len(posts(sandbox, "/api/lead")) == 2
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 0
    tally = run.tally("leads")
    assert (tally["recovered"], tally["created"], tally["skipped"]) == (2, 1, 2)


def test_outcome_that_cannot_be_checked_fails_the_run_and_keeps_the_intent(sandbox, tmp_path):
    # Phones: not matched by default, so no list is read before the POST (audience lists' would take the GET fault).
    phone = {"id": 1, "extension": "351", "number": "913000222"}
    sandbox.script_faults(
        [
            {"method": "POST", "path": "/api/phone", "status": 500, "after_write": True},
            {"method": "GET", "path": "/api/phone", "status": 403, "times": 1},
        ]
    )
    config = target_config(sandbox, tmp_path)
    before = len(sandbox.records("phone"))
    with pytest.raises(ClosumError, match="rerun to reconcile"):
        run_target(config, singer("phones", [phone], final_state={"bookmarks": {"x": 1}}))
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 1
    # The rerun settles it without a second POST.
    sandbox.clear_log()
    run = run_target(config, singer("phones", [phone]))
    assert len(sandbox.records("phone")) - before == 1
    assert posts(sandbox, "/api/phone") == []
    assert (run.tally("phones")["recovered"], run.tally("phones")["skipped"]) == (1, 1)


def test_a_lost_answer_with_the_budget_spent_is_settled_by_one_last_look(sandbox, tmp_path):
    # No retry left after the lost answer: one search finds the record, and nothing is sent again.
    phone = {"id": 1, "extension": "351", "number": "914000333"}
    sandbox.script_faults([{"method": "POST", "path": "/api/phone", "status": 500, "after_write": True}])
    before = len(sandbox.records("phone"))
    run = run_target(target_config(sandbox, tmp_path, max_retries=0), singer("phones", [phone]))
    assert len(sandbox.records("phone")) - before == 1
    assert len(posts(sandbox, "/api/phone")) == 1
    assert (run.tally("phones")["created"], run.tally("phones")["reconciled"]) == (1, 1)
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 0


def test_a_lost_answer_the_last_look_does_not_find_stays_pending(sandbox, tmp_path):
    # No retry left, and the record is not on the server: the run fails and the next one settles it.
    phone = {"id": 1, "extension": "351", "number": "915000444"}
    sandbox.script_faults([{"method": "POST", "path": "/api/phone", "status": 500, "after_write": False}])
    config = target_config(sandbox, tmp_path, max_retries=0)
    before = len(sandbox.records("phone"))
    with pytest.raises(ClosumError, match="rerun to reconcile"):
        run_target(config, singer("phones", [phone]))
    assert len(sandbox.records("phone")) == before
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 1
    run = run_target(config, singer("phones", [phone]))
    assert len(sandbox.records("phone")) - before == 1
    assert (run.tally("phones")["recovered"], run.tally("phones")["skipped"]) == (1, 1)


def test_auth_failure_ends_the_run(sandbox_factory, tmp_path):
    sandbox = sandbox_factory()
    config = target_config(sandbox, tmp_path, api_pw="wrong")
    with pytest.raises(ClosumAuthError):
        run_target(config, singer("leads", [lead(1)]))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    assert ledger.count() == 0


def test_revoked_token_is_renewed_mid_run(sandbox, tmp_path):
    before = len(sandbox.records("lead"))
    target = TargetClosum(config=target_config(sandbox, tmp_path, max_parallel_requests=1))
    real_create = target.client.create
    calls = []

    def create(resource, payload, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            sandbox.revoke_tokens()  # revoked early, while the run goes on
        return real_create(resource, payload, **kwargs)

    target.client.create = create
    with contextlib.redirect_stdout(io.StringIO()):
        target.listen(io.StringIO(singer("leads", [lead(i) for i in range(6)])))
    assert len(sandbox.records("lead")) - before == 6
    assert [e["status"] for e in posts(sandbox, "/api/lead")].count(401) == 1
    assert target.client.auth.tokens_issued == 2
    assert target.tallies["leads"].created == 6


def test_rejects_lines_are_json(sandbox, tmp_path):
    sandbox.script_faults([{"method": "POST", "path": "/api/lead", "status": 403, "body": "html"}])
    run_target(target_config(sandbox, tmp_path, max_rejected_share=1), singer("leads", [lead(1)]))
    [line] = rejects(tmp_path / "rejects.jsonl")
    assert line["status"] == 403
    assert "HTML" in line["message"]
    json.dumps(line)
