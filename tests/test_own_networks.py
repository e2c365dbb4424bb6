"""Networks of your own through the whole pipeline: ``--model FILE.py:NAME`` with random weights.

Four networks that are not in the zoo (tests/own_networks.py, and the documented Compact example): the export
configuration is measured on them and checked against what their layers say; their ONNX matches PyTorch at odd
sizes; FP16/INT8 pass their gates or refuse with the gate's message; Core ML exports and verifies; tiling equals
the whole image, or is refused for the attention network; parity rebuilds them from the artifact's metadata.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from srdeploy import api
from srdeploy.cli import main
from srdeploy.export.onnx.onnx_export import export_onnx, to_onnx
from srdeploy.export.accuracy_gate import COREML_MAX_DROP, DEFAULT_MAX_DROP
from srdeploy.export.precision import export_precision
from srdeploy.export.quant.int8_checker import check_qdq
from srdeploy.models import load_model
from srdeploy.runtime import images, metrics
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.sessions.onnxruntime import OnnxSession

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ROOT / "tests" / "own_networks.py"
COMPACT = ROOT / "docs" / "examples" / "compact.py"

# name → (spec, --model-args, checkpoint wrapper, expected colour, scale, receptive radius, whole image). The radii
# are the layers' own: ESPCN 5×5 + 3×3 + 3×3 = 2 + 1 + 1; Compact six 3×3 convolutions (the nearest skip adds none);
# EDSR head 1 + 1 block × 2 + body 1 + upsampler 1 at LR, ½ at ×2, ¼ at ×4 = 5.75 → 6.
CASES = {
    "espcn": (f"{NETWORKS}:ESPCN", {"scale": 3}, None, "y", 3, 4, False),
    "compact": (f"{COMPACT}:SRVGGNetCompact", {"num_feat": 16, "num_conv": 4, "upscale": 2}, "params_ema", "rgb", 2, 6, False),
    "edsr": (f"{NETWORKS}:EDSRBaseline", {"features": 8, "blocks": 1, "res_scale": 0.1}, "state_dict", "rgb", 4, 6,
             False),  # EDSR's residual scaling: Core ML folds the 0.1 into the block's last convolution
    "attention": (f"{NETWORKS}:AttentionSR", {}, "model", "rgb", 2, None, True),
}


def _random_checkpoint(spec: str, args: dict, wrapper: str | None, path: Path) -> Path:
    """Random weights as a training framework saves them; PReLU slopes differ per channel, as trained ones do."""
    from srdeploy.models.own import build, import_factory

    factory, _ = import_factory(spec)
    torch.manual_seed(0)
    network = build(factory, "test", args)
    for module in network.modules():
        if isinstance(module, torch.nn.PReLU):
            module.weight.data.uniform_(0.05, 0.3)
    state = network.state_dict()
    if wrapper == "state_dict":  # DataParallel's prefix too
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save(state if wrapper is None else {wrapper: state, "iter": 1000}, path)
    return path


@pytest.fixture(scope="module")
def own(tmp_path_factory) -> dict:
    """name → (loaded SrModel, checkpoint path)."""
    folder = tmp_path_factory.mktemp("own")
    loaded = {}
    for name, (spec, args, wrapper, *_) in CASES.items():
        checkpoint = _random_checkpoint(spec, args, wrapper, folder / f"{name}.pth")
        loaded[name] = (load_model(spec, weights=checkpoint, model_args=args), checkpoint)
    return loaded


@pytest.fixture(scope="module")
def onnx_files(own, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("own_onnx")
    return {name: export_onnx(model, folder / f"{name}.onnx") for name, (model, _) in own.items()}


@pytest.mark.parametrize("name", CASES)
def test_export_config_is_measured(own, name):
    info = own[name][0].info
    _, args, _, colour, scale, radius, whole = CASES[name]
    assert (info.colour, info.scale, info.export.whole_image) == (colour, scale, whole)
    if radius is not None:
        assert info.export.receptive_radius == radius
    assert info.source["args"] == args and info.source["name"] == CASES[name][0].rsplit(":", 1)[1]


@pytest.mark.parametrize("name", CASES)
def test_onnx_matches_pytorch_at_odd_sizes(own, onnx_files, name):
    model = own[name][0]
    session = OnnxSession(onnx_files[name])
    assert json.loads(session.metadata["source"])["args"] == CASES[name][1]
    for height, width in ((19, 27), (31, 17)):
        x = np.random.default_rng(height).random((1, model.info.channels, height, width), dtype=np.float32)
        with torch.inference_mode():
            expected = model(torch.from_numpy(x)).numpy()
        assert session.infer(x).shape == expected.shape
        assert np.abs(session.infer(x) - expected).max() <= 1e-4 * np.abs(expected).max()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("name", CASES)
def test_fp16_and_int8_pass_their_gate_or_refuse_with_it(own, name, precision):
    try:
        proto, report = export_precision(own[name][0], precision, progress=False)
    except SrDeployError as exc:
        assert "dB limit: nothing written" in str(exc)
        return
    assert report.drop_db <= DEFAULT_MAX_DROP[precision]
    if precision == "int8":
        assert report.int8_mac_fraction > 0 and check_qdq(proto) == []
        assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)


@pytest.mark.parametrize("name", CASES)
def test_coreml_export_is_verified(own, name, tmp_path):
    pytest.importorskip("coremltools")
    from srdeploy.export.coreml.coreml_export import CoreMLOptions, CoreMLShapes
    from srdeploy.export.coreml.coreml_package import export_package

    options = CoreMLOptions(shapes=CoreMLShapes(min=(16, 16), default=(24, 24), max=(48, 48)))
    package, report = export_package(own[name][0], options, tmp_path)
    assert package.is_dir() and report.verification["constants"]["checked"] > 0
    if name == "edsr":  # refused before: "checkpoint tensor body.0.body.2.bias is not in the package bit-exactly"
        assert report.verification["constants"]["folded"] == {"body.0.body.2.weight": "×0.1",
                                                              "body.0.body.2.bias": "×0.1"}
    assert report.drop_db <= COREML_MAX_DROP["none"]


def _photo(tmp_path: Path) -> Path:
    """A 90×70 crop of a held-out calibration photo (a real image, not a test set)."""
    from srdeploy.calib.data import source_images

    return images.write_image(tmp_path / "photo.png", images.read_rgb(source_images(None, "validation")[0])[:70, :90])


@pytest.mark.parametrize("name", CASES)
def test_tiled_upscale_equals_whole_or_is_refused(own, onnx_files, name, tmp_path):
    photo = _photo(tmp_path)
    whole = api.upscale(photo, tmp_path / "whole.png", artifact=onnx_files[name], options=api.UpscaleOptions(tile=0),
                         progress=False)
    assert whole.exit_status == 0
    if CASES[name][6]:
        with pytest.raises(SrDeployError, match="depends on the whole image"):
            api.upscale(photo, tmp_path / "tiled.png", artifact=onnx_files[name], options=api.UpscaleOptions(tile=24),
                        progress=False)
        default = api.upscale(photo, tmp_path / "default.png", artifact=onnx_files[name], progress=False)
        assert np.array_equal(images.read_rgb(tmp_path / "default.png"), images.read_rgb(tmp_path / "whole.png"))
        assert default.exit_status == 0
        return
    api.upscale(photo, tmp_path / "tiled.png", artifact=onnx_files[name], options=api.UpscaleOptions(tile=24),
                        progress=False)
    tiled, reference = images.read_rgb(tmp_path / "tiled.png"), images.read_rgb(tmp_path / "whole.png")
    assert metrics.psnr(tiled, reference) >= 60


def test_parity_rebuilds_the_network_from_its_metadata(own, onnx_files, tmp_path):
    report = api.parity(onnx_files["compact"], progress=False)
    assert report.passed and len(report.cases) >= 3
    api.parity(onnx_files["espcn"], save_golden=tmp_path / "golden", progress=False)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    artifact = shutil.copy(onnx_files["espcn"], moved / "espcn.onnx")
    source = json.loads(OnnxSession(artifact).metadata["source"])
    hidden = Path(source["file"]).with_suffix(".py.hidden")
    Path(source["file"]).rename(hidden)
    try:
        with pytest.raises(SrDeployError, match="which is not here.*--golden DIR"):
            api.parity(artifact, progress=False)
        assert api.parity(artifact, golden=tmp_path / "golden", progress=False).passed  # no source file needed
    finally:
        hidden.rename(source["file"])


def _tiny_dataset(tmp_path: Path, scale: int) -> Path:
    """A BasicSR-layout dataset of two held-out photo crops (HR, and LR by Pillow's bicubic)."""
    from PIL import Image

    from srdeploy.calib.data import source_images

    for i, source in enumerate(source_images(None, "validation")[:2]):
        hr = images.read_rgb(source)[: 24 * scale, : 32 * scale]
        images.write_image(tmp_path / "data" / "HR" / f"p{i}.png", hr)
        lr = np.asarray(Image.fromarray(hr).resize((32, 24), Image.BICUBIC))
        images.write_image(tmp_path / "data" / "LR_bicubic" / f"X{scale}" / f"p{i}x{scale}.png", lr)
    return tmp_path / "data"


def test_parity_on_a_dataset_scores_your_own_network(onnx_files, tmp_path):
    """``parity OWN.onnx --dataset DIR``: the dataset's PSNR through the artifact and through the rebuilt network
    (it looked your network up in the zoo: 'unknown model')."""
    report = api.parity(onnx_files["compact"], dataset=_tiny_dataset(tmp_path, 2), progress=False)
    assert report.passed and {"image_p0", "image_p1"} <= set(report.cases)
    assert report.dataset["name"] == "data" and abs(report.dataset["delta_db"]) < 1e-3
    assert 10 < report.dataset["psnr_reference"] < 60


def test_export_failures_name_the_operator_and_the_line(tmp_path):
    bad = tmp_path / "bad_nets.py"
    bad.write_text('''import torch
from torch import nn


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.up = nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2)

    def forward(self, x):
        if x.mean() > 0.5:
            return self.up(self.conv(x))
        return self.up(self.conv(x * 0.5))


class Bessel(Branchy):
    def forward(self, x):
        y = self.up(self.conv(x))
        return y + torch.special.bessel_j0(y) * 0
''')
    for name in ("Branchy", "Bessel"):
        torch.save({"conv.weight": torch.rand(12, 3, 3, 3), "conv.bias": torch.rand(12)}, tmp_path / f"{name}.pth")
    branchy = load_model(f"{bad}:Branchy", weights=tmp_path / "Branchy.pth")
    with pytest.raises(SrDeployError, match=r"control flow on a tensor's value at .*bad_nets.py:11 `if x.mean\(\) > 0.5:`"):
        to_onnx(branchy)
    with pytest.raises(SrDeployError, match=r"operator prims.bessel_j0 \(at .*bad_nets.py:19 "):
        to_onnx(load_model(f"{bad}:Bessel", weights=tmp_path / "Bessel.pth"))
    pytest.importorskip("coremltools")
    from srdeploy.export.coreml.coreml_export import CoreMLOptions, convert

    with pytest.raises(SrDeployError, match=r"control flow on a tensor's value at .*bad_nets.py:11"):
        convert(branchy, CoreMLOptions())


def test_the_cli_takes_your_own_network_and_refuses_bad_input_in_one_line(own, tmp_path, capsys):
    spec, args = CASES["espcn"][:2]
    checkpoint = own["espcn"][1]
    out = tmp_path / "out"
    assert main(["export", "--model", spec, "--weights", str(checkpoint), "--model-args", json.dumps(args),
                 "--out", str(out), "--json"]) == 0
    written = json.loads(capsys.readouterr().out)["artifacts"]
    assert [Path(p).name for p in written] == ["ESPCN_x3_fp32.onnx"]
    bad = {
        r"has no class or function Nope \(its nn.Modules: ESPCN, MeanShift": ["--model", f"{NETWORKS}:Nope"],
        "missing a required argument: 'scale'": ["--model", spec],
        "does not fit ESPCN: missing 6 .*unexpected": ["--model", spec, "--model-args", json.dumps(args),
                                                       "--weights", str(own["compact"][1])],
    }
    for message, argv in bad.items():
        refused = tmp_path / "refused"
        weights = [] if "--weights" in argv else ["--weights", str(checkpoint)]
        assert main(["export", *argv, *weights, "--out", str(refused)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ")
        assert re.search(message, err[0]), err[0]
        assert not refused.exists()


def test_a_factory_in_an_importable_module_is_the_same_network(own):
    by_file, checkpoint = own["espcn"]
    by_module = load_model("tests.own_networks:espcn", weights=checkpoint)  # the factory's default scale is 3
    assert by_module.info.source["module"] == "tests.own_networks" and by_module.info.scale == 3
    x = torch.rand(1, 1, 20, 24)
    with torch.inference_mode():
        assert torch.equal(by_module(x), by_file(x))
    with pytest.raises(SrDeployError, match=r"cannot import no_such_package.nets \(ModuleNotFoundError"):
        load_model("no_such_package.nets:Net", weights=checkpoint)
    with pytest.raises(SrDeployError, match=r"--model-args is for a network of your own"):
        load_model("fsrcnn", 2, model_args={"scale": 2})
