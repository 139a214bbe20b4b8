"""The house's layout holds: one-way imports between packages, no import cycle between modules, no hook handed down.

``closum_api`` is the bottom layer; ``tap_closum``, ``target_closum`` and
``closum_sandbox`` sit on it and never import one another. Within the four
packages no module imports one that imports it back, directly or through
others (imports under ``if TYPE_CHECKING:`` count too: a cycle hidden from
the interpreter is still a cycle for the reader).

Nor does ``closum_api`` call back up through a hook a caller hands it: a
parameter of ``closum_api`` that takes a callable called for its effect
(annotated ``Callable[..., None]``, or named ``on_*``) is one the layers above
could fill with their own code, where a return value and an explicit step
would do. Each one that remains is listed in :data:`HOOKS` with why it is no
call back up. What the check cannot see: a callable annotated as returning a
value (``Callable[[], bool]``) or ``Any``, a hook behind a type alias, and an
object handed down whose methods the bottom layer calls.

And no stop is process-wide: a :class:`~closum_api.stop.StopEvent` is created by
a run and handed to what waits on it, never held at module or class level,
where every run of the process would share it and a call site could reach it
unseen. What that check cannot see: an event made by a factory that is not
called ``StopEvent`` (a cached function, say) or stored in a module's dict.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("closum_api", "tap_closum", "target_closum", "closum_sandbox")
#: what each package may import from the others
ALLOWED = {
    "closum_api": set(),
    "tap_closum": {"closum_api"},
    "target_closum": {"closum_api"},
    "closum_sandbox": {"closum_api"},
}


#: closum_api's parameters that take a callable called for its effect, each with why it is no call back up
HOOKS = {
    ("closum_api/pace.py", "Pace.__init__", "sleep"): "how to wait: the run's stop.sleep, or a fake clock's",
    ("closum_api/retry.py", "call", "on_retry"): "closum_api's own: the client and the token holder word their retries",
    ("closum_api/connection.py", "_Deadline.attach", "shut"): "the socket's own shutdown, from inside closum_api",
    ("closum_api/connection.py", "_shut_quietly", "shut"): "the same",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports (``from pkg import mod`` counts as ``pkg.mod`` when it is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for imported in names:
            name = imported
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # A package's __init__ is imported with each of its modules: an edge from a module
        # to its own package's __init__ is no cycle.
        graph[name] = {m for m in _imports(path, modules) if m != name and not name.startswith(m + ".")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_every_module():
    graph = _graph()
    assert {"closum_api.registry", "tap_closum.tap", "target_closum.sinks", "closum_sandbox.app"} <= set(graph)
    assert "closum_api.registry" in graph["tap_closum.streams"]


def test_no_import_cycle_between_modules():
    assert _cycle(_graph()) is None, " → ".join(_cycle(_graph()) or [])


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_the_layers_below(package):
    graph = _graph()
    crossing = {
        (mod, dep)
        for mod, deps in graph.items()
        if mod.split(".")[0] == package
        for dep in deps
        if dep.split(".")[0] not in {package, *ALLOWED[package]}
    }
    assert not crossing, f"{package} imports across layers: {sorted(crossing)}"


def _code_map() -> dict[str, set[str]]:
    """The modules docs/development.md's code map lists, per package."""
    text = (ROOT / "docs" / "development.md").read_text(encoding="utf-8")
    block = text.split("## Code map", 1)[1].split("```", 2)[1]
    listed: dict[str, set[str]] = {}
    package = None
    for line in block.splitlines():
        if not line.startswith(" ") and line.split("/")[0] in PACKAGES:
            package = line.split("/")[0]
            listed[package] = set()
        elif package and line.startswith("  ") and line.split()[0].endswith(".py"):
            listed[package].add(line.split()[0])
    return listed


def test_code_map_lists_every_module():
    listed = _code_map()
    for package in PACKAGES:
        present = {p.name for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"}
        shown = listed.get(package, set())
        assert shown == present, (
            f"docs/development.md's code map of {package}/ is out of date: "
            f"missing {sorted(present - shown)}, gone {sorted(shown - present)}"
        )


def _calls_for_effect(annotation: ast.expr | None) -> bool:
    """Whether an annotation is a callable returning None (alone, in a union, or Optional)."""
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _calls_for_effect(annotation.left) or _calls_for_effect(annotation.right)
    if not isinstance(annotation, ast.Subscript):
        return False
    base = annotation.value
    name = base.attr if isinstance(base, ast.Attribute) else base.id if isinstance(base, ast.Name) else ""
    if name == "Optional":
        return _calls_for_effect(annotation.slice)
    if name != "Callable" or not isinstance(annotation.slice, ast.Tuple) or len(annotation.slice.elts) != 2:
        return False
    returns = annotation.slice.elts[1]
    return isinstance(returns, ast.Constant) and returns.value is None


def _hooks(package: str) -> set[tuple[str, str, str]]:
    """The parameters of a package's functions that take a callable called for its effect, or are named ``on_*``."""
    found = set()
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        owners = {child: node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for child in node.body}
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            name = f"{owners[node]}.{node.name}" if node in owners else node.name
            args = node.args
            for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if arg.arg.startswith("on_") or _calls_for_effect(arg.annotation):
                    found.add((str(path.relative_to(ROOT)), name, arg.arg))
    return found


def test_the_hook_finder_sees_a_hook():
    source = "def f(a: t.Callable[[], None] | None, b: Callable[[int], bool], on_x: int, c: Callable[..., None]): ..."
    function = ast.parse(source).body[0]
    assert isinstance(function, ast.FunctionDef)
    args = function.args.args
    assert [a.arg for a in args if a.arg.startswith("on_") or _calls_for_effect(a.annotation)] == ["a", "on_x", "c"]


def test_closum_api_takes_no_hook_from_the_layers_above():
    found = _hooks("closum_api")
    assert found == set(HOOKS), (
        "closum_api takes a callable it calls for its effect: return a value and let the caller take the next "
        f"step, or list it in HOOKS with why it is no call back up (new: {sorted(found - set(HOOKS))}, "
        f"gone: {sorted(set(HOOKS) - found)})"
    )


def _makes_stop_event(value: ast.expr) -> bool:
    """Whether an expression calls ``StopEvent`` (by its name or as ``stop.StopEvent``)."""
    for node in ast.walk(value):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "StopEvent":
                return True
    return False


def _shared_stop_events(tree: ast.Module) -> list[int]:
    """The lines of a module that make a ``StopEvent`` at module or class level (shared by every run)."""
    bodies = [tree.body, *(node.body for node in ast.walk(tree) if isinstance(node, ast.ClassDef))]
    return sorted(
        statement.lineno
        for body in bodies
        for statement in body
        if isinstance(statement, (ast.Assign, ast.AnnAssign))
        and statement.value is not None
        and _makes_stop_event(statement.value)
    )


def test_the_shared_stop_finder_sees_one():
    source = (
        "STOP = StopEvent()\n"
        "class A:\n    shared: t.ClassVar = stop.StopEvent()\n"
        "def run():\n    event = StopEvent()\n"
        "class B:\n    def __init__(self):\n        self.stop = StopEvent()\n"
    )
    assert _shared_stop_events(ast.parse(source)) == [1, 3]


def test_no_stop_event_is_shared_by_the_runs_of_a_process():
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in _shared_stop_events(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not found, (
        f"a StopEvent made at module or class level is shared by every run of the process: {found}; "
        "let the run create its own and hand it to what waits on it"
    )
