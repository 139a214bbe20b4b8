"""Every path that ends a run of tap-closum or target-closum: one line that says what to fix, the exit status.

Each case runs the console script as a process, as an orchestrator would, and
asserts exactly one ``<program> failed: ...`` line naming the problem, no
traceback, and the exit status (1, or 128 + the signal's number after a
termination signal). Also: a line that is not a Singer message first lets the
target finish what came before it, and a signal stops tap and target within
10 s even in the middle of a backoff.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import typing as t

import pytest
from helpers import Ended, run, start, wait_for, write_json
from tap_run import catalog_selecting
from test_target_support import lead, rejects, singer, target_config

from closum_sandbox.testing import free_port

if t.TYPE_CHECKING:
    from pathlib import Path

#: api_url of a loopback port nobody listens on: connections are refused
CLOSED = "http://127.0.0.1:{port}/api"


def assert_fails_with_one_line(ended: Ended, program: str, needles: tuple[str, ...]) -> None:
    """Exit status 1, one failure line holding every needle, no password of the cases in the output."""
    assert ended.code == 1, ended.err[-3000:]
    line = ended.line(program)
    for needle in needles:
        assert needle in line, line
    assert "Wr0ng-pw" not in ended.err
    assert "secret-Pw-1" not in ended.err


def closed_config(**overrides: t.Any) -> dict[str, t.Any]:
    quick = {"max_retries": 1, "backoff_base_seconds": 0.05, "request_timeout": 5}
    return (
        {"api_url": CLOSED.format(port=free_port()), "api_username": "u", "api_pw": "secret-Pw-1"} | quick | overrides
    )


# -- tap-closum ------------------------------------------------------------------------------
TAP_CASES: dict[str, tuple[t.Callable[[Path, t.Any], list[str]], tuple[str, ...]]] = {
    "config file missing": (lambda d, _sb: ["--config", str(d / "nope.json")], ("config file", "nope.json")),
    "config file not JSON": (
        lambda d, _sb: ["--config", str(_text(d / "c.json", "{api_username: x"))],
        ("config file", "not valid JSON"),
    ),
    "config not an object": (lambda d, _sb: ["--config", write_json(d / "c.json", [1])], ("config file", "object")),
    "start_date does not parse": (
        lambda d, sb: ["--config", write_json(d / "c.json", sb.config(start_date="yesterday"))],
        ("start_date", "'yesterday'", "ISO 8601"),
    ),
    "page_size not a number": (
        lambda d, sb: ["--config", write_json(d / "c.json", sb.config(page_size="many", max_retries=-1))],
        ("page_size: 'many' is not a whole number", "max_retries: -1 is less than the minimum of 0"),
    ),
    "api_pw missing": (
        lambda d, sb: ["--config", write_json(d / "c.json", {"api_url": sb.api_url, "api_username": "u"})],
        ("invalid settings", "api_pw"),
    ),
    "catalog not JSON": (
        lambda d, sb: ["--config", write_json(d / "c.json", sb.config()), "--catalog", str(_text(d / "k.json", "{"))],
        ("catalog file", "not valid JSON"),
    ),
    "catalog not a catalog": (
        lambda d, sb: ["--config", write_json(d / "c.json", sb.config()), "--catalog", write_json(d / "k.json", [])],
        ("catalog file", "'streams'"),
    ),
    "state file missing": (
        lambda d, sb: ["--config", write_json(d / "c.json", sb.config()), "--state", str(d / "state.json")],
        ("state file", "state.json"),
    ),
    "server unreachable": (
        lambda d, _sb: ["--config", write_json(d / "c.json", closed_config())],
        ("cannot reach http://127.0.0.1:", "connection refused"),
    ),
    "api_url without scheme": (
        lambda d, sb: ["--config", write_json(d / "c.json", sb.config(api_url=sb.api_url.removeprefix("http://")))],
        ("invalid settings: api_url: '127.0.0.1:", "/api' has no http:// or https:// in front", "such as https://"),
    ),
    "credentials refused": (
        lambda d, sb: ["--config", write_json(d / "c.json", sb.config(api_pw="Wr0ng-pw"))],
        ("api_username", "api_pw"),
    ),
}


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(TAP_CASES))
def test_tap_failure_is_one_line(sandbox, tmp_path, case):
    args, needles = TAP_CASES[case]
    ended = run("tap-closum", *args(tmp_path, sandbox), cwd=tmp_path)
    assert_fails_with_one_line(ended, "tap-closum", needles)


# -- configuration failures fail: a wrong api_url, streams this account does not serve ----------
@pytest.mark.parametrize("suffix", ["", "/api/v1", "/"], ids=["no /api", "/api/v1", "trailing slash"])
def test_a_wrong_api_url_fails_naming_the_url_tried_and_the_one_to_try(sandbox, tmp_path, suffix):
    api_url = sandbox.url + suffix
    tap = run("tap-closum", "--config", write_json(tmp_path / "t.json", sandbox.config(api_url=api_url)), cwd=tmp_path)
    config = target_config(sandbox, tmp_path, api_url=api_url)
    target = run(
        "target-closum",
        "--config",
        write_json(tmp_path / "c.json", config),
        cwd=tmp_path,
        stdin=singer("leads", [lead(1)]),
    )
    tried = api_url.rstrip("/") + "/token"
    for ended, program in ((tap, "tap-closum"), (target, "target-closum")):
        assert_fails_with_one_line(
            ended,
            program,
            (f"POST {tried} answered 404 Not Found", f"api_url must end with /api (try {sandbox.api_url})"),
        )
    assert not any(json.loads(x)["type"] == "RECORD" for x in tap.out.splitlines())
    assert not (tmp_path / "rejects.jsonl").exists()  # no record is blamed for the settings


def test_a_tap_run_whose_every_selected_stream_answers_404_fails(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(revision="2019")  # audience lists are of the 2021 revision
    config = sandbox.config()
    catalog = write_json(tmp_path / "k.json", catalog_selecting(config, {"audience_lists", "lead_audience_lists"}))
    ended = run("tap-closum", "--config", write_json(tmp_path / "c.json", config), "--catalog", catalog, cwd=tmp_path)
    assert_fails_with_one_line(
        ended,
        "tap-closum",
        ("every selected stream answered 404 (audience_lists, lead_audience_lists;", "/api/audience-list", "api_url"),
    )
    # One stream this account serves among them: the others are skipped with a warning, the run succeeds.
    catalog = write_json(tmp_path / "k.json", catalog_selecting(config, {"audience_lists", "cities"}))
    ended = run("tap-closum", "--config", write_json(tmp_path / "c.json", config), "--catalog", catalog, cwd=tmp_path)
    assert ended.code == 0, ended.err[-3000:]
    assert "Skipping stream audience_lists: GET /audience-list answered 404" in ended.err
    assert any(json.loads(x).get("stream") == "cities" for x in ended.out.splitlines())


def test_a_catalog_selecting_nothing_says_so_and_names_the_streams(sandbox, tmp_path):
    config = sandbox.config()
    catalog = write_json(tmp_path / "k.json", catalog_selecting(config, {"lead"}))  # a typo: the stream is leads
    ended = run("tap-closum", "--config", write_json(tmp_path / "c.json", config), "--catalog", catalog, cwd=tmp_path)
    assert ended.code == 0, ended.err[-3000:]
    warnings = [line for line in ended.err.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, warnings
    assert "The catalog selects no stream, so nothing is read" in warnings[0]
    assert "audience_lists, cities, contact_lifecycle_stages, contact_types, emails" in warnings[0]
    assert sandbox.requests_log("/api") == []


def test_a_target_writing_to_a_resource_the_account_lacks_fails(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(revision="2019")
    config = target_config(sandbox, tmp_path)
    text = singer("audience_lists", [{"id": 1, "name": "Feira"}, {"id": 2, "name": "Natal"}])
    ended = run("target-closum", "--config", write_json(tmp_path / "c.json", config), cwd=tmp_path, stdin=text)
    assert_fails_with_one_line(
        ended,
        "target-closum",
        (f"POST {sandbox.api_url}/audience-list answered 404 Not Found", "other Closum API revision", "resource_map"),
    )
    assert not (tmp_path / "rejects.jsonl").exists()
    assert ended.out == ""  # no STATE


def test_a_405_on_a_collection_fails_but_a_404_naming_a_record_is_a_reject(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path)
    sandbox.script_faults([{"method": "POST", "path": "/api/lead", "status": 404, "times": 1}])
    text = singer("leads", [lead(i) for i in range(1, 5)])
    ended = run("target-closum", "--config", write_json(tmp_path / "c.json", config), cwd=tmp_path, stdin=text)
    assert ended.code == 0, ended.err[-3000:]  # the list answers: that 404 was about the record
    assert [r["status"] for r in rejects(tmp_path / "rejects.jsonl")] == [404]
    sandbox.script_faults([{"method": "POST", "path": "/api/lead", "status": 405, "times": 1}])
    config = target_config(sandbox, tmp_path, ledger_path=str(tmp_path / "other.sqlite"))
    text = singer("leads", [lead(i) for i in range(10, 12)])
    ended = run("target-closum", "--config", write_json(tmp_path / "c.json", config), cwd=tmp_path, stdin=text)
    assert_fails_with_one_line(ended, "target-closum", (f"POST {sandbox.api_url}/lead answered 405",))


def test_unknown_settings_get_one_warning_naming_them_with_the_close_names(sandbox, tmp_path):
    typos = {"rejects_pth": "r.jsonl", "max_rejected_shares": 1, "colour": "blue"}
    config = write_json(tmp_path / "c.json", target_config(sandbox, tmp_path, **typos))
    target = run("target-closum", "--config", config, cwd=tmp_path, stdin=singer("leads", [lead(1)]))
    assert target.code == 0, target.err[-3000:]
    warned = [line.split(" | ")[-1] for line in target.err.splitlines() if "unknown settings" in line]
    expected = (
        "unknown settings, ignored: colour, max_rejected_shares (did you mean max_rejected_share?), "
        "rejects_pth (did you mean rejects_path?)"
    )
    assert warned == [expected]
    assert not (tmp_path / "r.jsonl").exists()
    tap_config = write_json(tmp_path / "t.json", sandbox.config(page_sise=10, stream_maps={}))
    tap = run("tap-closum", "--config", tap_config, "--discover", cwd=tmp_path)
    assert tap.code == 0, tap.err[-3000:]
    warned = [line.split(" | ")[-1] for line in tap.err.splitlines() if "unknown settings" in line]
    assert warned == ["unknown settings, ignored: page_sise (did you mean page_size?)"]  # stream_maps: the SDK's


def test_tap_api_going_away_mid_sync_is_one_line(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=300, latency_ms=150)
    config = sandbox.config(page_size=10, max_parallel_requests=2, max_retries=2, backoff_base_seconds=0.05)
    catalog = write_json(tmp_path / "k.json", catalog_selecting(config, {"leads"}))
    proc = start("tap-closum", config, "--catalog", catalog, cwd=tmp_path)
    wait_for(lambda: len(sandbox.requests_log("/api/lead")) >= 3, "the tap to read pages", proc)
    sandbox.stop()  # the API goes away in the middle of the sync
    ended = proc.finish(timeout=60)
    assert ended.code == 1
    line = ended.line("tap-closum")
    assert "cannot reach http://127.0.0.1:" in line
    assert any(json.loads(x)["type"] == "RECORD" for x in ended.out.splitlines()), "the records read were not written"


def test_a_traceback_is_shown_at_log_level_debug(tmp_path):
    ended = run(
        "tap-closum",
        "--config",
        write_json(tmp_path / "c.json", closed_config()),
        cwd=tmp_path,
        env={"TAP_CLOSUM_LOGLEVEL": "DEBUG"},
    )
    assert ended.code == 1
    assert "tap-closum failed: cannot reach" in ended.err
    assert "Traceback" in ended.err


# -- target-closum ---------------------------------------------------------------------------
BATCH_MISSING = {
    "type": "BATCH",
    "stream": "leads",
    "encoding": {"format": "jsonl", "compression": "gzip"},
    "manifest": ["file:///nonexistent/closum/batch-1.jsonl.gz"],
}
TARGET_CASES: dict[str, tuple[t.Callable[[Path, t.Any], tuple[list[str], str]], tuple[str, ...]]] = {
    "config file missing": (lambda d, _sb: (["--config", str(d / "nope.json")], ""), ("config file", "nope.json")),
    "config file not JSON": (
        lambda d, _sb: (["--config", str(_text(d / "c.json", "{"))], ""),
        ("config file", "not valid JSON"),
    ),
    "api_url without a host": (
        lambda d, sb: (["--config", write_json(d / "c.json", target_config(sb, d, api_url="https:///api"))], ""),
        ("invalid settings: api_url: 'https:///api' names no host; it must be a full URL",),
    ),
    "a setting of the wrong type": (
        lambda d, sb: (["--config", write_json(d / "c.json", target_config(sb, d, batch_size_rows="x"))], ""),
        ("invalid settings: batch_size_rows: 'x' is not a whole number",),
    ),
    "load_method overwrite": (
        lambda d, sb: (["--config", write_json(d / "c.json", target_config(sb, d, load_method="overwrite"))], ""),
        ("overwrite",),
    ),
    "unknown stream": (
        lambda d, sb: (["--config", write_json(d / "c.json", target_config(sb, d))], singer("orders", [{"id": 1}])),
        ("'orders'", "resource_map"),
    ),
    "record before its schema": (
        lambda d, sb: (
            ["--config", write_json(d / "c.json", target_config(sb, d))],
            json.dumps({"type": "RECORD", "stream": "leads", "record": lead(1)}) + "\n",
        ),
        ("line 1", "RECORD of stream 'leads' before any SCHEMA"),
    ),
    "BATCH file missing": (
        lambda d, sb: (
            ["--config", write_json(d / "c.json", target_config(sb, d))],
            singer("leads", []) + json.dumps(BATCH_MISSING) + "\n",
        ),
        ("line 2", "BATCH", "batch-1.jsonl.gz"),
    ),
    "BATCH file not gzip": (
        lambda d, sb: (
            ["--config", write_json(d / "c.json", target_config(sb, d))],
            singer("leads", [])
            + json.dumps(BATCH_MISSING | {"manifest": [(_text(d / "b.jsonl.gz", "plain")).as_uri()]})
            + "\n",
        ),
        ("line 2", "BATCH"),
    ),
    "unknown message type": (
        lambda d, sb: (
            ["--config", write_json(d / "c.json", target_config(sb, d))],
            singer("leads", []) + '{"type": "RECORDS", "stream": "leads"}\n',
        ),
        ("line 2", "unknown message type 'RECORDS'"),
    ),
    "a RECORD without its record": (
        lambda d, sb: (
            ["--config", write_json(d / "c.json", target_config(sb, d))],
            singer("leads", []) + '{"type": "RECORD", "stream": "leads"}\n',
        ),
        ("line 2", "record"),
    ),
    "server unreachable": (
        lambda d, _sb: (
            ["--config", write_json(d / "c.json", closed_config(ledger_path=str(d / "l.sqlite")))],
            singer("leads", [lead(1)]),
        ),
        ("cannot reach http://127.0.0.1:", "connection refused"),
    ),
    "credentials refused": (
        lambda d, sb: (
            ["--config", write_json(d / "c.json", target_config(sb, d, api_pw="Wr0ng-pw"))],
            singer("leads", [lead(1)]),
        ),
        ("api_username", "api_pw"),
    ),
    "rejects_path cannot be written": (
        lambda d, sb: (
            [
                "--config",
                write_json(d / "c.json", target_config(sb, d, rejects_path=str(_text(d / "f", "")) + "/r.jsonl")),
            ],
            "",
        ),
        ("rejects_path", "not a directory"),
    ),
    "ledger_path is a directory": (
        lambda d, sb: (["--config", write_json(d / "c.json", target_config(sb, d, ledger_path=str(d)))], ""),
        ("ledger_path", "directory"),
    ),
    "ledger_path is not a ledger": (
        lambda d, sb: (
            ["--config", write_json(d / "c.json", target_config(sb, d, ledger_path=str(_text(d / "l.db", "x" * 200))))],
            singer("leads", [lead(1)]),
        ),
        ("ledger_path", "l.db"),
    ),
    "--input file missing": (
        lambda d, sb: (
            ["--config", write_json(d / "c.json", target_config(sb, d)), "--input", str(d / "in.jsonl")],
            "",
        ),
        ("--input", "in.jsonl"),
    ),
}


@pytest.mark.parametrize("case", list(TARGET_CASES))
def test_target_failure_is_one_line(sandbox, tmp_path, case):
    make, needles = TARGET_CASES[case]
    args, stdin = make(tmp_path, sandbox)
    ended = run("target-closum", *args, cwd=tmp_path, stdin=stdin)
    assert_fails_with_one_line(ended, "target-closum", needles)


# -- a line that is not a Singer message, mid-stream --------------------------------------------
@pytest.mark.parametrize(
    "bad", ['{"type": "RECORD", "stream": "leads", "record": {', "[1, 2]", '{"stream": "leads"}'], ids=str
)
def test_a_bad_line_mid_stream_first_finishes_what_came_before_it(sandbox, tmp_path, bad):
    before = len(sandbox.records("lead"))
    good = [lead(i, email={"email": f"bad-line-{i}@example.com"}) for i in range(10)]
    after = [lead(100 + i) for i in range(5)]
    text = singer("leads", good, state_every=5) + bad + "\n" + singer("leads", after)
    config = target_config(sandbox, tmp_path, batch_size_rows=3)
    ended = run("target-closum", "--config", write_json(tmp_path / "c.json", config), cwd=tmp_path, stdin=text)
    assert ended.code == 1
    bad_lineno = 1 + len(good) + len(good) // 5 + 1  # SCHEMA, RECORDs, STATEs, then the bad line
    assert f"line {bad_lineno} " in ended.line("target-closum")
    # Every record before the bad line is written, none after it, and the last STATE before it is out.
    assert len(sandbox.records("lead")) - before == len(good)
    assert [json.loads(x) for x in ended.out.splitlines()][-1] == {"bookmarks": {"leads": {"done": 10}}}


def test_a_bad_line_records_the_rejects_before_it(sandbox, tmp_path):
    text = singer("leads", [lead(1), {"id": 2, "name": "no email or phone"}]) + "not json\n"
    config = target_config(sandbox, tmp_path)
    ended = run("target-closum", "--config", write_json(tmp_path / "c.json", config), cwd=tmp_path, stdin=text)
    assert ended.code == 1
    assert "line 4 is not JSON" in ended.line("target-closum")
    rejected = [json.loads(x) for x in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert [r["record"]["id"] for r in rejected] == [2]


# -- signals ------------------------------------------------------------------------------------
#: What a program logs when it starts to wait out a Retry-After of 30 s.
BACKOFF_30S = "Retrying in 30.0 s after try 1"


def _writes(ledger: Path) -> dict[str, int]:
    """How many writes of the ledger are in each state (read beside the run that holds it: WAL)."""
    if not ledger.exists():
        return {}
    with contextlib.closing(sqlite3.connect(ledger, timeout=5)) as db:
        try:
            return dict(db.execute("SELECT state, count(*) FROM writes GROUP BY state").fetchall())
        except sqlite3.OperationalError:  # the run has not created its table yet
            return {}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_tap_stops_mid_backoff_within_seconds_with_128_plus_signal(sandbox, tmp_path, sig):
    config = sandbox.config(page_size=25)
    sandbox.script_faults([{"method": "GET", "path": "/api/lead", "status": 503, "retry_after": 30, "times": 20}])
    catalog = write_json(tmp_path / "k.json", catalog_selecting(config, {"leads"}))
    proc = start("tap-closum", config, "--catalog", catalog, cwd=tmp_path)
    wait_for(lambda: BACKOFF_30S in proc.err(), "the tap to wait out the Retry-After", proc)
    ended = proc.stop(sig, "tap-closum")
    assert any(json.loads(x)["type"] == "STATE" for x in ended.out.splitlines())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_target_stops_mid_backoff_within_seconds_and_leaves_nothing_pending(sandbox, tmp_path, sig):
    sandbox.script_faults([{"method": "POST", "path": "/api/lead", "status": 429, "retry_after": 30, "times": 20}])
    config = target_config(sandbox, tmp_path, backoff_base_seconds=1)
    (tmp_path / "in.jsonl").write_text(singer("leads", [lead(i) for i in range(3)]))
    with (tmp_path / "in.jsonl").open() as fh:
        proc = start("target-closum", config, cwd=tmp_path, stdin=fh)
        # The first 429's Retry-After pauses every worker (the run's pace): the creates not yet
        # sent wait there, never pending; those sent are in their 30 s backoff.
        wait_for(lambda: BACKOFF_30S in proc.err(), "the target to wait out the Retry-After", proc)
        ended = proc.stop(sig, "target-closum")
    assert ended.out == ""  # no STATE: nothing was written
    # A 429 means the create was not made: no write is left pending for the next run.
    with sqlite3.connect(tmp_path / "ledger.sqlite") as db:
        assert db.execute("SELECT count(*) FROM writes WHERE state = 'pending'").fetchone() == (0,)


def test_tap_stops_within_seconds_when_a_request_in_flight_hangs(sandbox, tmp_path):
    # A retrieve that Closum never answers, on a worker thread: after the stop it gets the stop's
    # grace (closum_api.stop.STOP_GRACE), not its request_timeout of 60 s.
    config = sandbox.config(page_size=25, request_timeout=60)
    sandbox.script_faults([{"method": "GET", "path": "/api/lead/", "status": 503, "delay_ms": 40_000, "times": 1}])
    catalog = write_json(tmp_path / "k.json", catalog_selecting(config, {"leads", "lead_opt_ins"}))
    proc = start("tap-closum", config, "--catalog", catalog, cwd=tmp_path)

    def hanging_among_retrieves() -> bool:
        retrieves = sandbox.requests_log("/api/lead/")
        return len(retrieves) >= 3 and any(e["fault"] == "scripted" and e["status"] is None for e in retrieves)

    wait_for(hanging_among_retrieves, "opt-ins retrieved while one retrieve hangs", proc)
    ended = proc.stop(signal.SIGTERM, "tap-closum")
    assert any(json.loads(x)["type"] == "STATE" for x in ended.out.splitlines())


def test_target_stops_within_seconds_when_a_create_hangs_and_the_next_run_settles_it(sandbox, tmp_path):
    # A create that Closum never answers: after the stop it gets the stop's grace, not its
    # request_timeout of 60 s; it stays pending, and the next run settles it: no lead lost, none doubled.
    sandbox.script_faults([{"method": "POST", "path": "/api/lead", "status": 503, "delay_ms": 40_000, "times": 1}])
    config = target_config(sandbox, tmp_path, request_timeout=60)
    before = {r["id"] for r in sandbox.records("lead")}
    text = singer("leads", [lead(i) for i in range(3)])
    with (tmp_path / "in.jsonl").open("w+") as fh:
        fh.write(text)
        fh.seek(0)
        # A grace of 1 s (the product's is 5 s): still far below request_timeout.
        proc = start("target-closum", config, cwd=tmp_path, stdin=fh, constants={"closum_api.stop.STOP_GRACE": 1.0})
        ledger = tmp_path / "ledger.sqlite"
        wait_for(lambda: _writes(ledger) == {"done": 2, "pending": 1}, "the other two created, one hanging", proc)
        ended = proc.stop(signal.SIGTERM, "target-closum")
    assert ended.out == ""  # no STATE: one record of it is not written
    assert _writes(ledger) == {"done": 2, "pending": 1}
    again = run("target-closum", "--config", write_json(tmp_path / "c.json", config), cwd=tmp_path, stdin=text)
    assert again.code == 0, again.err[-3000:]
    new = [r for r in sandbox.records("lead") if r["id"] not in before]
    assert sorted(r["email"]["email"] for r in new) == sorted(lead(i)["email"]["email"] for i in range(3))
    assert _writes(ledger) == {"done": 3}


def test_target_waiting_for_input_stops_at_once_and_emits_the_state_of_what_is_written(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path, batch_size_rows=3)
    proc = start("target-closum", config, cwd=tmp_path, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    before = len(sandbox.records("lead"))

    def bad(n: int) -> dict[str, t.Any]:  # rejected as it is read: its line in the rejects file is observable
        return lead(n, email={"email": "not an address"})

    # A batch of three (two leads and a reject) is written before its STATE is read.
    proc.stdin.write(singer("leads", [lead(1), lead(2), bad(4)], final_state={"bookmarks": {"leads": 2}}))
    # A reject read after the STATE (its line shows the STATE was read), then lead 3: a batch of two, not full.
    for record in (bad(5), lead(3)):
        proc.stdin.write(json.dumps({"type": "RECORD", "stream": "leads", "record": record}) + "\n")
    proc.stdin.flush()  # the input stays open: the target waits for more
    wait_for(lambda: _writes(tmp_path / "ledger.sqlite") == {"done": 2}, "the first batch written", proc)
    wait_for(lambda: len(rejects(tmp_path / "rejects.jsonl")) == 2, "the STATE read (the reject after it)", proc)
    ended = proc.stop(signal.SIGTERM, "target-closum")
    assert [json.loads(x) for x in ended.out.splitlines()] == [{"bookmarks": {"leads": 2}}]
    assert len(sandbox.records("lead")) - before == 2  # lead 3 was read, not written: no STATE covers it
