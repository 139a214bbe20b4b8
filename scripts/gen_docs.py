#!/usr/bin/env python3
"""Regenerate the parts of README.md and meltano.yml that come from the code.

    .venv/bin/python scripts/gen_docs.py          # rewrite the generated blocks
    .venv/bin/python scripts/gen_docs.py --check  # exit 1 and show a diff on drift

Generated blocks sit between marker lines and are replaced whole:

- README.md ``<!-- BEGIN GENERATED: NAME -->`` ... ``<!-- END GENERATED: NAME -->``
  for ``target-section`` (target_closum/README_SECTION.md, the target's own
  text, while that file exists), ``tap-settings`` and ``target-settings`` (from ``TapClosum.config_jsonschema``
  and ``TargetClosum.config_jsonschema``), ``streams`` (from ``closum_api.registry``)
  and ``plugin-definitions`` (the YAML to paste into one's own meltano.yml);
- meltano.yml ``# BEGIN GENERATED: NAME`` ... ``# END GENERATED: NAME`` for
  ``tap-closum`` and ``target-closum`` (the custom plugin definitions, with every
  setting that ``--about`` lists, its kind and its description).

tests/test_readme.py runs this script with ``--check``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

README = ROOT / "README.md"
MELTANO_YML = ROOT / "meltano.yml"


# ---- settings ---------------------------------------------------------------
def _plugin_classes():
    from tap_closum.tap import TapClosum
    from target_closum.target import TargetClosum

    return {"tap-closum": TapClosum, "target-closum": TargetClosum}


def own_and_about_settings(cls) -> tuple[dict, dict]:
    """(the plugin's own config schema, everything ``--about`` lists).

    ``_get_about_info`` merges the SDK's built-in settings into
    ``config_jsonschema`` in place, so the own schema is copied first.
    """
    own = copy.deepcopy(cls.config_jsonschema)
    about = cls._get_about_info()
    return own, {
        "capabilities": [str(c.value if hasattr(c, "value") else c) for c in about.capabilities],
        "settings": copy.deepcopy(about.settings),
    }


def _types(prop: dict) -> list[str]:
    t = prop.get("type", [])
    types = [t] if isinstance(t, str) else list(t)
    if not types and "anyOf" in prop:
        for alt in prop["anyOf"]:
            if isinstance(alt, dict):
                types += _types(alt)
    return [x for x in types if x != "null"]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def settings_table(schema: dict) -> str:
    required = set(schema.get("required", []))
    lines = ["| setting | required | default | description |", "|---|---|---|---|"]
    for name, prop in schema["properties"].items():
        default = prop.get("default")
        default_cell = (
            "" if default is None else f"`{json.dumps(default) if not isinstance(default, str) else default}`"
        )
        secret = " (secret)" if prop.get("secret") and "secret" not in prop.get("description", "").lower() else ""
        lines.append(
            f"| `{name}` | {'yes' if name in required else 'no'} | {default_cell} | "
            f"{_cell(prop.get('description', ''))}{secret} |"
        )
    return "\n".join(lines)


def meltano_kind(prop: dict) -> str:
    if prop.get("secret"):
        return "password"
    types = _types(prop)
    if "enum" in prop:
        return "options"
    if "object" in types:
        return "object"
    if "array" in types:
        return "array"
    if "boolean" in types:
        return "boolean"
    if "integer" in types:
        return "integer"
    if "number" in types:
        return "decimal"
    if prop.get("format") in {"date-time", "date"}:
        return "date_iso8601"
    return "string"


def _q(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid ones)."""
    return json.dumps(" ".join(str(text).split()), ensure_ascii=False)


PLUGIN_META = {
    "tap-closum": {"namespace": "tap_closum", "label": "Closum", "description": "Closum lead-management API (tap)"},
    "target-closum": {
        "namespace": "target_closum",
        "label": "Closum",
        "description": "Closum lead-management API (target)",
    },
}


def plugin_yaml(name: str, cls, pip_url: str, indent: str) -> str:
    _, about = own_and_about_settings(cls)
    schema = about["settings"]
    meta = PLUGIN_META[name]
    out = [
        f"- name: {name}",
        f"  namespace: {meta['namespace']}",
        f"  label: {meta['label']}",
        f"  description: {meta['description']}",
        f"  pip_url: {pip_url}",
        f"  executable: {name}",
        "  capabilities:",
        *[f"  - {c}" for c in about["capabilities"]],
    ]
    required = schema.get("required", [])
    if required:
        out.append("  settings_group_validation:")
        out.append("  - [" + ", ".join(required) + "]")
    out.append("  settings:")
    for sname, prop in schema["properties"].items():
        out.append(f"  - name: {sname}")
        if prop.get("title"):
            out.append(f"    label: {_q(prop['title'])}")
        out.append(f"    kind: {meltano_kind(prop)}")
        if "enum" in prop:
            out.append("    options:")
            for opt in prop["enum"]:
                out.append(f"    - {{label: {_q(opt)}, value: {_q(opt)}}}")
        if prop.get("description"):
            out.append(f"    description: {_q(prop['description'])}")
        if prop.get("secret"):
            out.append("    sensitive: true")
    return "\n".join(indent + line if line else line for line in out)


def streams_table() -> str:
    from closum_api import registry

    lines = [
        "| stream | list endpoint | primary key | replication | API revision |",
        "|---|---|---|---|---|",
    ]
    for r in registry.RESOURCES:
        revs = sorted(v.value for v in r.revisions)
        rev = "both" if len(revs) == 2 else f"{revs[0]} only"
        repl = r.replication.value
        if r.replication is registry.Replication.INCREMENTAL:
            repl += " on `id`"
        lines.append(f"| `{r.stream_name}` | `GET {r.list_path}` | `id` | {repl} | {rev} |")
    return "\n".join(lines)


PASTE_PIP_URL = "git+https://YOUR-GIT-HOST/closum-singer.git  # or -e /path/to/a/clone"


TARGET_SECTION = ROOT / "target_closum" / "README_SECTION.md"


def target_section() -> str | None:
    """target_closum/README_SECTION.md (the target's own README text) with its
    settings table swapped for the generated one; None once the file is gone.
    """
    if not TARGET_SECTION.exists():
        return None
    out, lines, i, swapped = [], TARGET_SECTION.read_text(encoding="utf-8").rstrip().splitlines(), 0, False
    while i < len(lines):
        if not swapped and lines[i].startswith("| setting | required |"):
            out += ["<!-- BEGIN GENERATED: target-settings -->", "<!-- END GENERATED: target-settings -->"]
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            swapped = True
            continue
        out.append(lines[i])
        i += 1
    if not swapped:
        raise SystemExit(f"{TARGET_SECTION}: no settings table ('| setting | required | ...') to replace")
    return "\n".join(out)


def readme_blocks() -> dict[str, str]:
    classes = _plugin_classes()
    tap_own, _ = own_and_about_settings(classes["tap-closum"])
    target_own, _ = own_and_about_settings(classes["target-closum"])
    paste = "\n".join(
        [
            "```yaml",
            "plugins:",
            "  extractors:",
            plugin_yaml("tap-closum", classes["tap-closum"], PASTE_PIP_URL, "  "),
            "  loaders:",
            plugin_yaml("target-closum", classes["target-closum"], PASTE_PIP_URL, "  "),
            "```",
        ]
    )
    blocks = {}
    section = target_section()
    if section is not None:  # first: it holds the target-settings markers
        blocks["target-section"] = section
    return blocks | {
        "tap-settings": settings_table(tap_own),
        "target-settings": settings_table(target_own),
        "streams": streams_table(),
        "plugin-definitions": paste,
    }


def meltano_blocks() -> dict[str, str]:
    classes = _plugin_classes()
    return {name: plugin_yaml(name, cls, "-e .", "  ") for name, cls in classes.items()}


# ---- splicing ---------------------------------------------------------------
def splice(text: str, blocks: dict[str, str], begin: str, end: str, where: str) -> str:
    for name, body in blocks.items():
        b, e = begin.format(name=name), end.format(name=name)
        pattern = re.compile(
            rf"(^[ \t]*{re.escape(b)}[ \t]*\n)(.*?)(^[ \t]*{re.escape(e)}[ \t]*$)", re.DOTALL | re.MULTILINE
        )
        if len(pattern.findall(text)) != 1:
            raise SystemExit(f"{where}: expected exactly one block marked '{b}' ... '{e}'")
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(3), text)
    return text


def render() -> dict[Path, tuple[str, str]]:
    """{file: (current text, generated text)}."""
    out = {}
    readme = README.read_text(encoding="utf-8")
    out[README] = (
        readme,
        splice(
            readme, readme_blocks(), "<!-- BEGIN GENERATED: {name} -->", "<!-- END GENERATED: {name} -->", "README.md"
        ),
    )
    myml = MELTANO_YML.read_text(encoding="utf-8")
    out[MELTANO_YML] = (
        myml,
        splice(myml, meltano_blocks(), "# BEGIN GENERATED: {name}", "# END GENERATED: {name}", "meltano.yml"),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff if a generated block drifted")
    args = parser.parse_args(argv)
    drift = False
    for path, (current, generated) in render().items():
        if current == generated:
            continue
        if args.check:
            drift = True
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True),
                    generated.splitlines(True),
                    f"{path.name} (committed)",
                    f"{path.name} (generated)",
                )
            )
        else:
            path.write_text(generated, encoding="utf-8")
            print(f"updated {path.relative_to(ROOT)}")
    if drift:
        print("\nGenerated blocks drifted from the code: run `.venv/bin/python scripts/gen_docs.py`.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
