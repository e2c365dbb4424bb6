"""The executorch target (export/executorch/, runtime/sessions/executorch.py): FSRCNN and LESRCNN lowered to
XNNPACK and run by ExecuTorch's own runtime equal PyTorch; the transposed convolution's sub-pixel form is exact;
tiles fit the program's shape bound and equal the ONNX Runtime upscale; damaged or foreign folders, an image over
the bound without tiling, a precision it does not write: one line, nothing half-written."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from srdeploy import models
from tests.conftest import REPO, held_out_batch, need_shared, weights

pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install executorch (the dev extra has it)")

from srdeploy.export.executorch.pte_export import subpixel_network  # noqa: E402
from srdeploy.runtime.sessions.executorch import ExecuTorchSession  # noqa: E402

pytestmark = pytest.mark.slow  # each export lowers through torch.export and XNNPACK (5–15 s)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "cli.py"), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """FSRCNN ×2 (a transposed convolution) and LESRCNN ×2 (64 channels, RGB) exported through the CLI."""
    need_shared("weights", "fsrcnn_x2.pth")
    out = tmp_path_factory.mktemp("executorch")
    folders = {}
    for model in ("fsrcnn", "lesrcnn"):
        result = run_cli("export", "--model", model, "--target", "executorch", "--out", str(out))
        assert result.returncode == 0, result.stderr
        assert "from PyTorch on held-out crops, through ExecuTorch's runtime" in result.stderr
        folders[model] = out / result.stdout.strip().splitlines()[-1].split("/")[-1]
    return folders


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_the_subpixel_form_of_fsrcnn_is_its_transposed_convolution(scale):
    net = models.load("fsrcnn", scale, weights(f"fsrcnn_x{scale}.pth")).network.eval()
    rewritten, swapped = subpixel_network(net)
    x = torch.rand(1, 1, 37, 53)
    with torch.no_grad():
        expected, found = net(x), rewritten(x)
    assert swapped == 1 and found.shape == expected.shape
    assert float((found - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


@pytest.mark.parametrize("model", ["fsrcnn", "lesrcnn"])
def test_executorch_computes_what_pytorch_computes(exported, model):
    """Held-out photo crops of several sizes through the .pte, image by image: within 1e-4 of PyTorch."""
    session = ExecuTorchSession(exported[model])
    net = models.load(model, 2, weights(f"{model}_x2.pth")).network.eval()
    manifest = json.loads((exported[model] / "srdeploy.json").read_text())
    assert manifest["metadata"]["precision"] == "fp32" and json.loads(manifest["metadata"]["shape_bounds"])["max"][2:] == [320, 320]
    batch = held_out_batch(session.colour)[:2]
    for x in (batch, batch[..., :23, :41]):
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        assert np.abs(session.infer(x) - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_tiles_fit_the_bound_and_equal_onnx_runtime(exported, tmp_path):
    """A 700×500 photo is larger than the program's 320×320 bound: tiled to fit, the upscale equals ONNX Runtime's
    within one 8-bit level; without tiling it is refused in one line."""
    from PIL import Image
    from skimage import data

    photo = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.fromarray(data.astronaut()).resize((700, 500)))).save(photo)
    onnx = run_cli("export", "--model", "fsrcnn", "--out", str(tmp_path))
    assert onnx.returncode == 0, onnx.stderr
    ours = run_cli("upscale", str(photo), str(tmp_path / "et.png"), "--artifact", str(exported["fsrcnn"]))
    theirs = run_cli("upscale", str(photo), str(tmp_path / "ort.png"), "--artifact", onnx.stdout.strip())
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    a = np.asarray(Image.open(tmp_path / "et.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "ort.png")).astype(int)
    assert a.shape == b.shape == (1000, 1400, 3) and np.abs(a - b).max() <= 1
    whole = run_cli("upscale", str(photo), str(tmp_path / "whole.png"), "--artifact", str(exported["fsrcnn"]),
                    "--tile", "0")
    assert whole.returncode == 2 and "maximum 320 (bounds 8…320): tile the image (upscale --tile)" in whole.stderr
    assert whole.stderr.count("\n") == 2 and not (tmp_path / "whole.png").exists()  # the image, then the batch


def test_damaged_or_foreign_folders_are_one_line(exported, tmp_path):
    damaged = tmp_path / "damaged.executorch"
    shutil.copytree(exported["fsrcnn"], damaged)
    program = bytearray((damaged / "model.pte").read_bytes())
    program[len(program) // 2] ^= 0xFF
    (damaged / "model.pte").write_bytes(bytes(program))
    bare = tmp_path / "bare.executorch"
    bare.mkdir()
    shutil.copy(exported["fsrcnn"] / "model.pte", bare / "model.pte")
    from PIL import Image

    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "photo.png")
    for folder, message in ((damaged, "re-export it"), (bare, "has no srdeploy.json")):
        result = run_cli("upscale", str(tmp_path / "photo.png"), str(tmp_path / "out.png"), "--artifact", str(folder))
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "fsrcnn", "--precision", "fp16"], "--precision fp16 is not one --target executorch writes"),
    (["--model", "dsrnet"], "gate reads the whole image"),
    (["--model", "fsrcnn", "--opt-shape", "100x100"], "--target executorch takes --max-shape alone"),
    (["--model", "fsrcnn", "--max-shape", "4x4"], "--max-shape 4x4: below fsrcnn's smallest input"),
])
def test_what_it_does_not_write_is_one_line(tmp_path, args, message):
    need_shared("weights", f"{args[1]}_x2.pth")  # the refusals come once the checkpoint is loaded
    result = run_cli("export", *args, "--target", "executorch", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") <= 3, result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_smaller_bound_is_the_programs_largest_input(tmp_path):
    """--max-shape HxW (no optimization profile here): the program's bound, recorded, and the tiler's tiles fit it."""
    from PIL import Image

    need_shared("weights", "fsrcnn_x2.pth")

    result = run_cli("export", "--model", "fsrcnn", "--target", "executorch", "--max-shape", "96x128", "--out",
                     str(tmp_path))
    assert result.returncode == 0, result.stderr
    session = ExecuTorchSession(result.stdout.strip())
    assert session.shape_bounds["max"][2:] == [96, 128]
    Image.fromarray(np.full((150, 300, 3), 120, np.uint8)).save(tmp_path / "photo.png")
    upscaled = run_cli("upscale", str(tmp_path / "photo.png"), str(tmp_path / "out.png"), "--artifact",
                       result.stdout.strip())
    assert upscaled.returncode == 0, upscaled.stderr
    assert Image.open(tmp_path / "out.png").size == (600, 300)

