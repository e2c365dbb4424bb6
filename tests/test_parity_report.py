"""The parity suite's torch-free half (runtime/parity.py): which inputs it probes, the crops it cuts from a
photo, and the report's verdict, JSON and text. Fast: the mutation run's test command
(benchmarks/mutation/parity.toml)."""
from __future__ import annotations

import numpy as np
import pytest

from srdeploy.runtime.compare import TOLERANCES, Comparison
from srdeploy.runtime.parity import ParityReport, check_cases, photo_crop, probe_inputs
from srdeploy.runtime.precision import Precision

BOUNDS = {"min": [1, 3, 8, 10], "max": [4, 3, 64, 72]}
SHAPES = {"odd_17x23": (1, 3, 17, 23), "batch3_32x40": (3, 3, 32, 40), "min_bound": (1, 3, 8, 10),
          "max_batch": (4, 3, 8, 10), "max_height": (1, 3, 64, 10), "max_width": (1, 3, 8, 72)}


def test_probe_inputs_cover_odd_sizes_a_batch_and_each_bound_alone():
    inputs = probe_inputs(3, BOUNDS)
    assert {name: x.shape for name, x in inputs.items()} == SHAPES
    for x in inputs.values():
        assert x.dtype == np.float32 and 0 <= x.min() and x.max() < 1 and x.std() > 0.25  # uniform noise
    assert {x.shape for x in probe_inputs(1, {"min": [2, 1, 4, 6], "max": [2, 1, 9, 7]}).values()} == {
        (1, 1, 17, 23), (2, 1, 32, 40), (2, 1, 4, 6), (1, 1, 9, 6), (1, 1, 4, 7)}  # a batch of at most max N
    again, other = probe_inputs(3, BOUNDS), probe_inputs(3, BOUNDS, seed=1)
    assert all(np.array_equal(inputs[k], again[k]) and not np.array_equal(inputs[k], other[k]) for k in inputs)


def test_probe_inputs_from_a_photo_are_crops_of_it():
    photo = np.random.default_rng(5).random((3, 40, 50), dtype=np.float32)
    inputs = probe_inputs(3, BOUNDS, photo=photo)
    assert {name: x.shape for name, x in inputs.items()} == SHAPES
    crop = inputs["batch3_32x40"]
    for image in crop:  # each image of the batch a window of the photo (32×40 fits in 40×50)
        assert any(np.array_equal(image, photo[:, t : t + 32, l : l + 40]) for t in range(9) for l in range(11))
    assert not np.array_equal(crop[0], crop[1])  # a fresh window per image
    tall = inputs["max_height"][0]  # 64 rows of a 40-row photo: mirrored below, at some column
    assert any(np.array_equal(tall, _mirrored(photo, 64, 10, 0, left)) for left in range(41))


def _mirrored(photo: np.ndarray, height: int, width: int, top: int, left: int) -> np.ndarray:
    """Rows/columns past the photo's end mirrored (…, n−1, n−1, n−2, …), indexed by hand."""
    rows = [r if r < photo.shape[1] else 2 * photo.shape[1] - 1 - r for r in range(top, top + height)]
    cols = [c if c < photo.shape[2] else 2 * photo.shape[2] - 1 - c for c in range(left, left + width)]
    return photo[:, rows][:, :, cols]


def test_a_crop_larger_than_the_photo_is_the_mirrored_photo():
    photo = np.arange(2 * 3 * 4, dtype=np.float64).reshape(2, 3, 4)
    crop = photo_crop(photo, 5, 7, np.random.default_rng(0))
    assert crop.dtype == np.float32 and crop.flags.c_contiguous
    assert np.array_equal(crop, _mirrored(photo, 5, 7, 0, 0))


def test_every_window_position_is_drawn_including_the_last():
    photo = np.arange(5 * 5, dtype=np.float32).reshape(1, 5, 5)
    rng = np.random.default_rng(0)
    seen = {tuple(photo_crop(photo, 2, 2, rng)[0, 0]) for _ in range(400)}
    assert seen == {tuple(photo[0, t, l : l + 2]) for t in range(4) for l in range(4)}  # tops and lefts 0..3


def _case(max_rel=0.0, psnr=99.0, off=0.0, nonfinite=0) -> Comparison:
    return Comparison((1, 3, 8, 8), max_rel, max_rel, max_rel / 10, psnr, off, nonfinite)


def test_the_report_fails_exactly_the_cases_over_the_tolerance():
    tolerance = TOLERANCES[Precision.FP16]
    report = ParityReport("a.onnx", Precision.FP16, tolerance,
                          {"good": _case(max_rel=5e-3, psnr=60.0, off=0.1), "bad": _case(psnr=59.9)})
    assert report.violations == {"bad": ["PSNR 59.9 dB < 60 dB"]} and not report.passed
    del report.cases["bad"]
    assert report.violations == {} and report.passed
    assert ParityReport("a.onnx", Precision.FP16, tolerance).passed  # no cases: nothing violated


def test_the_report_as_json():
    tolerance = TOLERANCES[Precision.INT8]
    report = ParityReport("q.onnx", Precision.INT8, tolerance, {"x": _case(nonfinite=2)},
                          {"name": "Set5", "psnr_artifact": 36.0, "psnr_reference": 36.1, "delta_db": -0.1},
                          backend="OpenVINO f32", executed={"int8_mac_fraction": 0.8})
    d = report.as_dict()
    assert d == {"artifact": "q.onnx", "precision": "int8", "passed": False,
                 "tolerance": {"max_rel": 0.5, "min_psnr": 35.0, "max_off_by_level": 25.0},
                 "violations": {"x": ["2 NaN/Inf values"]}, "cases": {"x": _case(nonfinite=2).as_dict()},
                 "dataset": report.dataset, "backend": "OpenVINO f32", "executed": {"int8_mac_fraction": 0.8}}


def test_the_report_as_text():
    tolerance = TOLERANCES[Precision.FP32]
    report = ParityReport("m.onnx", Precision.FP32, tolerance, {"ok": _case(), "far": _case(max_rel=2e-4)},
                          {"name": "Set5", "psnr_artifact": 36.12345, "psnr_reference": 36.1, "delta_db": 0.02345},
                          executed_summary="OpenVINO runs 99.2% of conv MACs in u8/i8")
    lines = report.text().splitlines()
    assert lines[0] == "OpenVINO runs 99.2% of conv MACs in u8/i8"
    assert lines[1] == "parity of m.onnx (fp32) against PyTorch FP32"
    assert [c.strip() for c in lines[2].split("|")[1:-1]] == [
        "case", "output", "max abs", "max rel", "mean abs", "PSNR dB", "% >1 level", "NaN/Inf", "status"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[4:6]}
    assert rows == {"ok": ["1×3×8×8", "0.00e+00", "0.00e+00", "0.00e+00", "99.0", "0.000", "0", "ok"],
                    "far": ["1×3×8×8", "2.00e-04", "2.00e-04", "2.00e-05", "99.0", "0.000", "0", "FAIL"]}
    assert lines[6:] == ["dataset Set5: PSNR vs ground truth 36.123 dB (artifact) vs 36.100 dB (PyTorch): Δ +0.0234 dB",
                         "FAIL far: max rel 2.00e-04 > 1e-04", "FAIL"]
    del report.cases["far"]
    report.dataset, report.executed_summary = {}, ""
    assert report.text().splitlines()[0].startswith("parity of") and report.text().endswith("\nPASS")


def test_check_cases_compares_each_output_with_its_own_reference():
    cases = {"a": (np.full((1, 1, 2, 2), 0.5), np.full((1, 1, 4, 4), 1.0)),
             "b": (np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 4, 6)))}
    report = check_cases(lambda x: np.repeat(np.repeat(x, 2, axis=2), 2, axis=3),
                         cases, ParityReport("x", Precision.FP32, TOLERANCES[Precision.FP32]))
    assert list(report.cases) == ["a", "b"]
    assert report.cases["a"].shape == (1, 1, 4, 4) and report.cases["a"].max_abs == pytest.approx(0.5)
    assert report.cases["b"].max_abs == 0.0 and report.violations == {"a": ["max rel 5.00e-01 > 1e-04",
                                                                          "PSNR 6.0 dB < 80 dB",
                                                                          "100.000% off by >1 level > 0.0%"]}
