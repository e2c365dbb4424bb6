"""Image reading in every mode, atomic writes, colour conversion and the RGB path of Y-channel networks."""
from __future__ import annotations

import struct
import time
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from srdeploy import models
from srdeploy.runtime import images, metrics
from srdeploy.runtime.errors import SrDeployError
from srdeploy.runtime.pipeline import upscale_rgb
from srdeploy.models.torch_runner import TorchRunner
from tests.conftest import need_shared

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)


def _save(tmp_path, image: Image.Image, name: str):
    path = tmp_path / name
    image.save(path)
    return path


def _read_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return images.read_rgb(path)


def test_rgb_png_round_trip(tmp_path):
    path = images.write_image(tmp_path / "out.png", RGB)
    assert np.array_equal(_read_quietly(path), RGB)
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temporary file left


def test_grayscale_becomes_rgb_without_warning(tmp_path):
    gray = RGB[..., 0]
    out = _read_quietly(_save(tmp_path, Image.fromarray(gray, "L"), "g.png"))
    assert out.shape == (20, 30, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))


def test_palette_without_transparency(tmp_path):
    palette = Image.fromarray(RGB).quantize(16)
    out = _read_quietly(_save(tmp_path, palette, "p.png"))
    assert np.array_equal(out, np.asarray(palette.convert("RGB")))


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_is_dropped_with_a_warning(tmp_path, mode):
    rgba = np.dstack([RGB, np.full((20, 30), 128, np.uint8)])
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    with pytest.warns(images.ImageWarning, match="alpha channel dropped"):
        out = images.read_rgb(_save(tmp_path, image, "a.png"))
    expected = RGB if mode == "RGBA" else np.asarray(image.convert("RGB"))
    assert np.array_equal(out, expected)


def test_sixteen_bit_is_scaled_with_a_warning(tmp_path):
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    with pytest.warns(images.ImageWarning, match="16-bit samples reduced to 8 bits"):
        out = images.read_rgb(_save(tmp_path, image, "d.png"))
    assert out[0, :, 0].tolist() == [0, 1, 255, 128]


def test_cmyk_jpeg(tmp_path):
    image = Image.fromarray(RGB).convert("CMYK")
    out = _read_quietly(_save(tmp_path, image, "c.jpg"))
    assert out.shape == (20, 30, 3) and metrics.psnr(out, RGB) > 20


@pytest.mark.parametrize("content,match", [
    (b"", "not an image"),
    (b"hello, not an image", "not an image"),
])
def test_unreadable_files(tmp_path, content, match):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(SrDeployError, match=match):
        images.read_rgb(path)


def test_truncated_png(tmp_path):
    data = (images.write_image(tmp_path / "full.png", RGB)).read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(SrDeployError, match="truncated or corrupt"):
        images.read_rgb(tmp_path / "cut.png")


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = images.write_image(tmp_path / "big.png", RGB)
    with pytest.raises(SrDeployError, match=r"above the 0 MP limit: downscale it, or raise the limit with "
                                            r"--max-pixels 600$"):
        images.read_rgb(path, max_pixels=599)
    assert images.read_rgb(path, max_pixels=600).shape == (20, 30, 3)


def test_missing_file(tmp_path):
    with pytest.raises(SrDeployError, match="does not exist"):
        images.read_rgb(tmp_path / "nope.png")


def test_ycbcr_matches_matlab_and_round_trips():
    # MATLAB rgb2ycbcr(uint8([255 255 255; 0 0 0])) = [235 128 128; 16 128 128]
    ycbcr = images.rgb_to_ycbcr(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])) * 255
    assert np.allclose(ycbcr, [[235, 128, 128], [16, 128, 128]], atol=1e-9)
    rgb = RNG.random((8, 8, 3))
    assert np.allclose(images.ycbcr_to_rgb(images.rgb_to_ycbcr(rgb)), rgb, atol=1e-12)
    assert images.luma_uint8(np.array([[[255, 0, 0]]], np.uint8))[0, 0] == round(16 + 65.481)


def test_colour_conversions_equal_the_matrix_product():
    """The elementwise conversions give what the 3×3 matrix product over pixels gives (the earlier form): forward,
    as the float32 the network and the chroma resize take, for every 8-bit colour; back, to the 8-bit output, on
    a real image's chroma with a network-like luma."""
    matrix, offset = images._RGB_TO_YCBCR, images._YCBCR_OFFSET
    levels = np.arange(256, dtype=np.uint8)
    colours = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(4096, 4096, 3)
    for rows in range(0, 4096, 512):
        rgb = colours[rows:rows + 512] / 255.0
        expected = ((rgb @ matrix + offset) / 255.0).astype(np.float32)
        assert np.array_equal(images.rgb_to_ycbcr(rgb).astype(np.float32), expected)
        assert np.array_equal(images.rgb_to_ycbcr(rgb, channels=(1, 2)).astype(np.float32), expected[..., 1:])
    photo = images.read_rgb(need_shared("datasets", "Set14", "HR", "baboon.png"))
    ycbcr = images.rgb_to_ycbcr(photo / 255.0).astype(np.float32)
    luma = ycbcr[..., 0] + RNG.normal(0, 0.02, ycbcr.shape[:2]).astype(np.float32)  # a network's output strays
    expected = images.to_uint8((np.dstack([luma, ycbcr[..., 1:]]).astype(np.float64) * 255.0 - offset)
                               @ np.linalg.inv(matrix))
    assert np.array_equal(images.to_uint8(images.planes_to_rgb(luma, ycbcr[..., 1], ycbcr[..., 2])), expected)


def test_fsrcnn_rgb_path_beats_bicubic():
    """Y through FSRCNN, Cb/Cr bicubic: a real RGB image comes out sharper than plain bicubic."""
    root = need_shared("datasets", "Set5")
    lr = images.read_rgb(root / "LR_bicubic" / "X2" / "babyx2.png")
    hr = images.read_rgb(root / "HR" / "baby.png")[: lr.shape[0] * 2, : lr.shape[1] * 2]
    model = models.load("fsrcnn", 2)
    sr = upscale_rgb(lr, TorchRunner(model.network).infer, "y")
    bicubic = np.asarray(Image.fromarray(lr).resize((hr.shape[1], hr.shape[0]), Image.BICUBIC))
    assert sr.shape == hr.shape and sr.dtype == np.uint8
    assert metrics.psnr(sr, hr) > metrics.psnr(bicubic, hr) + 1.0


def png_header(path, width: int, height: int, bit_depth: int = 8, colour_type: int = 2, rows: bytes = b""):
    """A PNG whose header claims ``width``×``height`` (the data may be far smaller: a crafted file)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


def test_a_header_claiming_10_gigapixels_is_refused_before_decoding(tmp_path):
    path = png_header(tmp_path / "bomb.png", 100_000, 100_000)
    start = time.perf_counter()
    with pytest.raises(SrDeployError, match=r"100000×100000 = 10000 MP, above the 100 MP limit: downscale it, or raise"
                                            r" the limit with --max-pixels 10000000000$"):
        images.read_picture(path)
    assert time.perf_counter() - start < 1.0
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own limit is restored


def test_16_bit_rgb_warns_like_16_bit_grey(tmp_path):
    samples = RNG.integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    rows = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(4))
    path = png_header(tmp_path / "rgb16.png", 5, 4, bit_depth=16, rows=rows)
    with pytest.warns(images.ImageWarning, match="16-bit samples reduced to 8 bits"):
        out = images.read_rgb(path)
    assert np.array_equal(out, (samples >> 8).astype(np.uint8))  # Pillow keeps the high byte


def test_phone_photo_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(RGB).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = images.read_rgb(tmp_path / "phone.jpg")
    assert out.shape == (30, 20, 3)
    expected = np.rot90(np.asarray(Image.open(tmp_path / "phone.jpg").convert("RGB")), k=-1)
    assert np.array_equal(out, expected)


def test_cmyk_scan_becomes_rgb(tmp_path):
    cmyk = Image.fromarray(RGB).convert("CMYK")
    out = _read_quietly(_save(tmp_path, cmyk, "scan.tif"))
    assert np.array_equal(out, np.asarray(cmyk.convert("RGB")))


def test_colour_profile_and_transparency_reach_the_output(tmp_path):
    from srdeploy.runtime.pipeline import upscale_picture

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    palette = Image.fromarray(RGB).quantize(16)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "logo.png", transparency=0, icc_profile=profile)
    picture = images.read_picture(tmp_path / "logo.png")
    assert picture.alpha is not None and picture.icc_profile == profile
    nearest = lambda x: x.repeat(2, axis=2).repeat(2, axis=3)  # noqa: E731 - a stand-in ×2 network
    up = upscale_picture(picture, nearest, "rgb")
    written = Image.open(images.write_picture(tmp_path / "out.png", up))
    assert written.mode == "RGBA" and written.size == (60, 40) and written.info["icc_profile"] == profile
    assert (np.asarray(written)[..., 3] == 0).any() and (np.asarray(written)[..., 3] == 255).any()
    with pytest.warns(images.ImageWarning, match="JPEG has no transparency: composited over white"):
        flat = Image.open(images.write_picture(tmp_path / "out.jpg", up))
    assert flat.mode == "RGB" and flat.info["icc_profile"] == profile
