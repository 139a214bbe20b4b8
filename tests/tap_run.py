"""Run tap-closum in-process or as a process and collect what it wrote."""

from __future__ import annotations

import contextlib
import io
import json
import typing as t
from dataclasses import dataclass, field

from helpers import run, write_json

from tap_closum.tap import TapClosum

if t.TYPE_CHECKING:
    from pathlib import Path


@dataclass
class TapOutput:
    messages: list[dict[str, t.Any]]
    stderr: str = ""
    stdout: str = ""
    returncode: int = 0
    records: dict[str, list[dict[str, t.Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for message in self.messages:
            if message["type"] == "RECORD":
                self.records.setdefault(message["stream"], []).append(message["record"])

    @property
    def state(self) -> dict[str, t.Any]:
        states = [m["value"] for m in self.messages if m["type"] == "STATE"]
        return states[-1] if states else {}

    def ids(self, stream: str) -> list[int]:
        return [r["id"] for r in self.records.get(stream, [])]


def catalog_selecting(config: dict[str, t.Any], streams: set[str]) -> dict[str, t.Any]:
    """The tap's catalog with only ``streams`` selected."""
    catalog = TapClosum(config=config, setup_mapper=False).catalog_dict
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in streams
    return catalog


def run_tap(
    config: dict[str, t.Any],
    *,
    state: dict[str, t.Any] | None = None,
    streams: set[str] | None = None,
) -> TapOutput:
    """Sync in this process; every Singer message it printed."""
    catalog = catalog_selecting(config, streams) if streams else None
    tap = TapClosum(config=config, state=state, catalog=catalog)
    buffer = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    with contextlib.redirect_stdout(buffer):
        tap.sync_all()
        buffer.flush()
    buffer.seek(0)
    return TapOutput([json.loads(line) for line in buffer.read().splitlines() if line.strip()])


def run_tap_process(
    config: dict[str, t.Any],
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    streams: set[str] | None = None,
    constants: dict[str, t.Any] | None = None,
) -> TapOutput:
    """Run the ``tap-closum`` command (``constants``: see :func:`helpers.start`); its messages, stderr, exit code."""
    extra = list(args)
    if streams:
        extra += ["--catalog", write_json(tmp_path / "catalog.json", catalog_selecting(config, streams))]
    config_file = write_json(tmp_path / "tap-config.json", config)
    ended = run("tap-closum", "--config", config_file, *extra, cwd=tmp_path, env=env, timeout=300, constants=constants)
    lines = [line for line in ended.out.splitlines() if line.startswith('{"type"')]
    return TapOutput([json.loads(line) for line in lines], ended.err, ended.out, ended.code)
