"""The Core ML package check (export/coreml/coreml_verify.py) on a tiny real package: each verdict found where it
must be and nowhere else. Fast enough to be the mutation run's test command (benchmarks/mutation/coreml_verify.toml)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("coremltools")

from srdeploy.export.coreml import coreml_verify as verify  # noqa: E402
from srdeploy.export.coreml.coreml_export import CoreMLOptions, CoreMLShapes, convert  # noqa: E402
from srdeploy.models.loading import ModelInfo, SrModel  # noqa: E402
from srdeploy.models.registry import ExportConfig  # noqa: E402

PARAMETERS = ["body.0.bias", "body.0.weight", "body.1.weight", "body.2.bias", "body.2.weight"]


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 12, 3, padding=1))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.body(x))


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = Tiny().eval()
    net.body[1].weight.data.uniform_(0.05, 0.3)
    return net


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.random((1, 3, 16, 16), dtype=np.float32), "b": rng.random((1, 3, 16, 16), dtype=np.float32)}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    info = ModelInfo("tiny", 2, "rgb", "state_dict", "", "", {}, ExportConfig())
    path = tmp_path_factory.mktemp("tiny") / "tiny.mlpackage"
    convert(SrModel(tiny(), info), CoreMLOptions(precision="fp32", shapes=CoreMLShapes(enumerated=((16, 16),)))).save(str(path))
    return path


def test_a_faithful_package_passes_with_every_tensor_found(package):
    report = verify.verify_package(package, tiny(), inputs())
    assert report.passed and report.problems == []
    assert report.constants.checked == len(PARAMETERS) and sorted(verify.used_parameters(tiny(), torch.rand(1, 3, 8, 8))) == PARAMETERS
    assert not report.constants.missing and not report.constants.unexplained and not report.constants.compressed
    for case in report.cases.values():
        assert case.shape == (1, 3, 16, 16) and case.fp32_max_abs <= 1e-6 and case.fp16_psnr >= 60
        assert case.decisions_equal is None and case.fp16_off_by_level_pct is not None


def test_one_changed_weight_is_missing_and_its_package_tensor_unexplained(package):
    net = tiny()
    with torch.no_grad():
        net.body[2].weight[0, 0, 0, 0] += 1e-3
    report = verify.verify_package(package, net, inputs())
    assert report.constants.missing == ["body.2.weight"] and len(report.constants.unexplained) == 1
    assert report.constants.checked == len(PARAMETERS) - 1
    assert not report.passed and "checkpoint tensor body.2.weight is not in the package bit-exactly" in report.problems
    # the twin keeps the network's own value for a tensor the package lacks: the outputs differ too
    assert all(any("FP32-mode output differs" in p for p in case.problems()) for case in report.cases.values())


def test_a_wrong_computation_fails_the_fp32_mode_check(package):
    class Swapped(nn.Module):  # the same weights, the colour order of the app reversed
        def __init__(self):
            super().__init__()
            self.net = tiny()

        def forward(self, x):
            return self.net(x.flip(1))

    report = verify.verify_package(package, Swapped(), inputs())
    assert report.constants.checked == len(PARAMETERS) and not report.constants.missing
    assert not report.passed and all(p.split(": ", 1)[0] in ("a", "b") for p in report.problems)
    assert any("FP32-mode output differs" in p for p in report.problems)


def test_the_twin_takes_the_package_values():
    values = {"body.0.bias": np.full(8, 0.5, dtype=np.float16)}
    twin = verify._with_weights(tiny(), values)
    assert torch.equal(twin.body[0].bias, torch.full((8,), 0.5)) and torch.equal(twin.body[2].weight, tiny().body[2].weight)


@pytest.mark.parametrize("compression, limit", sorted(verify.COMPRESSED_WEIGHT_RTOL.items()) + [("none", 0.0)])
def test_compressed_tensors_at_their_limit(compression, limit):
    assert verify.COMPRESSED_WEIGHT_RTOL == {"linear8": 0.03, "palette6": 0.06, "palette4": 0.25}
    assert verify.ConstantsCheck(checked=1, compressed={"w": limit}).problems(compression) == []
    problems = verify.ConstantsCheck(checked=1, compressed={"w": limit + 1e-6}).problems(compression)
    assert problems == [f"compressed w is {limit + 1e-6:.3f} (relative) off the checkpoint, over {limit}"]
    assert verify.ConstantsCheck(missing=["a"], unexplained=["v"]).problems(compression) == [
        "checkpoint tensor a is not in the package bit-exactly", "package constant v matches no checkpoint tensor"]


@pytest.mark.parametrize("field, inside, outside, message", [
    ("fp32_max_abs", 1e-4, 1.001e-4, "FP32-mode output differs from PyTorch by 1.00e-04 > 1e-04"),
    ("fp16_psnr", 60.0, 59.99, "FP16-emulated output is 60.0 dB from PyTorch < 60 dB"),
    ("fp16_off_by_level_pct", 0.0, 1e-6, "0.000% of 8-bit values are off by more than one level"),
    ("decisions_equal", True, False, "the gate decisions differ from PyTorch's"),
])
def test_case_verdicts_at_their_limits(field, inside, outside, message):
    assert (verify.FP32_MAX_ABS, verify.FP16_MIN_PSNR, verify.FP16_MAX_OFF_BY_LEVEL) == (1e-4, 60.0, 0.0)
    base = dict(shape=(1, 3, 8, 8), fp32_max_abs=0.0, fp16_psnr=90.0, fp16_off_by_level_pct=0.0,
                fp16_psnr_vs_checkpoint=90.0, decisions_equal=None)
    assert verify.CaseCheck(**{**base, field: inside}).problems() == []
    assert verify.CaseCheck(**{**base, field: outside}).problems() == [message]
    assert verify.CaseCheck(**{**base, "fp16_off_by_level_pct": None, "fp16_psnr": float("nan")}).problems() != []
    assert verify.CaseCheck(**{**base, "fp32_max_abs": float("nan")}).problems() != []


def test_the_report_collects_every_problem_by_case():
    bad = verify.CaseCheck((1, 3, 8, 8), 1.0, 90.0, 0.0, 90.0, None)
    good = verify.CaseCheck((1, 3, 8, 8), 0.0, 90.0, 0.0, 90.0, None)
    report = verify.Verification("p", "none", verify.ConstantsCheck(checked=2, missing=["w"]), {"x": bad, "y": good})
    assert report.problems == ["checkpoint tensor w is not in the package bit-exactly",
                               "x: FP32-mode output differs from PyTorch by 1.00e+00 > 1e-04"]
    assert not report.passed and report.as_dict()["passed"] is False
    assert verify.Verification("p", "none", verify.ConstantsCheck(checked=2), {"y": good}).passed


def test_image_valued_outputs_are_level_checked_and_random_outputs_are_not(package):
    rng = np.random.default_rng(1)
    loud = {"loud": (rng.random((1, 3, 16, 16), dtype=np.float32) * 40)}  # outputs far beyond an image's range
    report = verify.verify_package(package, tiny(), loud)
    assert report.cases["loud"].fp16_off_by_level_pct is None and verify.IMAGE_PEAK == 2.0
