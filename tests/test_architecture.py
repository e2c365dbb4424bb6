"""The layering the code promises: runtime → models → calib → export → benchmarks → api → cli, imports pointing
downward only (lazy imports inside functions count too), no import cycle between modules, and a CLI that is
argument parsing plus calls of the library API."""
from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import REPO

LAYERS = ("runtime", "models", "calib", "export", "benchmarks", "api", "cli")  # folders, then the root modules
# The one module allowed above the CLI: the command line's fuzz harness imports what it fuzzes (a harness is a test).
ABOVE_THE_CLI = {"benchmarks.fuzz_cli": {"api", "cli"}}


def _library_files() -> list[Path]:
    """Every module below the CLI."""
    return [p for layer in LAYERS[:-2] for p in (REPO / layer).rglob("*.py")] + [REPO / "api.py"]


def _module(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    """Module → the project modules it imports anywhere in its file (``from pkg import mod`` resolved)."""
    files = _library_files() + [REPO / "cli.py"]
    modules = {_module(p) for p in files}
    graph: dict[str, set[str]] = {}
    for path in files:
        found = set()
        package = _module(path).split(".")[:-1]  # api, cli: the srdeploy package itself
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name.removeprefix("srdeploy.") for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package[:len(package) - node.level + 1] if node.level else []
                source = ".".join([*base, *(node.module or "").removeprefix("srdeploy").split(".")]).strip(".")
                # ``from pkg import mod`` imports the module; ``from mod import name`` the module holding it
                found.update(f"{source}.{a.name}".strip(".") if f"{source}.{a.name}".strip(".") in modules else source
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
            if rank[target.split(".")[0]] > rank[source.split(".")[0]] and target not in ABOVE_THE_CLI.get(source, ())]


def test_imports_point_downward():
    assert _upward(import_graph()) == []


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_the_checks_see_an_upward_import_and_a_cycle():
    graph = import_graph()
    assert "runtime.artifact" in graph["runtime.sessions.onnxruntime"] and len(graph) > 60
    planted = {**graph, "runtime.artifact": graph["runtime.artifact"] | {"runtime.sessions.onnxruntime"}}
    assert ["runtime.artifact", "runtime.sessions.onnxruntime"] in _cycles(planted)
    assert _upward({**graph, "runtime.images": {"export.fp16"}}) == ["runtime.images imports export.fp16"]
    assert graph["benchmarks.fuzz_cli"] == {"api", "cli"}  # the exception is used, and only by that module
    assert _upward({**graph, "benchmarks.fuzz": {"cli"}}) == ["benchmarks.fuzz imports cli"]


def test_one_installed_name_and_no_cli_strings_in_the_library():
    """``pip install -e .`` puts only ``srdeploy`` into site-packages; tests and library code use it; hints in the
    library name the console command (``runtime.errors.command``), never ``python cli.py``."""
    import importlib.metadata

    assert importlib.metadata.distribution("srdeploy").read_text("top_level.txt").split() == ["srdeploy"]
    entry = [e for e in importlib.metadata.distribution("srdeploy").entry_points if e.group == "console_scripts"]
    assert [(e.name, e.value) for e in entry] == [("srdeploy", "srdeploy.cli:main")]
    assert [str(p.relative_to(REPO)) for p in _library_files() if "python cli.py" in p.read_text()] == []
    project = "|".join(LAYERS[:-1])
    bare = [f"{p.name}: {line.strip()}" for p in (REPO / "tests").glob("*.py") for line in p.read_text().splitlines()
            if re.match(rf"\s*(from|import) ({project})\b", line)]
    assert bare == []  # a top-level `runtime` beside `srdeploy.runtime` would be a second copy of every class


def test_the_cli_is_parsing_plus_calls():
    """cli.py imports the API, the error type it prints and the backend names it offers; no function but the
    parser builder is long, and each command is a call and its printing."""
    assert import_graph()["cli"] == {"api", "runtime.errors", "runtime.opener", "runtime.targets"}
    tree = ast.parse((REPO / "cli.py").read_text())
    lengths = {node.name: node.end_lineno - node.lineno + 1 for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
    assert len(lengths) > 5 and {name: n for name, n in lengths.items() if n > 60} == {"build_parser": lengths["build_parser"]}
    commands = {name for name in lengths if name.startswith("cmd_")}
    assert commands == {"cmd_models", "cmd_eval", "cmd_export", "cmd_upscale", "cmd_parity", "cmd_bench", "cmd_serve"}
    assert max(lengths[name] for name in commands) <= 6


def test_the_wheel_holds_every_subpackage(tmp_path):
    """Packaging is derived, not listed (setup.py, setuptools' package discovery): a wheel built from the tracked
    files holds every folder with an ``__init__.py`` under the design card's folders as a subpackage of srdeploy,
    and nothing else beside srdeploy."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"
    for name in subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split():
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "wheel"), str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    wheel, = (tmp_path / "wheel").glob("srdeploy-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {n.rsplit("/", 1)[0] for n in names if n.endswith("/__init__.py")}
    expected = {"srdeploy/" + p.parent.relative_to(REPO).as_posix() for layer in LAYERS[:-2]
                for p in (REPO / layer).rglob("__init__.py")}
    assert packaged == expected and len(expected) >= 12
    assert {n.split("/")[0] for n in names if not n.startswith("srdeploy-")} == {"srdeploy"}
    assert {"srdeploy/api.py", "srdeploy/cli.py"} <= set(names) and "srdeploy/setup.py" not in names


MODULE_PATH = re.compile(r"(?<![\w./-])((?:srdeploy\.)?(?:runtime|models|calib|export|benchmarks)(?:\.[A-Za-z_]\w*)+)")


def _resolves(reference: str) -> bool:
    """``runtime.opener.open_artifact``: a module of srdeploy, then attributes of it (a dataclass's fields too)."""
    import dataclasses
    import importlib

    parts = reference.removeprefix("srdeploy.").split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module("srdeploy." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if hasattr(found, name):
                found = getattr(found, name)
            else:
                return isinstance(found, type) and (name in getattr(found, "__annotations__", {}) or (
                    dataclasses.is_dataclass(found) and name in {f.name for f in dataclasses.fields(found)}))
        return True
    return False


def test_module_paths_named_in_the_code_and_the_docs_exist():
    """Docstrings, comments and pages name modules by dotted path (``export.trt.trt_plan``); each must resolve (ten
    went stale when export/ was split into folders: ``export.trt_plan``, ``runtime.cuda`` …)."""
    files = _library_files() + [REPO / "cli.py", REPO / "README.md", *(REPO / "docs").rglob("*.md")]
    stale = [f"{path.relative_to(REPO)}:{n}: {ref}" for path in files
             for n, line in enumerate(path.read_text().splitlines(), 1) for ref in MODULE_PATH.findall(line)
             if not ref.rstrip(".").endswith((".py", ".md", ".json", ".toml", ".npy", ".npz", ".onnx"))
             and not _resolves(ref.rstrip("."))]
    assert stale == []
    assert _resolves("export.trt.trt_plan") and not _resolves("export.trt_plan")


# ExecuTorch's Python runtime takes and returns torch tensors; its torch-free one (executorch-numpy-runtime) needs
# Python >= 3.12 and returned all NaN for a 1.5.1 .pte (runtime/sessions/executorch.py says so). Phones run the .pte
# without torch.
NEEDS_TORCH = {"runtime/sessions/executorch.py"}


def test_the_runtime_never_imports_torch():
    """The deploy side needs no PyTorch: no module under runtime/ imports it, lazily or not (the PyTorch runner lives
    in models/, the layer that has torch), but the ExecuTorch session, whose runtime's Python API is torch's."""
    importers = {str(path.relative_to(REPO)) for path in (REPO / "runtime").rglob("*.py")
                 for node in ast.walk(ast.parse(path.read_text()))
                 if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch" for a in node.names)
                 or isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch"}
    assert importers == NEEDS_TORCH
