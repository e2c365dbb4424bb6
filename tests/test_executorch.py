"""The executorch target (export/executorch/, runtime/sessions/executorch.py): FSRCNN and LESRCNN lowered to
XNNPACK and run by ExecuTorch's own runtime equal PyTorch; the transposed convolution's sub-pixel form is exact;
tiles fit the program's shape bound and equal the ONNX Runtime upscale; damaged or foreign folders, an image over
the bound without tiling, a precision it does not write: one line, nothing half-written."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from srdeploy import models
from tests.conftest import SHARED, held_out_batch, need_shared, weights

pytest.importorskip("executorch", reason="ExecuTorch is not installed: pip install executorch (the dev extra has it)")

from srdeploy.export.executorch.pte_export import subpixel_network  # noqa: E402
from srdeploy.runtime.sessions.executorch import ExecuTorchSession  # noqa: E402

pytestmark = pytest.mark.slow  # each export lowers through torch.export and XNNPACK (5–15 s)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """FSRCNN ×2 (a transposed convolution) and LESRCNN ×2 (64 channels, RGB), exported."""
    from srdeploy import api

    need_shared("weights", "fsrcnn_x2.pth")
    out = tmp_path_factory.mktemp("executorch")
    return {model: api.export_model(model, 2, target="executorch", out=out, progress=False).artifacts[0]
            for model in ("fsrcnn", "lesrcnn")}


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


def test_tiles_fit_the_bound_and_equal_onnx_runtime(exported, tmp_path, cli):
    """A 700×500 photo is larger than the program's 320×320 bound: tiled to fit, the upscale equals ONNX Runtime's
    within one 8-bit level; without tiling it is refused in one line."""
    from PIL import Image
    from skimage import data

    photo = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.fromarray(data.astronaut()).resize((700, 500)))).save(photo)
    onnx = cli("export", "--model", "fsrcnn", "--out", str(tmp_path))
    assert onnx.returncode == 0, onnx.stderr
    ours = cli("upscale", str(photo), str(tmp_path / "et.png"), "--artifact", str(exported["fsrcnn"]))
    theirs = cli("upscale", str(photo), str(tmp_path / "ort.png"), "--artifact", onnx.stdout.strip())
    assert ours.returncode == theirs.returncode == 0, ours.stderr
    a = np.asarray(Image.open(tmp_path / "et.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "ort.png")).astype(int)
    assert a.shape == b.shape == (1000, 1400, 3) and np.abs(a - b).max() <= 1
    whole = cli("upscale", str(photo), str(tmp_path / "whole.png"), "--artifact", str(exported["fsrcnn"]),
                    "--tile", "0")
    assert whole.returncode == 2 and "maximum 320 (bounds 8…320): tile the image (upscale --tile)" in whole.stderr
    assert whole.stderr.count("\n") == 2 and not (tmp_path / "whole.png").exists()  # the image, then the batch


def test_damaged_or_foreign_folders_are_one_line(exported, tmp_path, cli):
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
        result = cli("upscale", str(tmp_path / "photo.png"), str(tmp_path / "out.png"), "--artifact", str(folder))
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "out.png").exists()


def test_crafted_programs_are_one_line_not_an_abort(exported, tmp_path, cli):
    """Programs resealed with bytes that are not UTF-8 where ExecuTorch's C++ logs them (found by fuzzing: its
    Python bindings then abort the process, which no exception reports): an operator name, refused by ExecuTorch's own
    deserializer; a constant's data key in the XNNPACK payload, loaded first in a child process that ExecuTorch
    aborts; and a program that loads and then fails in XNNPACK (the first 5×5 convolution's 56 output channels made
    54: shapes no longer propagate; that image fails, after ExecuTorch's C++ prints its own diagnostics on stderr).
    Each: exit 2, nothing written, one line of srdeploy's (and the batch's tally where an image failed); no
    traceback, no abort."""
    import re

    from PIL import Image

    from srdeploy.runtime.manifest import write_manifest

    manifest = json.loads((exported["fsrcnn"] / "srdeploy.json").read_text())
    program = (exported["fsrcnn"] / "model.pte").read_bytes()
    operator = program.index(b"aten::")
    key = [*re.finditer(rb"[0-9a-f]{64}", program)][-1].start()  # a constant's key in the XNNPACK payload
    conv_5x5 = b"\x05\x00\x00\x00" * 2 + b"\x01\x00\x00\x00" * 4  # kernel 5×5, stride, dilation: then 56 (b"8")
    assert program.count(conv_5x5 + b"8") == 1
    crafted = {"operator": (program[:operator] + b"\xff" + program[operator + 1:], "not a readable ExecuTorch program"),
               "data key": (program[:key + 40] + b"\x9c\xc8" + program[key + 42:],
                            "ExecuTorch aborted the process that loaded it: signal 6"),
               "channels": (program.replace(conv_5x5 + b"8", conv_5x5 + b"6", 1), "its program does not compute")}
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "photo.png")
    for name, (data, message) in crafted.items():
        folder = tmp_path / f"{name.replace(' ', '_')}.executorch"
        folder.mkdir()
        write_manifest(folder, manifest, {"model.pte": data})
        result = cli("upscale", str(tmp_path / "photo.png"), str(tmp_path / "out.png"), "--artifact", str(folder))
        ours = [line for line in result.stderr.splitlines() if not line.startswith("[")]  # not ExecuTorch's C++ log
        assert result.returncode == 2 and message in ours[0] and len(ours) == (2 if name == "channels" else 1), (
            name, result.stderr)
        assert "Traceback" not in result.stderr and not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--model", "fsrcnn", "--precision", "bf16"], "--precision bf16 is not one --target executorch writes"),
    (["--model", "dsrnet", "--precision", "fp16"], "writes its gate parts in FP32 or INT8, not fp16"),
    (["--model", "fsrcnn", "--opt-shape", "100x100"], "--target executorch takes --max-shape alone"),
    (["--model", "fsrcnn", "--max-shape", "4x4"], "--max-shape 4x4: below fsrcnn's smallest input"),
])
def test_what_it_does_not_write_is_one_line(tmp_path, args, message, cli):
    need_shared("weights", f"{args[1]}_x2.pth")  # the refusals come once the checkpoint is loaded
    result = cli("export", *args, "--target", "executorch", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") <= 3, result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_smaller_bound_is_the_programs_largest_input(tmp_path, cli):
    """--max-shape HxW (no optimization profile here): the program's bound, recorded, and the tiler's tiles fit it."""
    from PIL import Image

    need_shared("weights", "fsrcnn_x2.pth")

    result = cli("export", "--model", "fsrcnn", "--target", "executorch", "--max-shape", "96x128", "--out",
                     str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "from PyTorch on held-out crops, through ExecuTorch's runtime" in result.stderr
    session = ExecuTorchSession(result.stdout.strip())
    assert session.shape_bounds["max"][2:] == [96, 128]
    Image.fromarray(np.full((150, 300, 3), 120, np.uint8)).save(tmp_path / "photo.png")
    upscaled = cli("upscale", str(tmp_path / "photo.png"), str(tmp_path / "out.png"), "--artifact",
                       result.stdout.strip())
    assert upscaled.returncode == 0, upscaled.stderr
    assert Image.open(tmp_path / "out.png").size == (600, 300)
    need_shared("datasets", "Set5")  # its images are larger than 96×128: eval tiles them, as upscale does
    evaluated = cli("eval", "--artifact", result.stdout.strip(), "--dataset", str(SHARED / "datasets" / "Set5"),
                    "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["psnr"] == pytest.approx(37.06, abs=0.01)  # the published FSRCNN score



def test_fp16_falls_back_to_fp32_at_the_ends_until_its_gate_passes(tmp_path, cli):
    """FSRCNN ×2 in FP16: XNNPACK accumulates in FP16, so all-FP16 loses more than the 0.01 dB gate on the
    calibration crops and the output's convolution, then the input's, compute in FP32; the drop the manifest records
    is what ExecuTorch computes on the held-out crops, measured here again, within the gate."""
    from srdeploy.calib.data import lr_hr_crops, source_images
    from srdeploy.export.precision import VALIDATION_SPEC
    from srdeploy.models.torch_runner import TorchRunner
    from srdeploy.runtime.quality import crop_psnr

    need_shared("weights", "fsrcnn_x2.pth")
    result = cli("export", "--model", "fsrcnn", "--target", "executorch", "--precision", "fp16", "--out",
                     str(tmp_path))
    assert result.returncode == 0, result.stderr
    session = ExecuTorchSession(result.stdout.strip())
    report = json.loads(session.metadata["executorch_report"])
    assert session.metadata["precision"] == "fp16" and report["fp16"]["drops_by_step"][0] > 0.01
    assert report["fp16"]["kept_float"] == ["deconv.conv", "feature_extraction.0"][:len(report["fp16"]["kept_float"])]
    assert len(report["fp16"]["drops_by_step"]) == len(report["fp16"]["kept_float"]) + 1
    net = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    crops = lr_hr_crops(source_images(None, "validation"), 2, VALIDATION_SPEC)
    psnr = lambda infer: crop_psnr(infer, crops, 2, net.info.colour, net.info.eval_rounding)  # noqa: E731
    drop = psnr(TorchRunner(net.network).infer) - psnr(session.infer)
    assert drop <= 0.01 and abs(drop - report["drop_db"]) <= 1e-3
    assert f"{report['drop_db']:.3f} dB below PyTorch FP32" in result.stderr


def test_fp16_keeps_the_named_convolutions_in_fp32_and_finds_them_in_running_order():
    """The fallback's candidates come from a forward pass (LESRCNN's mean shifts left out); the FP16 module
    computes within FP16 rounding of the FP32 network, the convolutions kept FP32 receive FP32 weights."""
    from srdeploy.export.executorch.pte_fp16 import Float32, HalfPrecision, convolutions_in_order

    need_shared("weights", "lesrcnn_x2.pth")
    fsrcnn, _ = subpixel_network(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")).network)
    lesrcnn = models.load("lesrcnn", 2, weights("lesrcnn_x2.pth")).network
    order = convolutions_in_order(fsrcnn, 1)
    assert order[0] == "feature_extraction.0" and order[-1] == "deconv.conv" and len(order) == 8
    order = convolutions_in_order(lesrcnn, 3)
    assert (order[0], order[-1]) == ("head", "tail") and "sub_mean" not in order and "add_mean" not in order
    half = HalfPrecision(fsrcnn, ("deconv.conv",))
    assert isinstance(half.network.deconv.conv, Float32) and half.network.deconv.conv.module.weight.dtype == torch.float32
    assert half.network.feature_extraction[0].weight.dtype == torch.float16
    x = torch.from_numpy(held_out_batch("y")[:1])
    with torch.no_grad():
        assert float((half(x) - fsrcnn(x)).abs().max()) < 5e-3


def test_dsrnet_runs_as_its_gate_parts_and_tiles_share_the_whole_image_decision(tmp_path):
    """DSRNet ×2 whose gate flips between 48-pixel tiles of the butterfly image (``tests/gate_sensitive``): the
    program holds the four gate parts as methods; whole, it equals PyTorch; its tiles take the whole image's branch
    (each tile deciding alone does not); a batch takes each image's own branch; the manifest's word is checked."""
    from srdeploy import api
    from srdeploy.models.registry import architecture
    from srdeploy.models.torch_runner import TorchRunner
    from srdeploy.runtime import images
    from srdeploy.runtime.tiling import tiled_infer
    from tests.gate_sensitive import gate_sensitive_state

    radius = architecture("dsrnet").export.receptive_radius
    lr = images.read_rgb(need_shared("datasets", "Set5", "LR_bicubic", "X2", "butterflyx2.png"))
    network = models.load("dsrnet", 2, weights("dsrnet_x2.pth")).network
    state = gate_sensitive_state(network, torch.load(weights("dsrnet_x2.pth"), map_location="cpu", weights_only=True),
                                 torch.from_numpy(images.to_unit_float(lr)), radius)
    torch.save(state, tmp_path / "dsrnet_gate_sensitive.pth")
    folder = api.export_model("dsrnet", 2, target="executorch", weights=str(tmp_path / "dsrnet_gate_sensitive.pth"),
                              out=tmp_path, progress=False).artifacts[0]
    session = ExecuTorchSession(folder)
    assert session.has_global_gate and sorted(session.runner.methods) == ["branch0", "branch1", "gate_features",
                                                                          "gate_margin"]
    model = models.load("dsrnet", 2, tmp_path / "dsrnet_gate_sensitive.pth")
    x = images.to_unit_float(lr)[..., :160, :160]  # within the program's 320×320 bound
    whole, expected = session.infer(x), TorchRunner(model.network).infer(x)
    assert np.abs(whole - expected).max() <= 1e-4
    alone = tiled_infer(x, session.infer, 2, 48, radius, 8)
    assert np.abs(alone - whole).max() > 0.01  # each tile deciding alone takes another branch somewhere
    shared = tiled_infer(x, session.infer, 2, 48, radius, 8, gate=session.gate_split)
    assert np.abs(shared - whole).max() <= 1e-4
    crops = np.concatenate([x[..., :64, :64], x[..., -64:, -64:], x[..., :64, -64:]])
    assert np.abs(session.infer(crops) - TorchRunner(model.network).infer(crops)).max() <= 1e-4
    manifest = json.loads((folder / "srdeploy.json").read_text())
    manifest["metadata"]["global_gate"] = "false"
    from srdeploy.runtime.manifest import write_manifest

    write_manifest(folder, manifest, {"model.pte": (folder / "model.pte").read_bytes()})
    with pytest.raises(Exception, match="are not the forward method its manifest says"):
        ExecuTorchSession(folder)
