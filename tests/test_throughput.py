"""Throughput mode (`upscale --throughput`): several images in flight at once, the same files as one at a time;
OpenVINO's requests run from several threads; the refusals are one line."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from srdeploy import models
from srdeploy.export.onnx.onnx_export import export_onnx
from tests.conftest import run_cli, weights


@pytest.fixture(scope="module")
def fsrcnn_onnx(tmp_path_factory):
    return export_onnx(models.load("fsrcnn", 2, weights("fsrcnn_x2.pth")),
                       tmp_path_factory.mktemp("throughput") / "fsrcnn_x2.onnx")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    photo = data.astronaut()
    for i in range(5):  # five crops of different sizes, one not an image
        Image.fromarray(photo[i * 40:i * 40 + 90 + 7 * i, i * 30:i * 30 + 120]).save(folder / f"crop_{i}.png")
    (folder / "notes.png").write_text("not an image")
    return folder


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_folder_in_throughput_mode_is_the_same_files(fsrcnn_onnx, photos, tmp_path):
    """ONNX Runtime, a thread per image in flight: the same bytes as one image at a time, the bad file named and
    the others written."""
    one = run_cli("upscale", str(photos), str(tmp_path / "one"), "--artifact", str(fsrcnn_onnx), "--tile", "48")
    many = run_cli("upscale", str(photos), str(tmp_path / "many"), "--artifact", str(fsrcnn_onnx), "--tile", "48",
                   "--throughput")
    assert one.returncode == many.returncode == 1, many.stderr
    assert "notes.png" in many.stderr and len(_files(tmp_path / "many")) == 5
    assert _files(tmp_path / "many") == _files(tmp_path / "one")


def test_openvino_requests_from_several_threads_equal_one_at_a_time(fsrcnn_onnx):
    """OpenVINO's infer requests are not thread-safe: each thread gets its own, so frames in flight at once come
    back as each alone would (before: one shared request, results of one frame in another's output)."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install openvino (the dev extra has it)")
    from srdeploy.runtime.sessions.openvino import OpenVinoSession

    rng = np.random.default_rng(0)
    inputs = [rng.random((1, 1, 40 + 8 * i, 56), dtype=np.float32) for i in range(8)]
    alone = OpenVinoSession(fsrcnn_onnx, cache=False, throughput=True)
    assert alone.in_flight >= 1
    expected = [alone.infer(x) for x in inputs]
    with ThreadPoolExecutor(4) as threads:
        for _ in range(3):
            together = list(threads.map(alone.infer, inputs))
            assert all(np.array_equal(a, b) for a, b in zip(expected, together))


@pytest.mark.parametrize("extra, message", [
    (("--engine", "ray"), "--throughput is for a local run"),
])
def test_throughput_refusals_are_one_line(fsrcnn_onnx, photos, tmp_path, extra, message):
    result = run_cli("upscale", str(photos), str(tmp_path / "out"), "--artifact", str(fsrcnn_onnx), "--throughput",
                     *extra)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out").exists()


def test_omp_num_threads_caps_onnx_runtime_and_openvino(fsrcnn_onnx, monkeypatch):
    """ONNX Runtime's, OpenVINO's and ncnn's PyPI builds ignore OMP_NUM_THREADS (ncnn's check: test_ncnn.py);
    srdeploy's sessions take it as their thread count (two processes at once on 2 cores, LESRCNN ×2 on ONNX Runtime:
    7.2 s each with its 2 spinning threads, 5.5 s with 1)."""
    from srdeploy.runtime.sessions.onnxruntime import OnnxSession
    from srdeploy.runtime.sessions.openvino import compile_config

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert compile_config()["INFERENCE_NUM_THREADS"] == 1
    assert OnnxSession(fsrcnn_onnx)._options.intra_op_num_threads == 1
    assert OnnxSession(fsrcnn_onnx, threads=2)._options.intra_op_num_threads == 2  # --threads wins
    for unset in ("", "0", "four"):
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        assert OnnxSession(fsrcnn_onnx)._options.intra_op_num_threads == 0  # ONNX Runtime's own default
        assert "INFERENCE_NUM_THREADS" not in compile_config()
