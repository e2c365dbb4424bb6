"""Core ML target: the MIL executor's op semantics against PyTorch, the Linux numerical check of saved
packages for every model (×2 and one other scale), broken conversions that the check must catch, the saved
spec (names, types, sizes, precision, metadata), compression's measured cost, the gate's failure path, the
iOS bundle's Swift file (parsed, names matched with the package), and Core ML's own predict on macOS."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("coremltools", reason="coremltools is not installed: pip install -e '.[coreml]'")

from srdeploy import models  # noqa: E402
from srdeploy.export.coreml import mil_numpy
from srdeploy.export.coreml.coreml_export import CoreMLOptions, CoreMLShapes, convert, traceable
from srdeploy.export.coreml.coreml_package import export_package, verification_inputs
from srdeploy.export.coreml.coreml_verify import load_program, macos_predict, used_parameters, verify_package
from srdeploy.models.loading import SrModel  # noqa: E402
from srdeploy.models.registry import default_checkpoint  # noqa: E402
from srdeploy.runtime import images  # noqa: E402
from srdeploy.runtime.opener import open_artifact  # noqa: E402
from srdeploy.runtime.sessions.coreml import CoreMLSession  # noqa: E402
from srdeploy.runtime.errors import SrDeployError  # noqa: E402
from tests.conftest import REPO, need_shared, parse_errors, weights  # noqa: E402
from tests.test_models import split_gate_checkpoint  # noqa: E402

RANDOM = {"lesrcnn_b": "lesrcnn_multiscale_random.pth", "esrgcnn": "esrgcnn_multiscale_random.pth",
          "cfsrcnn": "cfsrcnn_x{s}_random.pth", "dsrnet": "dsrnet_x{s}_random.pth"}
SMALL = CoreMLShapes(min=(16, 16), default=(48, 48), max=(128, 128))


def checkpoint(name: str, scale: int):
    official = default_checkpoint(name, scale)
    if official is not None:
        return weights(official.filename)
    return need_shared("fixtures", "reference", RANDOM[name].format(s=scale))


def saved(model, options: CoreMLOptions, path) -> str:
    convert(model, options).save(str(path))
    return str(path)


# --- the executor's op semantics, against PyTorch -------------------------------------------------------

def test_conv_matches_torch_with_padding_stride_dilation_groups():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 11, 13)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    ours = mil_numpy.conv(x, w, b, strides=(2, 1), pad_type="custom", pad=np.array([1, 2, 0, 1]), dilations=(1, 2), groups=2)
    theirs = F.conv2d(F.pad(torch.tensor(x), (0, 1, 1, 2)), torch.tensor(w), torch.tensor(b), stride=(2, 1),
                      dilation=(1, 2), groups=2).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("stride,padding", [(2, 4), (3, 4), (4, 0)])
def test_conv_transpose_matches_torch(stride, padding):
    rng = np.random.default_rng(stride)
    x, w, b = rng.standard_normal((1, 5, 7, 6)), rng.standard_normal((5, 2, 9, 9)), rng.standard_normal(2)
    ours = mil_numpy.conv_transpose(x, w, b, strides=(stride, stride), pad_type="custom", pad=np.array([padding] * 4))
    theirs = F.conv_transpose2d(torch.tensor(x), torch.tensor(w), torch.tensor(b), stride=stride, padding=padding).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-10)


def test_pixel_shuffle_split_and_slice_follow_torch():
    x = np.arange(2 * 18 * 3 * 4, dtype=np.float64).reshape(2, 18, 3, 4)
    np.testing.assert_array_equal(mil_numpy.pixel_shuffle(x, 3), F.pixel_shuffle(torch.tensor(x), 3).numpy())
    parts = mil_numpy.split(x, axis=1, split_sizes=np.array([4, 14]))
    assert [p.shape[1] for p in parts] == [4, 14] and np.array_equal(parts[1], x[:, 4:])
    sliced = mil_numpy.slice_by_index(x, begin=[0, 1, 0, 0], end=[0, 2, 0, 0], begin_mask=[True, False, True, True],
                                      end_mask=[True, False, True, True], squeeze_mask=[False, True, False, False])
    np.testing.assert_array_equal(sliced, x[:, 1])


def test_activations_and_nearest_upsampling_follow_torch():  # the ops of networks of your own (tests/own_networks.py)
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 4))
    t = torch.tensor(x)
    np.testing.assert_allclose(mil_numpy.tanh(x), torch.tanh(t).numpy(), rtol=1e-12)
    np.testing.assert_allclose(mil_numpy.sigmoid(x), torch.sigmoid(t).numpy(), rtol=1e-12)
    np.testing.assert_array_equal(mil_numpy.leaky_relu(x, 0.25), F.leaky_relu(t, 0.25).numpy())
    np.testing.assert_array_equal(mil_numpy.upsample_nearest_neighbor(x, 3, 2),
                                  F.interpolate(t, scale_factor=(3, 2), mode="nearest").numpy())
    with pytest.raises(SrDeployError, match="integers only"):
        mil_numpy.upsample_nearest_neighbor(x, 1.5, 1.5)


# --- the Linux numerical check on every model: ×2 and one other scale ------------------------------------

@pytest.mark.parametrize("name,scale", [
    ("fsrcnn", 2), ("fsrcnn", 4), ("lesrcnn", 2), ("lesrcnn", 3), ("lesrcnn_b", 2), ("lesrcnn_b", 4),
    ("cfsrcnn", 2), ("cfsrcnn", 3), ("esrgcnn", 2), ("esrgcnn", 4), ("dsrnet", 2), ("dsrnet", 3),
])
def test_saved_package_passes_the_linux_check(name, scale, tmp_path):
    model = models.load(name, scale, checkpoint(name, scale))
    options = CoreMLOptions(shapes=SMALL)
    package = saved(model, options, tmp_path / "m.mlpackage")
    net = traceable(model, image_io=False)
    inputs = verification_inputs(SMALL, model.info.colour)  # crops of a held-out photo: real images
    report = verify_package(package, net, inputs)
    assert report.passed, report.problems
    assert report.constants.checked == len(used_parameters(net, torch.from_numpy(next(iter(inputs.values())))))
    for case in report.cases.values():
        assert case.fp16_psnr_vs_checkpoint >= 50.0  # the acceptance; the check itself demands 60
        assert case.fp32_max_abs <= 1e-4


def test_dsrnet_gate_decisions_match_on_both_branches(tmp_path):
    batch, path = split_gate_checkpoint(tmp_path)
    model = models.load("dsrnet", 2, path)
    package = saved(model, CoreMLOptions(shapes=SMALL), tmp_path / "d.mlpackage")
    net = traceable(model, image_io=False)
    with torch.no_grad():
        dsrnet = model.network
        picks = dsrnet.decide(dsrnet.web[1](dsrnet.web[0](_trunk_input(dsrnet, batch))).mean((2, 3)))
    assert set(picks.tolist()) == {False, True}
    report = verify_package(package, net, {f"image{i}": batch[i:i + 1].numpy() for i in range(len(batch))})
    assert report.passed, report.problems
    assert all(case.decisions_equal for case in report.cases.values())


def _trunk_input(model, x):
    x1 = model.reb[0](model.sub_mean(x))
    x2 = model.reb[1](x1)
    return x2 + model.reb[3](model.reb[2](x2))


# --- broken conversions fail the check ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def lesrcnn_x2():
    return models.load("lesrcnn", 2, weights("lesrcnn_x2.pth"))


def test_check_catches_a_corrupted_weight(lesrcnn_x2, tmp_path):
    package = saved(lesrcnn_x2, CoreMLOptions(shapes=SMALL), tmp_path / "m.mlpackage")
    blob = tmp_path / "m.mlpackage" / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x40  # one bit of one FP16 weight in the middle of the file
    blob.write_bytes(bytes(data))
    net = traceable(lesrcnn_x2, image_io=False)
    report = verify_package(package, net, verification_inputs(SMALL, "rgb"))
    assert not report.passed
    assert report.constants.missing and report.constants.unexplained


def test_check_catches_a_swapped_colour_order(lesrcnn_x2, tmp_path):
    class BGR(torch.nn.Module):  # the classic conversion bug: the app's channel order differs from training
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x.flip(1))

    package = saved(SrModel(BGR(lesrcnn_x2.network), lesrcnn_x2.info), CoreMLOptions(shapes=SMALL), tmp_path / "m.mlpackage")
    report = verify_package(package, traceable(lesrcnn_x2, image_io=False), verification_inputs(SMALL, "rgb"))
    assert report.constants.checked > 0 and not report.constants.missing  # the weights are all there…
    assert not report.passed and any("FP32-mode" in p for p in report.problems)  # …the outputs are not


def test_check_catches_a_lost_input_scale(tmp_path):
    import coremltools as ct

    model = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    net = traceable(model, image_io=True)
    traced = torch.jit.trace(net, torch.rand(1, 1, 16, 16))
    broken = ct.convert(traced, inputs=[ct.ImageType(name="lr", shape=SMALL.ct_shape(1), scale=1.0,  # not 1/255
                                                     color_layout=ct.colorlayout.GRAYSCALE)],
                        outputs=[ct.ImageType(name="sr", color_layout=ct.colorlayout.GRAYSCALE)],
                        convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16, skip_model_load=True)
    broken.save(str(tmp_path / "b.mlpackage"))
    report = verify_package(tmp_path / "b.mlpackage", net, verification_inputs(SMALL, "y"), image_io=True)
    assert not report.passed


def test_a_failed_check_writes_nothing(lesrcnn_x2, tmp_path, monkeypatch):
    import srdeploy.export.coreml.coreml_package as package_module

    def flipped(model, options):
        class Flip(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = model.network

            def forward(self, x):
                return self.net(x.flip(1))
        return convert(SrModel(Flip(), model.info), options)

    monkeypatch.setattr(package_module, "convert", flipped)
    with pytest.raises(SrDeployError, match="fails its check.*nothing written"):
        export_package(lesrcnn_x2, CoreMLOptions(shapes=SMALL), tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# --- the exported package: spec, metadata, compression, gate ------------------------------------------------

def test_cli_export_writes_a_flexible_fp16_package_with_metadata(tmp_path, cli):
    need_shared("weights", "lesrcnn_x2.pth")
    result = cli("export", "--model", "lesrcnn", "--scale", "2", "--target", "coreml", "--json",
                  "--min-shape", "16x16", "--opt-shape", "64x96", "--max-shape", "256x320", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    spec, function = load_program(out["artifacts"][0])
    (lr,), (sr,) = spec.description.input, spec.description.output
    assert (lr.name, sr.name) == ("lr", "sr")
    array = lr.type.multiArrayType
    assert array.dataType == array.FLOAT32 and list(array.shape) == [1, 3, 64, 96]
    ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
    assert ranges == [(1, 1), (3, 3), (16, 256), (16, 320)]
    weights_fp16 = [op.inputs["weight"].val.dtype for op in function.operations if op.op_type == "conv"]
    assert weights_fp16 and all(d == np.float16 for d in weights_fp16)  # FP16 precision
    meta = dict(spec.description.metadata.userDefined)
    assert meta["srdeploy.model"] == "lesrcnn" and meta["srdeploy.scale"] == "2"
    assert meta["srdeploy.checkpoint_sha256"] == default_checkpoint("lesrcnn", 2).sha256
    assert json.loads(meta["srdeploy.verification"])["passed"] is True
    assert abs(float(meta["srdeploy.validation_drop_db"])) <= 0.01
    assert "LESRCNN" in spec.description.metadata.shortDescription and spec.description.metadata.author
    assert out["report"]["drop_db"] == pytest.approx(float(meta["srdeploy.validation_drop_db"]), abs=1e-4)


def test_enumerated_image_io_package(tmp_path):
    model = models.load("fsrcnn", 3, weights("fsrcnn_x3.pth"))
    options = CoreMLOptions(shapes=CoreMLShapes(enumerated=((48, 64), (32, 32))), image_io=True)
    path, report = export_package(model, options, tmp_path)
    spec, _ = load_program(path)
    image = spec.description.input[0].type.imageType
    assert image.colorSpace == image.GRAYSCALE
    assert [(s.height, s.width) for s in image.enumeratedSizes.sizes] == [(48, 64), (32, 32)]
    assert spec.description.output[0].type.WhichOneof("Type") == "imageType"
    assert report.verification["passed"] and set(report.verification["cases"]) == {"photo_32x32", "photo_48x64"}
    with pytest.raises(SrDeployError, match="takes images"):
        open_artifact(path, run=False)


# --- the runtime's Core ML session and bench on it ----------------------------------------------------------

@pytest.fixture(scope="module")
def fsrcnn_package(tmp_path_factory):
    model = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    return export_package(model, CoreMLOptions(shapes=CoreMLShapes(enumerated=((32, 48),))), tmp_path_factory.mktemp("pk"))[0]


def test_coreml_session_reads_the_package_anywhere(fsrcnn_package):
    session = open_artifact(fsrcnn_package, run=False)
    assert isinstance(session, CoreMLSession) and session.input_name == "lr"
    assert (session.metadata["model"], session.scale, session.colour, session.channels) == ("fsrcnn", 2, "y", 1)
    assert session.accepts((1, 1, 32, 48)) and not session.accepts((1, 1, 64, 64))
    with pytest.raises(SrDeployError, match="above the artifact's maximum"):
        session.infer(np.zeros((1, 1, 32, 64), np.float32))


def test_coreml_session_refuses_a_damaged_or_foreign_folder(fsrcnn_package, tmp_path):
    import shutil

    damaged = tmp_path / "damaged.mlpackage"
    shutil.copytree(fsrcnn_package, damaged)
    spec = next(damaged.rglob("*.mlmodel"))
    spec.write_bytes(spec.read_bytes()[: len(spec.read_bytes()) // 3])
    with pytest.raises(SrDeployError, match="damaged"):
        open_artifact(damaged)
    (tmp_path / "photos.mlpackage").mkdir()
    with pytest.raises(SrDeployError, match="not a Core ML package"):
        open_artifact(tmp_path / "photos.mlpackage")


def test_coreml_package_with_flipped_weight_bytes_is_refused_in_one_line(fsrcnn_package, tmp_path):
    import shutil

    damaged = tmp_path / "damaged.mlpackage"
    shutil.copytree(fsrcnn_package, damaged)
    weights_file = damaged / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(weights_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights_file.write_bytes(bytes(data))
    images.write_image(tmp_path / "in.png", np.zeros((32, 48, 3), np.uint8))
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "upscale", str(tmp_path / "in.png"),
                             str(tmp_path / "out.png"), "--artifact", str(damaged)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr == (
        f"error: artifact {damaged} is damaged (its weights no longer match the sha256 recorded at export): "
        "re-export it with `srdeploy export --target coreml`\n")
    assert not (tmp_path / "out.png").exists()


@pytest.mark.skipif(platform.system() == "Darwin", reason="on macOS Core ML runs the package (next tests)")
def test_coreml_session_says_it_needs_macos(fsrcnn_package, tmp_path):
    with pytest.raises(SrDeployError, match="only on macOS"):
        open_artifact(fsrcnn_package)
    images.write_image(tmp_path / "in.png", np.zeros((32, 48, 3), np.uint8))
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "upscale", str(tmp_path / "in.png"),
                             str(tmp_path / "out.png"), "--artifact", str(fsrcnn_package)], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1  # no coremltools notices before it
    assert result.stderr.startswith("error: Core ML runs models only on macOS")
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "bench", str(fsrcnn_package), "--sizes", "48x32",
                             "--json"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    assert (row["backend"], row["status"]) == ("coreml", "skipped") and "only on macOS" in row["reason"]


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML runs models only on macOS (coremltools has no Linux runtime)")
def test_coreml_session_matches_pytorch_and_bench_times_it(fsrcnn_package):
    x = verification_inputs(CoreMLShapes(enumerated=((32, 48),)), "y")["photo_32x48"]
    model = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    with torch.inference_mode():
        reference = model(torch.from_numpy(x)).numpy()
    mse = float(np.mean((open_artifact(fsrcnn_package).infer(x) - reference) ** 2))
    assert 10 * np.log10(1 / mse) >= 50.0
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "bench", str(fsrcnn_package), "--sizes", "48x32",
                             "--runs", "3", "--json"], capture_output=True, text=True, cwd=REPO)
    (row,) = json.loads(result.stdout)["results"]
    assert (row["backend"], row["status"]) == ("coreml", "ok") and row["median_ms"] > 0


def test_linear8_compression_reports_its_cost(lesrcnn_x2, tmp_path):
    path, report = export_package(lesrcnn_x2, CoreMLOptions(shapes=SMALL, compression="linear8"), tmp_path)
    fp16_path, fp16_report = export_package(lesrcnn_x2, CoreMLOptions(shapes=SMALL), tmp_path)
    assert report.verification["constants"]["compressed"]  # compressed tensors were checked against the checkpoint
    assert report.size_mb < 0.6 * fp16_report.size_mb
    assert 0.0 < report.drop_db <= 0.1, report.drop_db  # measured: 0.098 dB on the held-out crops
    assert report.drop_db > fp16_report.drop_db


def test_compression_over_budget_fails_with_its_cost(lesrcnn_x2, tmp_path):
    with pytest.raises(SrDeployError, match=r"loses \d+\.\d+ dB .* nothing written"):
        export_package(lesrcnn_x2, CoreMLOptions(shapes=SMALL, compression="palette4"), tmp_path / "out")
    assert not any((tmp_path / "out").iterdir())


def test_bad_coreml_options_fail_before_any_work(tmp_path, cli):
    for flags, message in ((["--precision", "int8"], "--compress linear8"), (["--shapes", "64"], "not HxW"),
                           (["--shapes", "4x4"], "at least 8")):
        result = cli("export", "--model", "lesrcnn", "--scale", "2", "--target", "coreml", *flags, "--out", str(tmp_path / "o"))
        assert result.returncode == 2 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (tmp_path / "o").exists()


# --- the iOS bundle ---------------------------------------------------------------------------------------------

def _swift_errors(source: str) -> list[str]:
    pytest.importorskip("tree_sitter")
    return parse_errors(pytest.importorskip("tree_sitter_swift"), source.encode())


def _swift(name: str, scale: int, options: CoreMLOptions, gate_channels: int = 0) -> tuple[object, str]:
    from srdeploy.export.bundles.ios_bundle import swift_model
    from srdeploy.export.bundles.ios_swift import swift_source

    torch.manual_seed(0)
    model = models.load(name, scale, weights(f"{name}_x{scale}.pth"))
    swift = swift_model(model, options, f"{name}_x{scale}", gate_channels)
    return swift, swift_source(swift)


def _top_level_names(source: str) -> list[str]:
    tree_sitter, tree_sitter_swift = pytest.importorskip("tree_sitter"), pytest.importorskip("tree_sitter_swift")
    tree = tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language())).parse(source.encode())
    return [node.child_by_field_name("name").text.decode() for node in tree.root_node.children
            if node.child_by_field_name("name") is not None]


def test_generated_swift_that_is_cut_short_fails_the_syntax_check():
    _, source = _swift("lesrcnn", 2, CoreMLOptions())
    assert _swift_errors(source) == []
    assert _swift_errors(source[: len(source) // 2])


def test_two_swift_bundles_share_one_module():
    """A ×2 and a ×4 bundle in one app: every type is nested in its class, so nothing is declared twice."""
    _, x2 = _swift("lesrcnn", 2, CoreMLOptions())
    _, x4 = _swift("lesrcnn", 4, CoreMLOptions(fp16_io=True, shapes=CoreMLShapes(enumerated=((64, 64), (96, 128)))))
    module = x2 + "\n" + x4
    assert _swift_errors(module) == []
    assert _top_level_names(module) == ["LesrcnnX2Upscaler", "LesrcnnX4Upscaler"]


def test_swift_tiles_at_the_default_shape_and_reads_outputs_by_type_and_strides():
    swift, source = _swift("lesrcnn", 2, CoreMLOptions(shapes=CoreMLShapes(min=(16, 16), default=(200, 320), max=(400, 640))))
    assert swift.default_size == (200, 320) and "rangeWindow = Size(height: 200, width: 320)" in source
    assert "dataPointer" not in source
    for read in ("case .float16:\n            array.withUnsafeBufferPointer(ofType: Float16.self)",
                 "case .float32:\n            array.withUnsafeBufferPointer(ofType: Float.self)",
                 "throw UpscaleError.unsupportedOutputType(array.dataType)", "let strides = array.strides.map"):
        assert read in source
    assert source.count("try Self.withValues(") == 3  # the output of every tile, the gate's features, its margin
    assert source.count("CIContext()") == 1 and "private let context = CIContext()" in source


def test_swift_tiles_a_whole_image_gate_with_its_parts():
    dsrnet, source = _swift("dsrnet", 2, CoreMLOptions(), gate_channels=64)
    assert not dsrnet.whole_image_only and "gateChannels = 64" in source and _swift_errors(source) == []
    assert ('["gate_features", "gate_margin", "branch0", "branch1"].map { try load("dsrnet_x2_\\($0)") }' in source
            and '"gate_mean": MLFeatureValue(multiArray: mean)' in source and "return branch1 ? gateParts[3] : gateParts[2]" in source)
    lesrcnn, other = _swift("lesrcnn", 2, CoreMLOptions())
    assert "gateChannels = 0" in other and "wholeImageOnly = false" in other and _swift_errors(other) == []


def test_ios_bundle_swift_matches_the_package(tmp_path, cli):
    need_shared("weights", "fsrcnn_x2.pth")
    result = cli("export", "--model", "fsrcnn", "--scale", "2", "--target", "ios", "--shapes", "64x64,96x128",
                  "--out", str(tmp_path / "ios"))
    assert result.returncode == 0, result.stderr
    bundle = tmp_path / "ios"
    swift_files, packages = list(bundle.glob("*.swift")), list(bundle.glob("*.mlpackage"))
    assert len(swift_files) == 1 and len(packages) == 1
    source = swift_files[0].read_text()
    assert _swift_errors(source) == []
    spec, _ = load_program(packages[0])
    names = (spec.description.input[0].name, spec.description.output[0].name)
    assert f'inputName = "{names[0]}"' in source and f'outputName = "{names[1]}"' in source
    assert 'forResource: name, withExtension: "mlmodelc"' in source and f'model = try load("{packages[0].stem}")' in source
    sizes = [tuple(s.shape[2:]) for s in spec.description.input[0].type.multiArrayType.enumeratedShapes.shapes]
    assert sizes == [(64, 64), (96, 128)]
    assert "Size(height: 64, width: 64), Size(height: 96, width: 128)" in source
    assert "scale = 2" in source and "overlap = 8" in source and "channels = 1" in source
    readme = (bundle / "README.md").read_text()
    assert "64×64, 96×128" in readme and "held-out photo crops" in readme and packages[0].name in readme


def test_ios_bundle_refuses_a_foreign_folder(tmp_path, cli):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "keep.txt").write_text("mine")
    result = cli("export", "--model", "fsrcnn", "--scale", "2", "--target", "ios", "--out", str(tmp_path / "photos"))
    assert result.returncode == 2 and "not an srdeploy iOS bundle" in result.stderr
    assert (tmp_path / "photos" / "keep.txt").read_text() == "mine"


# --- Core ML itself (macOS only) -----------------------------------------------------------------------------------

@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML runs models only on macOS (coremltools has no Linux runtime)")
def test_macos_predict_matches_pytorch(lesrcnn_x2, tmp_path):
    package = saved(lesrcnn_x2, CoreMLOptions(shapes=SMALL), tmp_path / "m.mlpackage")
    x = verification_inputs(SMALL, "rgb")["photo_37x53"]
    with torch.inference_mode():
        reference = lesrcnn_x2(torch.from_numpy(x)).numpy()
    mse = float(np.mean((macos_predict(package, x) - reference) ** 2))
    assert 10 * np.log10(1 / mse) >= 50.0
