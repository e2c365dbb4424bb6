"""Every zoo model's ONNX runs in OpenCV's DNN module (how many C++ and mobile apps run ONNX; its ``dnn_superres``
ships FSRCNN) and computes what ONNX Runtime computes. DSRNet's ``If`` graph does not load there (OpenCV 5:
an assertion in shape inference); ``export --portable`` writes its If-free form, the per-image select, with the
same outputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from srdeploy import api
from srdeploy.models.registry import ARCHITECTURES
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.sessions.onnxruntime import OnnxSession
from tests.conftest import ZOO_CHECKPOINTS, held_out_batch, zoo_checkpoint

cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed: pip install opencv-python-headless (the dev extra has it)")

def _opencv(path, x: np.ndarray) -> np.ndarray:
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x)
    return net.forward()


def test_every_architecture_is_covered():
    assert sorted(ZOO_CHECKPOINTS) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("model", sorted(ZOO_CHECKPOINTS))
def test_the_onnx_of_every_zoo_model_runs_in_opencv_and_equals_onnx_runtime(model, tmp_path):
    portable = model == "dsrnet"  # the one graph with control flow
    result = api.export_model(model, 2, weights=str(zoo_checkpoint(model)), out=tmp_path,
                              options=api.ExportOptions(portable=portable), progress=False)
    path = result.artifacts[0]
    session = OnnxSession(path)
    x = held_out_batch(session.colour)
    expected, found = session.infer(x), _opencv(path, x)
    assert found.shape == expected.shape
    assert np.abs(found - expected).max() <= 1e-4 * max(1.0, float(np.abs(expected).max())), model


def test_portable_dsrnet_has_no_control_flow_and_the_same_outputs(tmp_path):
    """``--portable``: no ``If``, recorded in the metadata, the same outputs as the ``If`` graph on ONNX Runtime
    (each image of a batch with its own decision), FP32 and FP16; OpenCV runs the FP16 one within one 8-bit level."""
    checkpoint = str(zoo_checkpoint("dsrnet"))
    plain = api.export_model("dsrnet", 2, weights=checkpoint, out=tmp_path, progress=False).artifacts[0]
    assert "If" in {node.op_type for node in onnx.load(plain).graph.node}
    x = held_out_batch("rgb")
    for precision in ("fp32", "fp16"):
        path = api.export_model("dsrnet", 2, precision=precision, weights=checkpoint, out=tmp_path,
                                options=api.ExportOptions(portable=True), progress=False).artifacts[0]
        assert path.name == f"dsrnet_x2_{precision}_portable.onnx"
        assert "If" not in {node.op_type for node in onnx.load(path).graph.node}
        session = OnnxSession(path)
        assert session.metadata["portable"] == "true"
        reference = OnnxSession(plain).infer(x) if precision == "fp32" else None
        if reference is not None:
            assert np.abs(session.infer(x) - reference).max() <= 1e-5
        assert np.abs(_opencv(path, x) - session.infer(x)).max() < 1 / 255
    assert api.parity(tmp_path / "dsrnet_x2_fp32_portable.onnx", progress=False).passed


def test_portable_is_an_onnx_form():
    with pytest.raises(SrDeployError, match="--portable is an option of --target onnx: use it there, not with --target "
                                            "openvino"):
        api.export_model("dsrnet", 2, target="openvino", options=api.ExportOptions(portable=True), progress=False)
