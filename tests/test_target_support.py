"""Helpers for the target tests: Singer input, in-process and process runs (no tests here)."""

from __future__ import annotations

import contextlib
import io
import json
import typing as t
from pathlib import Path

from helpers import FAST, Program, run, start, write_json

from closum_api import registry
from closum_api.schemas import record_schema
from target_closum.target import TargetClosum

REPO = Path(__file__).resolve().parents[1]


def schema_of(resource: str) -> dict[str, t.Any]:
    """The tap's schema for a resource (what tap-closum would send)."""
    return record_schema(registry.get(resource))


def open_schema(*fields: str) -> dict[str, t.Any]:
    """A schema that accepts anything in the named fields (a CSV or warehouse tap)."""
    return {"type": "object", "properties": {f: {} for f in fields}}


def singer(  # noqa: PLR0913  # one keyword per kind of Singer line the tests need
    stream: str,
    records: t.Iterable[dict[str, t.Any]],
    *,
    schema: dict[str, t.Any] | None = None,
    key_properties: t.Sequence[str] = ("id",),
    state_every: int | None = None,
    final_state: dict[str, t.Any] | None = None,
) -> str:
    """Singer lines: SCHEMA, RECORDs (a STATE after every ``state_every``), a final STATE."""
    records = list(records)
    if schema is None:
        fields = sorted({k for r in records for k in r}) or ["id"]
        schema = open_schema(*fields)
    out = [{"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": list(key_properties)}]
    for n, record in enumerate(records, 1):
        out.append({"type": "RECORD", "stream": stream, "record": record})
        if state_every and n % state_every == 0:
            out.append({"type": "STATE", "value": {"bookmarks": {stream: {"done": n}}}})
    if final_state is not None:
        out.append({"type": "STATE", "value": final_state})
    return "".join(json.dumps(m) + "\n" for m in out)


def target_config(sandbox: t.Any, tmp_path: Path, **overrides: t.Any) -> dict[str, t.Any]:
    return (
        sandbox.config(
            ledger_path=str(tmp_path / "ledger.sqlite"),
            rejects_path=str(tmp_path / "rejects.jsonl"),
            request_timeout=10,
            **FAST,
        )
        | overrides
    )


class Run(t.NamedTuple):
    target: TargetClosum
    stdout: str

    @property
    def states(self) -> list[dict[str, t.Any]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.strip()]

    def tally(self, stream: str) -> dict[str, t.Any]:
        return self.target.tallies[stream].as_dict()


def run_target(config: dict[str, t.Any], text: str) -> Run:
    """Run the target in this process on ``text``; what it printed on stdout."""
    target = TargetClosum(config=config)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        target.listen(io.StringIO(text))
    return Run(target, buffer.getvalue())


def rejects(path: Path) -> list[dict[str, t.Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def posts(sandbox: t.Any, path: str) -> list[dict[str, t.Any]]:
    return [e for e in sandbox.requests_log(path) if e["method"] == "POST" and e["path"] == path]


def writes(sandbox: t.Any) -> list[dict[str, t.Any]]:
    return [e for e in sandbox.requests_log("/api") if e["method"] in {"POST", "PUT"} and e["path"] != "/api/token"]


def target_process(config: dict[str, t.Any], tmp_path: Path, stdin: t.Any) -> Program:
    """Start the ``target-closum`` command in ``tmp_path`` reading ``stdin`` (a file object or a pipe)."""
    return start("target-closum", config, cwd=tmp_path, stdin=stdin)


def run_target_process(
    config: dict[str, t.Any], tmp_path: Path, text: str, timeout: float = 60
) -> tuple[int, str, str]:
    """Run the command on ``text`` to its end; exit code, stdout, stderr."""
    config_file = write_json(tmp_path / "target-config.json", config)
    ended = run("target-closum", "--config", config_file, cwd=tmp_path, stdin=text, timeout=timeout)
    return ended.code, ended.out, ended.err


def lead(n: int, **extra: t.Any) -> dict[str, t.Any]:
    return {"id": n, "name": f"Lead {n}", "email": {"email": f"lead{n}@example.com"}} | extra
