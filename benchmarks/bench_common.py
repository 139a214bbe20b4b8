"""What the benchmarks share: the credentials of the sandbox they start, loading it, configs, the tap's command.

The benchmarks are run by path (``python benchmarks/bench_tap.py``), so this
folder is on ``sys.path`` and they import this module as ``bench_common``.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from closum_sandbox.testing import SandboxProcess

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
USER = "bench"
PASSWORD = secrets.token_urlsafe(12)  # a fresh one each run, for the sandboxes the benchmark starts


def add_leads(server: SandboxProcess, count: int) -> None:
    """Add ``count`` generated leads to the sandbox, in batches it accepts."""
    while count > 0:
        batch = min(count, 50_000)
        server.add_records("lead", batch)
        count -= batch


def write_config(workdir: Path, api_url: str, **settings: object) -> Path:
    """Write ``workdir/config.json``: the sandbox's address and credentials, then ``settings``; its path."""
    config = workdir / "config.json"
    config.write_text(json.dumps({"api_url": api_url, "api_username": USER, "api_pw": PASSWORD} | settings))
    return config


def leads_catalog(
    config: Path, env: dict[str, str] | None = None, streams: frozenset[str] = frozenset({"leads"})
) -> dict[str, object]:
    """The tap's catalog (discovered with ``config``) with only ``streams`` selected (default: ``leads``)."""
    catalog = json.loads(
        subprocess.run(
            [str(BIN / "tap-closum"), "--config", str(config), "--discover"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
    )
    for stream in catalog["streams"]:
        for entry in stream["metadata"]:
            if entry["breadcrumb"] == []:
                entry["metadata"]["selected"] = stream["tap_stream_id"] in streams
    return catalog


def tap_cmd(workdir: Path, api_url: str, **settings: object) -> list[str]:
    """Write the tap's config and a catalog selecting only ``leads``; the command line that runs it."""
    config = write_config(workdir, api_url, **settings)
    (workdir / "catalog.json").write_text(json.dumps(leads_catalog(config)))
    return [str(BIN / "tap-closum"), "--config", str(config), "--catalog", str(workdir / "catalog.json")]


def write_leads_input(path: Path, records: list[dict[str, object]]) -> None:
    """The target's Singer input: a SCHEMA of stream ``leads`` (key ``id``), the RECORDs, a final STATE."""
    schema = {"type": "object", "properties": {k: {} for k in records[0]} if records else {}}
    lines: list[dict[str, object]] = [{"type": "SCHEMA", "stream": "leads", "schema": schema, "key_properties": ["id"]}]
    lines += [{"type": "RECORD", "stream": "leads", "record": record} for record in records]
    lines.append({"type": "STATE", "value": {"bookmarks": {"leads": len(records)}}})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
