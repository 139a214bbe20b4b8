"""tap-closum riding out a misbehaving API: retries, tokens, refused credentials, secrets."""

from __future__ import annotations

import logging

import pytest
from helpers import FAST, stored_ids
from tap_run import run_tap, run_tap_process

from closum_api.client import ClosumClient, Connection
from closum_api.registry import get
from closum_api.stop import StopEvent


def test_bursts_of_500_503_and_429_lose_and_double_nothing(sandbox_factory, caplog):
    sandbox = sandbox_factory(seed=50)
    sandbox.script_faults(
        [
            {"method": "GET", "path": "/api/lead", "status": 500, "body": "empty", "times": 2},
            {"method": "GET", "path": "/api/lead", "status": 503, "body": "html", "times": 2},
            {"method": "GET", "path": "/api/lead", "status": 429, "body": "json", "retry_after": 1, "times": 1},
            {"method": "GET", "path": "/api/email", "status": 502, "body": "json", "times": 1},
            {"method": "GET", "path": "/api/email", "status": 504, "body": "html", "times": 1},
        ]
    )
    with caplog.at_level(logging.WARNING):
        out = run_tap(sandbox.config(page_size=6, max_parallel_requests=4, **FAST), streams={"leads", "emails"})
    assert sorted(out.ids("leads")) == stored_ids(sandbox, "lead")
    assert len(out.ids("leads")) == len(set(out.ids("leads")))
    assert sorted(out.ids("emails")) == stored_ids(sandbox, "email")
    statuses = [r["status"] for r in sandbox.requests_log("/api/lead")]
    assert statuses.count(500) == 2
    assert statuses.count(503) == 2
    assert statuses.count(429) == 1
    retries = [r.getMessage() for r in caplog.records if "Retrying in" in r.getMessage()]
    assert len(retries) == 7
    assert any("an HTML page" in m for m in retries)


def test_timeouts_and_dropped_connections_are_retried(sandbox_factory):
    sandbox = sandbox_factory(seed=20)
    sandbox.script_faults(
        [
            {"method": "GET", "path": "/api/lead", "status": 200, "delay_ms": 2500},
            {"method": "GET", "path": "/api/lead", "status": 200, "drop_connection": True},
            {"method": "GET", "path": "/api/phone", "status": 200, "drop_connection": True, "times": 2},
        ]
    )
    out = run_tap(sandbox.config(page_size=6, request_timeout=1, **FAST), streams={"leads", "phones"})
    assert sorted(out.ids("leads")) == stored_ids(sandbox, "lead")
    assert sorted(out.ids("phones")) == stored_ids(sandbox, "phone")
    assert len(out.ids("leads")) == len(set(out.ids("leads")))
    faults = [r for r in sandbox.requests_log("/api/") if r.get("fault")]
    assert len(faults) == 4, faults


def test_random_failures_at_a_high_rate_still_give_every_record_once(sandbox_factory):
    sandbox = sandbox_factory(seed=40, fail_rate=0.3, fault_seed=7)
    out = run_tap(
        sandbox.config(page_size=5, max_parallel_requests=4, max_retries=12, backoff_base_seconds=0.01),
        streams={"leads", "phones"},
    )
    assert sorted(out.ids("leads")) == stored_ids(sandbox, "lead")
    assert sorted(out.ids("phones")) == stored_ids(sandbox, "phone")
    failed = [r for r in sandbox.requests_log("/api/") if r["status"] >= 500]
    assert failed, "the sandbox injected no failure; the test proves nothing"


def test_429_pauses_every_worker_for_retry_after(sandbox_factory):
    sandbox = sandbox_factory(seed=60, rate_limit=20)
    out = run_tap(sandbox.config(page_size=3, max_parallel_requests=8, **FAST), streams={"leads"})
    assert sorted(out.ids("leads")) == stored_ids(sandbox, "lead")
    limited = [r for r in sandbox.requests_log("/api/lead") if r["status"] == 429]
    served = [r for r in sandbox.requests_log("/api/lead") if r["status"] == 200]
    assert limited, "the rate limit never bit; the test proves nothing"
    # After a 429 the workers wait Retry-After together instead of hammering:
    # far fewer refusals than successful pages.
    assert len(limited) < len(served)


def test_exhausted_retries_fail_with_the_endpoint_and_the_reason(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=5)
    sandbox.script_faults([{"method": "GET", "path": "/api/email", "status": 503, "body": "html", "times": 10}])
    out = run_tap_process(sandbox.config(max_retries=2, backoff_base_seconds=0.01), tmp_path, streams={"emails"})
    assert out.returncode != 0
    assert "GET /email answered 503" in out.stderr
    assert "Traceback" not in out.stderr


def test_token_renewed_before_expiry_during_a_long_run(sandbox_factory):
    sandbox = sandbox_factory(seed=40, token_ttl=1, latency_ms=60)
    # About 40 sequential requests of 60 ms: the run outlives several tokens.
    out = run_tap(sandbox.config(page_size=3, max_parallel_requests=1), streams={"leads", "emails"})
    assert sorted(out.ids("leads")) == stored_ids(sandbox, "lead")
    assert sorted(out.ids("emails")) == stored_ids(sandbox, "email")
    tokens = list(sandbox.requests_log("/api/token"))
    assert len(tokens) >= 2
    assert not [r for r in sandbox.requests_log("/api/lead") if r["status"] == 401]


def test_revoked_token_is_renewed_once_on_401(sandbox):
    client = ClosumClient(
        Connection(sandbox.api_url, sandbox.username, sandbox.password, timeout=10, max_tries=6, backoff_base=0.01),
        stop=StopEvent(),
    )
    client.list_page(get("email"))
    sandbox.revoke_tokens()
    sandbox.clear_log()
    envelope = client.list_page(get("email"))
    assert envelope["success"] is True
    log = sandbox.requests_log()
    assert [(r["path"], r["status"]) for r in log] == [("/api/email", 401), ("/api/token", 200), ("/api/email", 200)]


def test_refused_credentials_exit_non_zero_with_one_line(sandbox, tmp_path):
    config = sandbox.config(api_pw="not-the-password-xyz")
    out = run_tap_process(config, tmp_path)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if "refused the credentials" in line]
    assert len(errors) == 1
    assert "api_username" in errors[0]
    assert "api_pw" in errors[0]
    assert "Traceback" not in out.stderr
    assert "not-the-password-xyz" not in out.stderr


@pytest.mark.parametrize(
    ("override", "setting"),
    [({"page_size": 0}, "page_size"), ({"api_url": "ftp://x"}, "api_url"), ({"api_username": ""}, "api_username")],
)
def test_config_errors_name_the_setting(sandbox, tmp_path, override, setting):
    out = run_tap_process(sandbox.config(**override), tmp_path)
    assert out.returncode != 0
    assert setting in out.stderr
    assert "Traceback" not in out.stderr


def test_secrets_never_reach_the_logs_even_at_debug(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=10, username="loader", password="s3cret-pw-777")
    token = sandbox.token()
    out = run_tap_process(sandbox.config(**FAST), tmp_path, env={"TAP_CLOSUM_LOG_LEVEL": "DEBUG", "LOGLEVEL": "DEBUG"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.records["leads"]
    everything = out.stderr + "\n".join(str(m) for m in out.messages)
    assert "s3cret-pw-777" not in everything
    assert "Bearer" not in everything
    assert token not in everything
    assert "DEBUG" in out.stderr, "debug logging was not on; the test proves less than it claims"


def test_a_refused_page_size_falls_back_once_to_25_with_a_warning(sandbox_factory, caplog):
    sandbox = sandbox_factory(seed=60)
    sandbox.script_faults([{"method": "GET", "path": "/api/lead", "status": 400, "body": "json"}])
    with caplog.at_level(logging.WARNING):
        out = run_tap(sandbox.config(page_size=500, **FAST), streams={"leads", "emails"})
    assert sorted(out.ids("leads")) == stored_ids(sandbox, "lead")
    assert sorted(out.ids("emails")) == stored_ids(sandbox, "email")
    limits = [
        (r["path"], r["query"].get("limit"), r["status"]) for r in sandbox.requests_log("/api/") if r["method"] == "GET"
    ]
    refused = limits.index(("/api/lead", "500", 400))
    assert all(limit == "500" for _, limit, _ in limits[:refused])  # streams read before the refusal
    after = limits[refused + 1 :]
    assert after
    assert all(limit == "25" for _, limit, _ in after)
    warnings = [r.getMessage() for r in caplog.records if "falling back to the documented 25" in r.getMessage()]
    assert len(warnings) == 1
    assert "page_size 500" in warnings[0]


def test_a_second_400_after_the_fallback_is_fatal_and_names_the_endpoint(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=5)
    sandbox.script_faults([{"method": "GET", "path": "/api/email", "status": 400, "body": "json", "times": 2}])
    out = run_tap_process(sandbox.config(page_size=500, **FAST), tmp_path, streams={"emails"})
    assert out.returncode != 0
    assert "GET /email answered 400 Bad Request" in out.stderr
    assert "Traceback" not in out.stderr
