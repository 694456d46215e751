"""The package's import graph has no cycle, counting imports inside functions too.

An import inside a function that only exists to break a cycle hides a design knot (issue: a
stage module importing the model that imports the stage). Every ``import`` and
``from ... import`` under ``src/geneattn`` is an edge, wherever it stands, except those
under ``if TYPE_CHECKING:`` (annotations only, never executed). ``from geneattn.x import
name`` is an edge to ``geneattn.x``, or to ``geneattn.x.name`` when that is a module.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import geneattn

SRC = Path(geneattn.__file__).parent


def _modules() -> dict[str, Path]:
    found = {"geneattn": SRC / "__init__.py"}
    for info in pkgutil.walk_packages([str(SRC)], "geneattn."):
        rel = info.name.split(".")[1:]
        base = SRC.joinpath(*rel)
        path = base / "__init__.py" if info.ispkg else base.with_suffix(".py")
        if path.exists():
            found[info.name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, name: str, is_pkg: bool, modules: set[str]) -> set[str]:
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.add(sub if sub in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in out if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in its body)."""
    modules = _modules()
    names = set(modules)
    return {
        name: _imports(ast.parse(path.read_text()), name, path.name == "__init__.py", names)
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_every_module_imports():
    for name in _modules():
        if not name.endswith("__main__"):
            importlib.import_module(name)


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_imports_inside_functions():
    graph = import_graph()
    # cli modules import their library modules inside run()
    assert "geneattn.qc" in graph["geneattn.cli.qc"]
