"""Rejects as a run of target-closum meets them, each case run as a process over real HTTP.

- past ``max_rejected_share`` the run fails with one line, after writing the good records and setting
  the others aside, and holds back the STATE;
- the log summarises the rejects by reason (count and the first example);
- a replay does not append a reject the file already holds;
- a record that cannot be encoded is a reject, not a stop; blank input lines are passed over;
- the rejects file is always whole JSON lines, and a failed write names it.
"""

from __future__ import annotations

import json
import resource
import typing as t

from helpers import Ended, run, write_json
from test_target_support import lead, rejects, run_target, singer, target_config

if t.TYPE_CHECKING:
    from pathlib import Path

NO_CONTACT = "needs at least one of: email, phone"


def _no_contact(n: int) -> dict[str, t.Any]:
    return {"id": n, "name": f"No contact {n}"}


def _target(tmp_path: Path, config: dict[str, t.Any], text: str) -> Ended:
    return run("target-closum", "--config", write_json(tmp_path / "c.json", config), cwd=tmp_path, stdin=text)


def _new_emails(sandbox: t.Any, before: set[int]) -> list[str]:
    return sorted(r["email"]["email"] for r in sandbox.records("lead") if r["id"] not in before)


def test_past_max_rejected_share_the_run_fails_after_writing_the_good_records(sandbox, tmp_path):
    before = {r["id"] for r in sandbox.records("lead")}
    good = [lead(i, email={"email": f"share-{i}@example.com"}) for i in range(1, 3)]
    text = singer("leads", [*good, *(_no_contact(n) for n in range(10, 13))], final_state={"bookmarks": {"n": 5}})
    ended = _target(tmp_path, target_config(sandbox, tmp_path), text)  # 3 of 5 rejected: over the default 0.5
    assert ended.code == 1
    line = ended.line("target-closum")
    assert line.startswith("3 of 5 records (60%) were rejected, more than max_rejected_share 0.5 allows")
    assert "mapping error" in line
    assert str(tmp_path / "rejects.jsonl") in line
    assert "the last STATE was held back" in line
    assert ended.out == ""  # no STATE: a rerun after the fix sends the rejected records again
    assert _new_emails(sandbox, before) == ["share-1@example.com", "share-2@example.com"]
    assert [r["record"]["id"] for r in rejects(tmp_path / "rejects.jsonl")] == [10, 11, 12]


def test_within_max_rejected_share_the_run_succeeds_and_emits_its_state(sandbox, tmp_path):
    text = singer("leads", [lead(1), lead(2), _no_contact(3)], final_state={"bookmarks": {"n": 3}})
    ended = _target(tmp_path, target_config(sandbox, tmp_path), text)  # 1 of 3: within 0.5
    assert ended.code == 0, ended.err[-3000:]
    assert [json.loads(x) for x in ended.out.splitlines()] == [{"bookmarks": {"n": 3}}]


def test_max_rejected_share_zero_fails_on_any_reject_and_one_never(sandbox, tmp_path):
    text = singer("leads", [lead(1), lead(2), lead(3), _no_contact(4)])
    strict = _target(tmp_path, target_config(sandbox, tmp_path, max_rejected_share=0), text)
    assert strict.code == 1
    assert strict.line("target-closum").startswith("1 of 4 records (25%) were rejected, more than max_rejected_share 0")
    text = singer("leads", [_no_contact(n) for n in range(5, 9)], final_state={"n": 1})
    lenient = _target(tmp_path, target_config(sandbox, tmp_path, max_rejected_share=1), text)
    assert lenient.code == 0, lenient.err[-3000:]
    assert [json.loads(x) for x in lenient.out.splitlines()] == [{"n": 1}]


def test_a_dry_run_past_the_share_fails_too(sandbox, tmp_path):
    text = singer("leads", [_no_contact(1), _no_contact(2), lead(3)])
    ended = _target(tmp_path, target_config(sandbox, tmp_path, dry_run=True), text)
    assert ended.code == 1
    assert ended.line("target-closum").startswith("2 of 3 records (67%) would be rejected")
    assert not (tmp_path / "rejects.jsonl").exists()


def test_the_log_summarises_rejects_by_reason_with_the_first_example(sandbox, tmp_path):
    records = [
        lead(1),
        _no_contact(2),
        lead(3, email={"email": "first-bad"}),
        _no_contact(4),
        lead(5, email={"email": "second-bad"}),
        _no_contact(6),
        lead(7),
        lead(8),
        lead(9),
        lead(10),
    ]
    ended = _target(tmp_path, target_config(sandbox, tmp_path), singer("leads", records))
    assert ended.code == 0, ended.err[-3000:]
    lines = [x.split(" | ")[-1] for x in ended.err.splitlines() if "stream leads: rejected" in x]
    assert len(lines) == 2, lines
    assert lines[0] == f"stream leads: rejected 3 records like this one: {NO_CONTACT}"
    assert lines[1].startswith("stream leads: rejected 2 records like this one: field email.email: 'first-bad'")


def test_a_replay_does_not_append_the_rejects_already_in_the_file(sandbox, tmp_path):
    text = singer("leads", [lead(1), lead(2), _no_contact(3), lead(4, email={"email": "nope"})])
    first = _target(tmp_path, target_config(sandbox, tmp_path), text)
    assert first.code == 0, first.err[-3000:]
    again = _target(tmp_path, target_config(sandbox, tmp_path), text)
    assert again.code == 0, again.err[-3000:]
    assert "2 of the rejects were in" in again.err
    assert [r["record"]["id"] for r in rejects(tmp_path / "rejects.jsonl")] == [3, 4]
    # A reject that is new (another record, or another reason) is appended.
    third = _target(tmp_path, target_config(sandbox, tmp_path), singer("leads", [lead(5), _no_contact(6)]))
    assert third.code == 0, third.err[-3000:]
    assert [r["record"]["id"] for r in rejects(tmp_path / "rejects.jsonl")] == [3, 4, 6]


def test_a_record_that_cannot_be_encoded_is_a_reject_and_blank_lines_are_passed_over(sandbox, tmp_path):
    before = {r["id"] for r in sandbox.records("lead")}
    message = '{"type": "RECORD", "stream": "leads", "record": %s}\n'
    lone = message % '{"id": 2, "name": "Ana \\ud800", "email": "s2@ex.com"}'  # as some exports write it
    nan = message % '{"id": 3, "name": "N", "email": "s3@ex.com", "score": NaN}'
    good = [message % json.dumps(lead(n)) for n in (1, 4, 5, 6)]
    state = '{"type": "STATE", "value": {"n": 6}}\n'
    text = singer("leads", []) + good[0] + "\n" + lone + "   \n" + nan + "".join(good[1:]) + state + "\n"
    ended = _target(tmp_path, target_config(sandbox, tmp_path), text)
    assert ended.code == 0, ended.err[-3000:]
    assert [json.loads(x) for x in ended.out.splitlines()] == [{"n": 6}]
    assert len(_new_emails(sandbox, before)) == 4
    lone_reject, nan_reject = rejects(tmp_path / "rejects.jsonl")
    assert lone_reject["record"]["name"] == "Ana \ud800"
    assert lone_reject["message"].startswith("field name: text with a lone surrogate")
    assert nan_reject["message"] == "field score: NaN or Infinity, which JSON cannot carry"


def test_a_failed_write_of_the_rejects_file_names_it_and_leaves_whole_lines(sandbox, tmp_path):
    limit = 64 * 1024  # the largest file this target may write: the rejects file fills up first

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    records = [_no_contact(n) | {"notes": "x" * 3000} for n in range(60)]
    config = write_json(tmp_path / "c.json", target_config(sandbox, tmp_path, max_rejected_share=1))
    ended = run("target-closum", "--config", config, cwd=tmp_path, stdin=singer("leads", records), preexec=small_files)
    assert ended.code == 1
    line = ended.line("target-closum")
    assert f"cannot write the rejects file {str(tmp_path / 'rejects.jsonl')!r} (File too large)" in line
    text = (tmp_path / "rejects.jsonl").read_text(encoding="utf-8")
    assert text.endswith("\n")
    lines = [json.loads(x) for x in text.splitlines()]  # every line whole
    assert 5 < len(lines) < 60
    assert len(text.encode()) + len(text.encode()) // len(lines) > limit  # the next line was cut: it is gone
    assert [r["record"]["id"] for r in lines] == list(range(len(lines)))
    assert ended.out == ""


def test_a_tombstone_is_a_reject_saying_closum_deletes_nothing(sandbox, tmp_path):
    tombstone = {"id": 2, "_sdc_deleted_at": "2026-01-01T00:00:00+00:00"}
    run = run_target(target_config(sandbox, tmp_path), singer("leads", [lead(1), tombstone]))
    assert run.tally("leads")["created"] == 1
    assert run.tally("leads")["rejected"] == 1
    [reject] = rejects(tmp_path / "rejects.jsonl")
    assert reject["record"]["id"] == 2
    assert "deletes nothing" in json.dumps(reject)
