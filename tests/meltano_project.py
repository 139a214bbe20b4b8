"""Meltano projects of their own for the end-to-end tests, and running ``meltano`` in them.

A project copy is meltano.yml in a folder of its own that shares the plugin
venvs ``make test`` installed in the repository's ``.meltano/`` (symlinked:
nothing is installed during a test). Meltano keeps per-plugin run files
(catalog cache, generated config) in ``.meltano/run/``; a copy per test keeps
concurrent runs (another checkout's test session, a `make demo`) from
overwriting each other's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from closum_api import registry

ROOT = Path(__file__).resolve().parents[1]
MELTANO = Path(sys.executable).parent / "meltano"
#: The prefixes of the settings a test sets itself: none of the machine's own is passed on.
OWN_SETTINGS = ("TAP_", "TARGET_", "MELTANO_")


def plugin_executable(name: str) -> Path:
    """Where ``meltano install`` put the plugin ``name``'s executable (``tap-...``: an extractor, else a loader)."""
    kind = "extractors" if name.startswith("tap-") else "loaders"
    return ROOT / ".meltano" / kind / name / "venv" / "bin" / name


def require_plugins(*names: str) -> None:
    """Fail loudly, never skip, unless Meltano and the plugins ``names`` are installed."""
    if not MELTANO.exists():
        pytest.fail(f"meltano is not installed at {MELTANO}: run `make test` (or `make install`)", pytrace=False)
    missing = [name for name in names if not plugin_executable(name).exists()]
    if missing:
        pytest.fail(
            f"Meltano plugins not installed: {', '.join(missing)}. Run `make test`, which runs "
            "`meltano install` first, or `.venv/bin/meltano install` in the repository root.",
            pytrace=False,
        )


def project_copy(folder: Path) -> Path:
    """meltano.yml in ``folder`` (created), sharing the installed plugin venvs; the folder."""
    (folder / ".meltano").mkdir(parents=True)
    shutil.copy(ROOT / "meltano.yml", folder / "meltano.yml")
    for kind in ("extractors", "loaders"):
        (folder / ".meltano" / kind).symlink_to(ROOT / ".meltano" / kind, target_is_directory=True)
    return folder


def meltano_env(sandbox, database: Path, drop: tuple[str, ...] = OWN_SETTINGS) -> dict[str, str]:
    """The environment of a Meltano run: the process's own but the variables starting with ``drop``.

    Meltano offline (no usage stats, no MeltanoHub), its system database (runs,
    and state unless a state backend says otherwise) in ``database``, and
    tap-closum and target-closum pointed at ``sandbox``.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    return env | {
        "MELTANO_SEND_ANONYMOUS_USAGE_STATS": "false",
        # Every plugin is fully defined in meltano.yml: a MeltanoHub lookup would fail here.
        "MELTANO_HUB_URL": "http://127.0.0.1:9",
        "MELTANO_HUB_API_ROOT": "http://127.0.0.1:9/meltano/api/v1",
        "MELTANO_DATABASE_URI": f"sqlite:///{database}",
        "TAP_CLOSUM_API_URL": sandbox.api_url,
        "TARGET_CLOSUM_API_URL": sandbox.api_url,
    }


def run_meltano(  # noqa: PLR0913  # where, what, and how a test runs Meltano
    project: Path,
    args: tuple[str, ...] | list[str],
    env: dict[str, str],
    *,
    environment: str | None = "dev",
    check: bool = True,
    answer: str | None = None,
) -> subprocess.CompletedProcess:
    """``meltano --environment=<environment> <args>`` in ``project`` (with ``check``, a failed test when it fails).

    ``environment`` None: the arguments as given (a command of the docs, as written); ``answer``: its input,
    for a command that asks to confirm.
    """
    where = [] if environment is None else [f"--environment={environment}"]
    proc = subprocess.run(  # argv is ours (or the docs' own): Meltano and the test's arguments, no shell
        [str(MELTANO), *where, *args],
        cwd=project,
        env=env,
        input=answer,
        stdin=subprocess.DEVNULL if answer is None else None,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if check and proc.returncode != 0:
        pytest.fail(
            f"meltano {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    return proc


def run_meltano_commands(
    project: Path, commands: list[list[str]], env: dict[str, str], *, answer: str = ""
) -> list[subprocess.CompletedProcess]:
    """``meltano <argv>`` for each of ``commands``, in order, in ``project``, in one process (:mod:`meltano_batch`).

    Each as its own ``meltano`` would run (its argv as given, ``answer`` on its input); a failed test
    naming the first that fails.
    """
    given, taken = project / ".meltano-batch-commands.json", project / ".meltano-batch-results.json"
    given.write_text(json.dumps({"commands": commands, "answer": answer}), encoding="utf-8")
    subprocess.run(  # argv is ours: this venv's Python and a file of the tests, no shell
        [sys.executable, str(Path(__file__).with_name("meltano_batch.py")), str(given), str(taken)],
        cwd=project,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=600,
        check=True,
    )
    done = []
    for argv, result in zip(commands, json.loads(taken.read_text(encoding="utf-8")), strict=True):
        if result["code"] != 0:
            pytest.fail(
                f"meltano {' '.join(argv)} exited {result['code']}:\n{result['stdout'][-4000:]}\n"
                f"{result['stderr'][-6000:]}",
                pytrace=False,
            )
        done.append(subprocess.CompletedProcess(["meltano", *argv], result["code"], result["stdout"], result["stderr"]))
    return done


#: The key of each warehouse table: ``id``, but the consent tables' is their lead's id.
TABLE_KEYS = {o.stream_name: o.key for o in registry.OPT_INS}


def expected_keys(sandbox) -> dict[str, list[int]]:
    """What each warehouse table must hold after tap-closum's full load, by key, from the sandbox's records."""
    expected = {r.stream_name: sorted(rec["id"] for rec in sandbox.records(r.name)) for r in registry.RESOURCES}
    for o in registry.OPT_INS:
        expected[o.stream_name] = sorted(rec["id"] for rec in sandbox.records(o.parent.name) if rec.get(o.name))
    return expected
