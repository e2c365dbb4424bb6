"""The tiling arithmetic on a NumPy network whose receptive radius is known exactly: a (2r+1)² box sum with
zero padding, then nearest ×s upsampling. On integer-valued inputs every sum is exact in float32, so a tiled
run equals the whole-image run bit for bit when the context margin covers the radius, and differs when it
does not. Fast (no model, no artifact): the mutation run of runtime/tiling.py uses these tests."""
from __future__ import annotations

import numpy as np
import pytest

from srdeploy.runtime.global_gate import GateSplit
from srdeploy.runtime.tiling import tiled_infer, whole_image_mean, windowed_infer

RADIUS, SCALE = 3, 2


def box(x: np.ndarray, radius: int = RADIUS) -> np.ndarray:
    """Sum over the (2r+1)² neighbourhood, zero outside the image: a network of receptive radius r."""
    h, w = x.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (radius, radius), (radius, radius)))
    out = np.zeros_like(x)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out += padded[:, :, dy:dy + h, dx:dx + w]
    return out


def network(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(box(x), SCALE, axis=2), SCALE, axis=3)


class Recorder:
    """``network`` that records each input's H×W and refuses inputs under ``min_size``."""

    def __init__(self, min_size: int = 1):
        self.shapes: list[tuple[int, int]] = []
        self.min_size = min_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        assert min(x.shape[2:]) >= self.min_size, f"input {x.shape} under the minimum {self.min_size}"
        self.shapes.append(x.shape[2:])
        return network(x)


def image(h: int = 37, w: int = 29, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 16, (1, 2, h, w)).astype(np.float32)


@pytest.mark.parametrize("tile, overlap", [(8, 3), (8, 4), (5, 3), (16, 7), (1, 3)])
def test_tiled_equals_whole_when_the_margin_covers_the_radius(tile, overlap):
    x = image()
    run = Recorder()
    tiled = tiled_infer(x, run, SCALE, tile, overlap)
    assert tiled.dtype == np.float32 and tiled.shape == (1, 2, 37 * SCALE, 29 * SCALE)
    np.testing.assert_array_equal(tiled, network(x))
    # one call per tile, row by row, each the tile with its margin on both sides clipped at the border
    windows = lambda n: [min(s + tile + overlap, n) - max(s - overlap, 0) for s in range(0, n, tile)]  # noqa: E731
    assert run.shapes == [(h, w) for h in windows(37) for w in windows(29)]
    assert all(h <= tile + 2 * overlap and w <= tile + 2 * overlap for h, w in run.shapes)


@pytest.mark.parametrize("overlap", [0, 1, 2])
def test_a_margin_under_the_radius_shows_seams(overlap):
    x = image()
    assert not np.array_equal(tiled_infer(x, network, SCALE, 8, overlap), network(x))


@pytest.mark.parametrize("size", [(8, 8), (5, 3), (1, 1)])
def test_an_image_within_one_tile_is_one_call(size):
    x = image(*size)
    run = Recorder()
    np.testing.assert_array_equal(tiled_infer(x, run, SCALE, 8, 3), network(x))
    assert run.shapes == [size]


@pytest.mark.parametrize("tile", [0, -1, -8])
def test_tile_zero_or_less_is_the_whole_image(tile):
    x = image()
    run = Recorder()
    np.testing.assert_array_equal(tiled_infer(x, run, SCALE, tile, 3), network(x))
    assert run.shapes == [(37, 29)]


def test_single_pixel_tiles_are_not_widened_by_default():
    x = image(5, 4)
    run = Recorder()
    tiled_infer(x, run, SCALE, 1, 0)
    assert run.shapes == [(1, 1)] * 20


@pytest.mark.parametrize("min_size", [12, 16, 29])
def test_edge_windows_widen_to_the_artifact_minimum(min_size):
    """37 = 4·8 + 5: the last tile row has a core of 5 and, with margin 1, a window of 6 < the minimum."""
    x = image()
    run = Recorder(min_size)
    np.testing.assert_array_equal(tiled_infer(x, run, SCALE, 8, RADIUS, min_size=min_size), network(x))
    assert min(min(s) for s in run.shapes) == min_size  # widened exactly to the minimum, no further
    assert max(max(s) for s in run.shapes) <= max(8 + 2 * RADIUS, min_size + 1)  # both sides widen by one
    natural = {n: [min(s + 8 + RADIUS, n) - max(s - RADIUS, 0) for s in range(0, n, 8)] for n in (37, 29)}
    expected = [(h, w) for h in natural[37] for w in natural[29]]
    for (h, w), (nh, nw) in zip(run.shapes, expected, strict=True):  # a window under the minimum grows to it
        for size, plain, length in ((h, nh, 37), (w, nw, 29)):
            assert size == plain if plain >= min_size else size in (min_size, min_size + 1) or size == length


def test_a_minimum_over_the_image_size_stops_at_the_image():
    x = image(6, 40)
    run = Recorder(1)
    np.testing.assert_array_equal(tiled_infer(x, run, SCALE, 8, RADIUS, min_size=30), network(x))
    assert {h for h, _ in run.shapes} == {6} and min(w for _, w in run.shapes) == 30


def test_whole_image_mean_runs_each_tile_core_once():
    x = image(5, 4)
    shapes = []
    mean = whole_image_mean(x, lambda part: shapes.append(part.shape[2:]) or box(part, 0), 1, 0)
    assert shapes == [(1, 1)] * 20  # single pixels: no widening by default
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(2, 3)), rtol=1e-12)


def test_whole_image_mean_is_the_mean_of_the_whole_image():
    x = image(41, 23)
    expected = box(x).astype(np.float64).mean(axis=(2, 3))
    for tile, overlap in [(8, 3), (5, 4), (100, 3), (7, 3)]:
        got = whole_image_mean(x, box, tile, overlap)
        assert got.shape == (1, 2)
        np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_the_gate_decision_is_taken_once_on_the_whole_image():
    """A network that adds 100 where the image's mean box sum is over a threshold, else nothing: tiles whose own
    mean is on the other side of the threshold must still follow the whole image."""
    x = image(40, 40)
    x[:, :, :, 20:] = 0  # the right half dark: its tiles alone decide the other way
    threshold = box(x).mean() * 0.99
    decisions = []

    def decide(mean: np.ndarray) -> np.ndarray:
        decisions.append(mean.copy())
        return (mean.mean(axis=1) > threshold).astype(np.float32)

    def forced(part: np.ndarray, decision: np.ndarray) -> np.ndarray:
        return network(part) + 100 * decision[:, None, None, None]

    def per_tile(part: np.ndarray) -> np.ndarray:
        return forced(part, decide(box(part).mean(axis=(2, 3))))

    whole = per_tile(x)
    decisions.clear()
    split = GateSplit(features=box, decide=decide, forced=forced)
    tiled = tiled_infer(x, per_tile, SCALE, 8, RADIUS, gate=lambda: split)
    assert len(decisions) == 1  # decided once
    np.testing.assert_allclose(decisions[0], box(x).astype(np.float64).mean(axis=(2, 3)), rtol=1e-12)
    np.testing.assert_array_equal(tiled, whole)
    assert not np.array_equal(tiled_infer(x, per_tile, SCALE, 8, RADIUS), whole)  # each tile alone: not the same
    asked = []
    for size in [(8, 8), (5, 7), (8, 3)]:
        tiled_infer(image(*size), per_tile, SCALE, 8, RADIUS, gate=lambda: asked.append(1) or split)
    assert asked == []  # one tile: the split is not even built


@pytest.mark.parametrize("size, window", [((37, 29), (16, 16)), ((37, 29), (10, 12)), ((37, 29), (37, 9)),
                                          ((37, 29), (7, 29)), ((300, 11), (300, 9))])
def test_fixed_windows_equal_whole_and_keep_their_size(size, window):
    x = image(*size)
    run = Recorder()
    np.testing.assert_array_equal(windowed_infer(x, run, SCALE, window, RADIUS), network(x))
    assert set(run.shapes) == {window}
    cores = [1 if w >= n else -(-n // (w - 2 * RADIUS)) for n, w in zip(size, window)]  # a full-axis window: one
    assert len(run.shapes) == cores[0] * cores[1]


def test_fixed_windows_with_a_short_margin_show_seams():
    x = image()
    assert not np.array_equal(windowed_infer(x, network, SCALE, (12, 12), RADIUS - 1), network(x))


def test_fixed_windows_refuse_what_cannot_work():
    with pytest.raises(ValueError, match="larger than the image"):
        windowed_infer(image(), network, SCALE, (38, 8), RADIUS)
    with pytest.raises(ValueError, match="larger than the image"):
        windowed_infer(image(), network, SCALE, (8, 30), RADIUS)
    with pytest.raises(ValueError, match="leaves no core"):
        windowed_infer(image(), network, SCALE, (6, 6), RADIUS)
    np.testing.assert_array_equal(windowed_infer(image(), network, SCALE, (7, 7), RADIUS), network(image()))
