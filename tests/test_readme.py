"""The README and docs/ stay true: generated blocks match the code, the curl session runs as written.

- The settings tables of docs/tap.md and docs/target.md, the streams table in
  docs/tap.md, the plugin definitions block of README.md and the tap-closum /
  target-closum entries of meltano.yml (every default as the setting's
  ``value:``), are what ``scripts/gen_docs.py`` generates from
  ``TapClosum.config_jsonschema``, ``TargetClosum.config_jsonschema``,
  ``closum_api.registry`` and ``--about --format=json`` (run ``make docs`` to
  refresh them).
- The curl session of docs/sandbox.md runs line by line against a fresh
  ``closum-sandbox serve --seed 25`` (what ``make sandbox`` starts), each
  answer checked against the ``# ...`` line shown below the command.
- The pinned plugin versions the README lists are the ones meltano.yml installs,
  and every document the README links to exists.
- The supported Python versions are stated once (pyproject's classifiers) and
  everything else follows: ``--about``, the README, docs/development.md, the
  lint targets, this interpreter; the LICENSE file is the licence declared.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from closum_api import registry
from closum_sandbox.testing import SandboxProcess
from tap_closum.tap import TapClosum
from target_closum.target import TargetClosum

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TAP_DOC = DOCS / "tap.md"
TARGET_DOC = DOCS / "target.md"
SANDBOX_DOC = DOCS / "sandbox.md"


def test_generated_blocks_match_the_code():
    proc = subprocess.run(  # argv is ours: this interpreter and a script of the repository
        [sys.executable, str(ROOT / "scripts" / "gen_docs.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, (
        "docs/ / meltano.yml drifted from the code; run `make docs` "
        f"(.venv/bin/python scripts/gen_docs.py):\n{proc.stdout[-6000:]}{proc.stderr[-3000:]}"
    )


def test_generator_knows_every_setting_and_stream():
    """The generated blocks really hold every setting and stream (not just whatever the script emits)."""
    for cls, doc, marker in ((TapClosum, TAP_DOC, "tap-settings"), (TargetClosum, TARGET_DOC, "target-settings")):
        text = doc.read_text(encoding="utf-8")
        block = text.split(f"<!-- BEGIN GENERATED: {marker} -->")[1].split(f"<!-- END GENERATED: {marker} -->")[0]
        rows = re.findall(r"^\| `([a-z0-9_]+)` \| (yes|no) \|", block, re.MULTILINE)
        required = set(cls.config_jsonschema.get("required", []))
        own = [
            name
            for name in cls.config_jsonschema["properties"]
            if name
            not in {
                "stream_maps",
                "stream_map_config",
                "faker_config",
                "flattening_enabled",
                "flattening_max_depth",
                "flattening_max_key_length",
                "flattening_separator",
                "batch_config",
                "add_record_metadata",
                "validate_records",
            }
        ]
        assert [name for name, _ in rows if name in own] == own
        assert {name for name, req in rows if req == "yes"} == required

    text = TAP_DOC.read_text(encoding="utf-8")
    block = text.split("<!-- BEGIN GENERATED: streams -->")[1].split("<!-- END GENERATED: streams -->")[0]
    for r in registry.RESOURCES:
        assert re.search(
            rf"^\| `{r.stream_name}` \| `GET {re.escape(r.list_path)}` \| `id` \| {r.replication.value}",
            block,
            re.MULTILINE,
        ), r.stream_name

    meltano = yaml.safe_load((ROOT / "meltano.yml").read_text())
    plugins = {p["name"]: p for kind in ("extractors", "loaders") for p in meltano["plugins"][kind]}
    for name, cls in (("tap-closum", TapClosum), ("target-closum", TargetClosum)):
        settings = {s["name"]: s for s in plugins[name]["settings"]}
        assert set(cls.config_jsonschema["properties"]) <= set(settings), name
        assert settings["api_pw"]["kind"] == "password"
        assert all(s.get("description") and s.get("kind") for s in settings.values())
        # Every default is the setting's value, so `meltano config list --all` shows it; a file under
        # the project's output/ whichever folder meltano runs from.
        for setting, prop in cls.config_jsonschema["properties"].items():
            if prop.get("default") is None:
                assert "value" not in settings[setting], (name, setting)
            elif setting.endswith("_path"):
                assert settings[setting]["value"] == f"$MELTANO_PROJECT_ROOT/{prop['default']}", (name, setting)
                assert prop["default"].startswith("output/"), (name, setting)
            else:
                assert settings[setting]["value"] == prop["default"], (name, setting)
        assert plugins[name]["pip_url"] == "-e ."
        assert plugins[name]["namespace"]


def test_meltano_yml_pins_what_the_readme_says_and_needs_no_hub():
    meltano = yaml.safe_load((ROOT / "meltano.yml").read_text())
    assert meltano["send_anonymous_usage_stats"] is False
    assert meltano["venv"]["backend"] == "uv"
    text = README.read_text(encoding="utf-8")
    for kind in ("extractors", "loaders"):
        for plugin in meltano["plugins"][kind]:
            # explicit namespace + pip_url + executable: `meltano install` never asks MeltanoHub
            for field in ("namespace", "pip_url", "executable"):
                assert plugin.get(field), (plugin["name"], field)
            assert "variant" not in plugin, plugin["name"]
            if plugin["pip_url"] == "-e .":  # our own plugins, from this checkout
                continue
            for requirement in plugin["pip_url"].split():
                assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][A-Za-z0-9.]*", requirement), f"not pinned: {requirement}"
                assert requirement in text, f"README does not name {requirement}"
    envs = {e["name"]: e for e in meltano["environments"]}
    prod = {p["name"]: p["config"] for p in envs["prod"]["config"]["plugins"]["extractors"]}
    assert prod["tap-closum"]["api_url"] == "https://api.closum.com/api"
    assert "api_pw" not in prod["tap-closum"]
    assert "api_username" not in prod["tap-closum"]


def test_one_statement_of_the_supported_pythons_and_the_licence():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    versions = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject)
    minors = [int(v.split(".")[1]) for v in versions]
    assert len(minors) >= 2
    assert minors == list(range(minors[0], minors[-1] + 1)), versions
    # What --about says comes from the installed metadata: `make install` after editing pyproject.toml.
    assert TapClosum.get_supported_python_versions() == versions
    assert TargetClosum.get_supported_python_versions() == versions
    statement = f"Python {versions[0]}\N{EN DASH}{versions[-1]}"
    for doc in (README, DOCS / "development.md"):
        assert statement in doc.read_text(encoding="utf-8"), f"{doc.name} does not say {statement}"
    assert f'requires-python = ">={versions[0]}"' in pyproject
    assert f'target-version = "py3{minors[0]}"' in pyproject
    assert f'python_version = "{versions[0]}"' in pyproject
    assert f"{sys.version_info[0]}.{sys.version_info[1]}" in versions

    assert 'license = "Apache-2.0"' in pyproject
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in licence
    assert "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence


# ---- the curl session ---------------------------------------------------------
def _curl_session() -> list[tuple[str, str | None]]:
    """(command, expected answer pattern or None), in the order docs/sandbox.md shows them."""
    text = SANDBOX_DOC.read_text(encoding="utf-8")
    block = text.split("<!-- BEGIN curl-session -->")[1].split("<!-- END curl-session -->")[0]
    body = block.split("```sh\n", 1)[1].split("```", 1)[0]
    steps: list[tuple[str, str | None]] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        if line.startswith("# "):
            assert steps, f"an answer line with no command before it: {line}"
            assert steps[-1][1] is None, f"two answer lines after one command: {line}"
            steps[-1] = (steps[-1][0], line[2:])
        else:
            steps.append((line, None))
    return steps


@pytest.fixture
def readme_sandbox(tmp_path):
    """``closum-sandbox serve --seed 25`` as ``make sandbox`` starts it, on a free port.

    Never 8080 itself: another checkout's test session (or a ``make sandbox``)
    may hold it, and the session would then talk to that server's data.
    """
    makefile = (ROOT / "Makefile").read_text()
    assert "closum-sandbox serve --port 8080 --seed 25" in makefile, "the docs' session assumes `make sandbox`"
    with (
        (tmp_path / "sandbox.log").open("w") as log,
        SandboxProcess(seed=25, log=log) as server,
    ):
        yield server.port


def _matches(expected: str, answer: str) -> bool:
    """``expected`` with ``...`` as a wildcard, against the whole answer."""
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, answer, re.DOTALL) is not None


def test_readme_curl_session_runs_as_written(readme_sandbox):
    steps = _curl_session()
    commands = [cmd for cmd, _ in steps]
    assert any("/api/token" in c for c in commands)
    assert any(c.startswith('curl -s "localhost:8080/api/lead?') for c in commands)  # list
    assert any("-X POST localhost:8080/api/lead " in c for c in commands)  # create
    assert any(re.match(r"curl -s localhost:8080/api/lead/\d+ ", c) for c in commands)  # retrieve
    assert any("-X PUT " in c for c in commands)  # update
    assert all("localhost:8080" in c for c in commands)

    bash = shutil.which("bash")
    assert bash, "the session is a bash script"
    env_lines: list[str] = []  # shell assignments (TOKEN=...) carried to the next commands
    for shown, expected in steps:
        command = shown.replace("localhost:8080", f"localhost:{readme_sandbox}")
        script = "set -euo pipefail\n" + "\n".join(env_lines) + "\n" + command + "\n"
        if re.match(r"^[A-Z_]+=\$\(", command):
            name = command.split("=", 1)[0]
            proc = subprocess.run(  # the docs' own command lines, against a local sandbox
                [bash, "-c", script + f'printf %s "${name}"'], capture_output=True, text=True, timeout=60, check=False
            )
            assert proc.returncode == 0, f"{command}\n{proc.stderr}"
            assert proc.stdout, f"{command}: printed nothing\n{proc.stderr}"
            env_lines.append(f"{name}={json.dumps(proc.stdout)}")
            continue
        proc = subprocess.run(  # the docs' own command lines, against a local sandbox
            [bash, "-c", script], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
        assert json.loads(proc.stdout)["success"] is True, f"{command}\n{proc.stdout}"
        if expected is not None:
            assert _matches(expected, proc.stdout), f"{command}\ndocs show: {expected}\nserver said: {proc.stdout}"


# ---- links --------------------------------------------------------------------
def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
    return {_anchor(m) for m in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def test_relative_links_of_readme_and_docs_resolve():
    """Every relative link of README.md and docs/*.md names a file that exists, and a heading it has."""
    docs = [README, *sorted(DOCS.glob("*.md"))]
    assert {d.name for d in docs} >= {
        "README.md",
        "tap.md",
        "target.md",
        "sandbox.md",
        "troubleshooting.md",
        "scaling.md",
        "development.md",
    }
    checked = 0
    for doc in docs:
        for link in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", link):  # https:, mailto:
                continue
            path, _, fragment = link.partition("#")
            target = (doc.parent / path).resolve() if path else doc
            assert target.exists(), f"{doc.relative_to(ROOT)}: link to {link}: no such file"
            if fragment and target.suffix == ".md":
                assert fragment in _anchors(target), f"{doc.relative_to(ROOT)}: link to {link}: no such heading"
            checked += 1
    assert checked >= 20
