"""docs/development.md's "Through the target" names every module a RECORD crosses (scripts/record_path.py).

A module is named by its file (``writer.py``), a dotted name starting with it
(``plan.decide()``), or a class or function of its own (``RecordWriter.write()``),
each in a code span of that section.
"""

from __future__ import annotations

import ast
import importlib.util
import re

from meltano_project import ROOT

_spec = importlib.util.spec_from_file_location("record_path", ROOT / "scripts" / "record_path.py")
assert _spec is not None
assert _spec.loader is not None
record_path = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(record_path)


def _section() -> str:
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    return text.split("### Through the target", 1)[1].split("\n## ", 1)[0]


def _own_names(path: str) -> set[str]:
    """The classes and functions a module defines at its top level."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {node.name for node in tree.body if isinstance(node, kinds)}


def named(path: str, spans: list[str]) -> bool:
    """Whether a code span names the module ``path`` (``target_closum/writer.py``)."""
    stem = path.rsplit("/", 1)[1].removesuffix(".py")
    heads = {m.group(1) for span in spans if (m := re.match(r"([A-Za-z_]\w*)", span))}
    return any(f"{stem}.py" in span for span in spans) or stem in heads or bool(_own_names(path) & heads)


def test_the_docs_name_every_target_module_a_record_crosses():
    crossed = {file for file, _ in record_path.record_path()}
    # The measure sees the whole path: the record is read, built, written to the ledger and sent.
    assert {"target_closum/sinks.py", "target_closum/ledger.py", "closum_api/client.py"} <= crossed
    spans = re.findall(r"`([^`]+)`", _section())
    unnamed = sorted(f for f in crossed if f.startswith("target_closum/") and not named(f, spans))
    assert not unnamed, f"docs/development.md, 'Through the target', names none of {unnamed}"


def test_a_module_the_section_does_not_name_is_found():
    spans = re.findall(r"`([^`]+)`", _section())
    assert named("target_closum/writer.py", spans)
    assert named("target_closum/sinks.py", spans)  # by its class, ClosumSink
    assert not named("target_closum/phones.py", spans)  # a V2 contact's phones: not on this path
