"""ONNX export: symbolic shapes, parity with the reference fixtures on ONNX Runtime at shapes other than
the traced one, metadata round trip, runtime errors, and a torch-free runtime import."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from srdeploy import models
from srdeploy.benchmarks.reference_fixtures import zoo_name_and_scale
from srdeploy.export.onnx.onnx_export import export_onnx
from srdeploy.models.registry import architecture
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.sessions.onnxruntime import OnnxSession
from tests.conftest import REPO, SHARED, need_shared, weights
from tests.test_golden_fixtures import (
    FIXTURES,
    FORCED_BIAS,
    checkpoint_of,
)
from tests.test_models import split_gate_checkpoint

ORT_RTOL = 1e-4  # the contract: max|ort − ref| ≤ 1e-4 · max|ref|


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_onnx_matches_fixture(name, export_dir, tmp_path):
    fixture = FIXTURES[name]
    if fixture is None:
        need_shared("fixtures", "reference", "index.json")
    model_name, scale = zoo_name_and_scale(name)
    checkpoint = checkpoint_of(fixture, model_name, scale)
    if name in FORCED_BIAS:  # official weights with the gate bias overridden: the If takes that branch
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        state["gate.fc2.bias"] = torch.tensor(FORCED_BIAS[name])
        torch.save(state, tmp_path / "overridden.pth")
        checkpoint = tmp_path / "overridden.pth"
    path = export_onnx(models.load(model_name, scale, checkpoint), export_dir / f"{name}.onnx")
    if model_name == "dsrnet":
        assert "If" in {node.op_type for node in onnx.load(path).graph.node}
    session = OnnxSession(path)
    data = np.load(SHARED / "fixtures" / "reference" / f"{name}.npz")
    trace = architecture(model_name).export.trace_size
    for case in fixture["cases"]:
        assert tuple(case["in_shape"][2:]) != (trace, trace)
        reference = data[case["output"]]
        error = np.abs(session.infer(data[case["input"]]) - reference).max()
        assert error <= ORT_RTOL * np.abs(reference).max(), f"{name}: {error:.3g}"


@pytest.fixture(scope="module")
def lesrcnn_onnx(export_dir):
    return export_onnx(models.load("lesrcnn", 2, weights("lesrcnn_x2.pth")), export_dir / "lesrcnn_x2.onnx")


def test_symbolic_input_and_metadata(lesrcnn_onnx):
    proto = onnx.load(lesrcnn_onnx)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["batch", 3, "height", "width"]
    assert proto.opset_import[0].version >= 17
    meta = OnnxSession(lesrcnn_onnx).metadata
    assert meta["model"] == "lesrcnn" and meta["scale"] == "2" and meta["colour"] == "rgb"
    assert meta["checkpoint_sha256"] == "66b4b2ddb268486f78a3d49758a016417e64f602ef963667b5ce34039200bcde"
    assert json.loads(meta["shape_bounds"]) == {"min": [1, 3, 8, 8], "max": [64, 3, 4096, 4096]}
    assert meta["simplified"] == "true"


def test_batch_of_three(lesrcnn_onnx):
    session = OnnxSession(lesrcnn_onnx)
    x = np.random.default_rng(0).random((3, 3, 11, 13), dtype=np.float32)
    together = session.infer(x)
    alone = np.concatenate([session.infer(x[i : i + 1]) for i in range(3)])
    assert together.shape == (3, 3, 22, 26)
    assert np.abs(together - alone).max() <= 1e-5 * np.abs(alone).max()


def test_runtime_errors(lesrcnn_onnx, tmp_path):
    session = OnnxSession(lesrcnn_onnx)
    with pytest.raises(SrDeployError, match=r"expects N×3×H×W"):
        session.infer(np.zeros((1, 1, 16, 16), np.float32))
    with pytest.raises(SrDeployError, match=r"height 4 is below the artifact's minimum 8 \(bounds 8…4096\): the image is too small"):
        session.infer(np.zeros((1, 3, 4, 16), np.float32))
    with pytest.raises(SrDeployError, match="does not exist"):
        OnnxSession(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(lesrcnn_onnx.read_bytes()[:5000])
    with pytest.raises(SrDeployError, match=r"corrupt.onnx carries no srdeploy digest \(damaged"):
        OnnxSession(corrupt)


def test_runtime_does_not_import_torch(lesrcnn_onnx):
    code = (
        "import sys; from runtime.sessions.onnxruntime import OnnxSession; import numpy as np; "
        f"s = OnnxSession({str(lesrcnn_onnx)!r}); s.infer(np.zeros((1, 3, 8, 8), np.float32)); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("branch", [0, 1])
def test_onnx_forced_branch_matches_fixture(branch, export_dir):
    fixture = FIXTURES.get(f"dsrnet_x2_forced_branch{branch}")
    if fixture is None:
        need_shared("fixtures", "reference", "index.json")
    model = models.load("dsrnet", 2, weights("dsrnet_x2.pth"), gate=f"branch{branch}")
    session = OnnxSession(export_onnx(model, export_dir / f"dsrnet_branch{branch}.onnx"))
    assert json.loads(session.metadata["options"]) == {"gate": f"branch{branch}"}
    data = np.load(SHARED / "fixtures" / "reference" / f"{fixture['name']}.npz")
    for case in fixture["cases"]:
        reference = data[case["output"]]
        assert np.abs(session.infer(data[case["input"]]) - reference).max() <= ORT_RTOL * np.abs(reference).max()


def test_onnx_gate_is_per_image(tmp_path):
    """Through the If: a batch with mixed gate decisions gives each image its own branch's output."""
    batch, path = split_gate_checkpoint(tmp_path)
    session = OnnxSession(export_onnx(models.load("dsrnet", 2, path), tmp_path / "split.onnx"))
    x = batch.numpy()
    together = session.infer(x)
    for i in range(len(x)):
        alone = session.infer(x[i : i + 1])
        assert np.abs(together[i : i + 1] - alone).max() <= 1e-5 * np.abs(alone).max()
    forced = {b: models.load("dsrnet", 2, path, gate=f"branch{b}") for b in (0, 1)}
    with torch.no_grad():
        outputs = {b: m(batch).numpy() for b, m in forced.items()}
    used = {b for i in range(len(x)) for b in (0, 1)
            if np.abs(together[i] - outputs[b][i]).max() <= 1e-4 * np.abs(outputs[b][i]).max()}
    assert used == {0, 1}


def test_simplification_that_changes_outputs_is_rejected(monkeypatch, tmp_path):
    """If onnxsim returned a graph that computes something else, the unsimplified graph is kept."""
    import onnxsim
    from onnx import numpy_helper

    def wrong_simplify(proto):
        broken = onnx.ModelProto()
        broken.CopyFrom(proto)
        bias = next(t for t in broken.graph.initializer if numpy_helper.to_array(t).ndim == 1)
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5, bias.name))
        return broken, True

    monkeypatch.setattr(onnxsim, "simplify", wrong_simplify)
    model = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    with pytest.warns(UserWarning, match="onnxsim changed the outputs; keeping the unsimplified graph"):
        path = export_onnx(model, tmp_path / "kept.onnx")
    assert OnnxSession(path).metadata["simplified"] == "false"
    data = np.load(need_shared("fixtures", "reference", "fsrcnn_x2_official.npz"))
    reference = data["output_0"]
    assert np.abs(OnnxSession(path).infer(data["input_0"]) - reference).max() <= ORT_RTOL * np.abs(reference).max()
