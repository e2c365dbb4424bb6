"""Tiled inference equals whole-image inference, and the recorded receptive radii are safe bounds."""
from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from srdeploy import models
from srdeploy.export.onnx.onnx_export import export_onnx
from srdeploy.models.registry import ARCHITECTURES, architecture, list_models
from srdeploy.runtime import images, metrics
from srdeploy.runtime.sessions.onnxruntime import OnnxSession
from srdeploy.runtime.pipeline import upscale_rgb
from srdeploy.runtime.tiling import tiled_infer, windowed_infer
from srdeploy.models.torch_runner import TorchRunner
from typing import Callable
from tests.conftest import REPO, need_shared, weights
from tests.gate_sensitive import TILE, gate_sensitive_state


def _random(name: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {"gate": "branch1"} if name == "dsrnet" else {}  # the gate's global average is not local
    return ARCHITECTURES[name].build(scale, **options).eval()


@pytest.mark.parametrize("name,scale", [(e.architecture.name, e.scale) for e in list_models()])
def test_receptive_radius_bounds_the_impulse_response(name, scale):
    """Changing one LR pixel changes no output pixel farther than the recorded radius."""
    radius = architecture(name).export.receptive_radius
    size = 2 * radius + 9
    model = _random(name, scale)
    torch.manual_seed(1)
    x = torch.rand(1, ARCHITECTURES[name].channels, size, size)
    poked = x.clone()
    poked[..., size // 2, size // 2] += 0.5
    with torch.no_grad():
        changed = (model(poked) - model(x)).abs().amax(dim=(0, 1)) > 0
    rows, cols = np.nonzero(changed.numpy())
    reach = max(np.abs(rows // scale - size // 2).max(), np.abs(cols // scale - size // 2).max())
    assert 0 < reach <= radius, f"{name} ×{scale}: an LR pixel reaches {reach} px, recorded radius {radius}"


@pytest.mark.parametrize("name", ["fsrcnn", "lesrcnn", "dsrnet"])
def test_tiled_equals_whole(name):
    model = _random(name, 2)
    runner = lambda a: model(torch.from_numpy(a)).detach().numpy()  # noqa: E731
    x = np.random.default_rng(0).random((1, ARCHITECTURES[name].channels, 61, 70), dtype=np.float32)
    whole = runner(x)
    tiled = tiled_infer(x, runner, 2, tile=24, overlap=architecture(name).export.receptive_radius, min_size=8)
    assert np.abs(tiled - whole).max() <= 1e-5 * np.abs(whole).max()


def test_tiles_in_flight_on_threads_give_the_same_bytes():
    """``workers``: tiles computed concurrently land where the sequential run puts them, bit for bit (the gated
    network too: one decision, from the whole image's features)."""
    model = TorchRunner(_random("dsrnet", 2))
    x = np.random.default_rng(1).random((2, 3, 61, 70), dtype=np.float32)
    run = dict(scale=2, tile=16, overlap=architecture("dsrnet").export.receptive_radius, min_size=8)
    alone = tiled_infer(x, model.infer, **run, gate=model.gate_split)
    together = tiled_infer(x, model.infer, **run, gate=model.gate_split, workers=4)
    assert np.array_equal(alone, together)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_fixed_windows_equal_whole(name):
    """The iOS Swift code's rule: windows of one size (an enumerated shape), shifted inward at the borders."""
    model = _random(name, 3)

    def runner(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(a)).numpy()

    radius = architecture(name).export.receptive_radius
    x = np.random.default_rng(1).random((1, ARCHITECTURES[name].channels, 2 * radius + 30, 2 * radius + 41), dtype=np.float32)
    whole = runner(x)
    # cores of 19×27 (the last window in each direction shifted inward), one window, one row of windows
    for window in ((2 * radius + 19, 2 * radius + 27), x.shape[2:], (x.shape[2], 2 * radius + 11)):
        tiled = windowed_infer(x, runner, 3, window, overlap=radius)
        assert np.abs(tiled - whole).max() <= 1e-5 * np.abs(whole).max(), window
    with pytest.raises(ValueError, match="no core"):
        windowed_infer(x, runner, 3, (2 * radius, 2 * radius), overlap=radius)


@pytest.fixture(scope="module")
def lesrcnn_artifact(tmp_path_factory):
    return export_onnx(models.load("lesrcnn", 2, weights("lesrcnn_x2.pth")),
                       tmp_path_factory.mktemp("tiling") / "lesrcnn_x2.onnx")


def test_tiled_artifact_on_a_real_image(lesrcnn_artifact):
    lr = images.read_rgb(need_shared("datasets", "Set5", "LR_bicubic", "X2", "babyx2.png"))
    session = OnnxSession(lesrcnn_artifact)
    whole = upscale_rgb(lr, session.infer, "rgb")
    tiled = upscale_rgb(lr, lambda a: tiled_infer(a, session.infer, 2, 64, session.receptive_radius, 8), "rgb")
    assert metrics.psnr(tiled, whole) >= 60


def test_upscale_cli_skips_bad_files_and_writes_the_rest(lesrcnn_artifact, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    images.write_image(folder / "good.png", np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    (folder / "broken.png").write_bytes(b"not a png")
    result = subprocess.run(
        [sys.executable, "cli.py", "upscale", str(folder), str(tmp_path / "out"), "--artifact", str(lesrcnn_artifact)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert "skipped" in result.stderr and "broken.png" in result.stderr
    assert images.read_rgb(tmp_path / "out" / "good_x2.png").shape == (40, 48, 3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_x2.png"]


def test_upscale_cli_refuses_an_image_too_small_for_the_artifact(lesrcnn_artifact, tmp_path):
    images.write_image(tmp_path / "tiny.png", np.zeros((5, 30, 3), np.uint8))
    result = subprocess.run(
        [sys.executable, "cli.py", "upscale", str(tmp_path / "tiny.png"), str(tmp_path / "out.png"),
         "--artifact", str(lesrcnn_artifact)], cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "height 5 is below the artifact's minimum 8" in result.stderr
    assert not (tmp_path / "out.png").exists()


def test_upscale_cli_a_crafted_header_in_a_folder_fails_alone(lesrcnn_artifact, tmp_path):
    from tests.test_images import png_header

    folder = tmp_path / "in"
    folder.mkdir()
    png_header(folder / "a_bomb.png", 100_000, 100_000)
    images.write_image(folder / "b_good.png", np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    result = subprocess.run(
        [sys.executable, "cli.py", "upscale", str(folder), str(tmp_path / "out"), "--artifact", str(lesrcnn_artifact)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "skipped" in result.stderr and "a_bomb.png" in result.stderr and "--max-pixels 10000000000" in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["b_good_x2.png"]


@pytest.mark.parametrize("output, arguments, message", [
    ("x.xyz", [], "output {out}: '.xyz' is not an image extension"),
    ("x.png", ["--tile", "-3"], "argument --tile: must be ≥ 0, not -3"),
    ("x.png", ["--tile-overlap", "-1"], "argument --tile-overlap: must be ≥ 0, not -1"),
    ("x.png", ["--max-pixels", "0"], "argument --max-pixels: must be ≥ 1, not 0"),
])
def test_upscale_cli_refuses_bad_arguments_before_any_work(lesrcnn_artifact, tmp_path, output, arguments, message):
    images.write_image(tmp_path / "in.png", np.zeros((20, 24, 3), np.uint8))
    out = tmp_path / output
    result = subprocess.run([sys.executable, "cli.py", "upscale", str(tmp_path / "in.png"), str(out),
                             "--artifact", str(lesrcnn_artifact), *arguments], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message.format(out=out) in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_upscale_cli_a_folder_goes_to_a_folder(lesrcnn_artifact, tmp_path):
    (tmp_path / "in").mkdir()
    result = subprocess.run([sys.executable, "cli.py", "upscale", str(tmp_path / "in"), str(tmp_path / "out.png"),
                             "--artifact", str(lesrcnn_artifact)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 2 and "is a folder, so the output must be a folder" in result.stderr


# --- a network whose gate looks at the whole image (DSRNet): the decision is taken once, for all tiles -------

RADIUS = architecture("dsrnet").export.receptive_radius


@pytest.fixture(scope="module")
def gate_sensitive(tmp_path_factory):
    """DSRNet ×2 whose gate flips between 48-pixel tiles of the butterfly image (``tests.gate_sensitive``):
    (checkpoint, LR image, model)."""
    lr = images.read_rgb(need_shared("datasets", "Set5", "LR_bicubic", "X2", "butterflyx2.png"))
    model = models.load("dsrnet", 2, weights("dsrnet_x2.pth")).network
    state = torch.load(weights("dsrnet_x2.pth"), map_location="cpu", weights_only=True)
    path = tmp_path_factory.mktemp("gate") / "dsrnet_gate_sensitive.pth"
    torch.save(gate_sensitive_state(model, state, torch.from_numpy(images.to_unit_float(lr)), RADIUS), path)
    return path, lr, models.load("dsrnet", 2, path)


@pytest.fixture(scope="module")
def gate_sensitive_onnx(gate_sensitive, tmp_path_factory):
    return export_onnx(gate_sensitive[2], tmp_path_factory.mktemp("gate") / "dsrnet_gate_sensitive.onnx")


def _sr(output: np.ndarray) -> np.ndarray:
    return images.to_uint8(output[0].transpose(1, 2, 0))


def test_gate_decided_on_the_whole_image_pytorch(gate_sensitive):
    from srdeploy.models.torch_runner import TorchRunner

    _, lr, model = gate_sensitive
    runner, x = TorchRunner(model.network), images.to_unit_float(lr)
    whole = _sr(runner.infer(x))
    each_tile_its_own_gate = _sr(tiled_infer(x, runner.infer, 2, TILE, RADIUS, 8))
    assert metrics.psnr(each_tile_its_own_gate, whole) < 50  # the checkpoint does flip the gate between tiles
    assert metrics.psnr(_sr(tiled_infer(x, runner.infer, 2, TILE, RADIUS, 8, gate=runner.gate_split)), whole) >= 60


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_gate_decided_on_the_whole_image_artifact(gate_sensitive, gate_sensitive_onnx, backend):
    from srdeploy.runtime.opener import open_artifact
    from srdeploy.models.torch_runner import TorchRunner

    _, lr, model = gate_sensitive
    session, x = open_artifact(gate_sensitive_onnx, backend=backend), images.to_unit_float(lr)
    assert session.has_global_gate
    whole = _sr(session.infer(x))
    assert metrics.psnr(whole, _sr(TorchRunner(model.network).infer(x))) >= 60
    assert metrics.psnr(_sr(tiled_infer(x, session.infer, 2, TILE, RADIUS, 8)), whole) < 50
    assert metrics.psnr(_sr(tiled_infer(x, session.infer, 2, TILE, RADIUS, 8, gate=session.gate_split)), whole) >= 60


def test_upscale_cli_tiles_a_gated_network_as_the_whole_image(gate_sensitive, gate_sensitive_onnx, tmp_path):
    path, lr, _ = gate_sensitive
    images.write_image(tmp_path / "in.png", lr)
    for tile in (0, TILE):
        result = subprocess.run([sys.executable, "cli.py", "upscale", str(tmp_path / "in.png"), str(tmp_path / f"t{tile}.png"),
                                 "--artifact", str(gate_sensitive_onnx), "--tile", str(tile)],
                                cwd=REPO, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert metrics.psnr(images.read_rgb(tmp_path / f"t{TILE}.png"), images.read_rgb(tmp_path / "t0.png")) >= 60


def test_a_runtime_that_cannot_split_the_gate_refuses_to_tile(gate_sensitive):
    """A Core ML package takes no decision from outside: more than one tile is refused, one line, and an image
    that fits one tile still runs."""
    from pathlib import Path

    from srdeploy.runtime.artifact import ArtifactSession
    from srdeploy.runtime.errors import SrDeployError

    class Package(ArtifactSession):
        runtime_name = "Core ML"
        path = Path("dsrnet_x2_fp16.mlpackage")

    x = images.to_unit_float(gate_sensitive[1])
    with pytest.raises(SrDeployError, match=r"dsrnet_x2_fp16.mlpackage: this network's gate looks at the whole image, "
                                            r"and Core ML cannot .* --tile 0"):
        tiled_infer(x, lambda a: a, 2, TILE, RADIUS, 8, gate=Package().gate_split)
    assert tiled_infer(x, lambda a: a + 1, 1, 128, RADIUS, 8, gate=Package().gate_split).min() >= 1


# --- the gate parts: what TensorRT engines (and ONNX Runtime) run to share the whole image's decision --------

def _ort(proto) -> "Callable":
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})[0]


def test_gate_parts_are_the_network_cut_at_its_gate(gate_sensitive, gate_sensitive_onnx):
    """Each part one input → one output with no If; each branch part equals PyTorch with that branch forced, the
    margin's sign is PyTorch's decision, and a batch whose images decide differently runs each its own branch."""
    import onnx

    from srdeploy.runtime.global_gate import gate_parts, parts_split

    path, lr, model = gate_sensitive
    parts = gate_parts(onnx.load(gate_sensitive_onnx))
    assert list(parts) == ["gate_features", "gate_margin", "branch0", "branch1"]
    for name, part in parts.items():
        assert len(part.graph.input) == len(part.graph.output) == 1
        assert not [n for n in part.graph.node if n.op_type == "If"]
        assert {(p.key, p.value) for p in part.metadata_props} >= {("srdeploy.gate_part", name), ("srdeploy.model", "dsrnet")}
    x = images.to_unit_float(lr)[..., :40, :48]
    for branch in (0, 1):
        forced = models.load("dsrnet", 2, path, gate=f"branch{branch}").network
        with torch.no_grad():
            expected = forced(torch.from_numpy(x)).numpy()
        assert np.abs(_ort(parts[f"branch{branch}"])(x) - expected).max() < 1e-4
    grid = np.concatenate([images.to_unit_float(lr)[..., y:y + 40, x:x + 48] for y in range(0, 88, 20) for x in range(0, 80, 20)])
    with torch.no_grad():
        leans = model.network.decide(model.network.gate_features(torch.from_numpy(grid)).mean((2, 3))).numpy()
    assert leans.any() and not leans.all(), "some crops of this image should take branch 0, some branch 1"
    crops = grid[[int(np.argmax(leans)), int(np.argmin(leans)), int(np.argmax(leans))]]  # branch 1, 0, 1
    decided = np.array([True, False, True])
    split = parts_split({name: _ort(part) for name, part in parts.items()})
    mean = split.features(crops).mean(axis=(2, 3))
    np.testing.assert_array_equal(split.decide(mean), decided)
    with torch.no_grad():
        expected = model.network(torch.from_numpy(crops)).numpy()  # each image its own decision, as the If runs it
    assert np.abs(split.forced(crops, decided) - expected).max() < 1e-4


def test_a_tensorrt_engine_tiles_with_the_gate_parts_its_sidecar_lists(gate_sensitive, gate_sensitive_onnx, tmp_path,
                                                                       monkeypatch):
    """``TrtSession.gate_split`` opens the part engines named in the sidecar beside the engine; here each "engine"
    is its part's ONNX run by ONNX Runtime (no TensorRT here), so the wiring is checked, not TensorRT."""
    import onnx

    from srdeploy.runtime.sessions import tensorrt as trt_backend
    from srdeploy.runtime.errors import SrDeployError
    from srdeploy.runtime.global_gate import gate_parts

    opened = []

    class PartEngine:  # stands in for TrtSession(path, cuda_graphs, device)
        def __init__(self, path, cuda_graphs, device):
            opened.append((path.name, cuda_graphs, device))
            self.infer = _ort(onnx.load(path))

    names = {}
    for name, part in gate_parts(onnx.load(gate_sensitive_onnx)).items():
        names[name] = f"dsrnet_x2_fp32.{name}.engine"
        onnx.save(part, tmp_path / names[name])
    engine = object.__new__(trt_backend.TrtSession)
    engine.path, engine.cuda_graphs, engine.device = tmp_path / "dsrnet_x2_fp32.engine", True, 1
    engine.record = {"gate_parts": names, "rebuild": "srdeploy export --model dsrnet --target trt"}
    monkeypatch.setattr(trt_backend, "TrtSession", PartEngine)
    x = images.to_unit_float(gate_sensitive[1])
    whole = _sr(OnnxSession(gate_sensitive_onnx).infer(x))
    assert metrics.psnr(_sr(tiled_infer(x, None, 2, TILE, RADIUS, 8, gate=engine.gate_split)), whole) >= 60
    assert sorted(opened) == sorted((file, True, 1) for file in names.values())
    engine.record = {"rebuild": "srdeploy export --model dsrnet --target trt"}  # built before gate parts existed
    with pytest.raises(SrDeployError, match=r"^dsrnet_x2_fp32.engine was built without the gate parts .* rebuild it "
                                            r"with `srdeploy export --model dsrnet --target trt`, or upscale with --tile 0"):
        engine.gate_split()


def test_the_jetson_bundle_builds_and_checks_the_gate_parts(gate_sensitive, tmp_path):
    """A DSRNet bundle: build.sh builds the network and then each gate part with trtexec exactly as the Python builder
    plans them (the gate's margin on an N×64×1×1 profile), the device check runs every golden case through the parts
    too, and the bundle's own upscaler tiles an image larger than the profile as the whole image."""
    import json
    import os

    import onnx

    from srdeploy.calib.data import held_out_photo
    from srdeploy.export.bundles.jetson import write_bundle
    from srdeploy.export.onnx.onnx_export import to_onnx
    from srdeploy.export.trt.trt_plan import BuildPlan, Profile, settings_from_trtexec
    from srdeploy.models.torch_runner import TorchRunner
    from tests.test_trt import _bundle_check, _bundle_upscale, _fake_trtexec

    path, lr, model = gate_sensitive
    profile = Profile("lr", (1, 3, 16, 16), (1, 3, 48, 48), (2, 3, 64, 64))
    bundle = write_bundle(tmp_path / "dsrnet", "dsrnet", 2, {"fp32": to_onnx(model)}, profile, held_out_photo("rgb"),
                          TorchRunner(model.network).infer)
    entry = json.loads((bundle / "manifest.json").read_text())["precisions"]["fp32"]
    assert list(entry["gate_parts"]) == ["gate_features", "gate_margin", "branch0", "branch1"]
    for strong in (True, False):
        trtexec = _fake_trtexec(tmp_path / f"bin{strong}", strong)
        result = subprocess.run(["bash", str(bundle / "build.sh"), "--build-only"], capture_output=True, text=True,
                                env={**os.environ, "TRTEXEC": str(trtexec)})
        assert result.returncode == 0, result.stderr
        typing = "strong" if strong else "weak"
        calls = [(trtexec.parent / f"call{i}.args").read_text().split() for i in range(5)]
        assert not (trtexec.parent / "call5.args").exists()
        plan = BuildPlan.for_artifact(entry["metadata"], profile, strong)
        assert settings_from_trtexec(calls[0][2:]) == plan.settings()
        for args, (name, part) in zip(calls[1:], entry["gate_parts"].items(), strict=True):
            assert args[:2] == [f"--onnx={part['build_onnx'][typing]}", f"--saveEngine={part['engine']}"]
            graph = onnx.load(bundle / part["build_onnx"][typing])
            assert settings_from_trtexec(args[2:]) == plan.for_gate_part(name, graph).settings()
            assert args[1].endswith(f".{name}.engine") and graph.metadata_props
        margin = settings_from_trtexec(calls[2][2:])["profile"]
        assert (margin["min"], margin["opt"], margin["max"]) == ([1, 64, 1, 1], [1, 64, 1, 1], [2, 64, 1, 1])
    check = _bundle_check(bundle, "--backend", "onnxruntime", "--runs", "0", "--json")
    assert check.returncode == 0, check.stderr
    cases = json.loads(check.stdout)["results"][0]["parity"]
    assert len([c for c in cases if c.endswith(", gate parts")]) == len(cases) // 2 >= 2
    images.write_image(tmp_path / "butterfly.png", lr)  # 128×128 LR: beyond the profile's 64×64, so it is tiled
    result = _bundle_upscale(bundle, str(tmp_path / "butterfly.png"), str(tmp_path / "tiled.png"),
                             "--backend", "onnxruntime", "--tile", str(TILE))
    assert result.returncode == 0, result.stderr
    whole = _sr(OnnxSession(bundle / entry["onnx"]).infer(images.to_unit_float(lr)))
    assert metrics.psnr(images.read_rgb(tmp_path / "tiled.png"), whole) >= 60


def test_the_ios_bundle_tiles_a_whole_image_gate_as_the_whole_image(gate_sensitive, tmp_path):
    """The iOS bundle of the gate-sensitive DSRNet: four sealed gate-part packages beside the package, listed in its
    metadata and loaded by the Swift code; the Swift code's rule (``windowed_infer`` with ``gate``) run over the
    packages' own programs (srdeploy's NumPy MIL executor, FP32 mode) equals the package's whole-image output,
    where windows that each decide alone do not."""
    import json

    from srdeploy.export.bundles.ios_bundle import write_ios_bundle
    from srdeploy.export.coreml.coreml_export import CoreMLOptions, CoreMLShapes
    from srdeploy.export.coreml.coreml_verify import executor_infer
    from srdeploy.runtime.sessions.coreml import CoreMLSession
    from srdeploy.runtime.global_gate import GATE_PARTS, parts_split

    _, lr, model = gate_sensitive
    window = TILE + 2 * RADIUS  # a 48-pixel core in each window
    options = CoreMLOptions(precision="fp32", shapes=CoreMLShapes(min=(16, 16), default=(window, window), max=(128, 128)))
    bundle, report = write_ios_bundle(model, options, tmp_path / "ios")
    package = bundle / "dsrnet_x2_fp32.mlpackage"
    session = CoreMLSession(package, run=False)
    files = json.loads(session.metadata["gate_parts"])
    assert list(files) == list(GATE_PARTS) and all(report.gate_parts[part]["passed"] for part in GATE_PARTS)
    for part, file in files.items():
        assert CoreMLSession(bundle / file, run=False).metadata["gate_part"] == part  # sealed and readable
    source = (bundle / "DsrnetX2Upscaler.swift").read_text()
    assert "gateChannels = 64" in source and "wholeImageOnly = false" in source
    inputs = {part: "gate_mean" if part == "gate_margin" else "lr" for part in GATE_PARTS}
    split = parts_split({part: executor_infer(bundle / files[part], "fp32", input_name=inputs[part]) for part in GATE_PARTS})
    x, whole_package = images.to_unit_float(lr), executor_infer(package, "fp32")
    whole = _sr(whole_package(x))
    assert metrics.psnr(whole, _sr(TorchRunner(model.network).infer(x))) >= 60
    assert metrics.psnr(_sr(windowed_infer(x, whole_package, 2, (window, window), RADIUS)), whole) < 50
    assert metrics.psnr(_sr(windowed_infer(x, whole_package, 2, (window, window), RADIUS, gate=lambda: split)), whole) >= 60
    if platform.system() == "Darwin":  # Core ML itself, through the session the CLI opens
        from srdeploy.runtime.opener import open_artifact

        session = open_artifact(package)
        assert metrics.psnr(_sr(tiled_infer(x, session.infer, 2, TILE, RADIUS, 16, gate=session.gate_split)),
                            _sr(session.infer(x))) >= 60


def test_the_openvino_ir_holds_the_gate_as_a_per_image_select(gate_sensitive, gate_sensitive_onnx, tmp_path):
    """``export --target openvino`` writes DSRNet's gate as a per-image select, no ``If`` (OpenVINO fuses across
    it): each image of a batch gets the output of the branch its own gate picks, as the ONNX ``If`` graph gives it,
    and tiles share the whole image's decision through the IR."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install openvino")
    from srdeploy.export.openvino.openvino_export import export_ir
    from srdeploy.runtime.sessions.openvino import OpenVinoSession

    _, lr, model = gate_sensitive
    path, _, measured = export_ir(model, "fp32", tmp_path, progress=False)
    session = OpenVinoSession(path)
    operations = {op.get_type_name() for op in session.model.get_ordered_ops()}
    assert measured["gate_as_select"] and "If" not in operations and "Select" in operations
    x = images.to_unit_float(lr)
    grid = np.concatenate([x[..., y:y + 40, x0:x0 + 48] for y in range(0, 88, 20) for x0 in range(0, 80, 20)])
    with torch.no_grad():
        leans = model.network.decide(model.network.gate_features(torch.from_numpy(grid)).mean((2, 3))).numpy()
    assert leans.any() and not leans.all()
    assert np.abs(session.infer(grid) - OnnxSession(gate_sensitive_onnx).infer(grid)).max() < 1e-4
    whole = _sr(session.infer(x))
    assert metrics.psnr(whole, _sr(OnnxSession(gate_sensitive_onnx).infer(x))) >= 60
    assert metrics.psnr(_sr(tiled_infer(x, session.infer, 2, TILE, RADIUS, 8, gate=session.gate_split)), whole) >= 60
