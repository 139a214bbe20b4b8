#!/usr/bin/env python3
"""Regenerate the parts of docs/ and meltano.yml that come from the code.

    .venv/bin/python scripts/gen_docs.py          # rewrite the generated blocks
    .venv/bin/python scripts/gen_docs.py --check  # exit 1 and show a diff on drift

Generated blocks sit between marker lines and are replaced whole; everything
around them is written by hand:

- docs/tap.md ``<!-- BEGIN GENERATED: NAME -->`` ... ``<!-- END GENERATED: NAME -->``
  for ``tap-settings`` (from ``TapClosum.config_jsonschema``) and ``streams`` (from
  ``closum_api.registry``);
- docs/target.md, the same markers, for ``target-settings`` (from
  ``TargetClosum.config_jsonschema``);
- README.md, the same markers, for ``plugin-definitions``: one ``plugins:`` block
  with both plugins, to paste into one's own meltano.yml;
- meltano.yml ``# BEGIN GENERATED: NAME`` ... ``# END GENERATED: NAME`` for
  ``tap-closum`` and ``target-closum`` (this project's plugin definitions).

A plugin definition lists every setting that ``tap-closum --about --format=json``
(``target-closum ...``) prints, the SDK's built-in ones included, with its kind,
description and default (as ``value:``, so ``meltano config list --all`` shows
it), and the plugin's capabilities; the settings tables hold the plugin's own
settings. tests/test_readme.py runs this script with ``--check``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from closum_api import registry
from closum_api.config import credential_groups
from tap_closum.tap import TapClosum
from target_closum.target import TargetClosum

ROOT = Path(__file__).resolve().parents[1]
TAP_DOC = ROOT / "docs" / "tap.md"
TARGET_DOC = ROOT / "docs" / "target.md"
README = ROOT / "README.md"
MELTANO_YML = ROOT / "meltano.yml"

#: The plugins: their class (for their own settings) and what their Meltano entry says about them.
PLUGINS: dict[str, dict[str, Any]] = {
    "tap-closum": {
        "cls": TapClosum,
        "kind": "extractors",
        "namespace": "tap_closum",
        "label": "Closum",
        "description": "Closum lead-management API (tap)",
    },
    "target-closum": {
        "cls": TargetClosum,
        "kind": "loaders",
        "namespace": "target_closum",
        "label": "Closum",
        "description": "Closum lead-management API (target)",
        # Files whose default is relative to the working directory: in a Meltano project, to its root.
        "project_paths": ("rejects_path", "ledger_path"),
    },
}
PASTE_PIP_URL = "git+https://YOUR-GIT-HOST/closum-singer.git  # or -e /path/to/a/clone"
#: What Meltano expands to the project's root in a setting's value.
PROJECT_ROOT = "$MELTANO_PROJECT_ROOT"

Json = dict[str, Any]


# ---- what the plugins say about themselves ------------------------------------
def own_settings(name: str) -> Json:
    """The plugin's own config schema (``config_jsonschema``, without the SDK's built-in settings)."""
    return copy.deepcopy(PLUGINS[name]["cls"].config_jsonschema)


def about(name: str) -> Json:
    """``<plugin> --about --format=json``, run from the console script beside this interpreter."""
    executable = shutil.which(name, path=str(Path(sys.executable).parent))
    if executable is None:
        msg = f"{name} is not installed beside {sys.executable}: run `make install`"
        raise SystemExit(msg)
    proc = subprocess.run(  # argv is ours (an installed console script), no shell
        [executable, "--about", "--format=json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        msg = f"{name} --about --format=json failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        raise SystemExit(msg)
    info: Json = json.loads(proc.stdout)
    return info


# ---- tables -------------------------------------------------------------------
def _types(prop: Json) -> list[str]:
    t = prop.get("type", [])
    types = [t] if isinstance(t, str) else list(t)
    if not types and "anyOf" in prop:
        for alt in prop["anyOf"]:
            if isinstance(alt, dict):
                types += _types(alt)
    return [x for x in types if x != "null"]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def settings_table(schema: Json) -> str:
    """Markdown table: setting, required, default, description."""
    required = set(schema.get("required", []))
    lines = ["| setting | required | default | description |", "|---|---|---|---|"]
    for name, prop in schema["properties"].items():
        default = prop.get("default")
        if default is None:
            default_cell = ""
        elif isinstance(default, str):
            default_cell = f"`{default}`"
        else:
            default_cell = f"`{json.dumps(default)}`"
        secret = " (secret)" if prop.get("secret") and "secret" not in prop.get("description", "").lower() else ""
        lines.append(
            f"| `{name}` | {'yes' if name in required else 'no'} | {default_cell} | "
            f"{_cell(prop.get('description', ''))}{secret} |"
        )
    return "\n".join(lines)


def _revisions(resource: registry.Resource) -> str:
    revs = sorted(v.value for v in resource.revisions)
    return "both" if len(revs) == len(registry.Revision) else f"{revs[0]} only"


def streams_table() -> str:
    """Markdown table of the tap's streams, from the registry (resources, then opt-ins)."""
    lines = [
        "| stream | endpoint | primary key | replication | API revision |",
        "|---|---|---|---|---|",
    ]
    for r in registry.RESOURCES:
        repl = r.replication.value
        if r.replication is registry.Replication.INCREMENTAL:
            repl += " on `id`"
        lines.append(f"| `{r.stream_name}` | `GET {r.list_path}` | `id` | {repl} | {_revisions(r)} |")
    for o in registry.OPT_INS:
        endpoint = f"`GET {o.parent.item_path('ID')}` per record `{o.parent.stream_name}` emits"
        repl = f"INCREMENTAL on `{o.key}` (child of `{o.parent.stream_name}`)"
        lines.append(f"| `{o.stream_name}` | {endpoint} | `{o.key}` | {repl} | {_revisions(o.parent)} |")
    return "\n".join(lines)


# ---- Meltano plugin definitions -----------------------------------------------
def meltano_kind(prop: Json) -> str:
    """The Meltano setting ``kind`` of a JSON schema property."""
    if prop.get("secret"):
        return "password"
    types = _types(prop)
    if "enum" in prop:
        return "options"
    for json_type, kind in (
        ("object", "object"),
        ("array", "array"),
        ("boolean", "boolean"),
        ("integer", "integer"),
        ("number", "decimal"),
    ):
        if json_type in types:
            return kind
    if prop.get("format") in {"date-time", "date"}:
        return "date_iso8601"
    return "string"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid ones)."""
    return json.dumps(" ".join(str(text).split()), ensure_ascii=False)


def setting_value(name: str, setting: str, default: object) -> str:
    """The ``value:`` of a setting: its default, as YAML (JSON scalars are valid YAML).

    A relative file path is anchored at the Meltano project's root, so the file
    lands in the project's ``output/`` whichever folder ``meltano`` runs from.
    """
    if setting in PLUGINS[name].get("project_paths", ()) and not str(default).startswith("/"):
        default = f"{PROJECT_ROOT}/{default}"
    return json.dumps(default, ensure_ascii=False)


def plugin_yaml(name: str, info: Json, pip_url: str, indent: str) -> str:
    """The Meltano plugin entry of ``name`` (a YAML list item), from its ``--about`` output."""
    schema = info["settings"]
    meta = PLUGINS[name]
    out = [
        f"- name: {name}",
        f"  namespace: {meta['namespace']}",
        f"  label: {meta['label']}",
        f"  description: {meta['description']}",
        f"  pip_url: {pip_url}",
        f"  executable: {name}",
        "  capabilities:",
        *[f"  - {c}" for c in info["capabilities"]],
    ]
    groups = credential_groups(schema["properties"])
    out += ["  settings_group_validation:", *("  - [" + ", ".join(group) + "]" for group in groups)]
    out.append("  settings:")
    for sname, prop in schema["properties"].items():
        out.append(f"  - name: {sname}")
        if prop.get("title"):
            out.append(f"    label: {_q(prop['title'])}")
        out.append(f"    kind: {meltano_kind(prop)}")
        if "enum" in prop:
            out.append("    options:")
            out += [f"    - {{label: {_q(opt)}, value: {_q(opt)}}}" for opt in prop["enum"]]
        if prop.get("description"):
            out.append(f"    description: {_q(prop['description'])}")
        if prop.get("secret"):
            out.append("    sensitive: true")
        if "default" in prop and prop["default"] is not None:
            out.append(f"    value: {setting_value(name, sname, prop['default'])}")
    return "\n".join(indent + line if line else line for line in out)


def paste_block(infos: dict[str, Json]) -> str:
    """One ``plugins:`` block holding both plugins' entries, to paste into one's own meltano.yml."""
    lines = ["```yaml", "plugins:"]
    for name, meta in PLUGINS.items():
        lines += [f"  {meta['kind']}:", plugin_yaml(name, infos[name], PASTE_PIP_URL, "  ")]
    return "\n".join([*lines, "```"])


# ---- the files ----------------------------------------------------------------
def generated_blocks() -> dict[Path, dict[str, str]]:
    """{file: {block name: generated text}}."""
    infos = {name: about(name) for name in PLUGINS}
    return {
        TAP_DOC: {
            "tap-settings": settings_table(own_settings("tap-closum")),
            "streams": streams_table(),
        },
        TARGET_DOC: {"target-settings": settings_table(own_settings("target-closum"))},
        README: {"plugin-definitions": paste_block(infos)},
        MELTANO_YML: {name: plugin_yaml(name, info, "-e .", "  ") for name, info in infos.items()},
    }


def replace_blocks(text: str, blocks: dict[str, str], comment: tuple[str, str], where: str) -> str:
    """``text`` with the body of each marked block replaced by its generated text."""
    for name, body in blocks.items():
        begin, end = (f"{comment[0]}{edge} GENERATED: {name}{comment[1]}" for edge in ("BEGIN", "END"))
        pattern = re.compile(
            rf"(^[ \t]*{re.escape(begin)}[ \t]*\n)(.*?)(^[ \t]*{re.escape(end)}[ \t]*$)", re.DOTALL | re.MULTILINE
        )
        matches = list(pattern.finditer(text))
        if len(matches) != 1:
            msg = f"{where}: expected exactly one block marked '{begin}' ... '{end}'"
            raise SystemExit(msg)
        text = text[: matches[0].end(1)] + body + "\n" + text[matches[0].start(3) :]
    return text


def render() -> dict[Path, tuple[str, str]]:
    """{file: (current text, generated text)}."""
    out = {}
    for path, blocks in generated_blocks().items():
        comment = ("# ", "") if path.suffix == ".yml" else ("<!-- ", " -->")
        current = path.read_text(encoding="utf-8")
        out[path] = (current, replace_blocks(current, blocks, comment, str(path.relative_to(ROOT))))
    return out


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated blocks, or with ``--check`` show how they drifted."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff if a generated block drifted")
    args = parser.parse_args(argv)
    drift = False
    for path, (current, generated) in render().items():
        if current == generated:
            continue
        name = str(path.relative_to(ROOT))
        if args.check:
            drift = True
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True),
                    generated.splitlines(keepends=True),
                    f"{name} (committed)",
                    f"{name} (generated)",
                )
            )
        else:
            path.write_text(generated, encoding="utf-8")
            print(f"updated {name}")
    if drift:
        print("\nGenerated blocks drifted from the code: run `make docs` (.venv/bin/python scripts/gen_docs.py).")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
