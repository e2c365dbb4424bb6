"""Image I/O and colour conversion, with numpy and Pillow only (no torch: this runs on devices).

Images are read as a viewer shows them: EXIF orientation applied (phone photos), CMYK converted through its
colour profile (scans, print files), palettes expanded; what RGB uint8 cannot hold travels beside it
(``Picture``: the alpha channel and the colour profile, written back into the output). The image size is
checked from the file's header before anything is decoded. A warning says when information is dropped
(16-bit precision; alpha where the caller keeps RGB only). Writes are atomic: a temporary file in the target
folder, then a rename.
"""
from __future__ import annotations

import io
import struct
import threading
import zlib
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .atomic import atomic_path
from .errors import SrDeployError

DEFAULT_MAX_PIXELS = 100_000_000  # 100 MP: above this, decoding is refused (decompression-bomb guard)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_ALPHA_FORMATS = ("PNG", "WEBP", "TIFF")
_PILLOW_LIMIT = threading.Lock()  # Pillow's own bomb limit is a global: lifted only around our header check

# ITU-R BT.601 "studio swing", as MATLAB's rgb2ycbcr and the seed repositories' evaluation code.
_RGB_TO_YCBCR = np.array(
    [[65.481, -37.797, 112.0], [128.553, -74.203, -93.786], [24.966, 112.0, -18.214]], dtype=np.float64
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
_YCBCR_TO_RGB = np.linalg.inv(_RGB_TO_YCBCR)


class ImageWarning(UserWarning):
    """Information was dropped while reading an image (alpha channel, 16-bit precision)."""


@dataclass
class Picture:
    """An image as a viewer shows it: RGB uint8 H×W×3, its alpha (uint8 H×W) where it has transparency, and
    its colour profile (ICC bytes) where the pixels are not plain sRGB."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    icc_profile: bytes | None = None


def _to_rgb_uint8(image: Image.Image, name: str) -> np.ndarray:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if peak > 255:
            warnings.warn(f"{name}: 16-bit samples reduced to 8 bits (image mode {mode})", ImageWarning, stacklevel=4)
        gray = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        scale = 255.0 if values.max(initial=0) <= 1.0 else 1.0
        gray = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    return _by_strips(image, lambda strip: strip.convert("RGB"), 3)


def _by_strips(image: Image.Image, convert: Callable[[Image.Image], Image.Image], channels: int) -> np.ndarray:
    """``convert`` of ``image`` into one uint8 H×W(×channels) array, made ``DECODE_STRIP`` rows at a time: the
    decoded image and this array are all that is held (a whole-image conversion would add two more copies: 17
    bytes per pixel instead of 7 for a 50 Mpx photo)."""
    width, height = image.size
    out = np.empty((height, width, channels) if channels > 1 else (height, width), dtype=np.uint8)
    for top in range(0, height, DECODE_STRIP):
        out[top:top + DECODE_STRIP] = np.asarray(convert(image.crop((0, top, width, min(top + DECODE_STRIP, height)))))
    return out


DECODE_STRIP = 256  # rows converted at a time


def _alpha(image: Image.Image) -> np.ndarray | None:
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and not (image.mode == "P" and "transparency" in image.info):
        return None
    alpha = _by_strips(image, lambda strip: strip.convert("RGBA").getchannel("A"), 1)
    return None if alpha.min(initial=255) == 255 else alpha


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open (header only) and check the size against ``max_pixels`` before any pixel is decoded."""
    with _PILLOW_LIMIT:
        pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            image = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit
    width, height = image.size
    if width == 0 or height == 0:
        image.close()
        raise SrDeployError(f"image {path} is empty ({width}×{height}): pass a non-empty image")
    if width * height > max_pixels:
        image.close()
        raise SrDeployError(
            f"image {path} has {width}×{height} = {width * height / 1e6:.0f} MP, above the "
            f"{max_pixels / 1e6:.0f} MP limit: downscale it, or raise the limit with --max-pixels {width * height}"
        )
    return image


def read_picture(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Picture:
    """Read an image file as a viewer shows it; a one-line ``SrDeployError`` for anything unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SrDeployError(f"image {path} does not exist: check the path")
    try:
        with _open(path, max_pixels) as image:
            if any(";16" in str(tile.args) for tile in image.tile):  # Pillow reads 16-bit RGB(A) as 8 bits
                warnings.warn(f"{path.name}: 16-bit samples reduced to 8 bits (16-bit {image.mode})", ImageWarning,
                              stacklevel=3)
            image.load()
            shown = ImageOps.exif_transpose(image, in_place=True) or image  # a copy only where it turns the image
            icc = shown.info.get("icc_profile") or None
            if shown.mode == "CMYK":
                if icc:
                    shown = ImageCms.profileToProfile(shown, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                                      ImageCms.createProfile("sRGB"), outputMode="RGB")
                icc = None  # converted to sRGB (or Pillow's plain conversion without a profile)
            return Picture(_to_rgb_uint8(shown, path.name), _alpha(shown), icc)
    except SrDeployError:
        raise
    except UnidentifiedImageError:
        raise SrDeployError(f"{path} is not an image Pillow can read: pass a PNG, JPEG, BMP, TIFF or WebP file") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise many types on damaged files
        raise SrDeployError(f"image {path} cannot be decoded ({type(exc).__name__}: {exc}): the file is truncated "
                            "or corrupt") from None


def read_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 H×W×3 (a warning when its alpha channel is dropped)."""
    picture = read_picture(path, max_pixels)
    if picture.alpha is not None:
        warnings.warn(f"{Path(path).name}: alpha channel dropped", ImageWarning, stacklevel=2)
    return picture.rgb


def write_picture(path: str | Path, picture: Picture) -> Path:
    """Write atomically, the format from the extension; alpha and colour profile kept where the format
    can hold them (alpha over white, with a warning, where it cannot)."""
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None:
        raise SrDeployError(f"cannot write {path}: unknown image extension {path.suffix!r}; use .png or .jpg")
    rgb = picture.rgb
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"write_picture expects RGB uint8 H×W×3, got {rgb.dtype} {rgb.shape}")
    image = Image.fromarray(rgb)
    if picture.alpha is not None:
        if image_format in _ALPHA_FORMATS:
            image.putalpha(Image.fromarray(picture.alpha))
        else:
            warnings.warn(f"{path.name}: {image_format} has no transparency: composited over white "
                          "(write .png or .webp to keep it)", ImageWarning, stacklevel=2)
            weight = picture.alpha[..., None].astype(np.float32) / 255
            image = Image.fromarray(np.rint(rgb * weight + 255 * (1 - weight)).astype(np.uint8))
    options = {"icc_profile": picture.icc_profile} if picture.icc_profile and image_format != "BMP" else {}
    if image_format == "PNG":
        options["compress_level"] = PNG_COMPRESSION
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format=image_format, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise SrDeployError(f"cannot write {path} ({exc}): check the folder and the extension") from None
    return path


# zlib level of the PNGs written: 1, OpenCV's default. Level 6 (Pillow's) took 8× as long for files ~15 % smaller
# (a 1280×720 photo: 223 ms against 28 ms, longer than FSRCNN ×2 itself); recompress them (oxipng) where size matters
PNG_COMPRESSION = 1


def _deflate():
    """The compressor of streamed PNGs: ISA-L's (``isal``, a dependency where it has wheels), 4× as fast as the
    standard library's zlib at level 1 for files no larger (a 1224×816 photo's rows: 7 against 30 ms of CPU,
    49.0 against 50.1 % of the raw size); the standard library's where it is not installed. Both write the
    same zlib stream format, so the pixels read back are the same."""
    try:
        from isal import isal_zlib
    except ImportError:
        return zlib.compressobj(PNG_COMPRESSION)
    return isal_zlib.compressobj(PNG_COMPRESSION)


def write_png_rows(path: str | Path, width: int, height: int, bands: Iterable[np.ndarray],
                   icc_profile: bytes | None = None) -> Path:
    """A PNG written atomically from bands of uint8 rows (rows×W×3, or ×4 with alpha), as they come: only one band
    and the compressor's window are held, whatever the image's size (Pillow encodes a PNG from a whole image).
    Each row Up-filtered (files within 2 % of Paeth's at zlib level 1, at a tenth of its time in numpy), deflated
    at ``PNG_COMPRESSION`` (``_deflate``), the colour profile as an iCCP chunk: four chunk types of the PNG
    specification."""
    path = Path(path)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        previous, written, compressor = None, 0, _deflate()
        for band in bands:
            if written == 0:
                channels = band.shape[2]
                out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8,
                                                                           6 if channels == 4 else 2, 0, 0, 0)))
                if icc_profile:
                    out.write(chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
            rows = np.ascontiguousarray(band, dtype=np.uint8).reshape(band.shape[0], width * channels)
            above = np.zeros(width * channels, np.uint8) if previous is None else previous
            filtered = rows - np.vstack([above[None], rows[:-1]])  # PNG's "Up" filter, modulo 256
            data = compressor.compress(np.hstack([np.full((len(rows), 1), 2, np.uint8), filtered]).tobytes())
            if data:
                out.write(chunk(b"IDAT", data))
            previous, written = rows[-1], written + len(rows)
        if written != height:
            raise ValueError(f"write_png_rows got {written} rows for an image {height} high")
        out.write(chunk(b"IDAT", compressor.flush()) + chunk(b"IEND", b""))
    return path


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write RGB uint8 H×W×3 atomically; the format follows the file extension."""
    return write_picture(path, Picture(rgb))


def rgb_to_ycbcr(rgb: np.ndarray, channels: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """RGB in [0, 1] (float) → YCbCr in [0, 1] units (Y in [16/255, 235/255]), BT.601 as MATLAB; ``channels``:
    which of Y, Cb, Cr (…×len(channels)). Plane by plane in numpy's elementwise float64 (no BLAS: the same bits on
    every machine); as float32, equal to the 3×3 matrix product over pixels for every 8-bit colour (tested)."""
    x = np.asarray(rgb, dtype=np.float64)
    return np.stack([_ycbcr_plane(x, channel) for channel in channels], -1)


def _ycbcr_plane(x: np.ndarray, channel: int) -> np.ndarray:
    plane = _combine((x[..., 0], x[..., 1], x[..., 2]), _RGB_TO_YCBCR[:, channel])
    plane += _YCBCR_OFFSET[channel]
    plane /= 255.0
    return plane


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping)."""
    x = np.asarray(ycbcr, dtype=np.float64)
    return planes_to_rgb(x[..., 0], x[..., 1], x[..., 2], np.float64)


def planes_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, dtype: type = np.float32) -> np.ndarray:
    """:func:`ycbcr_to_rgb` of three planes (float64 arithmetic, as ``dtype`` H×W×3): no stacked copy of them."""
    shifted = [np.asarray(plane, dtype=np.float64) * 255.0 - offset
               for plane, offset in zip((y, cb, cr), _YCBCR_OFFSET)]
    rgb = np.empty(np.shape(y) + (3,), dtype)
    for channel in range(3):
        rgb[..., channel] = _combine(shifted, _YCBCR_TO_RGB[:, channel])
    return rgb


def _combine(planes: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Σ planes[k]·weights[k] in float64, summed in order k = 0, 1, 2 (a matrix product's column, elementwise)."""
    total = planes[0] * weights[0]
    for plane, weight in zip(planes[1:], weights[1:]):
        total += plane * weight
    return total


def luma_uint8(rgb: np.ndarray) -> np.ndarray:
    """Y of an RGB uint8 image, rounded to uint8, exactly as the seed repositories' ``rgb2ycbcr``."""
    y = np.dot(rgb.astype(np.float64), _RGB_TO_YCBCR[:, 0]) / 255.0 + 16.0
    return np.rint(y).astype(np.uint8)


def to_unit_float(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 H×W×3 → float32 1×3×H×W in [0, 1] (as torchvision's ``ToTensor``)."""
    return (rgb.astype(np.float32) / np.float32(255.0)).transpose(2, 0, 1)[None].copy()


def to_uint8(x: np.ndarray, rounding: str = "round") -> np.ndarray:
    """Float in [0, 1] → uint8, clamped; ``rounding="truncate"`` reproduces the seed evaluation's ``.byte()``."""
    scaled = np.clip(np.asarray(x, dtype=np.float32) * np.float32(255.0), 0, 255)
    return (np.rint(scaled) if rounding == "round" else np.floor(scaled)).astype(np.uint8)


def bicubic_resize(channel: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bicubic resize of one float channel, Pillow's (mode F) to the bit (``bicubic_rows`` over every row)."""
    plane = np.asarray(channel, dtype=np.float32)
    return bicubic_rows(lambda a, b: plane[a:b], plane.shape[1], plane.shape[0], width, height, 0, height).astype(np.float64)


def bicubic_rows(rows: Callable[[int, int], np.ndarray], in_width: int, in_height: int, width: int, height: int,
                 y0: int, y1: int) -> np.ndarray:
    """Rows ``y0:y1`` of a float32 plane in_height×in_width (×C: each channel alike) resized bicubically to
    height×width, from only the input rows they need (``rows(a, b)``: rows ``a:b``, float32): what Pillow's ``resize(…, BICUBIC)`` computes for mode F,
    to the bit, so an image can be resized band by band in bounded memory. Pillow has no resize of a band that
    equals the band of the whole (a ``box`` moves its coefficients by an ulp): its horizontal pass runs in Pillow on
    the rows needed, its vertical pass is reproduced here (its coefficients, double sums in its order; tested
    against Pillow)."""
    starts_y, weights_y = _bicubic_coefficients(in_height, height)
    starts_y, weights_y = starts_y[y0:y1], weights_y[y0:y1]
    taps_y = np.minimum(starts_y[:, None] + np.arange(weights_y.shape[1]), in_height - 1)  # zero weights read too
    first = int(taps_y.min()) if y1 > y0 else 0
    last = int(taps_y.max()) + 1 if y1 > y0 else 1
    source = np.asarray(rows(first, last), dtype=np.float32)
    planes = source[..., None] if source.ndim == 2 else source
    # the horizontal pass is Pillow's own: a resize to the same height makes it alone, row by row, in float32
    wide = np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(planes[..., c]))  # mode F
                                .resize((width, planes.shape[0]), Image.BICUBIC)) for c in range(planes.shape[2])], -1)
    wide = wide.astype(np.float64)
    out = np.zeros((y1 - y0, width, planes.shape[2]), dtype=np.float64)
    term = np.empty(out.shape[1:])
    for row, taps, weights in zip(out, taps_y - first, weights_y):  # row by row, in cache: half the time of gathers
        for tap, weight in zip(taps, weights):
            row += np.multiply(wide[tap], weight, out=term)
    return out.astype(np.float32).reshape((y1 - y0, width, *source.shape[2:]))


@lru_cache(maxsize=16)
def _bicubic_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` for its bicubic filter (a = −0.5): each output position's first input index
    and its normalised weights (zero past its own count)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    center = (np.arange(out_size) + 0.5) * scale
    starts = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    counts = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - starts
    taps = int(counts.max())
    x = np.abs((np.arange(taps)[None, :] + starts[:, None] - center[:, None] + 0.5) * (1.0 / filterscale))
    weights = np.where(x < 1.0, ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1,
                       np.where(x < 2.0, (((x - 5) * x + 8) * x - 4) * -0.5, 0.0))
    weights[np.arange(taps)[None, :] >= counts[:, None]] = 0.0
    total = np.zeros(out_size)
    for k in range(taps):  # Pillow sums the weights in order
        total += weights[:, k]
    weights = np.divide(weights, total[:, None], out=weights, where=total[:, None] != 0)
    starts.flags.writeable = weights.flags.writeable = False  # cached: shared by every call
    return starts, weights
