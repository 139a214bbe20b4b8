"""The private parts of singer-sdk we use are exactly those docs/development.md lists, each with its reason.

A private part is a name beginning with ``_`` that a class of the SDK defines
or sets on ``self`` (a method, an attribute), a part the SDK marks ``@final``,
or an import from a private SDK module. The scan below finds every one our
classes override, call or read; the test fails when it finds one the table
does not list (say why, or use a public hook), or the table lists one the code
no longer uses (drop the row).
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib
import inspect
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("closum_api", "tap_closum", "target_closum")
_SELF_ATTR = re.compile(r"self\.(_[a-z]\w*)")
_ROW = re.compile(r"^\| `([\w/]+\.py)` \| `(\w+(?:\.\w+)*)` \| .+ \|$")


def _sdk_private_names(cls: type) -> set[str]:
    names: set[str] = set()
    for base in cls.__mro__:
        if getattr(base, "__module__", "").startswith("singer_sdk"):
            names |= _private_names_of_sdk_class(base)
    return names


@functools.cache
def _private_names_of_sdk_class(base: type) -> frozenset[str]:
    """The private and final names an SDK class defines or sets on self (read once per class: its source is long)."""
    names: set[str] = set()
    for name, value in vars(base).items():
        final = getattr(value, "__final__", False) or getattr(getattr(value, "fget", None), "__final__", False)
        if (name.startswith("_") and not name.startswith("__") and name != "_abc_impl") or final:
            names.add(name)
    with contextlib.suppress(OSError, TypeError):
        names |= set(_SELF_ATTR.findall(inspect.getsource(base)))
    return frozenset(names)


def _derives_from_sdk(cls: object, module: object) -> bool:
    return (
        inspect.isclass(cls)
        and cls.__module__ == getattr(module, "__name__", None)
        and any(b.__module__.startswith("singer_sdk") for b in cls.__mro__[1:])
    )


def _private_imports(rel: str, tree: ast.AST) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("singer_sdk"):
            private_module = any(part.startswith("_") for part in node.module.split("."))
            found |= {
                (rel, f"{node.module}.{alias.name}")
                for alias in node.names
                if private_module or alias.name.startswith("_")
            }
    return found


def _self_or_super_uses(rel: str, tree: ast.AST, names: set[str]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in names:
            target = node.value
            is_self = isinstance(target, ast.Name) and target.id == "self"
            is_super = isinstance(target, ast.Call) and getattr(target.func, "id", "") == "super"
            if is_self or is_super:
                found.add((rel, node.attr))
    return found


@functools.cache
def used_private_parts() -> frozenset[tuple[str, str]]:
    """(file, name) for every private SDK part our code overrides, calls, reads or imports."""
    found: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found |= _private_imports(rel, tree)
            sdk_names: set[str] = set()
            for cls in vars(module).values():
                if _derives_from_sdk(cls, module):
                    private = _sdk_private_names(cls)
                    sdk_names |= private
                    found |= {(rel, name) for name in vars(cls) if name in private}
            found |= _self_or_super_uses(rel, tree, sdk_names)
    return frozenset(found)


def listed_private_parts() -> set[tuple[str, str]]:
    """The rows of docs/development.md's table of the SDK's private parts we use."""
    text = (REPO / "docs" / "development.md").read_text(encoding="utf-8")
    section = text.split("## The SDK's private parts we use", 1)[1].split("\n## ", 1)[0]
    return {(m.group(1), m.group(2)) for line in section.splitlines() if (m := _ROW.match(line))}


def test_every_private_sdk_part_we_use_is_listed_with_its_reason_and_nothing_else():
    used, listed = used_private_parts(), listed_private_parts()
    assert listed, "the table of docs/development.md was not found"
    assert sorted(used - listed) == [], "private SDK parts used but not listed in docs/development.md"
    assert sorted(listed - used) == [], "rows of docs/development.md no longer used: drop them"


def test_the_scan_finds_an_override_a_call_and_an_import():
    used = used_private_parts()
    assert ("tap_closum/client.py", "_increment_stream_state") in used  # an override (and a super() call)
    assert ("tap_closum/optins.py", "_sync_children") in used  # a call only
    assert any(name.startswith("singer_sdk.helpers._batch.") for _, name in used)  # an import
