"""OpenVINO: the session against ONNX Runtime, the executed-precision report against the export's own claim,
the export's gate on OpenVINO, IR that verify themselves, and the CLI around them."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, weights

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install -e '.[dev]' installs it")

from srdeploy.export.onnx.onnx_export import save, to_onnx
from srdeploy.export.openvino.openvino_export import export_ir, write_ir
from srdeploy.runtime import cpu  # noqa: E402
from srdeploy.runtime.sessions import openvino as openvino_backend  # noqa: E402
from srdeploy.runtime.opener import open_artifact  # noqa: E402
from srdeploy.runtime.errors import SrDeployError  # noqa: E402
from srdeploy.runtime.sessions.onnxruntime import OnnxSession  # noqa: E402
from srdeploy.runtime.sessions.openvino import OpenVinoSession  # noqa: E402


@pytest.fixture(scope="module")
def fsrcnn():
    from srdeploy import models
    return models.load("fsrcnn", 2, weights("fsrcnn_x2.pth"))


@pytest.fixture(scope="module")
def fp32_onnx(fsrcnn, tmp_path_factory):
    return save(to_onnx(fsrcnn), tmp_path_factory.mktemp("onnx") / "fsrcnn_x2_fp32.onnx")


@pytest.fixture(scope="module")
def fp32_ir(fsrcnn, tmp_path_factory):
    path, report, measured = export_ir(fsrcnn, "fp32", tmp_path_factory.mktemp("ir"), progress=False)
    return path, report, measured


@pytest.fixture(scope="module")
def int8_ir(fsrcnn_int8, fsrcnn, tmp_path_factory):
    proto, report = fsrcnn_int8
    return write_ir(proto, report, fsrcnn.info, "int8", tmp_path_factory.mktemp("int8_ir"), progress=False)


def test_session_matches_onnx_runtime_on_any_size(fp32_onnx):
    session, reference = OpenVinoSession(fp32_onnx), OnnxSession(fp32_onnx)
    rng = np.random.default_rng(0)
    for shape in ((1, 1, 17, 23), (2, 1, 40, 32)):  # dynamic H, W and batch in one compiled model
        x = rng.random(shape, dtype=np.float32)
        got, want = session.infer(x), reference.infer(x)
        assert got.shape == (shape[0], 1, 2 * shape[2], 2 * shape[3])
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert session.compiled_precision == "f32"
    with pytest.raises(SrDeployError, match="below the artifact's minimum"):
        session.infer(np.zeros((1, 1, 4, 4), np.float32))


def test_session_records_the_precision_openvino_compiled_for(fp32_onnx):
    session = OpenVinoSession(fp32_onnx, "bf16")
    native = openvino_backend.cpu_supports("bf16")
    assert session.compiled_precision == ("bf16" if native else "f32")  # read back from the compiled model
    with pytest.raises(SrDeployError, match="choose one of f32, bf16, f16"):
        OpenVinoSession(fp32_onnx, "int8")


def test_second_open_reads_the_compile_cache(fp32_onnx, tmp_path, monkeypatch):
    monkeypatch.setenv("SRDEPLOY_CACHE_DIR", str(tmp_path / "cache" / "checkpoints"))
    cache = tmp_path / "cache" / "openvino"
    assert openvino_backend.compile_cache_dir() == cache
    OpenVinoSession(fp32_onnx)
    blobs = {p: p.stat().st_mtime_ns for p in cache.glob("*.blob")}
    assert len(blobs) == 1
    OpenVinoSession(fp32_onnx)
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.blob")} == blobs  # read, not compiled and written again
    OpenVinoSession(fp32_onnx, cache=False)
    assert len(list(cache.glob("*.blob"))) == 1


def test_executed_precisions_confirm_the_int8_share_the_export_claims(fsrcnn_int8, tmp_path):
    proto, report = fsrcnn_int8
    session = OpenVinoSession(save(proto, tmp_path / "fsrcnn_x2_int8.onnx"))
    executed = session.executed_precisions()
    # OpenVINO's compiled model, read back, against the export's own MAC count (two independent countings)
    assert executed.qdq_mac_fraction == pytest.approx(report.int8_mac_fraction, abs=1e-4)
    assert executed.int8_mac_fraction == pytest.approx(report.int8_mac_fraction, abs=1e-3)
    total = sum(c.macs_per_output_pixel for c in executed.convs)
    recorded = float(session.metadata["macs_per_output_pixel"])
    assert total == pytest.approx(recorded, rel=1e-6)
    assert "u8/i8" in executed.summary() and "f32 inference precision" in executed.summary()


def test_float_artifact_executes_no_integer_convolution(fp32_onnx):
    executed = OpenVinoSession(fp32_onnx).executed_precisions()
    assert executed.int8_mac_fraction == 0.0 and executed.qdq_mac_fraction is None
    assert {c.precision for c in executed.convs} == {"f32"}


def test_ir_carries_the_metadata_and_the_measurement(fp32_ir, fp32_onnx):
    path, report, measured = fp32_ir
    assert path.suffix == ".xml" and path.with_suffix(".bin").is_file()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    session = open_artifact(path)
    assert isinstance(session, OpenVinoSession)
    assert session.metadata["precision"] == "fp32" and session.metadata["model"] == "fsrcnn"
    assert json.loads(session.metadata["openvino_report"])["inference_precision"] == "f32"
    assert abs(measured["drop_db"]) <= 1e-3 and measured["int8_executed_mac_fraction"] == 0.0
    assert measured["subpixel_deconvolutions"] == 1 and not measured["gate_as_select"]
    x = np.random.default_rng(1).random((1, 1, 24, 30), dtype=np.float32)
    want = OnnxSession(fp32_onnx).infer(x)
    assert np.abs(session.infer(x) - want).max() <= 1e-4 * np.abs(want).max()


def test_export_gate_refuses_and_writes_nothing(fsrcnn, fp32_ir, tmp_path):
    # FP16 weights cost a few thousandths of a dB: a 0 dB limit refuses them, a limit above the cost passes
    with pytest.raises(SrDeployError, match=r"FP16 fsrcnn ×2 on OpenVINO .* over the 0.0 dB limit: nothing written"):
        export_ir(fsrcnn, "fp16", tmp_path / "refused", max_drop=0.0, progress=False)
    assert list((tmp_path / "refused").iterdir()) == []
    path, report, measured = export_ir(fsrcnn, "fp16", tmp_path / "passed", max_drop=0.05, progress=False)
    assert 0 < measured["drop_db"] < 0.05
    assert path.with_suffix(".bin").stat().st_size < 0.55 * fp32_ir[0].with_suffix(".bin").stat().st_size  # FP16


@pytest.mark.parametrize("damage", ["bin byte", "xml byte", "missing bin", "foreign"])
def test_damaged_or_foreign_ir_is_one_line_error(fp32_ir, fp32_onnx, tmp_path, damage):
    source = fp32_ir[0]
    xml, weights_file = tmp_path / "model.xml", tmp_path / "model.bin"
    xml.write_bytes(source.read_bytes())
    weights_file.write_bytes(source.with_suffix(".bin").read_bytes())
    if damage == "bin byte":
        data = bytearray(weights_file.read_bytes())
        data[len(data) // 2] ^= 1
        weights_file.write_bytes(bytes(data))
        expected = "is damaged"
    elif damage == "xml byte":
        xml.write_text(xml.read_text().replace('stride', 'strade', 1))
        expected = "is damaged"
    elif damage == "missing bin":
        weights_file.unlink()
        expected = "has no weights file model.bin"
    else:  # an IR not written by srdeploy
        ov.save_model(ov.convert_model(str(fp32_onnx)), str(xml))
        expected = "carries no srdeploy digest"
    with pytest.raises(SrDeployError, match=expected):
        OpenVinoSession(xml)
    done = subprocess.run([sys.executable, "cli.py", "parity", str(xml), "--json"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and expected in done.stderr


def test_cli_parity_on_openvino_reports_executed_precisions(fp32_onnx):
    done = subprocess.run([sys.executable, "cli.py", "parity", str(fp32_onnx), "--backend", "openvino", "--json"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["passed"] and report["backend"] == "OpenVINO f32"
    assert report["executed"]["int8_mac_fraction"] == 0.0 and len(report["executed"]["convs"]) == 8


def test_backend_flag_is_checked(fp32_ir):
    with pytest.raises(SrDeployError, match="runs .onnx artifacts"):
        open_artifact(fp32_ir[0], backend="onnxruntime")
    done = subprocess.run([sys.executable, "cli.py", "eval", "--artifact", "x.onnx", "--dataset", "d",
                           "--inference-precision", "bf16"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "--inference-precision is an OpenVINO setting" in done.stderr


def test_int8_dot_product_from_the_cpu_flags():
    assert cpu.int8_dot({"avx2", "fma"}) == "pairwise-int16"
    assert cpu.int8_dot({"avx2", "avx512f", "avx512bw"}) == "pairwise-int16"  # Skylake-SP: no VNNI
    assert cpu.int8_dot({"avx2", "avx_vnni"}) == "vnni"
    assert cpu.int8_dot({"avx512f", "avx512_vnni"}) == "vnni"
    assert cpu.int8_dot({"avx512_vnni", "amx_tile", "amx_int8"}) == "amx"


def test_int8_ir_on_this_cpu_is_gated_on_what_openvino_computes(int8_ir, fsrcnn_int8, fsrcnn, tmp_path):
    """FSRCNN ×2's INT8 graph (0.07 dB on ONNX Runtime) passes OpenVINO's gate on any CPU with 80 % of its MACs
    in u8/i8. Without VNNI that takes the IR's channel pair order: the same graph in the source order saturates
    int16 pairs and loses 0.49 dB on the held-out crops (AVX2 EPYC), which the gate refuses naming the cause."""
    proto, report = fsrcnn_int8
    path, gated, measured = int8_ir
    assert gated.drop_db <= 0.1 and measured["int8_executed_mac_fraction"] >= 0.8
    assert measured["pair_reordered_tensors"] >= 1
    assert json.loads(OpenVinoSession(path).metadata["openvino_report"])["int8_dot"] == cpu.int8_dot()
    if cpu.int8_dot() == "pairwise-int16":
        from srdeploy.export.openvino import openvino_export

        unordered = tmp_path / "unordered"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(openvino_export, "pair_order_form", lambda graph, crops: (graph, 0))
            with pytest.raises(SrDeployError, match=r"INT8 fsrcnn ×2 on OpenVINO .*int16 saturation.*--precision fp32"):
                write_ir(proto, report, fsrcnn.info, "int8", unordered, progress=False)
        assert list(unordered.iterdir()) == []


def test_speed_targets_from_artifacts_alone(fp32_onnx, fp32_ir, int8_ir, tmp_path):
    """``benchmarks.openvino_targets`` on FSRCNN ×2's three artifacts: Set5 through both, the executed share, the
    verdicts for this CPU's int8 dot product (speed is the machine's; only its record is checked here)."""
    from conftest import need_shared
    from srdeploy.benchmarks import openvino_targets

    folder = tmp_path / "artifacts"
    folder.mkdir()
    for source in (fp32_onnx, fp32_ir[0], fp32_ir[0].with_suffix(".bin"), int8_ir[0], int8_ir[0].with_suffix(".bin")):
        (folder / source.name).symlink_to(source)
    datasets = need_shared("datasets", "Set5").parent
    assert openvino_targets.main([str(folder), "--datasets", str(datasets), "--cores", "1", "--out", str(tmp_path),
                                  "--machine", "here"]) == 0
    report = json.loads((tmp_path / "openvino_targets_here.json").read_text())
    (row,) = report["rows"]
    assert row["model"] == "fsrcnn_x2" and len(report["cores"]) == 1
    assert 36.0 < row["set5_int8_db"] < row["set5_fp32_db"] and row["set5_drop_db"] <= 0.1
    assert row["int8_executed"] >= 0.8
    limit = 0.9 if cpu.int8_dot() == "pairwise-int16" else 0.7
    assert row["verdicts"][f"INT8 ≤ {limit}× ORT FP32"] == (row["vs_ort_fp32"]["OpenVINO INT8"] <= limit)
    assert row["vs_ort_fp32"]["ONNX Runtime FP32"] == 1.0 and all(ms > 0 for ms in row["median_ms"].values())
    assert "fsrcnn_x2" in (tmp_path / "openvino_targets_here.md").read_text()


def test_int8_without_vnni_warns_unless_measured_on_such_a_cpu(monkeypatch, recwarn):
    from pathlib import Path

    measured_on = {dot: {"precision": "int8", "openvino_report": json.dumps({"int8_dot": dot})}
                   for dot in ("vnni", "pairwise-int16")}
    monkeypatch.setattr(cpu, "int8_dot", lambda flags=None: "pairwise-int16")
    with pytest.warns(UserWarning, match="measured on ONNX Runtime: check it here with `srdeploy parity"):
        openvino_backend._warn_if_unvalidated({"precision": "int8"}, Path("m.onnx"))
    with pytest.warns(UserWarning, match="measured on a vnni CPU"):
        openvino_backend._warn_if_unvalidated(measured_on["vnni"], Path("m.xml"))
    recwarn.clear()
    openvino_backend._warn_if_unvalidated(measured_on["pairwise-int16"], Path("m.xml"))
    openvino_backend._warn_if_unvalidated({"precision": "fp32"}, Path("m.xml"))
    monkeypatch.setattr(cpu, "int8_dot", lambda flags=None: "vnni")
    openvino_backend._warn_if_unvalidated({"precision": "int8"}, Path("m.onnx"))
    assert not recwarn.list


def test_cli_upscale_with_the_ir_matches_onnx_runtime(fp32_ir, fp32_onnx, tmp_path):
    from conftest import need_shared
    from srdeploy.runtime.images import read_rgb

    photo = sorted(need_shared("datasets", "Set5", "LR_bicubic", "X2").iterdir())[0]
    outputs = {}
    for name, extra in (("ir", [str(fp32_ir[0])]), ("ort", [str(fp32_onnx)]),
                        ("onnx-on-openvino", [str(fp32_onnx), "--backend", "openvino"])):
        out = tmp_path / f"{name}.png"
        done = subprocess.run([sys.executable, "cli.py", "upscale", str(photo), str(out), "--tile", "64", "--artifact",
                               *extra], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        outputs[name] = read_rgb(out).astype(int)
    assert outputs["ir"].shape[:2] == tuple(2 * s for s in read_rgb(photo).shape[:2])
    assert np.abs(outputs["ir"] - outputs["ort"]).max() <= 1  # FP32 on both: at most a rounding apart
    # the IR computes the deconvolution as a sub-pixel convolution (export/subpixel.py): a rounding apart
    assert np.abs(outputs["ir"] - outputs["onnx-on-openvino"]).max() <= 1
    assert np.abs(outputs["onnx-on-openvino"] - outputs["ort"]).max() <= 1


BF16_NATIVE = pytest.mark.skipif(not openvino_backend.cpu_supports("bf16"),
                                 reason="needs a CPU that computes bf16 (AVX-512 BF16 or AMX): this one does not")


@BF16_NATIVE
def test_bf16_ir_is_gated_computed_and_checked_in_bf16(tmp_path):
    """``--precision bf16`` on OpenVINO: the FP32 graph, recorded to compute in bfloat16, gated on held-out crops
    (LESRCNN ×2: within 0.1 dB; measured −0.06 dB, a gain, on an AMX Xeon), opened in bf16, parity at the bf16
    tolerance."""
    from srdeploy import api

    result = api.export_model("lesrcnn", 2, target="openvino", precision="bf16", out=tmp_path,
                              weights=str(weights("lesrcnn_x2.pth")), progress=False)
    path, = result.artifacts
    assert path.name == "lesrcnn_x2_bf16.xml" and abs(result.details["openvino"]["drop_db"]) <= 0.1
    assert result.details["openvino"]["inference_precision"] == "bf16"
    session = OpenVinoSession(path)
    assert session.metadata["precision"] == "bf16" and session.compiled_precision == "bf16"
    assert OpenVinoSession(path, "f32").compiled_precision == "f32"  # still an FP32 graph
    report = api.parity(path, progress=False)
    assert report.passed and report.backend == "OpenVINO bf16" and report.tolerance.max_rel == 0.03


def test_bf16_is_refused_where_the_cpu_cannot_compute_it_and_on_other_targets(monkeypatch, tmp_path):
    from srdeploy import api
    from srdeploy.export.openvino import openvino_export

    monkeypatch.setattr(openvino_export, "cpu_supports", lambda precision: False)
    with pytest.raises(SrDeployError, match=r"^--precision bf16 is computed by OpenVINO in bfloat16, which this CPU has "
                                            r"no native support for \(AVX-512 BF16 or AMX\)"):
        api.export_model("fsrcnn", 2, target="openvino", precision="bf16", out=tmp_path,
                         weights=str(weights("fsrcnn_x2.pth")), progress=False)
    with pytest.raises(SrDeployError, match=r"^--precision bf16 is not one --target onnx writes: choose --precision "
                                            r"fp32, fp16 or int8$"):
        api.export_model("fsrcnn", 2, precision="bf16", out=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []
