"""The accuracy gates (export/accuracy_gate.py) at their limits: one input just inside and one just outside each."""
from __future__ import annotations

import pytest

from srdeploy.export import accuracy_gate as gate
from srdeploy.export.precision import PrecisionReport
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.precision import Precision

EPS = 1e-6


def report(precision: str, drop: float, share: float | None = None) -> PrecisionReport:
    """A measured report as the exports make them: the precision a ``Precision``, not a bare string."""
    return PrecisionReport(Precision(precision), validation_psnr_fp32=30.0, validation_psnr=30.0 - drop, drop_db=drop,
                           int8_mac_fraction=share)


def test_the_documented_limits():
    assert gate.DEFAULT_MAX_DROP == {"fp32": 0.0, "fp16": 0.01, "int8": 0.1, "bf16": 0.1}
    assert gate.COREML_MAX_DROP == {"none": 0.01, "linear8": 0.1, "palette6": 0.1, "palette4": 0.1}
    assert (gate.OPENVINO_FP32_NOISE_DB, gate.SATURATION_DB) == (0.001, 0.05)


def test_a_given_limit_replaces_the_default_even_when_it_is_zero():
    assert gate.limit_for(gate.DEFAULT_MAX_DROP, "int8", None) == 0.1
    assert gate.limit_for(gate.DEFAULT_MAX_DROP, "int8", 0.0) == 0.0
    assert gate.limit_for(gate.COREML_MAX_DROP, "palette4", 0.3) == 0.3


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("limit", [0.0, 0.01, 0.1])
def test_the_gate_passes_at_its_limit_and_refuses_just_over_it(precision, limit):
    gate.check_accuracy(report(precision, limit), limit, "m ×2")
    gate.check_accuracy(report(precision, -0.5), limit, "m ×2")  # a gain passes
    with pytest.raises(SrDeployError) as refused:
        gate.check_accuracy(report(precision, limit + EPS, 0.8), limit, "m ×2")
    assert str(refused.value) == (
        f"{precision.upper()} m ×2 loses {limit + EPS:.3f} dB on the held-out photos with 80% of MACs in INT8 "
        f"({30 - limit - EPS:.2f} vs 30.00 dB FP32), over the {limit} dB limit: nothing written; raise "
        "--max-psnr-drop to accept it")
    assert gate.passes(limit, limit) and not gate.passes(limit + EPS, limit)


def test_openvino_fp32_has_a_summation_order_floor_and_nothing_more():
    gate.check_openvino_accuracy(report("fp32", gate.OPENVINO_FP32_NOISE_DB), report("fp32", 0.0), 0.0, "m ×2", "vnni")
    with pytest.raises(SrDeployError, match=r"FP32 m ×2 on OpenVINO loses 0.001 dB .* over the 0.001 dB limit"):
        gate.check_openvino_accuracy(report("fp32", gate.OPENVINO_FP32_NOISE_DB + EPS), report("fp32", 0.0), 0.0, "m ×2", "vnni")
    gate.check_openvino_accuracy(report("fp16", 0.01), report("fp16", 0.0), 0.01, "m ×2", "vnni")
    for precision in ("fp16", "int8"):  # the floor is FP32's only
        with pytest.raises(SrDeployError, match=rf"{precision.upper()} m ×2 on OpenVINO .*loses 0.001 dB"):
            gate.check_openvino_accuracy(report(precision, gate.OPENVINO_FP32_NOISE_DB / 2 + EPS), report(precision, 0.0), 0.0,
                               "m ×2", "vnni")


@pytest.mark.parametrize("openvino_drop, dot, explained", [
    (0.5, "pairwise-int16", True),
    (0.07 + gate.SATURATION_DB, "pairwise-int16", True),  # at the threshold
    (0.07 + 0.99 * gate.SATURATION_DB, "pairwise-int16", False),  # just under it
    (0.5, "vnni", False),
    (0.5, "amx", False),
])
def test_saturation_is_named_only_where_it_is_the_cause(openvino_drop, dot, explained):
    with pytest.raises(SrDeployError, match=rf"INT8 m ×2 on OpenVINO \(int8 dot product: {dot}\) loses .* over the 0.1 dB "
                                            "limit") as refused:
        gate.check_openvino_accuracy(report("int8", openvino_drop), report("int8", 0.07), 0.1, "m ×2", dot)
    message = str(refused.value)
    assert ("int16 saturation" in message) == explained and "\n" not in message
    if explained:
        assert "ONNX Runtime loses 0.070 dB with the same graph" in message
    gate.check_openvino_accuracy(report("int8", 0.1), report("int8", 0.07), 0.1, "m ×2", dot)  # at the limit: passes


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_saturation_is_an_int8_diagnosis_only(precision):
    with pytest.raises(SrDeployError) as refused:
        gate.check_openvino_accuracy(report(precision, 0.5), report(precision, 0.0), 0.1, "m ×2", "pairwise-int16")
    assert "saturation" not in str(refused.value) and "int8 dot product" not in str(refused.value)


def test_the_coreml_gate_measures_pytorch_minus_coreml():
    assert gate.check_coreml_accuracy(30.0, 29.99, 0.01 + EPS, "m ×2", "fp16", "none") == pytest.approx(0.01)
    assert gate.check_coreml_accuracy(30.0, 30.5, 0.0, "m ×2", "fp16", "none") == pytest.approx(-0.5)  # a gain passes
    with pytest.raises(SrDeployError) as refused:
        gate.check_coreml_accuracy(30.0, 29.9, 0.1 - EPS, "m ×2", "fp16", "palette6")
    assert str(refused.value) == ("Core ML FP16 (palette6 weights) m ×2 loses 0.100 dB on the held-out photos (29.90 vs "
                                  f"30.00 dB PyTorch), over the {0.1 - EPS} dB limit: nothing written; raise "
                                  "--max-psnr-drop or use lighter compression")
