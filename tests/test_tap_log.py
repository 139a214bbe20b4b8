"""What tap-closum prints on stderr: at the default level a short log that is never silent for long.

The tap runs as a process over real HTTP, its progress interval shortened
(``tap_closum.progress.INTERVAL``) so that a 1,000-lead read with consent lasts
several intervals; the assertions are about the log lines it printed.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from dataclasses import dataclass

import pytest
from tap_run import run_tap_process

from tap_closum.optins import BATCH

#: The progress interval of these runs (the tap's is 10 s), and how late a line may be on a busy machine.
INTERVAL = 2.0
MARGIN = 3.0
#: The leads of the long read, and the tap's page size (the default).
LEADS = 1000
PAGE = 100
#: The SDK's console format: ``{asctime:23s} | {levelname:8s} | {name:30s} | {message}``.
LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \| (?P<level>\w+)\s*\| (?P<name>\S+)\s*\| (?P<msg>.*)$"
)
PROGRESS = re.compile(
    r"^(?P<stream>\w+): (?P<records>[\d,]+) records, (?P<requests>[\d,]+) requests, [\d,]+ records/s$"
)
SUMMARY = re.compile(r"^(?P<stream>\w+): (?P<records>[\d,]+) records in [\d.]+ s, (?P<requests>[\d,]+) requests$")
LOG_ENV = ("LOGLEVEL", "TAP_CLOSUM_LOGLEVEL", "SINGER_SDK_LOG_CONFIG")


@dataclass
class Line:
    at: dt.datetime
    level: str
    name: str
    msg: str


def progress_every(interval: float) -> dict[str, float]:
    """The constants of a tap-closum run whose progress interval is ``interval`` seconds."""
    return {"tap_closum.progress.INTERVAL": interval}


def parse(stderr: str, *, strict: bool = True) -> list[Line]:
    """The log lines of a run; ``strict``: every line of stderr must be one (at DEBUG, others' may span lines)."""
    lines = []
    for text in stderr.splitlines():
        m = LINE.match(text)
        assert m or not strict, f"not a log line: {text!r}"
        if m:
            # The SDK logs local time; only differences matter here.
            lines.append(Line(dt.datetime.fromisoformat(m["at"].replace(",", ".")), m["level"], m["name"], m["msg"]))
    return lines


def count(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture
def default_level(monkeypatch):
    for name in LOG_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("default_level")
def test_a_long_read_with_consent_prints_a_short_log_that_is_never_silent_for_long(sandbox_factory, tmp_path):
    # 1,000 leads answered after 40 ms each: a read of several intervals, made of waits more than of work.
    sandbox = sandbox_factory(seed=LEADS, latency_ms=40)
    streams = {"leads", "lead_opt_ins"}
    out = run_tap_process(sandbox.config(), tmp_path, streams=streams, constants=progress_every(INTERVAL))
    assert out.returncode == 0, out.stderr
    leads, opt_ins = len(out.records["leads"]), len(out.records["lead_opt_ins"])
    assert leads == LEADS
    assert opt_ins > 0

    lines = parse(out.stderr)
    assert len(lines) <= 200
    messages = [line.msg for line in lines]
    assert not [m for m in messages if "assumed to be unsorted" in m]

    # One summary per stream, with what it emitted and the requests it sent (its pages, one retrieve per lead).
    summaries = {m["stream"]: m for msg in messages if (m := SUMMARY.match(msg))}
    assert len([msg for msg in messages if SUMMARY.match(msg)]) == len(summaries) == 2
    assert (count(summaries["leads"]["records"]), count(summaries["leads"]["requests"])) == (leads, LEADS // PAGE)
    assert (count(summaries["lead_opt_ins"]["records"]), count(summaries["lead_opt_ins"]["requests"])) == (
        opt_ins,
        leads,
    )

    # Progress lines for each stream while it reads, at most one per interval, counts only growing.
    for stream in streams:
        progress = [(line.at, m) for line in lines if (m := PROGRESS.match(line.msg)) and m["stream"] == stream]
        assert progress, f"no progress line for {stream}"
        for (before, a), (after, b) in itertools.pairwise(progress):
            assert (after - before).total_seconds() >= INTERVAL - 0.01
            assert count(b["records"]) >= count(a["records"])
            assert count(b["requests"]) > count(a["requests"])

    # Never silent for longer than the interval (and a margin) from the first stream's start to the last summary.
    start = next(i for i, line in enumerate(lines) if line.msg.startswith("Beginning sync of 'leads'"))
    end = max(i for i, line in enumerate(lines) if SUMMARY.match(line.msg))
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(lines[start : end + 1])]
    assert max(gaps) <= INTERVAL + MARGIN, max(gaps)

    # The consent child is synced once per batch of leads, but logs as one stream: its start, METRICs, summary once.
    assert leads // BATCH > 1
    child = [m for m in messages if "lead_opt_ins" in m and not PROGRESS.match(m)]
    assert len([m for m in child if m.startswith("Beginning sync of 'lead_opt_ins'")]) == 1
    assert len([m for m in child if m.startswith("Starting incremental sync of 'lead_opt_ins'")]) == 1
    metrics = [m for m in child if m.startswith("METRIC:")]
    assert len(metrics) == 3
    assert f'"metric":"record_count","value":{opt_ins},' in " ".join(metrics)
    assert f'"metric":"http_request_count","value":{leads},' in " ".join(metrics)
    # The request-budget line ends the run.
    assert messages[-2].startswith("requests: ")


@pytest.mark.usefixtures("default_level")
def test_at_debug_each_request_and_each_batch_of_the_child_is_logged(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(seed=BATCH * 2 + 10)
    out = run_tap_process(
        sandbox.config(),
        tmp_path,
        env={"TAP_CLOSUM_LOGLEVEL": "DEBUG"},
        streams={"leads", "lead_opt_ins"},
    )
    assert out.returncode == 0, out.stderr
    ids = out.ids("leads")
    messages = [line.msg for line in parse(out.stderr, strict=False)]
    # One line per request, with its status and time.
    for lead_id in ids:
        assert sum(1 for m in messages if re.match(rf"^GET \S*/lead/{lead_id}: 200 in [\d.]+ s$", m)) == 1
    assert len([m for m in messages if m.startswith("Beginning sync of 'lead_opt_ins'")]) == 3
    assert not [m for m in messages if "assumed to be unsorted" in m]
