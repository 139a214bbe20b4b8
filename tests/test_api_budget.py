"""The request budget: the run's pace (fake clock, then a rate-limited sandbox) and one retry budget per operation."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time

import pytest
from tap_run import run_tap, run_tap_process
from test_target_support import lead, posts, run_target_process, singer, target_config

from closum_api.pace import FIXED_HEADROOM, START_WINDOW, Pace
from closum_api.stop import ClosumStopped, StopEvent
from closum_sandbox.testing import SandboxProcess, free_port
from target_closum.ledger import Ledger


class FakeClock:
    """A clock that only moves when the pace sleeps (or the test says so)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def paced(max_rps: float | None = None) -> tuple[Pace, FakeClock]:
    clock = FakeClock()
    return Pace(max_rps, stop=StopEvent(), clock=clock, sleep=clock.sleep), clock


def send(pace: Pace, clock: FakeClock, status: int = 200, retry_after: float | None = None) -> float:
    """One request: a slot, its answer; the time it was sent."""
    pace.acquire()
    sent = clock.now
    pace.release()
    pace.observe(status, retry_after)
    return sent


def answers(pace: Pace, clock: FakeClock, count: int, every: float = 0.0) -> None:
    """``count`` requests answered 200, ``every`` seconds apart."""
    for _ in range(count):
        send(pace, clock)
        clock.now += every


# -- the pace, on a fake clock ----------------------------------------------------
def test_fixed_pace_spaces_every_request_just_under_the_limit():
    pace, clock = paced(10)
    times = [send(pace, clock) for _ in range(21)]
    gaps = {round(b - a, 6) for a, b in itertools.pairwise(times)}
    assert gaps == {round(1 / (10 * FIXED_HEADROOM), 6)}  # no burst, whatever asks
    assert pace.stats().mode == "fixed"
    assert 9 <= 20 / (times[-1] - times[0]) < 10


def test_adaptive_pace_sends_at_once_until_the_first_429():
    pace, clock = paced()
    start = clock.now
    answers(pace, clock, 200)
    assert clock.now == start  # nothing waited
    assert pace.rate is None
    assert pace.stats().mode == "unpaced"


def test_a_429_drops_the_rate_below_what_was_answered_and_everyone_waits_retry_after():
    pace, clock = paced()
    answers(pace, clock, 20, 0.04)  # 20 answers within the last second
    send(pace, clock, 429, retry_after=1)
    assert pace.rate == pytest.approx(0.9 * 20)
    refused_at = clock.now
    # A second 429 of the same burst does not drop the rate again.
    send(pace, clock, 429, retry_after=1)
    assert pace.rate == pytest.approx(0.9 * 20)
    # The next request waits out the Retry-After, the ones after it are spaced at the new rate.
    times = [send(pace, clock) for _ in range(5)]
    assert times[0] >= refused_at + 1
    assert {round(b - a, 6) for a, b in itertools.pairwise(times)} == {round(1 / (0.9 * 20), 6)}
    stats = pace.stats()
    assert (stats.mode, stats.http_429, stats.requests) == ("adaptive", 2, 27)


def test_after_a_drop_the_rate_is_probed_upward_gently():
    pace, clock = paced()
    answers(pace, clock, 10, 0.09)
    send(pace, clock, 429)
    dropped = pace.rate
    assert dropped == pytest.approx(9.0)
    rates = []
    for _ in range(4):
        clock.now += 2.0  # two quiet seconds between probes
        send(pace, clock)
        rates.append(pace.rate)
    # Each probe adds a percent of the ceiling (10/s): no jump back into the limit.
    assert rates == pytest.approx([9.1, 9.2, 9.3, 9.4])


def test_5xx_are_not_a_limit_but_a_503_retry_after_pauses_everyone():
    pace, clock = paced()
    answers(pace, clock, 10)
    for status in (503, 503, 500, 503, 502, 500):  # a burst of stumbles within one second
        send(pace, clock, status)
    assert pace.rate is None
    assert pace.stats().mode == "unpaced"
    send(pace, clock, 503, retry_after=3)
    asked = clock.now
    assert send(pace, clock) == pytest.approx(asked + 3)
    assert pace.rate is None


def test_at_most_max_in_flight_requests_are_sent_at_once():
    pace = Pace(1000, stop=StopEvent(), max_in_flight=3)  # fixed: no slow start, the limit in flight alone
    for _ in range(3):
        pace.acquire()
    sent = threading.Event()

    def fourth() -> None:
        pace.acquire()
        sent.set()

    worker = threading.Thread(target=fourth)
    worker.start()
    assert not sent.wait(0.2)  # a fourth waits while three are in flight...
    pace.release()
    assert sent.wait(5)  # ...and goes as soon as one is answered
    worker.join()


def test_a_429_in_fixed_mode_still_lowers_the_rate():
    pace, clock = paced(10)
    send(pace, clock)
    send(pace, clock, 429)
    assert pace.rate == pytest.approx(0.9 * 10 * FIXED_HEADROOM)


def test_slow_start_lets_one_more_request_in_flight_per_answer():
    pace = Pace(stop=StopEvent())
    for _ in range(START_WINDOW):
        pace.acquire()
    third = threading.Thread(target=pace.acquire)
    third.start()
    third.join(0.3)
    assert third.is_alive()  # the window is full until an answer comes
    pace.release()
    pace.observe(200)
    third.join(2)
    assert not third.is_alive()


def test_the_metric_and_the_line():
    pace, clock = paced()
    answers(pace, clock, 9, 0.1)
    send(pace, clock, 429)
    stats = pace.stats()
    assert stats.line().startswith("requests: 10 in 0.9 s (11.1/s); answered 429: 1 (10.0 %); adaptive pace")
    metric = stats.metric()
    assert (metric["metric"], metric["value"], metric["tags"]["http_429"]) == ("closum_request_budget", 10, 1)
    assert metric["tags"]["mode"] == "adaptive"
    # The first 429 came after 9 answers within a second: that is what Closum allowed, and what to set.
    assert metric["tags"]["limit_rps"] == 9
    assert stats.advice() == (
        "Closum answered 429 (too many requests) to 1 of 10 requests: it allowed about 9 per second; "
        "set max_requests_per_second: 9 to pace runs under that from their first request"
    )


def test_no_429_no_advice_and_a_429_under_a_fixed_pace_says_to_lower_it():
    pace, clock = paced()
    answers(pace, clock, 30, 0.01)
    assert pace.stats().advice() is None
    assert pace.stats().metric()["tags"]["limit_rps"] is None
    pace, clock = paced(40)  # set above what the account allows
    answers(pace, clock, 30)
    send(pace, clock, 429, retry_after=1)
    advice = pace.stats().advice()
    assert advice is not None
    assert advice == (
        "Closum answered 429 (too many requests) to 1 of 31 requests even under max_requests_per_second: "
        "it allowed about 30 per second; lower max_requests_per_second to 30"
    )


def test_what_was_allowed_is_the_most_answers_seen_within_one_second_before_the_first_429():
    pace, clock = paced()
    answers(pace, clock, 5, 0.01)  # five answers within 0.05 s
    clock.now += 5  # a quiet stretch, then answers too sparse to say anything
    answers(pace, clock, 3, 0.6)
    send(pace, clock, 429)
    assert pace.stats().limit_rps == 5
    clock.now += 10
    for _ in range(20):  # later answers, faster: the first 429 already told
        send(pace, clock)
    send(pace, clock, 429)
    assert pace.stats().limit_rps == 5


def test_a_stop_ends_a_pace_wait_at_once():
    run_stop = StopEvent()
    pace = Pace(stop=run_stop)
    pace.observe(429, retry_after=30)  # every worker now waits 30 s
    timer = threading.Timer(0.1, run_stop.request_stop, args=(15,))
    start = time.monotonic()
    timer.start()
    try:
        with pytest.raises(ClosumStopped) as stopped:
            pace.acquire()
    finally:
        timer.cancel()
    assert time.monotonic() - start < 2
    assert stopped.value.signum == 15
    assert stopped.value.stop is run_stop


# -- the pace against a rate-limited sandbox ------------------------------------------
def _statuses(sandbox):
    return [(r["time"], r["status"]) for r in sandbox.requests_log("/api")]


@pytest.mark.slow
def test_max_requests_per_second_meets_no_429():
    # The server in a process of its own: it counts each call when it arrives, on time, however busy the tap's
    # threads keep this process (in one process they would hold the calls back, then let them in together).
    with SandboxProcess(seed=60, rate_limit=20, latency_ms=5) as sandbox:
        sandbox.add_records("lead", 200)
        sandbox.clear_log()
        config = sandbox.config(page_size=4, max_parallel_requests=8, max_requests_per_second=20)
        out = run_tap(config, streams={"leads"})
        calls = _statuses(sandbox)
    assert len(out.ids("leads")) == 260
    assert len(calls) > 60
    assert [s for _, s in calls if s == 429] == []
    span = calls[-1][0] - calls[0][0]
    assert (len(calls) - 1) / span > 0.85 * 20


@pytest.mark.slow
def test_adaptive_pace_meets_the_limit_once_then_stays_under_it(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=60, rate_limit=20, latency_ms=5)
    sandbox.add_records("lead", 200)
    assert sandbox.requests_log("/api") == []  # the admin calls count for no limit: the run meets it afresh
    out = run_tap_process(sandbox.config(page_size=4, max_parallel_requests=8), tmp_path, streams={"leads"})
    assert out.returncode == 0, out.stderr
    calls = _statuses(sandbox)
    first = calls[0][0]
    refused = [t for t, s in calls if s == 429]
    assert refused, "the rate limit never bit; the test proves nothing"
    # Only the requests in flight when the limit is first met are refused; none after that.
    assert len(refused) <= 8
    assert all(t - first < 1.5 for t in refused), [round(t - first, 2) for t in refused]
    # The end of the run says what the budget saw, as a line and as a metric.
    [line] = [x for x in out.stderr.splitlines() if "answered 429:" in x]
    assert f"requests: {len(calls)} in " in line
    assert f"answered 429: {len(refused)} (" in line
    [metric] = [x for x in out.stderr.splitlines() if "closum_request_budget" in x]
    tags = json.loads(metric.split("METRIC: ", 1)[1])["tags"]
    assert tags["http_429"] == len(refused)
    assert tags["mode"] == "adaptive"
    # It met a limit of 20 calls a second and says what to set so that the next run meets none: never more
    # than the server allowed (answers still being read when the 429 is seen may leave it a little under).
    assert 16 <= tags["limit_rps"] <= 20
    [advice] = [x for x in out.stderr.splitlines() if "set max_requests_per_second" in x]
    assert "WARNING" in advice
    assert advice.endswith(
        f"set max_requests_per_second: {tags['limit_rps']} to pace runs under that from their first request"
    )


# -- one retry budget -------------------------------------------------------------------
def test_token_endpoint_answering_html_ends_the_target_at_once_with_one_line(sandbox, tmp_path):
    sandbox.script_faults([{"method": "POST", "path": "/api/token", "status": 200, "body": "html", "times": 1000}])
    config = sandbox.config(  # default retry settings
        ledger_path=str(tmp_path / "ledger.sqlite"), rejects_path=str(tmp_path / "rejects.jsonl")
    )
    start = time.monotonic()
    code, _, err = run_target_process(config, tmp_path, singer("leads", [lead(i) for i in range(3)]), timeout=60)
    assert time.monotonic() - start < 15
    assert code != 0
    failed = [x for x in err.splitlines() if "target-closum failed:" in x]
    assert len(failed) == 1
    assert failed[0].endswith(
        "target-closum failed: POST /token answered 200 with an HTML page, not JSON: "
        "503 Service Unavailable — is api_url a Closum API?"
    )
    assert "Traceback" not in err
    assert len(posts(sandbox, "/api/token")) == 1  # never retried, by any worker
    assert posts(sandbox, "/api/lead") == []
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 0  # no create was sent


def test_token_renewals_draw_from_the_request_budget_not_a_budget_of_their_own(sandbox, tmp_path):
    sandbox.script_faults([{"method": "POST", "path": "/api/token", "status": 503, "times": 1000}])
    config = target_config(sandbox, tmp_path, max_retries=2, backoff_base_seconds=0.01, max_parallel_requests=4)
    code, _, err = run_target_process(config, tmp_path, singer("leads", [lead(i) for i in range(3)]))
    assert code != 0
    assert "POST /token answered 503" in err
    assert "(gave up after 3 tries)" in err
    # 3 tries of the first write's budget (+1: the token asked for ahead, while the input is read);
    # the other writes waiting for the same token do not start a budget of their own.
    assert len(posts(sandbox, "/api/token")) == 3 + 1
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 0


def _unreachable(port: int, **settings: object) -> dict[str, object]:
    """Settings for an API on a port nothing listens on: 3 quick tries."""
    return {
        "api_url": f"http://127.0.0.1:{port}/api",
        "api_username": "u",
        "api_pw": "p",
        "max_retries": 2,
        "backoff_base_seconds": 0.01,
        **settings,
    }


def test_unreachable_api_ends_the_tap_with_one_line(tmp_path):
    port = free_port()
    config = _unreachable(port)
    out = run_tap_process(config, tmp_path, streams={"emails"})
    assert out.returncode != 0
    assert f"tap-closum failed: cannot reach http://127.0.0.1:{port}/api after 3 tries: connection refused" in (
        out.stderr
    )


def test_unreachable_api_ends_the_target_with_one_line_and_nothing_pending(tmp_path):
    port = free_port()
    config = _unreachable(
        port, ledger_path=str(tmp_path / "ledger.sqlite"), rejects_path=str(tmp_path / "rejects.jsonl")
    )
    code, _, err = run_target_process(config, tmp_path, singer("leads", [lead(i) for i in range(3)]))
    assert code != 0
    failed = [x for x in err.splitlines() if "target-closum failed:" in x]
    assert len(failed) == 1
    assert failed[0].endswith(f"cannot reach http://127.0.0.1:{port}/api after 3 tries: connection refused")
    assert Ledger(tmp_path / "ledger.sqlite").count("pending") == 0


@pytest.fixture
def silent_port():
    """A loopback port whose listener never accepts, its queue full: a connection to it is never set up."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    with contextlib.suppress(OSError):
        for _ in range(4):
            filler = socket.create_connection(("127.0.0.1", port), timeout=0.3)
            queued.append(filler)
    probe = socket.socket()
    probe.settimeout(0.5)
    with pytest.raises(TimeoutError):  # the port is silent indeed: what the test needs
        probe.connect(("127.0.0.1", port))
    probe.close()
    yield port
    for filler in queued:
        filler.close()
    listener.close()


def test_a_host_that_never_answers_fails_a_try_after_the_connect_timeout_not_request_timeout(silent_port, tmp_path):
    # request_timeout is 60 s; connecting gives up after CONNECT_TIMEOUT (10 s; 1 s in this run, which would
    # otherwise wait the 10 s) and the one try ends the run.
    config = _unreachable(silent_port, max_retries=0, request_timeout=60)
    connect_timeout = 1.0
    constants = {"closum_api.connection.CONNECT_TIMEOUT": connect_timeout}
    began = time.monotonic()
    out = run_tap_process(config, tmp_path, streams={"emails"}, constants=constants)
    assert time.monotonic() - began < connect_timeout + 15  # and so well before request_timeout (60 s)
    assert out.returncode == 1
    assert (
        f"tap-closum failed: cannot reach http://127.0.0.1:{silent_port}/api after 1 try: "
        "timed out connecting (the host does not answer)"
    ) in out.stderr
