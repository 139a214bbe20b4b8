"""target-closum as a process: one-line failures, a killed run rerun, and tap-closum | target-closum."""

from __future__ import annotations

import json
import signal

import pytest
from helpers import wait_for
from tap_run import run_tap
from test_target_support import lead, run_target, run_target_process, singer, target_config, target_process

from closum_sandbox.testing import wait_until


def _assert_one_line_failure(code: int, err: str, *needles: str) -> str:
    assert code == 1
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if "target-closum failed" in line]
    for needle in needles:
        assert needle in line
    return line


@pytest.mark.parametrize("stream", ["cities", "contact_lifecycle_stages", "orders"])
def test_unwritable_stream_ends_the_run_with_one_line(sandbox, tmp_path, stream):
    code, _out, err = run_target_process(
        target_config(sandbox, tmp_path), tmp_path, singer(stream, [{"id": 1, "city_name": "Abrantes"}])
    )
    _assert_one_line_failure(code, err, repr(stream), "resource_map")


def test_update_on_create_only_resource_ends_the_run_with_one_line(sandbox, tmp_path):
    config = target_config(
        sandbox, tmp_path, resource_map={"people": {"resource": "audience_list", "action": "update"}}
    )
    code, _out, err = run_target_process(config, tmp_path, singer("people", [{"id": 1, "name": "x"}]))
    _assert_one_line_failure(code, err, "people", "create-only")


def test_overwrite_and_bad_settings_end_the_run_with_one_line(sandbox, tmp_path):
    code, _out, err = run_target_process(target_config(sandbox, tmp_path, load_method="overwrite"), tmp_path, "")
    _assert_one_line_failure(code, err, "overwrite")
    code, _out, err = run_target_process(
        target_config(sandbox, tmp_path, resource_map={"x": {"resource": "city"}}), tmp_path, ""
    )
    _assert_one_line_failure(code, err, "invalid settings")


def test_input_that_is_not_singer_ends_the_run_with_one_line(sandbox, tmp_path):
    code, _out, err = run_target_process(target_config(sandbox, tmp_path), tmp_path, "lead_id,email\n1,a@b.co\n")
    _assert_one_line_failure(code, err, "not Singer")


def test_wrong_credentials_end_the_run_with_one_line_and_no_secret(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path, api_pw="Wr0ng-Passw0rd-123")
    code, out, err = run_target_process(config, tmp_path, singer("leads", [lead(1)]))
    _assert_one_line_failure(code, err, "api_username", "api_pw")
    assert "Wr0ng-Passw0rd-123" not in out + err


def test_a_normal_run_prints_state_and_one_summary_line_per_stream(sandbox, tmp_path):
    text = singer("leads", [lead(1), lead(2), {"id": 3, "name": "bad"}]) + singer(
        "emails", [{"email": "one@example.com"}], key_properties=(), final_state={"bookmarks": {"emails": 1}}
    )
    code, out, err = run_target_process(target_config(sandbox, tmp_path), tmp_path, text)
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [{"bookmarks": {"emails": 1}}]
    summary = [line for line in err.splitlines() if "stream leads → lead (create):" in line]
    assert len(summary) == 1
    assert "created 2" in summary[0]
    assert "rejected 1" in summary[0]
    assert any("stream emails → email (create): created 1" in line for line in err.splitlines())
    assert sandbox.settings.password not in err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_then_rerun_writes_every_record_exactly_once(sandbox_factory, tmp_path, sig):
    sandbox = sandbox_factory(latency_ms=40)
    before = len(sandbox.records("lead"))
    n = 240
    config = target_config(sandbox, tmp_path, batch_size_rows=40, max_parallel_requests=8)
    input_file = tmp_path / "input.singer"
    input_file.write_text(singer("leads", [lead(i) for i in range(n)], state_every=40))
    with input_file.open() as fh:
        proc = target_process(config, tmp_path, fh)
        wait_for(lambda: len(sandbox.records("lead")) - before >= 30, "30 leads written", proc)
        proc.send_signal(sig)
        ended = proc.finish(timeout=60)
        out, err = ended.out, ended.err
    written_at_kill = len(sandbox.records("lead")) - before
    assert 0 < written_at_kill < n, "the kill came too late to test anything"
    if sig == signal.SIGTERM:  # a graceful stop: writes finished, STATE out, no traceback, 128 + 15 as a shell says
        assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
    # Every STATE printed by the killed run covers only records already on the server.
    for line in out.splitlines():
        assert json.loads(line)["bookmarks"]["leads"]["done"] <= written_at_kill
    # The creates the kill cut off end on the server (written or not) before the rerun looks for them.
    wait_until(lambda: sandbox.requests_in_flight() == 0, "the server to end the requests of the killed run")
    run = run_target(config, input_file.read_text())
    mails = [r["email"]["email"] for r in sandbox.records("lead") if r.get("email")]
    assert len(sandbox.records("lead")) - before == n
    assert all(mails.count(f"lead{i}@example.com") == 1 for i in range(n))
    tally = run.tally("leads")
    assert tally["skipped"] > 0
    assert tally["created"] + tally["skipped"] == n


def test_tap_closum_into_target_closum_copies_one_account_into_another(sandbox_factory, tmp_path):
    source = sandbox_factory(seed=25)
    dest = sandbox_factory(seed=3)
    streams = {"leads", "emails", "phones", "contact_types"}
    tapped = run_tap(source.config(page_size=50), streams=streams)
    assert {m["stream"] for m in tapped.messages if m["type"] == "RECORD"} == streams
    text = "".join(json.dumps(m) + "\n" for m in tapped.messages)
    before = {name: len(dest.records(name)) for name in ("lead", "email", "phone", "contact_type")}
    labels_before = {r["label"] for r in dest.records("contact_type")}
    run = run_target(target_config(dest, tmp_path), text)
    src = {name: source.records(name) for name in ("lead", "email", "phone", "contact_type")}
    after = {name: dest.records(name) for name in ("lead", "email", "phone", "contact_type")}
    assert len(after["lead"]) - before["lead"] == len(src["lead"])
    # Contact types are matched on their label: those the destination has already are not created again.
    missing = [r["label"] for r in src["contact_type"] if r["label"] not in labels_before]
    assert 0 < len(missing) < len(src["contact_type"])
    assert len(after["contact_type"]) - before["contact_type"] == len(missing)
    assert (run.tally("contact_types")["created"], run.tally("contact_types")["matched"]) == (
        len(missing),
        len(src["contact_type"]) - len(missing),
    )
    lead_emails = sum(1 for r in src["lead"] if r.get("email"))
    lead_phones = sum(1 for r in src["lead"] if r.get("phone"))
    assert len(after["email"]) - before["email"] == len(src["email"]) + lead_emails
    assert len(after["phone"]) - before["phone"] == len(src["phone"]) + lead_phones
    copied = sorted((r["name"], (r.get("email") or {}).get("email")) for r in after["lead"][before["lead"] :])
    assert copied == sorted((r["name"], (r.get("email") or {}).get("email")) for r in src["lead"])
    assert sorted(r["label"] for r in after["contact_type"][before["contact_type"] :]) == sorted(missing)
    assert all(run.tally(s)["rejected"] == 0 for s in streams), [run.tally(s) for s in streams]
    assert run.states
    assert run.states[-1] == tapped.state
    # Copying again writes nothing.
    dest.clear_log()
    run_target(target_config(dest, tmp_path), text)
    assert [e for e in dest.requests_log("/api") if e["method"] in {"POST", "PUT"} and e["path"] != "/api/token"] == []
