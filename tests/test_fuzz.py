"""Short runs of the coverage-guided fuzz harnesses (``benchmarks/fuzz.py``, atheris): each harness feeds mutated
input, seeded from real files, to the code that reads untrusted bytes; the only outcomes allowed are a result or the
project's one-line error. The long runs are recorded in docs/reliability.md."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import SHARED, need_shared
from srdeploy.benchmarks.fuzz import HARNESSES

SECONDS = 4  # each; with the start-up and the seeds, all twelve within about two minutes on 2 cores
SEEDED = {"onnx": "onnxruntime", "openvino": "openvino", "ncnn": "pnnx", "coreml": "coremltools",
          "executorch": "executorch"}  # harnesses whose seed is the exported FSRCNN ×2, and the package each needs


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """FSRCNN ×2 exported here for the seeded harnesses (``--exported``): once, in this warm process, instead of in
    each harness's new one."""
    from srdeploy import api

    folder = tmp_path_factory.mktemp("exported")
    if (SHARED / "weights" / "fsrcnn_x2.pth").is_file():
        for target, package in SEEDED.items():
            if importlib.util.find_spec(package) is not None:
                api.export_model("fsrcnn", 2, target=target, out=folder / target, progress=False)
    return folder


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed: pip install atheris")
@pytest.mark.parametrize("harness", sorted(HARNESSES))
def test_short_fuzz_run_finds_nothing(harness, exported, tmp_path):
    if harness in SEEDED:
        need_shared("weights", "fsrcnn_x2.pth")
        pytest.importorskip(SEEDED[harness], reason=f"{SEEDED[harness]} is not installed: pip install -e '.[dev]'")
    done = subprocess.run([sys.executable, "-m", "srdeploy.benchmarks.fuzz", harness, "--seconds", str(SECONDS),
                           "--exported", str(exported), "--corpus", str(tmp_path / "corpus"), "--crashes",
                           str(tmp_path / "crashes")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # each new ExecuTorch program is first loaded in a child process (~5 s: runtime.sessions.executorch.probed)
    assert result["crashes"] == [] and result["executions"] > (1 if harness == "executorch" else 20), result
    assert result["coverage"] and result["coverage"] > 10, result  # srdeploy's code was instrumented and reached


# ---------------------------------------------------------------------------------------------------- their findings
# (the others, about crafted artifacts, are in test_hostile_artifacts.py)


def test_an_argument_with_a_newline_is_refused_on_one_line(capsys):
    from srdeploy.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["export", "--model", "fsrcnn", "line one\nline two"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "line one\\nline two" in error


def test_a_damaged_zip_member_with_a_newline_in_its_name_is_one_line(tmp_path):
    import zipfile

    from srdeploy.models.checkpoints import read_state_dict
    from srdeploy.runtime.errors import SrDeployError

    path = tmp_path / "model.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data\nPK", b"tensor bytes " * 8)
    data = path.read_bytes()
    path.write_bytes(data.replace(b"tensor bytes", b"tensor bytez", 1))  # its CRC-32 now fails
    with pytest.raises(SrDeployError) as caught:
        read_state_dict(path)
    assert "\n" not in str(caught.value) and "the checksum of archive/data\\nPK fails" in str(caught.value)


class Payload:
    """An object a checkpoint may not hold; its name as long as a crafted file's can be."""


LONG_NAME = "Payload" + "X" * 400
Payload.__name__ = Payload.__qualname__ = LONG_NAME
globals()[LONG_NAME] = Payload


def test_a_tensor_name_with_a_newline_is_shown_on_one_line(tmp_path):
    import torch

    from srdeploy.models.checkpoints import read_state_dict
    from srdeploy.runtime.errors import SrDeployError

    path = tmp_path / "m.pth"
    torch.save({"conv\nweight": torch.tensor([float("nan")])}, path)
    with pytest.raises(SrDeployError, match=r"holds NaN or Inf in conv\\nweight: the checkpoint is broken"):
        read_state_dict(path)


def test_a_refused_object_with_a_long_name_stays_under_300_characters(tmp_path):
    import torch

    from srdeploy.models.checkpoints import read_state_dict
    from srdeploy.runtime.errors import SrDeployError

    path = tmp_path / "m.pth"
    torch.save({"w": torch.zeros(1), "extra": Payload()}, path)
    with pytest.raises(SrDeployError, match="holds Python code or objects") as caught:
        read_state_dict(path)
    assert len(str(caught.value)) < 300 + len(str(path)) and "XXX…" in str(caught.value)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_checkpoint_keyed_by_tuples_is_one_line(tmp_path, legacy):
    import torch

    from srdeploy.models.checkpoints import read_state_dict
    from srdeploy.runtime.errors import SrDeployError

    path = tmp_path / "m.pth"
    torch.save({("conv", "weight"): torch.zeros(2)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(SrDeployError, match="whose keys are not layer names"):
        read_state_dict(path)


def _sidecar(tmp_path, **changes):
    """An engine file and its sidecar as the sidecar harness's seed, with ``changes`` (None: the key removed)."""
    from srdeploy.benchmarks.fuzz import ENGINE_SHA, sidecar_seeds
    from srdeploy.runtime.sessions.tensorrt_sidecar import file_sha256, sidecar_path

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine bytes")
    sidecar_seeds(tmp_path)
    record = json.loads((tmp_path / "sidecar.json").read_text().replace(ENGINE_SHA.decode(), file_sha256(engine)))
    for key, value in changes.items():
        record.pop(key) if value is None else record.__setitem__(key, value)
    sidecar_path(engine).write_text(json.dumps(record))
    return engine


@pytest.mark.parametrize("missing", ["engine", "metadata", "target"])
def test_a_sidecar_missing_a_field_is_one_line(tmp_path, missing):
    from srdeploy.runtime.errors import SrDeployError
    from srdeploy.runtime.sessions.tensorrt_sidecar import read_sidecar

    with pytest.raises(SrDeployError, match="is damaged \\(its engine, engine_sha256, target or metadata"):
        read_sidecar(_sidecar(tmp_path, **{missing: None}))


def test_a_foreign_engine_whose_gpu_name_holds_a_newline_is_refused_on_one_line(tmp_path):
    from srdeploy.runtime.sessions.tensorrt_sidecar import BuildTarget, incompatibility, read_sidecar

    target = {"tensorrt_version": "10.8.0", "gpu_name": "Orin\nrm -rf", "compute_capability": "8.7"}
    reason = incompatibility(read_sidecar(_sidecar(tmp_path, target=target)), BuildTarget("10.8.0", "NVIDIA H100", "9.0"))
    assert "\n" not in reason and "Orin\\nrm -rf" in reason and "GPU, compute capability differ" in reason


DEEP = "[" * 5000  # json raises RecursionError past about a thousand levels, not ValueError


def test_json_nested_a_thousand_deep_is_one_line_wherever_srdeploy_reads_json(tmp_path):
    """A sealed manifest, artifact metadata, a TensorRT sidecar and a Jetson bundle manifest, each nested 5000 deep."""
    from srdeploy.runtime.artifact import metadata_problem
    from srdeploy.runtime.bundle_check import MANIFEST as BUNDLE_MANIFEST, load_manifest
    from srdeploy.runtime.errors import SrDeployError
    from srdeploy.runtime.manifest import MANIFEST, read_manifest
    from srdeploy.runtime.sessions.tensorrt_sidecar import read_sidecar, sidecar_path

    (tmp_path / MANIFEST).write_text(DEEP)
    with pytest.raises(SrDeployError, match="is damaged"):
        read_manifest(tmp_path, "srdeploy-executorch-1", "re-export it", "ExecuTorch")
    metadata = {"scale": "2", "colour": "y", "shape_bounds": DEEP, "export_config": "{}"}
    assert metadata_problem(metadata).startswith("shape_bounds '[[[[")
    metadata = {**metadata, "shape_bounds": json.dumps({"min": [1, 1, 8, 8], "max": [1, 1, 64, 64]}), "export_config": DEEP}
    assert metadata_problem(metadata).startswith("export_config '[[[[")
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"engine bytes")
    sidecar_path(engine).write_text(DEEP)
    with pytest.raises(SrDeployError, match=r"is not valid JSON \(RecursionError\)"):
        read_sidecar(engine)
    (tmp_path / BUNDLE_MANIFEST).write_text(DEEP)
    with pytest.raises(SrDeployError, match=r"is damaged \(RecursionError\)"):
        load_manifest(tmp_path)


def test_a_bundle_manifest_with_files_as_a_list_is_one_line(tmp_path):
    from srdeploy.runtime.bundle_check import FORMAT, MANIFEST, load_manifest
    from srdeploy.runtime.errors import SrDeployError

    (tmp_path / MANIFEST).write_text(json.dumps({"format": FORMAT, "model": "fsrcnn", "scale": 2, "files": ["a"]}))
    with pytest.raises(SrDeployError, match="its model, scale or files are missing or malformed"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("change", ["metadata as a list", "graphs naming an unsealed file", "graphs of another shape"])
def test_an_ncnn_manifest_of_the_wrong_shape_is_one_line(tmp_path, change):
    """A sealed manifest whose metadata or graphs are not what the session reads: one line, before ncnn opens a file.
    Before the check: metadata as a list raised AttributeError; a graph naming a file outside the seal had ncnn open
    that file unchecked; a lone gate part raised KeyError at the first run."""
    pytest.importorskip("ncnn", reason="ncnn is not installed: pip install ncnn")
    from srdeploy.runtime.errors import SrDeployError
    from srdeploy.runtime.manifest import seal_manifest
    from srdeploy.runtime.sessions.ncnn import NcnnSession

    files = {"model.param": b"7767517\n", "model.bin": b"\0" * 8}
    graph = {"param": "model.param", "bin": "model.bin", "input": "in0", "output": "out0"}
    metadata = {"model": "fsrcnn", "scale": "2", "colour": "y", "export_config": json.dumps({"receptive_radius": 8}),
                "shape_bounds": json.dumps({"min": [1, 1, 8, 8], "max": [1, 1, 64, 64]})}
    manifest = {"format": "srdeploy-ncnn-1", "metadata": metadata, "graphs": {"model": graph}}
    if change == "metadata as a list":
        manifest["metadata"] = [*metadata, "receptive_radius"]  # the keys a check looks for, in a list
    elif change == "graphs naming an unsealed file":
        manifest["graphs"] = {"model": {**graph, "param": "other.param"}}
    else:
        manifest["graphs"] = {"gate_features": graph}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "srdeploy.json").write_bytes(seal_manifest({**manifest, "files": sorted(files)}, files))
    with pytest.raises(SrDeployError, match="is damaged \\(its (metadata|graphs)"):
        NcnnSession(tmp_path)


def test_a_bundle_file_named_with_a_newline_is_one_line(tmp_path):
    """Found by fuzzing: a missing file's name, shown as it was, put a newline in the message."""
    from srdeploy.runtime.bundle_check import FORMAT, MANIFEST, load_manifest
    from srdeploy.runtime.errors import SrDeployError

    manifest = {"format": FORMAT, "model": "fsrcnn\nx", "scale": 2, "files": {"model.on\nx": "0" * 64}}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(SrDeployError) as caught:
        load_manifest(tmp_path)
    assert "\n" not in str(caught.value) and "bundle file model.on\\nx is missing" in str(caught.value)


def test_a_sealed_manifest_naming_a_missing_file_with_a_newline_is_one_line(tmp_path):
    """Found by fuzzing (the ncnn harness): the missing names were shown as they were."""
    from srdeploy.runtime.errors import SrDeployError
    from srdeploy.runtime.manifest import MANIFEST, read_manifest

    (tmp_path / MANIFEST).write_text(json.dumps({"format": "srdeploy-ncnn-1", "files": ["model\n.param"]}))
    with pytest.raises(SrDeployError) as caught:
        read_manifest(tmp_path, "srdeploy-ncnn-1", "re-export it", "ncnn")
    assert "\n" not in str(caught.value) and "(model\\n.param missing)" in str(caught.value)


def test_a_sealed_executorch_manifest_without_the_program_is_one_line(tmp_path):
    """By review: a sealed manifest listing other files only ended in KeyError('model.pte')."""
    pytest.importorskip("executorch", reason="executorch is not installed: pip install executorch")
    from srdeploy.runtime.errors import SrDeployError
    from srdeploy.runtime.manifest import write_manifest
    from srdeploy.runtime.sessions.executorch import ExecuTorchSession

    metadata = {"model": "fsrcnn", "scale": "2", "colour": "y", "export_config": json.dumps({"receptive_radius": 8}),
                "shape_bounds": json.dumps({"min": [1, 1, 8, 8], "max": [1, 1, 64, 64]})}
    folder = tmp_path / "m.executorch"
    folder.mkdir()
    write_manifest(folder, {"format": "srdeploy-executorch-1", "metadata": metadata}, {"other.bin": b"x"})
    with pytest.raises(SrDeployError, match="is damaged \\(it does not list model.pte\\)"):
        ExecuTorchSession(folder)
