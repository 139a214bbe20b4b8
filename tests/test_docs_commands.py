"""The Meltano commands of README.md and docs/ are right for the Meltano we pin, and the offline ones run.

- Every ``meltano ...`` command shown (a line of a ``sh``/``bash`` block, or a
  code span) is parsed by the installed Meltano's own command line: the command
  path exists and every option is known; a complete command also has every
  argument it needs. A placeholder (``...``, ``<job>``) ends what is checked.
- In a brand-new ``meltano init`` project with the README's plugin definitions
  pasted (no other change but ``pip_url``), the documented commands that need
  no network run as written: ``config list/set/print``, ``select``, ``state
  get/clear``, ``invoke --discover``; ``meltano config list <plugin> --all``
  shows every default of both plugins. They run one after the other through
  Meltano's own entry point in one process, each with its argv and a project
  found afresh (``meltano_batch.py``).
- The CRM recipe of docs/target.md runs as written in such a project (its
  tap-spreadsheets entry and target-closum config pasted, the export beside
  it) against a seeded sandbox, and prints the counts the doc shows; a second
  run skips the unchanged file (the tap's bookmark), and after the file
  changes a third reads it whole again and writes nothing twice (the ledger).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
from typing import TYPE_CHECKING

import click
import pytest
import yaml
from meltano.cli import cli as meltano_cli
from meltano_project import ROOT, meltano_env, require_plugins, run_meltano, run_meltano_commands

from closum_api import registry
from tap_closum.tap import TapClosum
from target_closum.target import TargetClosum

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator
    from pathlib import Path

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDER = re.compile(r"^(\.\.\.|<.*>|.*\.\.\.)$")
#: The commands run for real in a fresh project: they need neither the network nor a Closum account.
OFFLINE = {
    ("config", "list"),
    ("config", "set"),
    ("config", "print"),
    ("select",),
    ("state", "get"),
    ("state", "clear"),
}
#: ``meltano invoke`` runs offline only for discovery (the catalog comes from the registry).
DISCOVER = "--discover"
PLUGINS = {"tap-closum": TapClosum, "target-closum": TargetClosum}


# ---- the commands the docs show -------------------------------------------------
def _fenced(text: str) -> list[str]:
    """The lines of the shell blocks of a Markdown text, continuation lines joined."""
    lines = []
    for body in re.findall(r"^ *```(?:sh|bash|console)\n(.*?)^ *```", text, re.DOTALL | re.MULTILINE):
        lines += body.replace("\\\n", " ").splitlines()
    return lines


def _spans(text: str) -> list[str]:
    """The code spans of a Markdown text outside fenced blocks (a span may wrap across lines)."""
    prose = re.sub(r"^ *```.*?^ *```", "", text, flags=re.DOTALL | re.MULTILINE)
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after ``meltano``) for every Meltano command of README.md and docs/, in order."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for line in _fenced(text) + _spans(text):
            command = line.split(" #", 1)[0].strip().removeprefix(".venv/bin/")
            if not command.startswith("meltano "):
                continue
            argv = shlex.split(command)[1:]
            found.append((f"{doc.relative_to(ROOT)}: {command}", argv))
    return found


def complete(argv: list[str]) -> bool:
    """Whether a command is shown whole (no placeholder)."""
    return not any(PLACEHOLDER.match(token) for token in argv)


def path_of(argv: list[str]) -> tuple[str, ...]:
    """The command path (``("config", "set")``), as Meltano's command line resolves it."""
    command: click.Command = meltano_cli
    path: list[str] = []
    args = list(argv)
    ctx = None
    while isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1] if path else "meltano", parent=ctx)
        args = click.Command.parse_args(command, ctx, args)  # the group's own options; the rest stays
        if not args:
            break
        name, command, args = command.resolve_command(ctx, args)
        path.append(str(name))
    return tuple(path)


def parse(argv: list[str]) -> None:
    """Parse ``meltano argv`` with Meltano's own command line, nothing invoked; a click error if it is wrong.

    A command cut by a placeholder is checked up to it, with ``--help`` (which
    checks the command path and options, not the arguments still missing).
    """
    cut = next((i for i, token in enumerate(argv) if PLACEHOLDER.match(token)), None)
    args = list(argv) if cut is None else [*argv[:cut], "--help"]
    command: click.Command = meltano_cli
    name = "meltano"
    ctx = None
    # A destructive command asks to confirm (``state clear``): the answer is yes.
    with contextlib.redirect_stdout(io.StringIO()), _stdin("y\n"):
        try:
            while isinstance(command, click.Group):
                # Meltano's option callbacks read ctx.obj; no project is needed to parse.
                ctx = click.Context(command, info_name=name, parent=ctx, obj={"project": None})
                args = click.Command.parse_args(command, ctx, args)
                if not args:
                    return
                sub_name, sub, args = command.resolve_command(ctx, args)
                assert sub is not None
                command, name = sub, str(sub_name)
            command.make_context(name, args, parent=ctx)
        except click.exceptions.Exit as done:  # --help: what came before it parsed
            if done.exit_code != 0:
                raise


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def _refusal(argv: list[str]) -> str | None:
    """Why Meltano would refuse ``meltano argv``; None if it parses."""
    try:
        parse(argv)
    except click.ClickException as error:
        return error.format_message()
    return None


def test_every_documented_meltano_command_parses():
    commands = documented_commands()
    paths = {path_of(argv) for _, argv in commands}
    # The docs show the commands a user of these plugins needs; each is checked below.
    assert {("run",), ("install",), ("config", "list"), ("config", "set"), ("select",), ("state", "get")} <= paths
    assert ("invoke",) in paths
    wrong = [f"{where}\n    -> {refusal}" for where, argv in commands if (refusal := _refusal(argv))]
    assert not wrong, "commands Meltano would refuse:\n" + "\n".join(wrong)


def test_the_parser_refuses_what_meltano_refuses():
    """The check above can fail: the commands of the old docs are refused, as Meltano 4.4 refuses them."""
    for argv in (["config", "tap-closum", "set", "api_pw", "x"], ["run", "--no-such-option", "tap-closum"]):
        with pytest.raises(click.UsageError):
            parse(argv)
    with pytest.raises(click.MissingParameter):
        parse(["state", "get"])


def documented_shell_commands(program: str) -> list[tuple[str, list[str]]]:
    """(where, argv after ``program``) for every ``program ...`` command of README.md and docs/ (a pipe ends it)."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for line in _fenced(text) + _spans(text):
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            try:
                tokens = list(lexer)
            except ValueError:  # not a shell line (a span of prose with a lone quote)
                continue
            command: list[str] = []
            for token in [*tokens, ";"]:
                if token and set(token) <= set("&|;<>()"):  # an operator ends a simple command
                    if command[:1] == [program]:
                        found.append((f"{doc.relative_to(ROOT)}: {shlex.join(command)}", command[1:]))
                    command = [] if token != ">" else ["> a file"]
                else:
                    command.append(token)
    return found


def test_every_documented_make_target_and_plugin_option_exists():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.MULTILINE))
    made = documented_shell_commands("make")
    assert len(made) >= 10
    assert {where for where, argv in made if not set(argv) <= targets} == set()

    # The plugins' options: each one shown is one their command line (the SDK's) knows.
    plugins = [(cls, where, argv) for name, cls in PLUGINS.items() for where, argv in documented_shell_commands(name)]
    assert len(plugins) >= 4
    wrong = []
    for cls, where, argv in plugins:
        known = {flag for param in cls.cli.params for flag in (*param.opts, *param.secondary_opts)}
        wrong += [f"{where}: {token}" for token in argv if token.startswith("-") and token.split("=")[0] not in known]
    assert not wrong, wrong


# ---- a fresh project with the plugin definitions pasted ----------------------------
def _readme_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- BEGIN GENERATED: plugin-definitions -->")[1].split("<!-- END GENERATED")[0]
    return block.split("```yaml\n", 1)[1].split("```", 1)[0]


def _repository_pip_url() -> str:
    """The one pip_url of tap-closum and target-closum in the repository's meltano.yml."""
    plugins = yaml.safe_load((ROOT / "meltano.yml").read_text(encoding="utf-8"))["plugins"]
    urls = {p["pip_url"] for kind in plugins.values() for p in kind if p["name"] in PLUGINS}
    assert len(urls) == 1, urls
    return urls.pop()


def fresh_project(tmp_path: Path, env: dict[str, str]) -> Path:
    """``meltano init`` + the README's block pasted (pip_url: the repository's), the installed venvs shared."""
    run_meltano(tmp_path, ["init", "project"], env, environment=None)
    project = tmp_path / "project"
    assert "plugins:" not in (project / "meltano.yml").read_text()
    # The pip_url of the repository's meltano.yml, which installed the venvs this project shares: their
    # fingerprint then matches and no command reinstalls them (Meltano 4.4's invoke and select install a
    # plugin whose fingerprint differs even with MELTANO_AUTO_INSTALL=false: that rebuilt the shared venvs
    # under the other tests' runs).
    block = _readme_block().replace(
        "git+https://YOUR-GIT-HOST/closum-singer.git  # or -e /path/to/a/clone", _repository_pip_url()
    )
    with (project / "meltano.yml").open("a", encoding="utf-8") as f:
        f.write(block)
    for kind in ("extractors", "loaders"):
        (project / ".meltano" / kind).symlink_to(ROOT / ".meltano" / kind, target_is_directory=True)
    return project


def meltano(project: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``meltano <argv>`` as written in ``project``; a confirmation asked is answered yes; a failed test if it fails."""
    return run_meltano(project, argv, env, environment=None, answer="y\n")


@pytest.fixture
def offline_env(sandbox, tmp_path):
    """Meltano offline (no hub, no usage stats), never installing anything: the venvs are the repository's."""
    require_plugins("tap-closum", "target-closum")
    return meltano_env(sandbox, tmp_path / "meltano.db") | {"MELTANO_AUTO_INSTALL": "false"}


def _listed_values(output: str) -> dict[str, str]:
    """``name -> current value`` from ``meltano config list ... --all``."""
    return dict(
        re.findall(r"^(\w+) (?:\(required by group \d+\) )?\[env: \w+\] current value: (.+)$", output, re.MULTILINE)
    )


def run_documented_offline_commands(project: Path, env: dict[str, str]) -> list[tuple]:
    """Run the docs' own offline commands, as written, in the order they appear (each distinct one once).

    Before the first command on a pipeline's state, that state is set as a run would have left it. The
    commands run one after the other in one process (Meltano's start paid once, :mod:`meltano_batch`).

    Returns:
        (where, command path, argv, completed process) for each.
    """
    state_ids = set()
    shown = []
    commands = []
    for where, argv in documented_commands():
        path = path_of(argv)
        if not complete(argv) and path != ("config", "set"):
            continue
        if path not in OFFLINE and not (path == ("invoke",) and DISCOVER in argv):
            continue
        if len(argv) <= len(path) or argv in commands:  # a command named in prose, or already run
            continue
        if path[0] == "state" and argv[-1] not in state_ids:  # a pipeline's state, as a run would have left it
            state = {"singer_state": {"bookmarks": {"leads": {"replication_key_value": 25}}}}
            commands.append(["state", "set", "--force", argv[-1], json.dumps(state)])
            state_ids.add(argv[-1])
        commands.append(argv)
        shown.append((where, path, argv))
    done = dict(zip(map(tuple, commands), run_meltano_commands(project, commands, env, answer="y\n"), strict=True))
    return [(where, path, argv, done[tuple(argv)]) for where, path, argv in shown]


@pytest.mark.e2e
@pytest.mark.slow
def test_offline_commands_run_in_a_fresh_project(tmp_path, offline_env):
    # Nothing set but what the project says: no API URL from the environment either.
    offline_env = {k: v for k, v in offline_env.items() if not k.endswith("_API_URL")}
    project = fresh_project(tmp_path, offline_env)

    ran = run_documented_offline_commands(project, offline_env)
    assert {path for _, path, _, _ in ran} >= {*OFFLINE, ("invoke",)}

    # `meltano config list <plugin> --all`, as the docs show it for both plugins, shows every default,
    # the files in the project's output/.
    for name, cls in PLUGINS.items():
        proc = next(proc for _, _, argv, proc in ran if argv == ["config", "list", name, "--all"])
        values = _listed_values(proc.stdout)
        assert set(cls.config_jsonschema["properties"]) <= set(values), name
        for setting, prop in cls.config_jsonschema["properties"].items():
            if prop.get("default") is None:
                continue
            if setting.endswith("_path"):
                expected = repr(str(project / prop["default"]))
                assert values[setting] == f"{expected} (default: '$MELTANO_PROJECT_ROOT/{prop['default']}')"
            else:
                assert values[setting] == f"{prop['default']!r} (default)", (name, setting)

    for where, path, _, proc in ran:
        if path == ("invoke",):
            catalog = json.loads(proc.stdout)
            streams = {s["tap_stream_id"] for s in catalog["streams"]}
            assert streams == {r.stream_name for r in registry.RESOURCES} | {o.stream_name for o in registry.OPT_INS}
        if path == ("state", "get"):
            assert json.loads(proc.stdout)["singer_state"]["bookmarks"], where
    # config set: the password went to .env, never to meltano.yml.
    assert "TAP_CLOSUM_API_PW=" in (project / ".env").read_text()
    yml = yaml.safe_load((project / "meltano.yml").read_text())
    tap = next(p for p in yml["plugins"]["extractors"] if p["name"] == "tap-closum")
    assert "api_pw" not in tap.get("config", {})
    # select: the rules the docs say are written.
    assert {"*.*", "!lead_opt_ins.*"} <= set(tap["select"])


# ---- the CRM recipe -------------------------------------------------------------------
def _recipe_blocks() -> list[str]:
    text = (ROOT / "docs" / "target.md").read_text(encoding="utf-8")
    recipe = text.split("## Recipe: loading a CRM export with `meltano run`")[1].split("\n## ")[0]
    return [_dedent(b) for b in re.findall(r"^ *```yaml\n(.*?)^ *```", recipe, re.DOTALL | re.MULTILINE)]


def _dedent(block: str) -> str:
    lines = block.splitlines()
    margin = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[margin:] for line in lines) + "\n"


def _recipe_counts() -> dict[str, tuple[int, int, int, int]]:
    """The doc's 'first load prints' lines: stream -> (created, matched existing, rejected, references created)."""
    text = (ROOT / "docs" / "target.md").read_text(encoding="utf-8")
    pattern = r"^stream (\S+) → \w+: created (\d+), matched existing (\d+), rejected (\d+), references created (\d+)$"
    return {m[0]: tuple(int(n) for n in m[1:]) for m in re.findall(pattern, text, re.MULTILINE)}


def _summaries(output: str) -> dict[str, dict]:
    decoder = json.JSONDecoder()
    found = {}
    for line in output.splitlines():
        _, marker, rest = line.partition("METRIC: ")
        if marker:
            metric, _ = decoder.raw_decode(rest)
            if metric.get("metric") == "closum_load_summary":
                found[metric["value"]["stream"]] = metric["value"]
    return found


@pytest.mark.e2e
@pytest.mark.slow
def test_crm_recipe_runs_as_written(tmp_path, offline_env):
    require_plugins("tap-spreadsheets")
    tap_entry, stream_maps, target_config = (yaml.safe_load(b) for b in _recipe_blocks())
    project = fresh_project(tmp_path, offline_env)
    yml = yaml.safe_load((project / "meltano.yml").read_text())
    entry = tap_entry[0]
    entry["config"] |= stream_maps
    yml["plugins"]["extractors"].append(entry)
    target = next(p for p in yml["plugins"]["loaders"] if p["name"] == "target-closum")
    target["config"] = target_config["config"]
    (project / "meltano.yml").write_text(yaml.safe_dump(yml, sort_keys=False), encoding="utf-8")
    (project / "demo").mkdir()
    shutil.copy(ROOT / "demo" / "crm_contacts.csv", project / "demo" / "crm_contacts.csv")
    command = next(
        argv for _, argv in documented_commands() if "tap-spreadsheets" in argv and path_of(argv) == ("run",)
    )
    env = offline_env | {"TARGET_CLOSUM_API_USERNAME": "sandbox", "TARGET_CLOSUM_API_PW": "sandbox"}

    first = _summaries(meltano(project, command, env).stderr)
    expected = _recipe_counts()
    assert expected, "docs/target.md shows no counts"
    got = {
        stream: (s["created"], s["matched"], s["rejected"], s["references_created"])
        for stream, s in first.items()
        if stream in expected
    }
    assert got == expected
    assert (project / "output" / "closum-ledger.sqlite").exists()  # the default: the project's output/
    assert (project / "output" / "closum-rejects.jsonl").exists()

    # Run again as written: the file is unchanged, the tap's bookmark (its modification time) skips it.
    second = _summaries(meltano(project, command, env).stderr)
    assert all(s["created"] == s["skipped"] == s["matched"] == s["rejected"] == 0 for s in second.values()), second
    # A new export under the same path is read whole again; the ledger writes none of its rows twice.
    os.utime(project / "demo" / "crm_contacts.csv")
    third = _summaries(meltano(project, command, env).stderr)
    for stream, (created, matched, rejected, _) in expected.items():
        assert (third[stream]["created"], third[stream]["rejected"]) == (0, rejected), stream
        assert third[stream]["skipped"] == created + matched, stream
