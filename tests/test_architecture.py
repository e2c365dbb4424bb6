"""The layering the code promises: runtime → models → calib → export → benchmarks → cli, imports pointing
downward only (lazy imports inside functions count too), and no import cycle between modules."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

LAYERS = ("runtime", "models", "calib", "export", "benchmarks", "cli")


def _module(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports anywhere in its file (``from pkg import mod`` resolved)."""
    files = [p for layer in LAYERS[:-1] for p in (REPO / layer).glob("*.py")] + [REPO / "cli.py"]
    modules = {_module(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        found = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # ``from pkg import mod`` imports the module; ``from mod import name`` the module holding it
                found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                             for a in node.names)
        graph[_module(path)] = {name for name in found if name in modules} - {_module(path)}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _upward(graph: dict[str, set[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    return [f"{source} imports {target}" for source, targets in sorted(graph.items()) for target in sorted(targets)
            if rank[target.split(".")[0]] > rank[source.split(".")[0]]]


def test_imports_point_downward():
    assert _upward(import_graph()) == []


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_the_checks_see_an_upward_import_and_a_cycle():
    graph = import_graph()
    assert "runtime.artifact" in graph["runtime.onnx_backend"] and len(graph) > 60
    planted = {**graph, "runtime.artifact": graph["runtime.artifact"] | {"runtime.onnx_backend"}}
    assert ["runtime.artifact", "runtime.onnx_backend"] in _cycles(planted)
    assert _upward({**graph, "runtime.images": {"export.fp16"}}) == ["runtime.images imports export.fp16"]
