"""Image-quality metrics as the seed repositories compute them (numpy only).

PSNR and SSIM on 8-bit luminance with a border of ``scale`` pixels shaved; SSIM with an 11×11 Gaussian
window (σ = 1.5), "valid" region only, constants (0.01·255)² and (0.03·255)², as their ``calculate_ssim``.
"""
from __future__ import annotations

import numpy as np

_WINDOW = 11
_SIGMA = 1.5


def shave(image: np.ndarray, border: int) -> np.ndarray:
    return image[border:-border, border:-border] if border > 0 else image


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two same-shape images; inf when identical."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs same-shape images, got {a.shape} and {b.shape}")
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


def _gaussian_kernel() -> np.ndarray:
    offsets = np.arange(_WINDOW) - _WINDOW // 2
    kernel = np.exp(-(offsets**2) / (2 * _SIGMA**2))
    return kernel / kernel.sum()


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable 2-D correlation, keeping only positions where the window fits."""
    rows = np.lib.stride_tricks.sliding_window_view(image, kernel.size, axis=0) @ kernel
    return np.lib.stride_tricks.sliding_window_view(rows, kernel.size, axis=1) @ kernel


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two single-channel 8-bit-range images (mean over the valid region)."""
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"SSIM needs two same-shape 2-D images, got {a.shape} and {b.shape}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = a.astype(np.float64), b.astype(np.float64)
    k = _gaussian_kernel()
    mu_x, mu_y = _filter_valid(x, k), _filter_valid(y, k)
    var_x = _filter_valid(x * x, k) - mu_x**2
    var_y = _filter_valid(y * y, k) - mu_y**2
    cov = _filter_valid(x * y, k) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())
