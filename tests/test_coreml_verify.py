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

PARAMETERS = ["body.0.bias", "body.0.weight", "body.1.weight", "body.2.bias", "body.2.weight", "body.3.bias",
              "body.3.weight"]
INFO = ModelInfo("tiny", 2, "rgb", "state_dict", "", "", {}, ExportConfig())
SIZES = CoreMLShapes(enumerated=((16, 16),))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.PReLU(16), nn.Conv2d(16, 16, 3, padding=1),
                                  nn.Conv2d(16, 12, 3, padding=1))  # body.2: 2304 weights, enough to be compressed
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.body(x))


class Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class Gated(nn.Module):
    """A per-image decision, as DSRNet's gate: branch ``a`` for bright images (mean over 0.5), ``b`` for dark."""

    def __init__(self):
        super().__init__()
        self.gate = Gate()
        self.a, self.b = nn.Conv2d(3, 12, 3, padding=1), nn.Conv2d(3, 12, 3, padding=1, bias=False)  # no bias input
        self.shuffle = nn.PixelShuffle(2)
        with torch.no_grad():
            self.gate.fc.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
            self.gate.fc.bias.copy_(torch.tensor([1.5, 0.0]))

    def forward(self, x):
        logits = self.gate(x)
        pick = (logits[:, 1] > logits[:, 0]).view(-1, 1, 1, 1)
        return self.shuffle(torch.where(pick, self.a(x), self.b(x)))


def tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = Tiny().eval()
    net.body[1].weight.data.uniform_(0.05, 0.3)
    return net


def saved(net: nn.Module, path, **options) -> str:
    convert(SrModel(net, INFO), CoreMLOptions(**{"precision": "fp32", "shapes": SIZES, **options})).save(str(path))
    return str(path)


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.random((1, 3, 16, 16), dtype=np.float32), "b": rng.random((1, 3, 16, 16), dtype=np.float32)}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return saved(tiny(), tmp_path_factory.mktemp("tiny") / "tiny.mlpackage")


def test_a_faithful_package_passes_with_every_tensor_found(package):
    report = verify.verify_package(package, tiny(), inputs())
    assert report.passed and report.problems == []
    assert report.constants.checked == len(PARAMETERS) and sorted(verify.used_parameters(tiny(), torch.rand(1, 3, 8, 8))) == PARAMETERS
    assert not report.constants.missing and not report.constants.unexplained and not report.constants.compressed
    for case in report.cases.values():
        assert case.shape == (1, 3, 16, 16) and case.fp32_max_abs <= 1e-6 and case.fp16_psnr >= 60
        assert case.fp16_psnr_vs_checkpoint == pytest.approx(case.fp16_psnr)  # uncompressed: the same reference
        assert case.decisions_equal is None and case.fp16_off_by_level_pct is not None
    x = inputs()["a"]
    with torch.inference_mode():
        expected = tiny()(torch.from_numpy(x)).numpy().astype(np.float64)
    mse = np.mean((verify.executor_infer(package)(x) - expected) ** 2)  # FP16 emulation, as the case ran it
    psnr = 10 * np.log10(max(1.0, np.abs(expected).max()) ** 2 / mse)
    assert report.cases["a"].fp16_psnr == pytest.approx(psnr, abs=0.01)


def test_one_changed_weight_is_missing_and_its_package_tensor_unexplained(package):
    net = tiny()
    with torch.no_grad():
        net.body[2].weight[0, 0, 0, 0] += 0.5
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
    values = {"body.0.bias": np.full(16, 0.5, dtype=np.float16)}
    twin = verify._with_weights(tiny(), values)
    assert torch.equal(twin.body[0].bias, torch.full((16,), 0.5)) and torch.equal(twin.body[2].weight, tiny().body[2].weight)


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
    with torch.inference_mode():
        expected = tiny()(torch.from_numpy(loud["loud"])).numpy()
    peak = np.abs(expected).max()
    assert peak > 2  # relative to the output's peak, not absolute
    measured = np.abs(verify.executor_infer(package, "fp32")(loud["loud"]) - expected).max() / peak
    assert report.cases["loud"].fp32_max_abs == pytest.approx(measured, rel=1e-3, abs=1e-12)


def test_gate_decisions_are_read_from_the_program_and_compared(tmp_path):
    torch.manual_seed(0)
    net = Gated().eval()
    package = saved(net, tmp_path / "gated.mlpackage")
    rng = np.random.default_rng(0)
    cases = {"dark": 0.2 * rng.random((1, 3, 16, 16), dtype=np.float32),
             "bright": 0.6 + 0.4 * rng.random((1, 3, 16, 16), dtype=np.float32),
             "tie": np.full((1, 3, 16, 16), 0.5, dtype=np.float32)}  # logits exactly equal: not greater, branch b
    assert verify._gate_decisions(net, torch.from_numpy(cases["dark"])).tolist() == [False]
    assert verify._gate_decisions(net, torch.from_numpy(cases["bright"])).tolist() == [True]
    report = verify.verify_package(package, net, cases)
    assert report.passed and all(case.decisions_equal is True for case in report.cases.values())
    flipped = Gated().eval()  # the same branches, the opposite threshold: PyTorch decides otherwise
    flipped.load_state_dict(net.state_dict())
    with torch.no_grad():
        flipped.gate.fc.bias.copy_(torch.tensor([-1.5, 0.0]))
    assert verify._gate_decisions(flipped, torch.from_numpy(cases["dark"])).tolist() == [True]
    wrong = verify.verify_package(package, flipped, cases)  # the package decides as ``net`` did
    assert [case.decisions_equal for case in wrong.cases.values()] == [False, True, False]  # flipped: always a
    assert "dark: the gate decisions differ from PyTorch's" in wrong.problems
    assert verify._gate_decisions(tiny(), torch.rand(1, 3, 8, 8)) is None


def test_image_io_packages_are_fed_and_read_in_pixel_units(tmp_path):
    package = saved(tiny(), tmp_path / "image.mlpackage", image_io=True)
    report = verify.verify_package(package, _image_io(tiny()), inputs(), image_io=True)
    assert report.passed, report.problems
    x = inputs()["a"]
    with torch.inference_mode():
        expected = tiny()(torch.from_numpy(np.rint(x * 255) / 255)).clamp(0, 1).numpy()
    ours = verify.executor_infer(package, "fp32", image_io=True)(x)
    assert np.abs(ours - expected).max() <= 1e-5
    measured = float(np.abs(ours - expected).max())  # in [0, 1] units, peak 1: the case's own statistic
    assert measured > 0 and report.cases["a"].fp32_max_abs == pytest.approx(measured, rel=1e-3)
    assert report.cases["a"].fp16_psnr_vs_checkpoint == pytest.approx(report.cases["a"].fp16_psnr)


def _image_io(net: nn.Module) -> nn.Module:
    from srdeploy.export.coreml.coreml_export import ImageIO

    return ImageIO(net).eval()


def test_executor_infer_runs_each_image_of_a_batch(package):
    x = np.concatenate(list(inputs().values()))
    with torch.inference_mode():
        expected = tiny()(torch.from_numpy(x)).numpy()
    assert np.abs(verify.executor_infer(package, "fp32")(x) - expected).max() <= 1e-5
    assert np.abs(verify.executor_infer(package)(x) - expected).max() <= 1e-2  # FP16 emulation by default


def test_compressed_weights_are_matched_within_their_format(package, tmp_path):
    import coremltools as ct

    from srdeploy.export.coreml.coreml_export import compress

    path = tmp_path / "linear8.mlpackage"
    compress(ct.models.MLModel(str(package), skip_model_load=True), "linear8", "iOS16").save(str(path))
    report = verify.verify_package(path, tiny(), inputs(), compression="linear8")
    assert report.passed, report.problems
    assert list(report.constants.compressed) == ["body.2.weight"] and 0 < report.constants.compressed["body.2.weight"] < 0.03
    weight = tiny().body[2].weight.detach().numpy().astype(np.float64)  # 8-bit symmetric per output channel, here
    step = np.abs(weight).max(axis=(1, 2, 3), keepdims=True) / 127
    error = np.linalg.norm(np.clip(np.rint(weight / step), -127, 127) * step - weight) / np.linalg.norm(weight)
    assert report.constants.compressed["body.2.weight"] == pytest.approx(error, rel=0.05)
    assert report.constants.checked == len(PARAMETERS) and not report.constants.unexplained
    small = tiny()
    with torch.no_grad():
        small.body[2].weight *= 0.1  # norm 0.23: the error stays relative to the tensor's own norm
    path_small = tmp_path / "small.mlpackage"
    compress(ct.models.MLModel(saved(small, tmp_path / "small_fp32.mlpackage"), skip_model_load=True), "linear8",
             "iOS16").save(str(path_small))
    assert np.linalg.norm(small.body[2].weight.detach().numpy()) < 0.5
    relative = verify.verify_package(path_small, small, inputs(), compression="linear8").constants.compressed
    assert relative["body.2.weight"] == pytest.approx(error, rel=0.05)
    changed = tiny()
    with torch.no_grad():
        changed.body[0].bias[3] += 0.5  # a small tensor pending beside the compressed one: never its candidate
    report = verify.verify_package(path, changed, inputs(), compression="linear8")
    assert report.constants.missing == ["body.0.bias"] and list(report.constants.compressed) == ["body.2.weight"]
    strict = verify.verify_package(path, tiny(), inputs(), compression="none")
    assert strict.problems[0].startswith("compressed body.2.weight is 0.0") and strict.problems[0].endswith("over 0.0")


@pytest.mark.parametrize("slopes", [1, 16])
def test_a_prelu_of_one_repeated_slope_is_found_as_the_scalar_it_converts_to(slopes, tmp_path):
    net = tiny()
    net.body[1] = nn.PReLU(slopes, init=0.17)  # one parameter, or 16 equal ones: Core ML stores one scalar alpha
    package = saved(net, tmp_path / "scalar.mlpackage", precision="fp16")
    report = verify.verify_package(package, net, inputs())
    assert report.passed, report.problems
    assert report.constants.checked == len(PARAMETERS) and not report.constants.unexplained


def test_a_repeated_value_stored_in_full_and_a_scalar_equal_to_another_tensor_s_first_value(tmp_path):
    net = tiny()
    net.body[1] = nn.PReLU(1, init=0.25)  # the package's one scalar constant
    with torch.no_grad():
        net.body[0].bias.fill_(0.5)  # 16 equal values stored in full: found in full, not as a scalar
        net.body[2].bias[0] = 0.25  # a first value equal to the scalar
    package = saved(net, tmp_path / "repeated.mlpackage")
    report = verify.verify_package(package, net, inputs())
    assert report.passed, report.problems
    assert report.constants.checked == len(PARAMETERS)
    with torch.no_grad():
        net.body[2].bias[1] += 0.5  # not one repeated value: its first value must not match the scalar
    changed = verify.verify_package(package, net, inputs())
    assert changed.constants.missing == ["body.2.bias"] and changed.constants.checked == len(PARAMETERS) - 1


def test_only_constants_are_package_weights():
    """A weight or bias computed inside the program (ops the conversion passes would fold; ``mul`` sorts after
    ``const``, ``add`` before it) is no stored tensor; the stored ones beside them still are."""
    from coremltools.converters.mil import Builder as mb

    weight = np.random.default_rng(0).random((4, 3, 3, 3), dtype=np.float32)

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 3, 16, 16))])
    def program(x):
        first = mb.conv(x=x, weight=mb.mul(x=weight, y=np.float32(2.0)), bias=mb.const(val=np.ones(4, np.float32)))
        return mb.conv(x=first, weight=mb.const(val=weight[:, :3].transpose(1, 0, 2, 3).copy()),
                       bias=mb.add(x=np.zeros(3, np.float32), y=1.0))

    found = verify.package_weights(program.functions["main"])
    assert [(value.shape, compressed) for value, compressed in found.values()] == [((4,), False), ((3, 4, 3, 3), False)]


def test_only_the_parameters_of_called_modules_are_used():
    class Scaled(nn.Module):  # a module with a parameter of its own and a child it never calls
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.tensor(2.0))
            self.unused = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return x * self.gain

    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), Scaled())
    assert sorted(verify.used_parameters(net, torch.rand(1, 3, 8, 8))) == ["0.bias", "0.weight", "1.gain"]


def test_a_changed_tensor_is_not_taken_for_the_scalar_whatever_its_order(tmp_path):
    """A changed tensor whose first value equals the package's scalar is not one repeated value, whether that
    first value is its largest (body.2.bias) or its smallest (body.3.bias)."""
    net = tiny()
    net.body[1] = nn.PReLU(1, init=0.25)
    with torch.no_grad():
        net.body[2].bias.copy_(0.25 - torch.rand(16) * 0.1)
        net.body[2].bias[0] = 0.25
        net.body[3].bias.copy_(0.25 + torch.rand(12) * 0.1)
        net.body[3].bias[0] = 0.25
    package = saved(net, tmp_path / "ordered.mlpackage")
    assert verify.verify_package(package, net, inputs()).passed
    with torch.no_grad():
        net.body[2].bias[1] -= 0.5  # still at most its first value
        net.body[3].bias[1] += 0.5  # still at least its first value
    changed = verify.verify_package(package, net, inputs())
    assert changed.constants.missing == ["body.2.bias", "body.3.bias"]


def test_two_equal_slopes_are_found_as_the_scalar_they_convert_to(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.PReLU(2, init=0.17), nn.Conv2d(2, 12, 3, padding=1),
                        nn.PixelShuffle(2)).eval()  # the fewest equal slopes there can be
    report = verify.verify_package(saved(net, tmp_path / "two.mlpackage"), net, inputs())
    assert report.passed, report.problems
    assert report.constants.checked == 5 and not report.constants.unexplained


# --- constants the converter folds into a layer -------------------------------------------------------------

class ResidualScaled(nn.Module):
    """EDSR's residual block, ``x + 0.1 · conv(relu(conv(x)))``: the converter folds 0.1 into the second conv."""

    def __init__(self, res_scale: float = 0.1):
        super().__init__()
        self.head, self.a, self.b = (nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1),
                                     nn.Conv2d(16, 16, 3, padding=1))
        self.tail = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1), nn.PixelShuffle(2))
        self.res_scale = res_scale

    def forward(self, x):
        h = self.head(x)
        return self.tail(h + self.res_scale * self.b(torch.relu(self.a(h))))


class MeanAdded(nn.Module):
    """SwinIR's ``conv(x) + mean`` at the end: the converter adds the mean into the last bias."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 12, 3, padding=1))
        self.register_buffer("mean", torch.tensor([0.4488, 0.4371, 0.4040]).repeat_interleave(4).view(1, 12, 1, 1))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.body(x) + self.mean)


class BatchNormed(nn.Module):
    """SRResNet's conv + BatchNorm: the converter folds γ/√(var+ε) into the weights, the rest into the bias."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.shuffle = nn.PixelShuffle(2)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.3, 0.3)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 2.0)
            self.bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        return self.shuffle(self.bn(self.conv(x)))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("network, folded", [
    (ResidualScaled, {"b.weight": "×0.1", "b.bias": "×0.1"}),
    (MeanAdded, {"body.2.bias": "constants added"}),
    (BatchNormed, {"conv.bias": "constants added", "bn.weight": "BatchNorm folded into conv.weight",
                   "bn.bias": "BatchNorm folded into conv.weight"}),
])
def test_folded_constants_are_recognised(tmp_path, network, folded, precision):
    """A correct package whose converter folded constants into a layer passes, naming each fold; it was refused
    ('checkpoint tensor b.bias is not in the package bit-exactly')."""
    torch.manual_seed(0)
    net = network().eval()
    package = saved(net, tmp_path / "folded.mlpackage", precision=precision)
    report = verify.verify_package(package, net, inputs())
    assert report.passed, report.problems
    assert {k: v for k, v in report.constants.folded.items() if k != "conv.weight"} == folded
    if network is BatchNormed:  # one factor per output channel: γ/√(var+ε)
        assert report.constants.folded["conv.weight"].endswith("per output channel")
    assert not report.constants.missing and not report.constants.unexplained
    assert report.constants.checked + len(report.constants.folded) >= len(verify.used_parameters(net, torch.rand(1, 3, 8, 8)))


def test_scale_fold_is_exact_to_one_unit_in_the_last_place():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    folded = (weight * np.float32(0.1)).astype(np.float16)
    assert verify.scale_fold(folded, weight) == pytest.approx(np.full(4, 0.1), rel=1e-3)
    per_channel = (weight * np.arange(1, 5, dtype=np.float32).reshape(4, 1, 1, 1)).astype(np.float16)
    assert verify.scale_fold(per_channel, weight) == pytest.approx([1, 2, 3, 4], rel=1e-3)
    changed = folded.copy()
    changed.flat[5] = np.float16(changed.flat[5]) * np.float16(1.01)  # one value 1 % off: no factor explains it
    assert verify.scale_fold(changed, weight) is None
    assert verify.scale_fold(weight.astype(np.float16), weight) is None  # factor 1: no fold, not the checkpoint's
    assert verify.scale_fold(folded, rng.standard_normal((4, 3, 3, 3)).astype(np.float32)) is None
    transposed = (weight * np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1)).astype(np.float32)
    assert verify.scale_fold(transposed, weight, axis=1) == pytest.approx([1, 2, 3], rel=1e-6)


def test_a_fold_the_network_does_not_do_fails_by_its_outputs(tmp_path):
    """The package folds 0.1; the network it is checked against scales by 0.2, or has one weight of the folded
    layer changed: refused."""
    torch.manual_seed(0)
    package = saved(ResidualScaled(0.1).eval(), tmp_path / "folded.mlpackage", precision="fp16")
    torch.manual_seed(0)
    other = ResidualScaled(0.2).eval()
    report = verify.verify_package(package, other, inputs())
    assert not report.passed and any("FP32-mode output differs" in p for p in report.problems)
    torch.manual_seed(0)
    changed = ResidualScaled(0.1).eval()
    with torch.no_grad():
        changed.b.weight[3, 2, 1, 1] += 0.05
    report = verify.verify_package(package, changed, inputs())
    assert "b.weight" in report.constants.missing and not report.passed
