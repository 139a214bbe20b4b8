"""Servers that trickle, lie about their pages or fail a write in odd ways: every run ends, each record once."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest
from helpers import wait_for
from tap_run import run_tap, run_tap_process
from test_target_support import lead, posts, run_target, run_target_process, singer, target_config, target_process

from closum_api.client import ClosumClient, Connection
from closum_api.registry import get
from closum_api.retry import ClosumGaveUp
from closum_api.stop import StopEvent
from target_closum.ledger import Ledger

EMAIL = get("email")


# -- a server that trickles -------------------------------------------------------
def test_a_body_trickled_byte_by_byte_fails_the_try_at_request_timeout_and_the_retry_gets_it(sandbox):
    sandbox.script_faults([{"method": "GET", "path": "/api/email", "trickle_ms": 300}])
    client = ClosumClient(
        Connection(sandbox.api_url, "sandbox", "sandbox", timeout=1.5, max_tries=3, backoff_base=0),
        stop=StopEvent(),
    )
    began = time.monotonic()
    envelope = client.list_page(EMAIL, limit=5)
    took = time.monotonic() - began
    client.close()
    assert len(envelope["data"]) == 5
    assert [e["fault"] for e in sandbox.requests_log("/api/email")] == ["trickle", None]
    assert took < 1.5 + 5  # the trickle (a byte every 0.3 s: minutes for the whole body) was cut at 1.5 s


@pytest.fixture
def header_trickler():
    """A port whose server accepts, then sends an HTTP status line one byte every 0.3 s, forever."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    done = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 10_000:
                if done.wait(0.3):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    done.set()
    listener.close()


def test_headers_trickled_byte_by_byte_end_the_request_at_request_timeout(header_trickler):
    connection = Connection(
        f"http://127.0.0.1:{header_trickler}/api", "u", "p", timeout=1.5, max_tries=2, backoff_base=0
    )
    client = ClosumClient(connection, stop=StopEvent())
    began = time.monotonic()
    with pytest.raises(ClosumGaveUp) as gave_up:
        client.auth.token()
    took = time.monotonic() - began
    client.close()
    assert "not complete within request_timeout" in str(gave_up.value)
    assert "after 2 tries" in str(gave_up.value)
    assert took < 2 * 1.5 + 5  # two tries of 1.5 s and a backoff, not the minutes the trickle would take


def test_tap_and_target_end_within_a_minute_against_a_trickling_server(sandbox, tmp_path):
    # A byte every 0.4 s: no read ever waits request_timeout (1 s), only the whole request's watchdog can end it.
    trickle = {"trickle_ms": 400, "times": 1000}
    sandbox.script_faults([{"method": "GET", "path": "/api/lead", **trickle}, {"method": "POST", **trickle}])
    config = sandbox.config(request_timeout=1, max_retries=1, backoff_base_seconds=0.01)
    began = time.monotonic()
    out = run_tap_process(config, tmp_path, streams={"leads"})
    assert out.returncode == 1
    assert "not complete within request_timeout" in out.stderr.strip().splitlines()[-1]
    tconfig = target_config(sandbox, tmp_path, request_timeout=1, max_retries=1, backoff_base_seconds=0.01)
    code, _, err = run_target_process(tconfig, tmp_path, singer("leads", [lead(1)]), timeout=60)
    assert code == 1
    assert "target-closum failed: " in err.strip().splitlines()[-1]
    assert time.monotonic() - began < 60


# -- a server that lies about its pages ----------------------------------------------------
@pytest.mark.parametrize("lie", ["page_count", "repeat_last"])
def test_the_tap_reads_a_lying_list_to_its_end_each_record_once(sandbox_factory, lie, caplog):
    sandbox = sandbox_factory(seed=45, pagination_lie=lie)
    for descending, stream, resource in ((True, "leads", "lead"), (False, "cities", "city")):
        out = run_tap(sandbox.config(page_size=10), streams={stream})
        expected = sorted((r["id"] for r in sandbox.records(resource)), reverse=descending)
        assert out.ids(stream) == expected
    assert "the read ends here" in caplog.text
    assert len(sandbox.requests_log("/api/lead")) < 20 + 300  # the read ahead's buffer, not a million pages


@pytest.mark.parametrize("lie", ["page_count", "repeat_last"])
def test_the_targets_match_index_reads_a_lying_list_and_creates_no_duplicate(sandbox_factory, tmp_path, lie):
    sandbox = sandbox_factory(seed=30, pagination_lie=lie)
    existing = [r for r in sandbox.records("lead") if r.get("email")][:10]
    records = [{"id": 1000 + i, "name": "Again", "email": r["email"]} for i, r in enumerate(existing)]
    config = target_config(
        sandbox, tmp_path, page_size=10, resource_map={"leads": {"resource": "lead", "match_on": ["email"]}}
    )
    run = run_target(config, singer("leads", records))
    assert run.tally("leads")["matched"] == 10
    assert posts(sandbox, "/api/lead") == []


# -- a write answered in odd ways -------------------------------------------------------
@pytest.mark.parametrize("status", [408, 505, 507, 520, 522, 524])
def test_a_create_answered_an_odd_5xx_after_writing_is_reconciled_not_rejected(sandbox, tmp_path, status):
    sandbox.script_faults([{"method": "POST", "path": "/api/lead", "status": status, "after_write": True}])
    run = run_target(target_config(sandbox, tmp_path), singer("leads", [lead(1), lead(2)]))
    assert run.tally("leads")["created"] == 2
    assert run.tally("leads").get("rejected", 0) == 0
    assert run.tally("leads")["reconciled"] == 1
    emails = [r["email"]["email"] for r in sandbox.records("lead") if r.get("email")]
    assert emails.count("lead1@example.com") == 1
    assert emails.count("lead2@example.com") == 1
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 0


def test_a_create_answered_an_odd_5xx_before_writing_is_written_once(sandbox, tmp_path):
    sandbox.script_faults([{"method": "POST", "path": "/api/lead", "status": 524, "times": 2}])
    run = run_target(target_config(sandbox, tmp_path), singer("leads", [lead(1)]))
    assert run.tally("leads")["created"] == 1
    assert [r["status"] for r in posts(sandbox, "/api/lead")] == [524, 524, 200]


# -- the budget counts each request's failures in a row ----------------------------------
def test_scattered_failures_of_an_outcome_check_never_add_up_to_a_give_up(sandbox, tmp_path):
    # The POST's answer is lost; the check then reads pages, each failing twice before it is answered:
    # eight failures in all, never three in a row for one request, so the create settles.
    sandbox.add_records("lead", 600)
    faults = [{"method": "POST", "path": "/api/lead", "status": 500, "after_write": True}]
    faults += [{"method": "GET", "path": "/api/lead", "status": 503, "times": 2}]
    sandbox.script_faults(faults)
    config = target_config(sandbox, tmp_path, max_retries=2)
    run = run_target(config, singer("leads", [lead(1)]))
    assert run.tally("leads")["created"] == 1
    assert len(sandbox.records("lead")) == 625 + 1


def test_a_target_run_through_every_sixth_call_failing_and_two_second_tokens_completes(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(fail_every=6, token_ttl=2, latency_ms=20)
    records = [lead(i) for i in range(120)]
    text = singer("leads", records, final_state={"bookmarks": {"leads": {"done": 120}}})
    code, out, err = run_target_process(target_config(sandbox, tmp_path), tmp_path, text)
    assert code == 0, err[-2000:]
    assert [json.loads(line) for line in out.splitlines() if line.strip()] == [{"bookmarks": {"leads": {"done": 120}}}]
    emails = [r["email"]["email"] for r in sandbox.records("lead") if r.get("email")]
    assert all(emails.count(f"lead{i}@example.com") == 1 for i in range(120))


# -- a stop during the match index read -------------------------------------------------
def lead_calls(sandbox, method: str) -> list[dict]:
    return [e for e in sandbox.requests_log("/api/lead") if e["method"] == method]


def test_sigterm_during_the_match_index_read_ends_the_target_within_seconds(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=25, latency_ms=400)
    sandbox.add_records("lead", 3000)
    config = target_config(
        sandbox, tmp_path, page_size=10, resource_map={"leads": {"resource": "lead", "match_on": ["email"]}}
    )
    (tmp_path / "in.jsonl").write_text(singer("leads", [lead(i) for i in range(5)]))
    with (tmp_path / "in.jsonl").open() as fh:
        proc = target_process(config, tmp_path, fh)
        wait_for(lambda: len(lead_calls(sandbox, "GET")) >= 3, "the target to read its match index", proc)
        proc.send_signal(signal.SIGTERM)
        ended = proc.finish(timeout=60)
    assert ended.seconds < 5
    assert ended.code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in ended.err.strip().splitlines()[-1]
    assert posts(sandbox, "/api/lead") == []


@pytest.mark.parametrize("lie", ["page_count", "repeat_last"])
def test_an_incremental_run_and_its_sweep_end_on_a_lying_list(sandbox_factory, lie):
    sandbox = sandbox_factory(seed=45)
    config = sandbox.config(page_size=10, sweep_cycle_runs=1)
    first = run_tap(config, streams={"leads"})
    new_ids = sandbox.add_records("lead", 3)
    sandbox.configure(pagination_lie=lie)
    sandbox.clear_log()
    out = run_tap(config, state=first.state, streams={"leads"})
    assert sorted(out.ids("leads")) == sorted(new_ids)  # the new ones, and nothing again: the history is unchanged
    assert len(sandbox.requests_log("/api/lead")) < 40
