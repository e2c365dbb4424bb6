"""Published-number reproduction on Set5 and the metrics against scikit-image.

Expected values are the reference implementations' own numbers (shared/README.md), not ours."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from srdeploy import models
from srdeploy.runtime.quality import dataset_pairs, evaluate
from srdeploy.models.registry import ARCHITECTURES
from srdeploy.runtime import images, metrics
from srdeploy.models.torch_runner import TorchRunner
from tests.conftest import need_shared

# model, scale, options → Set5 PSNR measured with the public reference code (shared/README.md)
REFERENCE_SET5 = [
    ("lesrcnn", 2, {}, 37.65), ("lesrcnn", 3, {}, 33.93), ("lesrcnn", 4, {}, 31.88),
    ("fsrcnn", 2, {}, 37.06), ("fsrcnn", 3, {}, 32.57), ("fsrcnn", 4, {}, 30.49),
    ("dsrnet", 2, {}, 36.83), ("dsrnet", 2, {"gate": "branch0"}, 37.48),
]


@pytest.mark.parametrize("name,scale,options,expected", REFERENCE_SET5,
                         ids=[f"{n}_x{s}{'_' + o['gate'] if o else ''}" for n, s, o, _ in REFERENCE_SET5])
def test_set5_reproduces_reference(name, scale, options, expected):
    pairs = dataset_pairs(need_shared("datasets", "Set5"), scale)
    arch = ARCHITECTURES[name]
    model = models.load(name, scale, **options)
    report = evaluate(TorchRunner(model.network).infer, pairs, model=name, scale=scale, colour=arch.colour,
                      rounding=arch.eval_rounding, dataset="Set5", progress=False)
    assert len(report.images) == 5
    assert abs(report.psnr - expected) <= 0.01, f"{name} ×{scale}: {report.psnr:.3f} dB, reference {expected}"


def test_metrics_agree_with_scikit_image():
    hr = images.luma_uint8(images.read_rgb(need_shared("datasets", "Set5", "HR", "butterfly.png")))
    noisy = np.clip(hr + np.random.default_rng(0).normal(0, 6, hr.shape), 0, 255).astype(np.uint8)
    assert metrics.psnr(noisy, hr) == pytest.approx(peak_signal_noise_ratio(hr, noisy, data_range=255), abs=1e-9)
    # The seed SSIM averages the valid region of an 11×11 σ=1.5 Gaussian; scikit-image with Gaussian
    # weights and population statistics averages the same region.
    expected = structural_similarity(hr, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255)
    assert metrics.ssim(noisy, hr) == pytest.approx(expected, abs=1e-6)
    assert metrics.ssim(hr, hr) == pytest.approx(1.0)


def test_dataset_layout_errors(tmp_path):
    from srdeploy.runtime.errors import SrDeployError

    with pytest.raises(SrDeployError, match="needs HR/ and LR_bicubic/X2/"):
        dataset_pairs(tmp_path, 2)
    (tmp_path / "HR").mkdir()
    (tmp_path / "LR_bicubic" / "X2").mkdir(parents=True)
    images.write_image(tmp_path / "HR" / "a.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SrDeployError, match="has no LR image"):
        dataset_pairs(tmp_path, 2)
