"""Calibration and validation data for FP16/INT8: deterministic LR crops of real photos.

Sources: an image folder, or by default the RGB photographs that ship inside scikit-image (no download).
Each crop is a random ``size·scale`` HR window of a photo, bicubically downscaled by ``scale`` (the LR
the zoo's networks were trained on), converted to the network's colour space. The validation split is
held out from calibration: default photos ``HELD_OUT``, or every 4th image of a folder. Set5/Set14 are
test sets and are never used here.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..runtime import images
from ..runtime.errors import SrDeployError
from ..runtime.pipeline import network_input

CALIBRATION = ("astronaut.png", "chelsea.png", "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "rocket.jpg")
HELD_OUT = ("coffee.png", "motorcycle_left.png")  # motorcycle_right is left out: a near-copy of the left view


@dataclass(frozen=True)
class CropSpec:
    size: int = 64  # LR crop edge in pixels
    # Ranges are set by rare large activations: with 32 crops, Set5 "bird" drove centred LESRCNN ×4
    # channels to 3× their calibrated range (−0.36 dB on it); with 128, −0.08 (README)
    count: int = 128
    seed: int = 0


def skimage_photo_dir() -> Path:
    try:
        import skimage
    except ImportError:
        raise SrDeployError("the default calibration photos come with scikit-image: pip install scikit-image, "
                            "or pass --calib DIR") from None
    return Path(skimage.__file__).parent / "data"


def source_images(folder: str | Path | None = None, split: str = "calibration") -> list[Path]:
    """Photos of one split: ``"calibration"`` or ``"validation"`` (held out)."""
    if folder is None:
        names = CALIBRATION if split == "calibration" else HELD_OUT
        return [skimage_photo_dir() / name for name in names]
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES)
    if len(paths) < 2:
        raise SrDeployError(f"{folder} needs at least 2 images (one is held out for validation)")
    held_out = {i for i in range(len(paths)) if i % 4 == 3} or {len(paths) - 1}
    return [p for i, p in enumerate(paths) if (i in held_out) == (split == "validation")]


def held_out_photo(colour: str, folder: str | Path | None = None) -> np.ndarray:
    """The first held-out photo as a C×H×W float32 network input: what parity checks of calibrated
    (INT8) artifacts probe with, since noise drives calibrated ranges into clipping."""
    return network_input(images.read_rgb(source_images(folder, split="validation")[0]), colour)[0]


def lr_hr_crops(paths: list[Path], scale: int, spec: CropSpec, progress: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """``spec.count`` (LR, HR) RGB uint8 crop pairs, the same for the same paths, scale and spec."""
    photos = [images.read_rgb(p) for p in paths]
    rng = np.random.default_rng(spec.seed)
    hr_size = spec.size * scale
    pairs = []
    for _ in tqdm(range(spec.count), desc="crops", disable=None if progress else True, leave=False):
        photo = photos[int(rng.integers(len(photos)))]
        if min(photo.shape[:2]) < hr_size:
            raise SrDeployError(f"a calibration photo is smaller than {hr_size}px: use a smaller crop size")
        top = int(rng.integers(photo.shape[0] - hr_size + 1))
        left = int(rng.integers(photo.shape[1] - hr_size + 1))
        hr = photo[top : top + hr_size, left : left + hr_size]
        lr = np.asarray(Image.fromarray(hr).resize((spec.size, spec.size), Image.BICUBIC))
        pairs.append((lr, hr))
    return pairs


def network_batch(pairs: list[tuple[np.ndarray, np.ndarray]], colour: str) -> np.ndarray:
    """The LR crops as one float32 N×C×H×W batch in the network's colour space."""
    return np.concatenate([network_input(lr, colour) for lr, _ in pairs])


def fingerprint(paths: list[Path], scale: int, spec: CropSpec) -> str:
    """Identifies the data (file contents, scale, crop spec) for caching calibration statistics."""
    digest = hashlib.sha256(f"{scale}:{spec}".encode())
    for path in paths:
        digest.update(path.name.encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
