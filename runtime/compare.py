"""Output comparison with per-output error statistics, in the spirit of Polygraphy's comparator.

numpy only, so a device can check an artifact against golden outputs without PyTorch.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .precision import Precision


@dataclass(frozen=True)
class Tolerance:
    """What an artifact of a given precision must meet against the PyTorch FP32 reference."""

    max_rel: float  # max|a − r| / max|r|
    min_psnr: float  # dB, peak max(1, max|ref|) (1.0 for images; random-weight outputs can be far larger)
    max_off_by_level: float  # % of values differing by more than one 8-bit level after rounding


TOLERANCES = {
    Precision.FP32: Tolerance(max_rel=1e-4, min_psnr=80.0, max_off_by_level=0.0),
    # FP16 storage, measured 75-89 dB and max rel <= 9e-4 on the held-out photos for the zoo
    Precision.FP16: Tolerance(max_rel=5e-3, min_psnr=60.0, max_off_by_level=0.1),
    # INT8 Q/DQ on held-out photo crops (not noise: calibrated ranges clip it); measured FSRCNN ×2
    # (83 % INT8 MACs): 39-52 dB, max rel <= 0.34, <= 13 % of pixels off by more than one level. A graph
    # with wrong scales or a broken layer lands far below (about 20 dB).
    Precision.INT8: Tolerance(max_rel=0.5, min_psnr=35.0, max_off_by_level=25.0),
    # FP32 graph computed in bfloat16 (8-bit mantissa): measured LESRCNN/DSRNet ×2 on OpenVINO with AMX: max rel
    # <= 9.3e-3, 52-59 dB, <= 8.7 % of 8-bit values off by more than one level on noise inputs (0.02 % on photos)
    Precision.BF16: Tolerance(max_rel=0.03, min_psnr=45.0, max_off_by_level=15.0),
}


@dataclass(frozen=True)
class Comparison:
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    mean_abs: float
    psnr: float  # artifact vs reference output, peak max(1, max|ref|): 1.0 for images in [0, 1]
    off_by_level_pct: float
    nonfinite: int

    def violations(self, tolerance: Tolerance) -> list[str]:
        problems = []
        if self.nonfinite:
            problems.append(f"{self.nonfinite} NaN/Inf values")
        if self.max_rel > tolerance.max_rel:
            problems.append(f"max rel {self.max_rel:.2e} > {tolerance.max_rel:.0e}")
        if self.psnr < tolerance.min_psnr:
            problems.append(f"PSNR {self.psnr:.1f} dB < {tolerance.min_psnr:.0f} dB")
        if self.off_by_level_pct > tolerance.max_off_by_level:
            problems.append(f"{self.off_by_level_pct:.3f}% off by >1 level > {tolerance.max_off_by_level}%")
        return problems

    def as_dict(self) -> dict:
        return asdict(self)


def compare(actual: np.ndarray, reference: np.ndarray) -> Comparison:
    """Error statistics of ``actual`` against ``reference`` (same shape)."""
    if actual.shape != reference.shape:
        raise ValueError(f"output shape {actual.shape} differs from the reference {reference.shape}")
    a, r = actual.astype(np.float64), reference.astype(np.float64)
    finite = np.isfinite(a)
    diff = np.abs(np.where(finite, a, 0.0) - r)
    mse = float(np.mean(diff**2))
    peak = max(1.0, float(np.abs(r).max()))
    levels = np.abs(np.rint(np.clip(a, 0, 1) * 255) - np.rint(np.clip(r, 0, 1) * 255))
    return Comparison(
        shape=tuple(actual.shape),
        max_abs=float(diff.max()),
        max_rel=float(diff.max() / max(float(np.abs(r).max()), 1e-12)),
        mean_abs=float(diff.mean()),
        psnr=float("inf") if mse == 0 else float(10 * np.log10(peak * peak / mse)),
        off_by_level_pct=float(100.0 * np.mean(levels > 1)),
        nonfinite=int((~finite).sum()),
    )
