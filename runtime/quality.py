"""Quality evaluation on a BasicSR-layout dataset (``HR/NAME.png``, ``LR_bicubic/X{s}/NAMEx{s}.png``).

Protocol of the seed repositories: the network sees the bicubic LR image in [0, 1]; its output is
quantised to 8 bits (``eval_rounding``); PSNR and SSIM are computed on the rounded BT.601 luminance, with
HR cropped to LR·scale and ``scale`` pixels shaved from every border. Y-channel networks (FSRCNN) get the
LR luminance as input and are scored on their own output channel.

Torch-free: it evaluates any ``infer(x: float32 N×C×H×W) -> N×C×sH×sW`` callable, so PyTorch models and
exported artifacts are measured by the same code.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import images, metrics
from .errors import SrDeployError
from .pipeline import Infer, network_input


@dataclass(frozen=True)
class ImagePair:
    name: str
    lr: Path
    hr: Path


@dataclass
class QualityReport:
    model: str
    scale: int
    dataset: str
    psnr: float = 0.0
    ssim: float = 0.0
    images: dict[str, dict[str, float]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def dataset_pairs(root: str | Path, scale: int) -> list[ImagePair]:
    """LR/HR pairs of a BasicSR-layout dataset, sorted by name."""
    root = Path(root)
    hr_dir, lr_dir = root / "HR", root / "LR_bicubic" / f"X{scale}"
    if not hr_dir.is_dir() or not lr_dir.is_dir():
        raise SrDeployError(
            f"{root} is not a BasicSR-layout dataset for ×{scale}: it needs HR/ and LR_bicubic/X{scale}/"
        )
    pairs = []
    for hr in sorted(p for p in hr_dir.iterdir() if p.suffix.lower() in images.IMAGE_SUFFIXES):
        lr = lr_dir / f"{hr.stem}x{scale}{hr.suffix}"
        if not lr.is_file():
            raise SrDeployError(f"{hr.name} has no LR image {lr}: the dataset is incomplete")
        pairs.append(ImagePair(hr.stem, lr, hr))
    if not pairs:
        raise SrDeployError(f"{hr_dir} holds no images")
    return pairs


def output_luma(output: np.ndarray, colour: str, rounding: str) -> np.ndarray:
    """The network's 1×C×H×W output → 8-bit luminance, quantised as the reference evaluation does."""
    if colour == "y":
        return images.to_uint8(output[0, 0], rounding)
    return images.luma_uint8(images.to_uint8(output[0].transpose(1, 2, 0), rounding))


def scored_luma(
    infer: Infer, lr: np.ndarray, hr: np.ndarray, scale: int, colour: str, rounding: str
) -> tuple[np.ndarray, np.ndarray]:
    """Upscale ``lr`` and return (output luminance, HR luminance), 8-bit and shaved, ready to score."""
    sr = output_luma(infer(network_input(lr, colour)), colour, rounding)
    if sr.shape != hr.shape[:2]:
        raise SrDeployError(f"output {sr.shape} does not match HR {hr.shape[:2]}: wrong --scale?")
    return metrics.shave(sr, scale), metrics.shave(images.luma_uint8(hr), scale)


def evaluate(
    infer: Infer,
    pairs: list[ImagePair],
    *,
    model: str,
    scale: int,
    colour: str,
    rounding: str,
    dataset: str,
    progress: bool = True,
) -> QualityReport:
    """Mean PSNR/SSIM (Y, shaved) of ``infer`` over ``pairs``, with per-image values."""
    report = QualityReport(model, scale, dataset)
    bar = tqdm(pairs, desc=f"{model} ×{scale} {dataset}", unit="img", disable=None if progress else True, leave=False)
    for pair in bar:
        lr = images.read_rgb(pair.lr)
        hr = images.read_rgb(pair.hr)[: lr.shape[0] * scale, : lr.shape[1] * scale]
        a, b = scored_luma(infer, lr, hr, scale, colour, rounding)
        report.images[pair.name] = {"psnr": metrics.psnr(a, b), "ssim": metrics.ssim(a, b)}
    report.psnr = float(np.mean([v["psnr"] for v in report.images.values()]))
    report.ssim = float(np.mean([v["ssim"] for v in report.images.values()]))
    return report


def crop_psnr(infer: Infer, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int, colour: str, rounding: str) -> float:
    """Mean PSNR (protocol above) of ``infer`` on (LR, HR) RGB crop pairs, e.g. held-out calibration photos."""
    return float(np.mean([metrics.psnr(*scored_luma(infer, lr, hr, scale, colour, rounding)) for lr, hr in pairs]))


def pooled_psnr(infer: Infer, pairs: list[tuple[np.ndarray, np.ndarray]], scale: int, colour: str, rounding: str) -> float:
    """PSNR of the mean squared error over all crop pairs (protocol above). Unlike the mean of per-crop
    PSNRs, near-black crops (tiny errors, huge dB swings) do not dominate: the INT8 search scores with it."""
    errors = [np.mean((a.astype(np.float64) - b) ** 2) for a, b in
              (scored_luma(infer, lr, hr, scale, colour, rounding) for lr, hr in pairs)]
    return float(10 * np.log10(255.0**2 / np.mean(errors)))
