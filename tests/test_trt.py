"""TensorRT target without TensorRT: the build plan and its trtexec command line, the sidecar and the
refusal of foreign engines, the missing-TensorRT error, and the Jetson bundle (build.sh run against a
recording stand-in for trtexec, parity checked on ONNX Runtime). The engine build and run tests at the
end need ``import tensorrt`` and a GPU, and skip with that reason elsewhere."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from srdeploy import models
from srdeploy.calib.data import held_out_photo
from srdeploy.export.bundles.jetson import write_bundle
from srdeploy.export.onnx.onnx_export import to_onnx
from srdeploy.export.precision import export_precision
from srdeploy.export.trt.trt_plan import BuildPlan, Profile, default_profile, parse_shape, profile_from_args, settings_from_trtexec
from srdeploy.runtime.sessions.cuda import Cuda
from srdeploy.runtime.errors import SrDeployError
from srdeploy.models.torch_runner import TorchRunner
from srdeploy.runtime.sessions.tensorrt_sidecar import (
    BuildTarget,
    incompatibility,
    read_sidecar,
    update_sidecar,
    write_sidecar,
)
from tests.conftest import REPO, need_shared, weights


def _has_tensorrt_and_gpu() -> str | None:
    """None when TensorRT imports and a CUDA device answers, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT's Python package is not installed (import tensorrt failed)"
    try:
        Cuda()
    except SrDeployError as exc:
        return f"no usable GPU: {exc}"
    return None


NO_TRT = _has_tensorrt_and_gpu()


# ---- plan and trtexec ----------------------------------------------------------------------------

def test_default_profiles_cover_720p_and_1080p_frames():
    # LR sizes whose ×s output covers 1280×720 (opt) and 1920×1080 (max), rounded up; batch 1
    expected = {2: ((1, 3, 360, 640), (1, 3, 540, 960)), 3: ((1, 3, 240, 427), (1, 3, 360, 640)),
                4: ((1, 3, 180, 320), (1, 3, 270, 480))}
    for scale, (opt, high) in expected.items():
        profile = default_profile("lr", 3, scale)
        assert (profile.min, profile.opt, profile.max) == ((1, 3, 16, 16), opt, high)


def test_shape_arguments_are_checked():
    assert parse_shape("64x96", 1) == (1, 1, 64, 96) and parse_shape("2x3x8x8", 3) == (2, 3, 8, 8)
    for bad, reason in (("64", "HxW"), ("1x3x8", "HxW"), ("2x1x8x8", "the model takes 3"), ("0x8", "positive")):
        with pytest.raises(SrDeployError, match=reason):
            parse_shape(bad, 3)
    with pytest.raises(SrDeployError, match="min ≤ opt ≤ max"):
        profile_from_args("lr", 3, 2, "400x400", None, None)  # min above the default opt 360×640
    assert profile_from_args("lr", 3, 2, None, "128x128", "256x256").max == (1, 3, 256, 256)


def test_trtexec_command_line_for_a_strongly_typed_int8_build():
    plan = BuildPlan("int8", Profile("lr", (1, 3, 16, 16), (1, 3, 360, 640), (1, 3, 540, 960)))
    assert plan.trtexec_args("m.onnx", "m.engine") == [
        "--onnx=m.onnx", "--saveEngine=m.engine", "--minShapes=lr:1x3x16x16", "--optShapes=lr:1x3x360x640",
        "--maxShapes=lr:1x3x540x960", "--memPoolSize=workspace:1024", "--builderOptimizationLevel=3",
        "--timingCacheFile=timing.cache", "--stronglyTyped", "--skipInference",
    ]


def test_weak_builds_pin_the_float_kept_layers_and_allow_fp16_where_it_passed():
    """TensorRT 8.6 (weakly typed): FP16 may run only what the ONNX allows; INT8 adds FP16 for its float parts only
    where they passed the gate; the layers kept in FP32 are pinned (obey), and the trtexec line says the same."""
    profile = default_profile("lr", 1, 3)
    passed = {"precision": "int8", "fp16_float": json.dumps({"passed": True, "keep_fp32": ["conv_b", "conv_a"]})}
    failed = {"precision": "int8", "fp16_float": json.dumps({"passed": False, "keep_fp32": ["conv_a"]})}
    fp16 = {"precision": "fp16", "kept_float": json.dumps(["tail_conv"])}
    cases = [
        (passed, False, ["FP16", "INT8"], {"conv_a": "fp32", "conv_b": "fp32"}, False),
        (passed, True, [], {}, True),
        (failed, False, ["INT8"], {}, False),
        (failed, True, [], {}, False),
        (fp16, False, ["FP16"], {"tail_conv": "fp32"}, False),
        ({"precision": "int8"}, False, ["INT8"], {}, False),  # an INT8 ONNX not measured for FP16 float parts
    ]
    for metadata, strong, flags, pinned, fp16_onnx in cases:
        plan = BuildPlan.for_artifact(metadata, profile, strong)
        settings = settings_from_trtexec(plan.trtexec_args("a.onnx", "a.engine")[2:])
        assert settings == plan.settings()
        assert (settings["builder_flags"], settings["layer_precisions"], plan.fp16_float_onnx) == (flags, pinned, fp16_onnx)
    with pytest.raises(ValueError, match="only a preference"):
        settings_from_trtexec([*BuildPlan("fp32", profile).trtexec_args("a", "b")[2:], "--layerPrecisions=x:fp32"])


@pytest.mark.parametrize("strong", [True, False])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_trtexec_arguments_parse_back_into_the_builder_settings(precision, strong):
    plan = BuildPlan(precision, default_profile("lr", 1, 3), strong, workspace_mib=512, optimization_level=4)
    settings = settings_from_trtexec(plan.trtexec_args("a.onnx", "a.engine")[2:])
    assert settings == plan.settings()
    # precision comes from the ONNX when strongly typed; weak typing must name it; FP32 never uses TF32
    assert settings["builder_flags"] == ([] if strong or precision == "fp32" else [precision.upper()])
    assert settings["clear_tf32"] == (precision == "fp32")


# ---- sidecar ---------------------------------------------------------------------------------------

ORIN = BuildTarget("10.3.0", "Orin", "8.7")


def _engine(tmp_path: Path) -> Path:
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"serialized engine bytes")
    write_sidecar(engine, ORIN, precision="int8", metadata={"model": "lesrcnn"}, rebuild="bash build.sh int8")
    return engine


def test_sidecar_round_trip_and_refusal_of_a_foreign_engine(tmp_path):
    engine = _engine(tmp_path)
    record = read_sidecar(engine)
    assert record["target"] == vars(ORIN) and record["precision"] == "int8"
    assert incompatibility(record, ORIN) is None
    reason = incompatibility(record, BuildTarget("10.8.0", "NVIDIA H100 80GB HBM3", "9.0"))
    assert "TensorRT 10.3.0 on Orin (compute 8.7)" in reason and "TensorRT 10.8.0 on NVIDIA H100" in reason
    assert "TensorRT version, GPU, compute capability differ" in reason and "`bash build.sh int8`" in reason
    assert "GPU differ" in incompatibility(record, BuildTarget("10.3.0", "Xavier", "8.7"))
    update_sidecar(engine, parity={"passed": True})
    assert read_sidecar(engine)["parity"] == {"passed": True} and read_sidecar(engine)["precision"] == "int8"


def test_sidecar_must_describe_the_engine(tmp_path):
    engine = _engine(tmp_path)
    engine.write_bytes(b"another engine")
    with pytest.raises(SrDeployError, match="not the file its sidecar describes"):
        read_sidecar(engine)
    Path(f"{engine}.json").unlink()
    with pytest.raises(SrDeployError, match="has no sidecar"):
        read_sidecar(engine)


@pytest.mark.parametrize("here, differs", [
    (BuildTarget("10.3.1", "Orin", "8.7"), "TensorRT version"),  # a patch release is another engine format
    (BuildTarget("10.3.0", "Orin Nano", "8.7"), "GPU"),
    (BuildTarget("10.3.0", "Orin", "8.6"), "compute capability"),
])
def test_sidecar_refuses_each_difference_alone(tmp_path, here, differs):
    """One field crossed at a time: the refusal names exactly that field; the unchanged target runs."""
    record = read_sidecar(_engine(tmp_path))
    assert incompatibility(record, BuildTarget("10.3.0", "Orin", "8.7")) is None
    reason = incompatibility(record, here)
    assert f"({differs} differ; engines only run where they were built)" in reason
    assert reason.endswith("rebuild it here with `bash build.sh int8`")
    del record["rebuild"]
    assert incompatibility(record, here).endswith("rebuild it here with `srdeploy export --target trt`")


@pytest.mark.parametrize("damage, message", [
    (lambda side: side.write_text("{not json"), "is not valid JSON"),
    (lambda side: side.write_text(side.read_text().replace("srdeploy-trt-engine/1", "srdeploy-trt-engine/2")),
     "is not an srdeploy-trt-engine/1 record"),
])
def test_sidecar_that_is_not_ours_is_refused(tmp_path, damage, message):
    engine = _engine(tmp_path)
    damage(Path(f"{engine}.json"))
    with pytest.raises(SrDeployError, match=message):
        read_sidecar(engine)
    engine.unlink()
    with pytest.raises(SrDeployError, match=r"does not exist: build one with `srdeploy export --target trt`"):
        read_sidecar(engine)


@pytest.mark.skipif(NO_TRT is None, reason="TensorRT and a GPU are present: the missing-TensorRT path cannot run")
def test_engine_session_without_tensorrt_says_how_to_get_it(tmp_path):
    from srdeploy.runtime.opener import open_artifact

    with pytest.raises(SrDeployError) as error:
        open_artifact(_engine(tmp_path))
    message = str(error.value)
    assert "\n" not in message and ("pip install tensorrt" in message or "CUDA" in message)


def test_tensorrt_runtime_modules_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None; "
            "import runtime.sessions.tensorrt, runtime.sessions.cuda, runtime.sessions.tensorrt_sidecar, runtime.bundle_check, runtime.artifact")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_cuda_runtime_answers_or_says_why_not():
    try:
        cuda = Cuda()
    except SrDeployError as exc:  # no libcudart, or no driver/GPU: one line naming the failing call
        assert "\n" not in str(exc) and ("libcudart" in str(exc) or "CUDA call cudaSetDevice failed" in str(exc))
        return
    assert cuda.device_name() and cuda.compute_capability().replace(".", "").isdigit()


@pytest.mark.skipif(NO_TRT is None, reason="TensorRT and a GPU are present: the missing-TensorRT path cannot run")
def test_the_design_card_command_without_tensorrt_fails_in_one_line_and_writes_nothing(tmp_path):
    """`python cli.py export --model lesrcnn --target trt`, exactly as written, from another folder."""
    result = subprocess.run([sys.executable, str(REPO / "cli.py"), "export", "--model", "lesrcnn", "--target", "trt"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    if "TensorRT" in result.stderr:
        assert "pip install tensorrt" in result.stderr and "--target jetson" in result.stderr
    assert list(tmp_path.iterdir()) == []


# ---- Jetson bundle ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory, fsrcnn_int8):
    """An FSRCNN ×2 bundle with FP32, FP16 and INT8 (the session's INT8 export) and a small profile."""
    model = models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))
    fp16, _ = export_precision(model, "fp16", progress=False)
    artifacts = {"fp32": to_onnx(model), "fp16": fp16, "int8": fsrcnn_int8[0]}
    profile = Profile("lr", (1, 1, 16, 16), (1, 1, 96, 128), (1, 1, 128, 160))
    out = tmp_path_factory.mktemp("bundle") / "fsrcnn_x2_jetson"
    return write_bundle(out, "fsrcnn", 2, artifacts, profile, held_out_photo("y"), TorchRunner(model.network).infer)


def _fake_trtexec(folder: Path, strong: bool) -> Path:
    """A stand-in for trtexec that records its arguments (the command-line contract, not an engine)."""
    folder.mkdir()
    script = folder / "trtexec"
    help_text = "  --builderOptimizationLevel=N\n  --fp16\n  --int8\n" + ("  --stronglyTyped\n" if strong else "")
    script.write_text(f"""#!/usr/bin/env bash
if [ "$1" = "--help" ]; then printf '%s' "{help_text}"; exit 0; fi
n=$(ls "{folder}"/*.args 2>/dev/null | wc -l)
printf '%s\\n' "$@" > "{folder}/call$n.args"
for a in "$@"; do case "$a" in --saveEngine=*) : > "${{a#--saveEngine=}}" ;; esac; done
""")
    script.chmod(0o755)
    return script


def test_bundle_contents(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert set(manifest["precisions"]) == {"fp32", "fp16", "int8"}
    for precision, entry in manifest["precisions"].items():
        assert (bundle / entry["onnx"]).is_file() and entry["metadata"]["precision"] == precision
    assert {p.relative_to(bundle / "runtime").as_posix() for p in (bundle / "runtime").rglob("*.py")} >= {
        "sessions/tensorrt.py", "sessions/cuda.py", "bundle_check.py"}
    assert (bundle / "golden" / "golden.npz").is_file() and "bash build.sh" in (bundle / "README.md").read_text()
    assert subprocess.run(["bash", "-n", str(bundle / "build.sh")], capture_output=True).returncode == 0
    assert not list(bundle.parent.glob(".*")), "temporary folders left beside the bundle"


@pytest.mark.parametrize("strong", [True, False])
def test_build_sh_calls_trtexec_exactly_as_the_python_builder_plans(bundle, tmp_path, strong):
    trtexec = _fake_trtexec(tmp_path / "bin", strong)
    result = subprocess.run(["bash", str(bundle / "build.sh"), "--build-only"], capture_output=True, text=True,
                            env={**os.environ, "TRTEXEC": str(trtexec)})
    assert result.returncode == 0, result.stderr
    assert ("--stronglyTyped" if strong else "weakly typed") in result.stdout
    manifest = json.loads((bundle / "manifest.json").read_text())
    profile = Profile.from_dict(manifest["profile"])
    calls = [(tmp_path / "bin" / f"call{i}.args").read_text().split() for i in range(3)]
    typing = "strong" if strong else "weak"
    for args, (precision, entry) in zip(calls, manifest["precisions"].items(), strict=True):
        plan = BuildPlan.for_artifact(entry["metadata"], profile, strong)
        assert args[:2] == [f"--onnx={entry['build_onnx'][typing]}", f"--saveEngine={entry['engine']}"]
        assert settings_from_trtexec(args[2:]) == plan.settings()
        assert (bundle / entry["engine"]).is_file() and (bundle / entry["build_onnx"][typing]).is_file()
    int8 = manifest["precisions"]["int8"]
    fp16_float = json.loads(int8["metadata"]["fp16_float"])
    assert fp16_float["passed"]  # FSRCNN ×2: measured in the session's INT8 export
    if strong:  # the FP16 float parts are in the graph TensorRT reads
        graph = onnx.load(bundle / int8["build_onnx"]["strong"])
        assert graph.opset_import[0].version >= 19 and "--stronglyTyped" in calls[2]
        scales = {t.name: t.data_type for t in graph.graph.initializer}
        dq = [n for n in graph.graph.node if n.op_type == "DequantizeLinear"]
        assert dq and all(scales[n.input[1]] == onnx.TensorProto.FLOAT16 for n in dq if n.input[1] in scales)
    else:  # the portable INT8 graph, with FP16 allowed for its float parts
        assert int8["build_onnx"]["weak"] == int8["onnx"] and {"--int8", "--fp16"} <= set(calls[2])


def _bundle_check(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """The device check as a device runs it: from the bundle, with torch and PIL made unimportable."""
    code = ("import sys, runpy; sys.modules['torch'] = None; sys.modules['PIL'] = None; "
            "sys.argv = ['bundle_check', *sys.argv[1:]]; runpy.run_module('runtime.bundle_check', run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=bundle, capture_output=True, text=True, env=env)


def test_bundle_parity_passes_on_onnx_runtime_for_every_precision(bundle):
    result = _bundle_check(bundle, "--backend", "onnxruntime", "--runs", "2", "--warmup", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["precision"] for r in report["results"]] == ["fp32", "fp16", "int8"]
    for r in report["results"]:
        assert r["passed"] and len(r["parity"]) >= 4
        assert [t["bound"] for t in r["latency"]] == ["min", "opt", "max"] and r["latency"][2]["median_ms"] > 0
    worst = {r["precision"]: min(c["psnr"] for c in r["parity"].values()) for r in report["results"]}
    assert worst["fp32"] > 100 and worst["fp16"] > 70 and 35 < worst["int8"] < 70


def test_bundle_parity_passes_on_openvino_from_the_bundle_alone(bundle):
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install openvino")
    # FP32 and FP16: INT8 on OpenVINO depends on the CPU's int8 dot product (tests/test_openvino.py)
    result = _bundle_check(bundle, "--backend", "openvino", "--runs", "0", "--json", "fp32", "fp16")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["precision"] for r in report["results"]] == ["fp32", "fp16"]
    assert all(r["passed"] and len(r["parity"]) >= 4 for r in report["results"])


def test_bundle_check_fails_on_a_wrong_golden_output(bundle, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(bundle), str(broken)], check=True)
    with np.load(broken / "golden" / "golden.npz") as data:
        arrays = {k: data[k] for k in data.files}
    name = next(k for k in arrays if k.endswith(".output"))
    arrays[name] = arrays[name] * 0.98  # a 2 % brightness error, as a lost scale factor would give
    np.savez_compressed(broken / "golden" / "golden.npz", **arrays)
    manifest = json.loads((broken / "manifest.json").read_text())  # a self-consistent bundle that is wrong
    manifest["files"]["golden/golden.npz"] = hashlib.sha256((broken / "golden" / "golden.npz").read_bytes()).hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    result = _bundle_check(broken, "--backend", "onnxruntime", "--runs", "0", "fp32")
    assert result.returncode == 1 and "FAIL" in result.stdout


@pytest.mark.parametrize("name", ["onnx/fsrcnn_x2_fp16.onnx", "golden/golden.npz", "README.md"])
def test_a_damaged_bundle_file_is_refused_in_one_line(bundle, tmp_path, name):
    damaged = tmp_path / "damaged"
    subprocess.run(["cp", "-r", str(bundle), str(damaged)], check=True)
    data = bytearray((damaged / name).read_bytes())
    data[len(data) // 2] ^= 0x01
    (damaged / name).write_bytes(bytes(data))
    result = _bundle_check(damaged, "--backend", "onnxruntime", "--runs", "0")
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"error: bundle file {name} is damaged (its sha256 differs from manifest.json's): "
                                    "copy the bundle again, or re-export it (`srdeploy export --model fsrcnn")


def _bundle_upscale(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """The bundle's upscaler as a device runs it: from the bundle, with torch made unimportable."""
    code = ("import sys, runpy; sys.modules['torch'] = None; "
            "sys.argv = ['bundle_upscale', *sys.argv[1:]]; runpy.run_module('runtime.bundle_upscale', run_name='__main__')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=bundle, capture_output=True, text=True, env=env)


def test_the_bundle_upscales_a_folder_by_itself(bundle, tmp_path):
    """Tiled within the bundle's small profile (max 128×160 LR), equal to a whole-image run of the same ONNX."""
    from srdeploy.runtime import images, metrics
    from srdeploy.runtime.sessions.onnxruntime import OnnxSession
    from srdeploy.runtime.pipeline import upscale_rgb

    photo = (held_out_photo("rgb").transpose(1, 2, 0) * 255).round().astype(np.uint8)[:150, :200]
    (tmp_path / "in").mkdir()
    images.write_image(tmp_path / "in" / "a_photo.png", photo)
    (tmp_path / "in" / "b_broken.png").write_bytes(b"not a png")
    result = _bundle_upscale(bundle, str(tmp_path / "in"), str(tmp_path / "out"), "--backend", "onnxruntime",
                             "--precision", "fp32")
    assert result.returncode == 1, result.stderr
    assert "skipped" in result.stderr and "b_broken.png" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a_photo_x2.png"]
    whole = OnnxSession(bundle / "onnx" / "fsrcnn_x2_fp32.onnx").infer
    expected = upscale_rgb(photo[:64, :80], whole, "y")  # within the profile: one whole-image call
    tiled = images.read_rgb(tmp_path / "out" / "a_photo_x2.png")
    assert tiled.shape == (300, 400, 3)
    # away from the crop's own right and bottom edges (where the crop lacks the photo's context)
    assert metrics.psnr(tiled[:96, :128], expected[:96, :128]) >= 60


def test_the_bundle_names_its_own_build_command_for_a_missing_engine(bundle, tmp_path):
    fresh = tmp_path / "fresh"
    subprocess.run(["cp", "-r", str(bundle), str(fresh)], check=True)
    shutil.rmtree(fresh / "engines", ignore_errors=True)
    images_in = tmp_path / "in.png"
    from srdeploy.runtime import images

    images.write_image(images_in, np.zeros((20, 20, 3), np.uint8))
    result = _bundle_upscale(fresh, str(images_in), str(tmp_path / "out.png"), "--precision", "int8")
    assert result.returncode == 2 and result.stderr == (
        "error: engine engines/fsrcnn_x2_int8.engine is not built yet: run `bash build.sh int8` in this bundle "
        "(or use --backend onnxruntime)\n")
    assert not (tmp_path / "out.png").exists()


def test_cli_jetson_bundle_end_to_end(tmp_path, cli):
    weights("fsrcnn_x3.pth")
    out = tmp_path / "jetson"
    args = ["export", "--model", "fsrcnn", "--scale", "3", "--target", "jetson", "--precisions", "fp32,fp16",
            "--max-shape", "200x200", "--opt-shape", "100x100", "--out", str(out), "--json"]
    result = cli(*args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["artifacts"] == [str(out)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"]["max"] == [1, 1, 200, 200] and set(manifest["precisions"]) == {"fp32", "fp16"}
    assert _bundle_check(out, "--backend", "onnxruntime", "--runs", "0").returncode == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    result = cli(*args[:-3], "--out", str(tmp_path / "other"))
    assert result.returncode == 2 and "is not an srdeploy bundle" in result.stderr
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


# ---- real TensorRT: where it imports and a GPU exists --------------------------------------------

@pytest.mark.skipif(NO_TRT is not None, reason=str(NO_TRT))
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_build_and_parity_against_pytorch(precision, tmp_path):
    from srdeploy.runtime.sessions.tensorrt import TrtSession

    weights("fsrcnn_x2.pth")
    args = [sys.executable, "cli.py", "export", "--model", "fsrcnn", "--scale", "2", "--target", "trt",
            "--precision", precision, "--max-psnr-drop", "0.5", "--opt-shape", "64x64", "--max-shape", "128x128",
            "--out", str(tmp_path), "--json"]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    engine = Path(json.loads(result.stdout)["artifacts"][0])
    record = read_sidecar(engine)
    assert record["parity"]["passed"] and record["precision"] == precision
    session = TrtSession(engine, cuda_graphs=True)
    x = np.random.default_rng(0).random((1, 1, 40, 56), dtype=np.float32)
    assert np.array_equal(session.infer(x), session.infer(x))  # captured graph replays the same work
    with pytest.raises(SrDeployError, match="above the artifact's maximum"):
        session.infer(np.zeros((1, 1, 129, 64), np.float32))
    record["target"]["tensorrt_version"] = "0.0.0"
    Path(f"{engine}.json").write_text(json.dumps(record))
    with pytest.raises(SrDeployError, match="rebuild it here with"):
        TrtSession(engine)


@pytest.mark.skipif(NO_TRT is not None, reason=str(NO_TRT))
def test_dsrnet_engine_tiles_with_its_gate_part_engines(tmp_path):
    """DSRNet's engine comes with its four gate-part engines, checked composed at export; tiles through them equal
    the whole image."""
    from srdeploy.runtime import images, metrics
    from srdeploy.runtime.tiling import tiled_infer
    from srdeploy.runtime.sessions.tensorrt import TrtSession

    weights("dsrnet_x2.pth")
    args = [sys.executable, "cli.py", "export", "--model", "dsrnet", "--scale", "2", "--target", "trt", "--precision",
            "fp16", "--opt-shape", "64x64", "--max-shape", "128x128", "--out", str(tmp_path), "--json"]
    result = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    engine = Path(json.loads(result.stdout)["artifacts"][0])
    record = read_sidecar(engine)
    assert set(record["gate_parts"]) == {"gate_features", "gate_margin", "branch0", "branch1"}
    assert record["gate_parts_parity"]["passed"]
    session = TrtSession(engine)
    lr = images.read_rgb(need_shared("datasets", "Set5", "LR_bicubic", "X2", "butterflyx2.png"))
    x = images.to_unit_float(lr)
    whole = images.to_uint8(session.infer(x)[0].transpose(1, 2, 0))
    tiled = tiled_infer(x, session.infer, 2, 48, 19, 16, gate=session.gate_split)
    assert metrics.psnr(images.to_uint8(tiled[0].transpose(1, 2, 0)), whole) >= 60


class _FakeCudart:
    """CUDA's error model: a failing call's status stays the thread's last error until it is read; a stream
    in capture mode stays so until cudaStreamEndCapture."""

    def __init__(self, device_count_status: int = 0):
        self.last_error, self.capturing, self.calls = 0, False, []
        self.device_count_status = device_count_status
        self.cudaGetErrorString = lambda status: {1: b"invalid argument", 35: b"CUDA driver version is insufficient",
                                                   900: b"operation not permitted when stream is capturing"}[status]

    def _fail(self, status):
        self.last_error = status
        return status

    def cudaGetDeviceCount(self, count):
        if self.device_count_status:
            return self._fail(self.device_count_status)
        count._obj.value = 1
        return 0

    def cudaSetDevice(self, device):
        return 0

    def cudaFree(self, pointer):
        return self._fail(1)

    def cudaStreamSynchronize(self, stream):
        return self._fail(900) if self.capturing else 0

    def cudaStreamBeginCapture(self, stream, mode):
        self.calls.append(("begin", mode.value))
        self.capturing = True
        return 0

    def cudaStreamEndCapture(self, stream, graph):
        self.calls.append(("end",))
        self.capturing = False
        return 901  # cudaErrorStreamCaptureInvalidated: the illegal call above broke it

    def cudaGraphDestroy(self, graph):
        self.calls.append(("destroy",))
        return 0

    def cudaGetLastError(self):
        status, self.last_error = self.last_error, 0
        return status


def test_a_failed_cuda_call_is_reported_and_not_left_for_the_next_library():
    """Seen on the first H100 run: a cudaFree error left as the last error made PyTorch's next kernel fail."""
    library = _FakeCudart()
    with pytest.raises(SrDeployError, match=r"^CUDA call cudaFree failed with error 1 \(invalid argument\)$"):
        Cuda(0, library).free(0x10)
    assert library.last_error == 0


def test_a_failed_capture_is_ended_thread_local_and_raised():
    library = _FakeCudart()
    cuda = Cuda(0, library)
    with pytest.raises(SrDeployError, match="cudaStreamSynchronize failed with error 900"):
        cuda.capture(7, lambda: cuda.synchronize(7))
    assert library.calls == [("begin", 1), ("end",)] and not library.capturing and library.last_error == 0


def test_the_loader_skips_a_runtime_the_driver_cannot_run(monkeypatch):
    from srdeploy.runtime.sessions import cuda as runtime_cuda

    libraries = {"libcudart.so.13": _FakeCudart(device_count_status=35), "libcudart.so.12": _FakeCudart()}

    def fake_cdll(name):
        if name not in libraries:
            raise OSError(name)
        return libraries[name]

    monkeypatch.setattr(runtime_cuda, "_candidates", lambda: ["missing.so", *libraries])
    monkeypatch.setattr(runtime_cuda.ctypes, "CDLL", fake_cdll)
    assert runtime_cuda.load_cudart() is libraries["libcudart.so.12"]
    libraries["libcudart.so.12"].device_count_status = 35
    with pytest.raises(SrDeployError, match=r"^no usable CUDA runtime \(libcudart.so.13: error 35 \(CUDA driver "
                                            r"version is insufficient\); libcudart.so.12: error 35"):
        runtime_cuda.load_cudart()


class _FakeSessionCuda:
    """What TrtSession asks of runtime.sessions.cuda.Cuda, recorded; ``capture`` fails like a real illegal capture."""

    def __init__(self, capture_fails: bool, host_fails: bool = False):
        self.capture_fails, self.host_fails, self.calls = capture_fails, host_fails, []

    def malloc(self, nbytes):
        self.calls.append("malloc")
        return 1000

    def malloc_host(self, nbytes):
        if self.host_fails:
            raise SrDeployError("CUDA call cudaMallocHost failed with error 2 (out of memory)")
        return 2000

    def free(self, pointer):
        self.calls.append(f"free {pointer}")

    def synchronize(self, stream):
        self.calls.append("sync")

    def capture(self, stream, enqueue):
        self.calls.append("capture")
        if self.capture_fails:
            raise SrDeployError("CUDA call cudaStreamEndCapture failed with error 901 (capture invalidated)")
        enqueue()
        return 42

    def launch(self, graph, stream):
        self.calls.append(f"launch {graph}")

    def destroy_graph(self, graph):
        self.calls.append(f"destroy {graph}")


class _FakeContext:
    def __init__(self, cuda, accepts_address=True):
        self.cuda, self.accepts_address = cuda, accepts_address

    def execute_async_v3(self, stream):
        self.cuda.calls.append("execute")
        return True

    def set_tensor_address(self, name, address):
        return self.accepts_address


def _graph_session(cuda, context=None):
    from srdeploy.runtime.sessions.tensorrt import TrtSession

    session = object.__new__(TrtSession)
    session.path, session.stream, session.cuda_graphs, session.cuda = Path("m.engine"), 5, True, cuda
    session.context = context or _FakeContext(cuda)
    session._graphs, session.graph_fallbacks = {}, {}
    return session


@pytest.mark.parametrize("fails", [False, True])
def test_cuda_graphs_capture_once_or_fall_back_to_plain_enqueues(fails):
    cuda = _FakeSessionCuda(capture_fails=fails)
    session = _graph_session(cuda)
    if fails:
        with pytest.warns(UserWarning, match=r"no CUDA graph for input \(1, 3, 8, 8\).*plain enqueues"):
            session._enqueue((1, 3, 8, 8))
    else:
        session._enqueue((1, 3, 8, 8))
    session._enqueue((1, 3, 8, 8))
    if fails:  # settle, sync, failed capture, then plain enqueues from then on
        assert cuda.calls == ["execute", "sync", "capture", "execute", "execute"]
        assert "capture invalidated" in session.graph_fallbacks[(1, 3, 8, 8)]
    else:  # settle, sync, capture (the enqueue recorded once), then replays
        assert cuda.calls == ["execute", "sync", "capture", "execute", "launch 42", "launch 42"]
    session._drop_graphs()
    assert cuda.calls[-1] == ("execute" if fails else "destroy 42")


def test_pinned_allocation_failure_frees_the_device_allocation():
    from srdeploy.runtime.sessions.tensorrt import _Buffer

    cuda = _FakeSessionCuda(capture_fails=False, host_fails=True)
    with pytest.raises(SrDeployError, match="cudaMallocHost"):
        _Buffer(cuda).reserve(1024)
    assert cuda.calls == ["malloc", "free 1000"]
