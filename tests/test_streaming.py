"""Memory bounded by the tile: Pillow's bicubic made band by band, PNGs written as rows come, and a streamed upscale
that equals the whole-image one pixel for pixel."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image, ImageCms

from srdeploy.runtime import images
from srdeploy.runtime.pipeline import upscale_picture, whole
from srdeploy.runtime.upscale import tiler, upscale_file

RNG = np.random.default_rng(7)


def _pillow_bicubic(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(plane.astype(np.float32), mode="F").resize((width, height), Image.BICUBIC))


@pytest.mark.parametrize("in_size, out_size", [((30, 20), (60, 40)), ((90, 70), (270, 210)), ((13, 7), (52, 28)),
                                               ((64, 64), (192, 192)), ((50, 41), (23, 17))])
@pytest.mark.parametrize("band", [1, 5, 64])
def test_bicubic_in_bands_is_pillow_to_the_bit(in_size, out_size, band):
    """Every band, stacked, is what Pillow's whole-image resize computes; ×3 at 70 rows (zero weights at the bottom
    edge) was an IndexError."""
    (in_width, in_height), (width, height) = in_size, out_size
    plane = RNG.random((in_height, in_width)).astype(np.float32)
    read: list[tuple[int, int]] = []

    def rows(a, b):
        read.append((a, b))
        return plane[a:b]

    bands = [images.bicubic_rows(rows, in_width, in_height, width, height, y0, min(y0 + band, height))
             for y0 in range(0, height, band)]
    np.testing.assert_array_equal(np.concatenate(bands), _pillow_bicubic(plane, width, height))
    assert all(0 <= a < b <= in_height for a, b in read)
    if band == 1 and height >= in_height:  # one output row reads a handful of input rows, not the image
        assert max(b - a for a, b in read) <= 4


@pytest.mark.parametrize("compressor", ["isal", "zlib"])
@pytest.mark.parametrize("channels", [3, 4])
def test_png_written_in_bands_reads_back_exactly(tmp_path, monkeypatch, channels, compressor):
    """Read back by Pillow, with ISA-L's deflate (where installed) and with the standard library's (where it is not)."""
    if compressor == "isal":
        pytest.importorskip("isal", reason="isal is not installed (pip install isal)")
    else:
        monkeypatch.setitem(sys.modules, "isal", None)  # what `import isal` meets where it is not installed
    assert type(images._deflate()).__module__ == ("isal_zlib" if compressor == "isal" else "zlib")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    picture = RNG.integers(0, 256, (37, 23, channels), dtype=np.uint8)
    bands = (picture[a:a + 10] for a in range(0, 37, 10))
    path = images.write_png_rows(tmp_path / "out.png", 23, 37, bands, profile)
    with Image.open(path) as written:
        assert written.mode == ("RGBA" if channels == 4 else "RGB") and written.info["icc_profile"] == profile
        np.testing.assert_array_equal(np.asarray(written), picture)


def test_png_short_of_rows_is_not_written(tmp_path):
    picture = RNG.integers(0, 256, (10, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="got 10 rows for an image 12 high"):
        images.write_png_rows(tmp_path / "out.png", 8, 12, iter([picture]))
    assert list(tmp_path.iterdir()) == []


def _nearest(scale: int):
    return lambda x: x.repeat(scale, axis=2).repeat(scale, axis=3)


@pytest.mark.parametrize("colour", ["y", "rgb"])
@pytest.mark.parametrize("scale", [2, 3])
def test_streamed_png_equals_the_whole_image(tmp_path, colour, scale):
    """A ×s stand-in network tiled band by band (the PNG written as rows come): the same pixels, alpha and colour
    profile as the whole image upscaled at once."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgba = RNG.integers(0, 256, (70, 90, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png", icc_profile=profile)
    picture = images.read_picture(tmp_path / "in.png")
    expected = images.write_picture(tmp_path / "whole.png", upscale_picture(picture, _nearest(scale), colour))
    streamed = tmp_path / "streamed.png"
    assert upscale_file(tmp_path / "in.png", streamed, tiler(_nearest(scale), scale, 32, 0), colour) is None
    with Image.open(expected) as a, Image.open(streamed) as b:
        assert b.size == (90 * scale, 70 * scale) and b.mode == "RGBA" and b.info["icc_profile"] == profile
        np.testing.assert_array_equal(np.asarray(b), np.asarray(a))


def test_whole_is_one_band():
    x = RNG.random((1, 1, 5, 6)).astype(np.float32)
    window = lambda ya, yb, xa, xb: x[..., ya:yb, xa:xb]  # noqa: E731
    (band,) = list(whole(_nearest(2))(window, 5, 6))
    np.testing.assert_array_equal(band, _nearest(2)(x))


def test_upscaling_an_artifact_never_imports_torch(tmp_path):
    """The deploy side as a user runs it (``srdeploy upscale … --artifact X.onnx``) in a process of its own: torch is
    never imported (it was, through the PyTorch model's thread setting: +200 MB of RSS for nothing)."""
    import subprocess
    import sys

    from tests.conftest import REPO, need_shared

    need_shared("weights", "fsrcnn_x2.pth")
    export = subprocess.run([sys.executable, str(REPO / "cli.py"), "export", "--model", "fsrcnn", "--out",
                             str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr
    Image.fromarray(RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    probe = ("import runpy, sys; sys.argv = sys.argv[1:]\n"
             "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
             "except SystemExit as end:\n    assert not end.code, end.code\n"
             "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", probe, str(REPO / "cli.py"), "upscale", str(tmp_path / "in.png"),
                          str(tmp_path / "out.png"), "--artifact", export.stdout.strip()],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "False"
    assert Image.open(tmp_path / "out.png").size == (120, 80)


def test_decoding_holds_the_decoded_image_and_its_array_only(tmp_path):
    """A 24 Mpx photo decodes with ≤ 8 bytes per pixel of peak memory (Pillow's 4 + the RGB array's 3): the
    whole-image conversion it replaced held 17."""
    import subprocess
    import sys

    Image.fromarray(np.tile(RNG.integers(0, 256, (1, 6000, 3), dtype=np.uint8), (4000, 1, 1))).save(tmp_path / "in.png")
    probe = ("import sys\nfrom srdeploy.runtime import images\n"
             "def peak():\n    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
             "before = peak(); rgb = images.read_picture(sys.argv[1]).rgb\n"
             "print((peak() - before) * 1024 / rgb.shape[0] / rgb.shape[1])")
    run = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "in.png")], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) <= 8.0
