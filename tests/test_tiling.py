"""Tiled inference equals whole-image inference, and the recorded receptive radii are safe bounds."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import models
from export.config import export_config
from export.onnx_export import export_onnx
from models.registry import ARCHITECTURES, list_models
from runtime import images, metrics
from runtime.onnx_backend import OnnxSession
from runtime.pipeline import upscale_rgb
from runtime.tiling import tiled_infer, windowed_infer
from tests.conftest import REPO, need_shared, weights


def _random(name: str, scale: int) -> torch.nn.Module:
    torch.manual_seed(0)
    options = {"gate": "branch1"} if name == "dsrnet" else {}  # the gate's global average is not local
    return ARCHITECTURES[name].build(scale, **options).eval()


@pytest.mark.parametrize("name,scale", [(e.architecture.name, e.scale) for e in list_models()])
def test_receptive_radius_bounds_the_impulse_response(name, scale):
    """Changing one LR pixel changes no output pixel farther than the recorded radius."""
    radius = export_config(name).receptive_radius
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
    tiled = tiled_infer(x, runner, 2, tile=24, overlap=export_config(name).receptive_radius, min_size=8)
    assert np.abs(tiled - whole).max() <= 1e-5 * np.abs(whole).max()


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_fixed_windows_equal_whole(name):
    """The iOS Swift code's rule: windows of one size (an enumerated shape), shifted inward at the borders."""
    model = _random(name, 3)
    runner = lambda a: model(torch.from_numpy(a)).detach().numpy()  # noqa: E731
    radius = export_config(name).receptive_radius
    x = np.random.default_rng(1).random((1, ARCHITECTURES[name].channels, 2 * radius + 30, 2 * radius + 41), dtype=np.float32)
    whole = runner(x)
    for window in ((2 * radius + 9, 2 * radius + 13), x.shape[2:], (x.shape[2], 2 * radius + 5)):
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
