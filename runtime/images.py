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
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

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
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _alpha(image: Image.Image) -> np.ndarray | None:
    if image.mode not in ("RGBA", "LA", "PA", "RGBa", "La") and not (image.mode == "P" and "transparency" in image.info):
        return None
    alpha = np.asarray(image.convert("RGBA"), dtype=np.uint8)[..., 3].copy()
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
            shown = ImageOps.exif_transpose(image)
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
    try:
        with atomic_path(path) as tmp:
            image.save(tmp, format=image_format, **options)
    except (OSError, ValueError, KeyError) as exc:
        raise SrDeployError(f"cannot write {path} ({exc}): check the folder and the extension") from None
    return path


def write_image(path: str | Path, rgb: np.ndarray) -> Path:
    """Write RGB uint8 H×W×3 atomically; the format follows the file extension."""
    return write_picture(path, Picture(rgb))


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (float) → YCbCr in [0, 1] units (Y in [16/255, 235/255]), BT.601 as MATLAB."""
    return (np.asarray(rgb, dtype=np.float64) @ _RGB_TO_YCBCR + _YCBCR_OFFSET) / 255.0


def ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (no clipping)."""
    return (np.asarray(ycbcr, dtype=np.float64) * 255.0 - _YCBCR_OFFSET) @ _YCBCR_TO_RGB


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
    """Bicubic resize of one float channel (Pillow, mode F)."""
    resized = Image.fromarray(np.asarray(channel, dtype=np.float32), mode="F").resize((width, height), Image.BICUBIC)
    return np.asarray(resized, dtype=np.float64)
