"""The shared write client: which failures it retries and which it hands back as unknown."""

from __future__ import annotations

import pytest

from closum_api import connection
from closum_api.client import ClosumClient, Connection
from closum_api.errors import ClosumAuthError, ClosumOutcomeUnknown
from closum_api.registry import get
from closum_api.stop import StopEvent

EMAIL = get("email")


@pytest.fixture
def client(sandbox):
    client = ClosumClient(
        Connection(sandbox.api_url, "sandbox", "sandbox", timeout=5, max_tries=4, backoff_base=0.01),
        stop=StopEvent(),
    )
    yield client
    client.close()


def emails(sandbox, address):
    return [r for r in sandbox.records("email") if r["email"] == address]


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 500, "body": "json", "after_write": True},
        {"status": 502, "body": "html", "after_write": True},
        {"status": 503, "body": "html", "after_write": True},
        {"status": 408, "body": "empty", "after_write": True},
        {"status": 505, "body": "json", "after_write": True},
        {"status": 507, "body": "json", "after_write": True},
        {"status": 520, "body": "html", "after_write": True},
        {"status": 522, "body": "empty", "after_write": True},
        {"status": 524, "body": "html", "after_write": True},
        {"status": 200, "body": "html", "after_write": True},
        {"status": 200, "drop_connection": True, "after_write": True},
    ],
)
def test_a_create_that_may_have_happened_is_not_repeated(sandbox, client, fault):
    sandbox.script_faults([{"method": "POST", "path": "/api/email", **fault}])
    with pytest.raises(ClosumOutcomeUnknown):
        client.create(EMAIL, {"email": "maybe@exemplo.pt"})
    assert len(emails(sandbox, "maybe@exemplo.pt")) == 1
    assert len(sandbox.requests_log("/api/email")) == 1


def test_a_create_that_surely_did_not_happen_is_retried(sandbox, client):
    sandbox.script_faults([{"method": "POST", "path": "/api/email", "status": 429, "retry_after": 0}])
    new_id = client.create(EMAIL, {"email": "retried@exemplo.pt"})
    assert [r["id"] for r in emails(sandbox, "retried@exemplo.pt")] == [new_id]


@pytest.mark.parametrize("status", [408, 500, 503, 505, 520, 524])
def test_reads_are_retried_on_any_5xx_and_408(sandbox, client, status):
    sandbox.script_faults([{"method": "GET", "path": "/api/email", "status": status, "body": "html"}])
    assert client.list_page(EMAIL, limit=3)["success"] is True
    assert [r["status"] for r in sandbox.requests_log("/api/email")] == [status, 200]


def test_reads_and_updates_are_retried_through_cut_connections(sandbox, client):
    sandbox.script_faults(
        [
            {"method": "GET", "path": "/api/email", "drop_connection": True},
            {"method": "PUT", "path": "/api/email", "drop_connection": True, "after_write": True},
            {"method": "PUT", "path": "/api/email", "status": 500},
        ]
    )
    assert client.list_page(EMAIL, limit=3)["success"] is True
    first = sandbox.records("email")[0]["id"]
    client.update(EMAIL, first, {"email": "changed@exemplo.pt"})
    assert {r["id"]: r["email"] for r in sandbox.records("email")}[first] == "changed@exemplo.pt"
    statuses = [r["status"] for r in sandbox.requests_log("/api/email") if r["method"] == "PUT"]
    assert len(statuses) == 3
    assert statuses[-1] == 200


def test_a_401_renews_the_token_and_resends_once_only(sandbox, client):
    client.list_page(EMAIL)  # holds a token
    sandbox.script_faults([{"method": "GET", "path": "/api/email", "status": 401, "times": 2}])
    sandbox.clear_log()
    with pytest.raises(ClosumAuthError):
        client.list_page(EMAIL)
    log = [(r["path"], r["status"]) for r in sandbox.requests_log()]
    assert log == [("/api/email", 401), ("/api/token", 200), ("/api/email", 401)]
    assert client.auth.tokens_issued == 2


def test_the_deadline_watchdog_holds_about_the_requests_in_flight_not_every_request_of_the_timeout():
    watchdog = connection._Watchdog()
    live = [connection._Deadline(60) for _ in range(10)]
    for deadline in live:
        watchdog.arm(deadline)
    for _ in range(5000):  # requests answered in time, long before their deadline
        deadline = connection._Deadline(60)
        watchdog.arm(deadline)
        deadline.finish()
        watchdog.finished()
    assert len(watchdog._heap) <= 2 * connection._Watchdog.STALE + 10
    assert all(any(entry[2] is d for entry in watchdog._heap) for d in live)  # the live ones are kept
