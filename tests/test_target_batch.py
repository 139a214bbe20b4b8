"""target-closum and BATCH messages: records read from batch files go the way of RECORD messages."""

from __future__ import annotations

import gzip
import json
import re
import signal
import typing as t

import pytest
from helpers import start, wait_for, write_json
from tap_run import catalog_selecting
from test_target_support import (
    lead,
    open_schema,
    rejects,
    run_target,
    run_target_process,
    schema_of,
    singer,
    target_config,
    target_process,
    writes,
)

from closum_api.failure import ClosumSettingsError
from target_closum.index import fold_name
from target_closum.reader import BadInputError
from target_closum.target import TargetClosum

if t.TYPE_CHECKING:
    from pathlib import Path

GZIP = {"format": "jsonl", "compression": "gzip"}
PLAIN = {"format": "jsonl", "compression": "none"}
LEAD_FIELDS = ("id", "name", "email", "phone", "city", "custom_data")


def _leads() -> list[dict[str, t.Any]]:
    return [
        lead(1, city="Agueda"),  # a lookup: city → city_id
        lead(2),
        {"id": 3, "name": "Plain mail", "email": "PLAIN3@example.com"},  # wrapped into {"email": ...}
        {"id": 4, "name": "Bad mail", "email": "not-an-address"},  # refused by validation
        lead(5, custom_data={"source": "batch"}),
        lead(6),
    ]


def _batch_file(path: Path, records: t.Iterable[dict[str, t.Any]], *, gzipped: bool = True) -> str:
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gzipped:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path.as_uri()


def _batch(stream: str, manifest: list[str], encoding: dict[str, t.Any] | None = None) -> str:
    message = {"type": "BATCH", "stream": stream, "encoding": encoding or GZIP, "manifest": manifest}
    return json.dumps(message) + "\n"


def _state(value: dict[str, t.Any]) -> str:
    return json.dumps({"type": "STATE", "value": value}) + "\n"


def _summaries(stderr: str) -> dict[str, dict[str, t.Any]]:
    """Each stream's ``closum_load_summary`` metric in a run's log."""
    out = {}
    for line in stderr.splitlines():
        _, marker, rest = line.partition("METRIC: ")
        if marker and '"closum_load_summary"' in rest:
            metric = json.loads(rest)
            out[metric["tags"]["stream"]] = metric["value"]
    return out


def _new(sandbox: t.Any, resource: str, before: set[int]) -> list[dict[str, t.Any]]:
    return [r for r in sandbox.records(resource) if r["id"] not in before]


def _ids(sandbox: t.Any, resource: str) -> set[int]:
    return {r["id"] for r in sandbox.records(resource)}


def test_gzip_batch_file_of_leads_is_loaded_then_skipped_on_a_rerun(sandbox, tmp_path):
    records = _leads()
    uri = _batch_file(tmp_path / "leads-1.jsonl.gz", records)
    text = singer("leads", [], schema=open_schema(*LEAD_FIELDS)) + _batch("leads", [uri]) + _state({"done": 1})
    config = target_config(sandbox, tmp_path, batch_size_rows=2)  # the file is written in bounded batches
    before = _ids(sandbox, "lead")

    code, out, err = run_target_process(config, tmp_path, text)

    assert code == 0, err[-2000:]
    assert "1 batch manifests" in err
    created = _new(sandbox, "lead", before)
    assert sorted(r["email"]["email"] for r in created) == sorted(
        ["lead1@example.com", "lead2@example.com", "PLAIN3@example.com", "lead5@example.com", "lead6@example.com"]
    )
    cities = {fold_name(c["city_name"]): c["id"] for c in sandbox.records("city")}
    by_mail = {r["email"]["email"]: r for r in created}
    assert by_mail["lead1@example.com"]["city_id"] == cities["agueda"]
    assert json.loads(by_mail["lead5@example.com"]["custom_data"]) == {"source": "batch"}
    [reject] = rejects(tmp_path / "rejects.jsonl")
    assert reject["stream"] == "leads"
    assert reject["record"] == records[3]
    assert reject["status"] is None
    assert "email.email" in reject["message"]
    summary = _summaries(err)["leads"]
    assert (summary["created"], summary["rejected"], summary["skipped"]) == (5, 1, 0)
    assert "stream leads → lead (create): created 5, updated 0, skipped as already loaded 0, rejected 1" in err
    assert [json.loads(line) for line in out.splitlines()] == [{"done": 1}]  # the STATE, after the records

    # The same BATCH again: the ledger knows every record; nothing is written.
    sandbox.clear_log()
    code, out, err = run_target_process(config, tmp_path, text)
    assert code == 0, err[-2000:]
    assert writes(sandbox) == []
    summary = _summaries(err)["leads"]
    assert (summary["created"], summary["skipped"], summary["rejected"]) == (0, 5, 1)
    assert [json.loads(line) for line in out.splitlines()] == [{"done": 1}]


def test_sigterm_mid_batch_then_rerun_writes_every_record_exactly_once(sandbox_factory, tmp_path):
    sandbox = sandbox_factory(latency_ms=40)
    before = _ids(sandbox, "lead")
    n, per_file = 240, 40
    text = singer("leads", [], schema=open_schema(*LEAD_FIELDS))
    for k in range(n // per_file):  # as the tap sends them: a BATCH per file, each followed by its STATE
        uri = _batch_file(tmp_path / f"leads-{k}.jsonl.gz", [lead(i) for i in range(k * per_file, (k + 1) * per_file)])
        text += _batch("leads", [uri]) + _state({"bookmarks": {"leads": {"done": (k + 1) * per_file}}})
    config = target_config(sandbox, tmp_path, batch_size_rows=per_file, max_parallel_requests=8)
    input_file = tmp_path / "input.singer"
    input_file.write_text(text)
    with input_file.open() as fh:
        proc = target_process(config, tmp_path, fh)
        wait_for(lambda: len(sandbox.records("lead")) - len(before) >= 30, "30 leads written", proc)
        proc.send_signal(signal.SIGTERM)
        ended = proc.finish(timeout=60)
        out, err = ended.out, ended.err
    written_at_stop = len(_new(sandbox, "lead", before))
    assert 0 < written_at_stop < n, "the stop came too late to test anything"
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    # Every STATE printed by the stopped run covers only records already on the server.
    for line in out.splitlines():
        assert json.loads(line)["bookmarks"]["leads"]["done"] <= written_at_stop
    run = run_target(config, text)
    mails = [r["email"]["email"] for r in _new(sandbox, "lead", before)]
    assert sorted(mails) == sorted(f"lead{i}@example.com" for i in range(n))
    tally = run.tally("leads")
    assert tally["skipped"] > 0
    assert tally["created"] + tally["skipped"] == n
    assert run.states[-1] == {"bookmarks": {"leads": {"done": n}}}


def test_batch_records_meet_exactly_what_record_messages_meet(sandbox_factory, tmp_path):
    """The same records as RECORD lines into one account and as BATCH files into its twin: the same outcome."""
    records = [
        *_leads(),
        lead(7, name=7),  # does not match the stream's schema
        {"id": 8, "name": "No contact"},  # neither email nor phone: payload validation
        lead(9, custom_data="{not json"),  # the server answers 400
    ]
    schema = schema_of("lead")
    by_records, by_batch = sandbox_factory(seed=4), sandbox_factory(seed=4)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = _ids(by_records, "lead")
    assert _ids(by_batch, "lead") == before

    ran_records = run_target(
        target_config(by_records, tmp_path / "a", max_rejected_share=1),
        singer("leads", records, schema=schema, final_state={"n": 9}),
    )
    manifest = [
        _batch_file(tmp_path / "b" / "part-1.jsonl", records[:3], gzipped=False),
        _batch_file(tmp_path / "b" / "part-2.jsonl", records[3:], gzipped=False),
        _batch_file(tmp_path / "b" / "part-3.jsonl", [], gzipped=False),
    ]
    ran_batch = run_target(
        target_config(by_batch, tmp_path / "b", max_rejected_share=1),
        singer("leads", [], schema=schema) + _batch("leads", manifest, PLAIN) + _state({"n": 9}),
    )

    def outcome(sandbox: t.Any, root: Path) -> tuple[t.Any, ...]:
        leads = [
            (r["name"], r["email"]["email"], r.get("city_id"), r.get("custom_data"))
            for r in _new(sandbox, "lead", before)
        ]
        lines = [{k: v for k, v in line.items() if k != "time"} for line in rejects(root / "rejects.jsonl")]
        return sorted(leads), sorted(lines, key=lambda line: line["record"]["id"])

    assert outcome(by_batch, tmp_path / "b") == outcome(by_records, tmp_path / "a")
    leads, lines = outcome(by_batch, tmp_path / "b")
    assert [lead_[1] for lead_ in leads] == ["lead1@example.com", "lead2@example.com", "lead6@example.com"]
    # The tap's schema wants email an object and custom_data a string: 3, 4 and 5 do not match it, nor 7's name.
    assert [(line["record"]["id"], line["status"]) for line in lines] == [
        (3, None),
        (4, None),
        (5, None),
        (7, None),
        (8, None),
        (9, 400),
    ]
    assert all("does not match the stream's schema" in line["message"] for line in lines[:4])
    assert "needs at least one of" in lines[4]["message"]
    assert "custom_data" in lines[5]["message"]
    assert ran_batch.tally("leads") == ran_records.tally("leads")
    assert ran_batch.states == ran_records.states == [{"n": 9}]


def _tap_into_target(source: t.Any, dest: t.Any, tmp_path: Path, streams: set[str]) -> tuple[str, str]:
    """``tap-closum | target-closum``, the tap writing BATCH files; the target's stdout and stderr."""
    batches = tmp_path / "batches"
    tap_config = source.config(
        page_size=50,
        batch_config={"encoding": GZIP, "storage": {"root": batches.as_uri(), "prefix": "closum-"}},
    )
    catalog = write_json(tmp_path / "catalog.json", catalog_selecting(tap_config, streams))
    with start("tap-closum", tap_config, "--catalog", catalog, cwd=tmp_path) as tap:
        target = target_process(target_config(dest, tmp_path), tmp_path, tap.stdout)
        assert tap.stdout is not None
        tap.stdout.close()  # the target holds the pipe's reading end now
        ended = target.finish(timeout=300)
        out, err = ended.out, ended.err
        assert tap.wait(timeout=60) == 0, tap.err()[-2000:]
    assert ended.code == 0, err[-2000:]
    return out, err


def test_tap_closum_batch_files_into_target_closum_copy_one_account_into_another(sandbox_factory, tmp_path):
    source, dest = sandbox_factory(seed=25), sandbox_factory(seed=3)
    streams = {"emails", "contact_types"}
    before = {name: _ids(dest, name) for name in ("email", "contact_type")}
    labels_before = {r["label"] for r in dest.records("contact_type")}

    out, err = _tap_into_target(source, dest, tmp_path, streams)

    # The tap sent its records in files only, and the files are there.
    read = re.search(r"\((\d+) schemas, (\d+) records, (\d+) batch manifests", err)
    assert read, err[-2000:]
    assert (int(read[1]), int(read[2])) == (2, 0)
    assert int(read[3]) >= 2
    assert len(list((tmp_path / "batches").glob("closum-*.json.gz"))) == int(read[3])
    src = {name: source.records(name) for name in ("email", "contact_type")}
    copied = _new(dest, "email", before["email"])
    assert sorted(r["email"] for r in copied) == sorted(r["email"] for r in src["email"])
    missing = [r["label"] for r in src["contact_type"] if r["label"] not in labels_before]
    assert 0 < len(missing) < len(src["contact_type"])  # contact types are matched on their label
    assert sorted(r["label"] for r in _new(dest, "contact_type", before["contact_type"])) == sorted(missing)
    summaries = _summaries(err)
    assert (summaries["emails"]["created"], summaries["emails"]["rejected"]) == (len(src["email"]), 0)
    assert (summaries["contact_types"]["created"], summaries["contact_types"]["matched"]) == (
        len(missing),
        len(src["contact_type"]) - len(missing),
    )
    assert out.strip()  # the tap's STATE, once the records before it are written

    # Copying again writes nothing: the ledger knows every record.
    dest.clear_log()
    _tap_into_target(source, dest, tmp_path, streams)
    assert writes(dest) == []


def test_batch_files_are_read_from_the_batch_config_storage(sandbox, tmp_path):
    files = tmp_path / "store"
    files.mkdir()
    _batch_file(files / "leads-9.jsonl.gz", [lead(9)])
    config = target_config(sandbox, tmp_path, batch_config={"storage": {"root": files.as_uri()}})
    before = _ids(sandbox, "lead")
    # The manifest names the file somewhere else: the storage of batch_config is where it is read.
    run = run_target(config, singer("leads", []) + _batch("leads", ["s3://elsewhere/leads-9.jsonl.gz"]))
    assert [r["email"]["email"] for r in _new(sandbox, "lead", before)] == ["lead9@example.com"]
    assert run.tally("leads")["created"] == 1
    with pytest.raises(ClosumSettingsError, match=r"batch_config\.storage needs a root"):
        TargetClosum(config=target_config(sandbox, tmp_path, batch_config={"storage": {"prefix": "x"}}))


def test_unusable_batch_messages_name_their_line(sandbox, tmp_path):
    config = target_config(sandbox, tmp_path)
    good = _batch_file(tmp_path / "good.jsonl.gz", [lead(1)])
    not_object = _batch_file(tmp_path / "bad.jsonl.gz", [lead(2), [1, 2]])
    cases = {
        "before schema": (_batch("leads", [good]), ("line 1", "BATCH of stream 'leads' before any SCHEMA")),
        "parquet": (
            singer("leads", []) + _batch("leads", [good], {"format": "parquet", "compression": "none"}),
            ("line 2", "is a BATCH whose files cannot be read", "not supported"),
        ),
        "not an encoding": (
            singer("leads", []) + _batch("leads", [good], {"compression": "gzip"}),
            ("line 2", "is not a BATCH encoding"),
        ),
        "manifest not a list": (
            singer("leads", [])
            + json.dumps({"type": "BATCH", "stream": "leads", "encoding": GZIP, "manifest": good})
            + "\n",
            ("line 2", "the manifest is not a list of file URLs"),
        ),
        "a line not an object": (
            singer("leads", []) + _batch("leads", [good, not_object]),
            ("line 2", "bad.jsonl.gz: line 2 is not a JSON object"),
        ),
        "no manifest": (
            singer("leads", []) + json.dumps({"type": "BATCH", "stream": "leads", "encoding": GZIP}) + "\n",
            ("line 2", "is incomplete"),
        ),
    }
    before = _ids(sandbox, "lead")
    for name, (text, needles) in cases.items():
        with pytest.raises(BadInputError) as caught:
            run_target(config, text)
        for needle in needles:
            assert needle in str(caught.value), (name, str(caught.value))
    # A file is read whole before its records go on: nothing of a file with a bad line is written.
    assert [r["email"]["email"] for r in _new(sandbox, "lead", before)] == ["lead1@example.com"]
