"""Targets as values (``runtime.targets``): one table that the CLI, the API, the opener and ``bench`` read. A toy
target defined in the tests, with no other file changed, appears in ``export --help``, exports through
``api.export_model``, opens through the opener and is offered and run by ``bench``; a target's name is spelled in
its own files and the table (plus at most one other file); the API takes values, not long parameter lists; every
option of every command reaches its API call."""
from __future__ import annotations

import ast
import inspect
import re

import numpy as np
import pytest

from srdeploy import api, cli
from srdeploy.runtime.opener import open_artifact
from srdeploy.runtime.sessions.onnxruntime import OnnxSession
from srdeploy.runtime.targets import BUILT_IN, PLUGINS, load, targets
from tests.conftest import REPO, weights
from tests.test_architecture import _library_files

TOY = "tests.toy_target:TOY"


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setenv(PLUGINS, TOY)  # child processes (bench's) see it too


def test_a_toy_target_is_offered_everywhere_with_no_other_file_changed(toy, tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "{" + ",".join([*(t.name for t in BUILT_IN), "toy"]) + "}" in help_text
    assert "toy: a .toy file, ONNX under another name (a test's plug-in)" in help_text
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert ", ".join([*(t.title for t in BUILT_IN), "a toy artifact"]) in " ".join(capsys.readouterr().out.split())

    result = api.export_model("fsrcnn", 2, target="toy", out=tmp_path, weights=weights("fsrcnn_x2.pth"), progress=False)
    path, = result.artifacts
    assert path.name == "fsrcnn_x2_fp32.toy" and result.as_dict()["target"] == "toy"
    session = open_artifact(path)
    assert type(session).__name__ == "ToySession" and session.runtime_name == "Toy runtime"
    x = np.random.default_rng(0).random((1, 1, 20, 24), dtype=np.float32)
    onnx = api.export_model("fsrcnn", 2, out=tmp_path, weights=weights("fsrcnn_x2.pth"), progress=False).artifacts[0]
    assert np.array_equal(session.infer(x), OnnxSession(onnx).infer(x))

    assert "toy" in api.bench_backends()
    report = api.bench([str(path)], options=api.BenchOptions(sizes="32x24", warmup=1, runs=3, budget=0.5),
                       progress=False)
    row, = report.as_dict()["results"]
    assert row["backend"] == "toy" and row["status"] == "ok" and row["median_ms"] > 0, row
    assert cli.main(["export", "--model", "fsrcnn", "--target", "toy", "--portable", "--out", str(tmp_path)]) == 2
    assert "--portable is an option of --target onnx: use it there, not with --target toy" in capsys.readouterr().err


def test_without_the_plugin_the_toy_is_nowhere(tmp_path):
    assert "toy" not in targets() and "toy" not in api.bench_backends()
    with pytest.raises(api.SrDeployError, match="unknown target 'toy': choose one of onnx, trt"):
        api.export_model("fsrcnn", 2, target="toy", out=tmp_path, progress=False)


def test_a_plugin_that_does_not_load_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv(PLUGINS, "tests.no_such_module:TOY")
    with pytest.raises(api.SrDeployError, match=r"^\$SRDEPLOY_TARGETS names tests.no_such_module:TOY, which cannot "
                                                r"be loaded \(No module named 'tests.no_such_module'\): fix or unset it$"):
        targets()
    assert cli.main(["models"]) == 2  # one line, not a traceback from building the parser
    assert capsys.readouterr().err.startswith("error: $SRDEPLOY_TARGETS names tests.no_such_module:TOY")


@pytest.mark.parametrize("target", BUILT_IN, ids=lambda t: t.name)
def test_every_reference_of_the_table_resolves_in_its_layer(target):
    """Exporters and pre-checks live in export/, sessions and requirements in the torch-free runtime."""
    for field, layer in (("exporter", "export"), ("precheck", "export"), ("session", "runtime"),
                         ("requirement", "runtime")):
        reference = getattr(target, field)
        if reference is not None:
            assert reference.split(".")[0] == layer and callable(load(reference)), (field, reference)


def _own_files(target) -> set[str]:
    """A target's own files: the folders and modules its references live in (a bundle: its runtime side too)."""
    modules = {getattr(target, f).split(":")[0] for f in ("exporter", "precheck", "session", "requirement")
               if getattr(target, f)}
    own = set()
    for module in modules:
        path = module.replace(".", "/")
        folder = path.rsplit("/", 1)[0]
        own |= {str(p.relative_to(REPO)) for p in (REPO / folder).glob("*.py")} if folder.count("/") >= 1 and \
            folder.split("/")[0] == "export" and folder != "export/bundles" else {f"{path}.py"}
    if target.name == "jetson":  # its device-side runtime
        own |= {"runtime/bundle_check.py", "runtime/bundle_upscale.py"}
    if target.name == "trt":
        own |= {"runtime/sessions/cuda.py", "runtime/sessions/tensorrt_sidecar.py"}
    if target.name == "ios":
        own |= {"export/bundles/ios_swift.py"}
    return own


LIBRARY_BENCHMARKS = {"benchmarks/bench.py", "benchmarks/backends.py", "benchmarks/side_by_side.py"}


@pytest.mark.parametrize("target", BUILT_IN, ids=lambda t: t.name)
def test_a_target_name_is_spelled_in_its_own_files_the_table_and_at_most_one_other(target):
    """Dispatch on a target's name lives in the table: its name as a string appears outside its own files in at most
    the table and one other file (target-specific studies under benchmarks/ aside)."""
    found = set()
    for path in _library_files() + [REPO / "cli.py"]:
        name = str(path.relative_to(REPO))
        if name.startswith("benchmarks/") and name not in LIBRARY_BENCHMARKS:
            continue
        if any(isinstance(node, ast.Constant) and node.value == target.name for node in ast.walk(ast.parse(path.read_text()))):
            found.add(name)
    others = found - _own_files(target) - {"runtime/targets.py"}
    assert len(others) <= 1, sorted(others)


def test_the_public_api_takes_values_not_long_parameter_lists():
    public = {name: f for name, f in vars(api).items() if inspect.isfunction(f) and not name.startswith("_")
              and f.__module__ == api.__name__}
    assert {"export_model", "upscale", "evaluate", "bench", "parity", "zoo"} <= set(public)
    assert {name: len(inspect.signature(f).parameters) for name, f in public.items()
            if len(inspect.signature(f).parameters) > 10} == {}
    assert len((REPO / "api.py").read_text().splitlines()) <= 450


def _every_option(command: str) -> list[str]:
    """The command line with every option of ``command`` given (a value of its type or choices)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    line = [command]
    for action in sub._actions:
        if action.dest == "help":
            continue
        value = (action.choices[-1] if action.choices else "2") if action.nargs != 0 else None
        if not action.option_strings:
            line.append("in.png" if action.dest in ("input", "artifact") else "out.png" if action.dest == "output"
                        else "x.onnx")
            continue
        line += [action.option_strings[0]] + ([] if value is None else [str(value)])
    return line


@pytest.mark.parametrize("command, function", [("eval", "evaluate"), ("export", "export_model"),
                                               ("upscale", "upscale"), ("parity", "parity"), ("bench", "bench")])
def test_every_option_of_every_command_reaches_its_api_call(command, function):
    """``cli.arguments`` maps each option onto a parameter or a field of a value; one that reaches nothing is
    refused (it used to be dropped silently)."""
    args = cli.build_parser().parse_args(_every_option(command))
    kwargs = cli.arguments(getattr(api, function), args)
    given = {k: v for k, v in vars(args).items() if k not in cli.CLI_ONLY and v not in (None, False)}
    reached = {**{k: v for k, v in kwargs.items() if not hasattr(v, "__dataclass_fields__")},
               **{f: getattr(v, f) for v in kwargs.values() if hasattr(v, "__dataclass_fields__")
                  for f in v.__dataclass_fields__}}
    spec = kwargs.get("model")
    if isinstance(spec, api.ModelSpec):
        reached.update(model=spec.model, scale=spec.scale, weights=spec.weights, model_args=spec.model_args, **spec.options)
    missing = {k: v for k, v in given.items() if reached.get(k) != v}
    assert missing == {}
    args.unknown_option = 1
    with pytest.raises(TypeError, match=re.escape("options ['unknown_option'] reach no parameter of api.")):
        cli.arguments(getattr(api, function), args)
