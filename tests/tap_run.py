"""Run tap-closum in-process or as a process and collect what it wrote."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import typing as t
from dataclasses import dataclass, field
from pathlib import Path

from tap_closum.tap import TapClosum

BIN = Path(sys.executable).parent


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
    command: list[str] | None = None,
) -> TapOutput:
    """Run the ``tap-closum`` command (or ``command``, taking the same options); its messages, stderr and exit code."""
    config_file = tmp_path / "tap-config.json"
    config_file.write_text(json.dumps(config))
    extra = list(args)
    if streams:
        catalog_file = tmp_path / "catalog.json"
        catalog_file.write_text(json.dumps(catalog_selecting(config, streams)))
        extra += ["--catalog", str(catalog_file)]
    proc = subprocess.run(  # argv is ours, no shell
        [*(command or [str(BIN / "tap-closum")]), "--config", str(config_file), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith('{"type"')]
    return TapOutput([json.loads(line) for line in lines], proc.stderr, proc.stdout, proc.returncode)
