"""The parity suite's torch-free half: probe inputs and the per-case comparison report."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .compare import Comparison, Tolerance, compare
from .pipeline import Infer
from .precision import Precision
from .tables import markdown_table


def probe_inputs(
    channels: int, bounds: dict[str, list[int]], seed: int = 0, photo: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Inputs in [0, 1]: odd sizes, a batch, and each bound (the largest spatial bound on one axis at a
    time, the other at its minimum, so the bounds are exercised at a bearable cost).

    Uniform noise by default; random crops of ``photo`` (C×H×W, mirrored where a shape is larger) for
    INT8 artifacts, whose activation ranges are calibrated on photographs: noise drives them into
    clipping, which says nothing about the images they are built for."""
    (n_min, _, h_min, w_min), (n_max, _, h_max, w_max) = bounds["min"], bounds["max"]
    shapes = {
        "odd_17x23": (1, 17, 23),
        "batch3_32x40": (min(3, n_max), 32, 40),
        "min_bound": (n_min, h_min, w_min),
        "max_batch": (n_max, h_min, w_min),
        "max_height": (1, h_max, w_min),
        "max_width": (1, h_min, w_max),
    }
    rng = np.random.default_rng(seed)
    if photo is None:
        return {name: rng.random((n, channels, h, w), dtype=np.float32) for name, (n, h, w) in shapes.items()}
    return {name: np.stack([photo_crop(photo, h, w, rng) for _ in range(n)]) for name, (n, h, w) in shapes.items()}


def photo_crop(photo: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    _, h, w = photo.shape
    tiled = np.pad(photo, ((0, 0), (0, max(0, height - h)), (0, max(0, width - w))), mode="symmetric")
    top = int(rng.integers(tiled.shape[1] - height + 1))
    left = int(rng.integers(tiled.shape[2] - width + 1))
    return np.ascontiguousarray(tiled[:, top : top + height, left : left + width], dtype=np.float32)


@dataclass
class ParityReport:
    artifact: str
    precision: Precision
    tolerance: Tolerance
    cases: dict[str, Comparison] = field(default_factory=dict)
    dataset: dict[str, float] = field(default_factory=dict)  # psnr_artifact, psnr_reference, delta_db
    backend: str = ""  # what ran the artifact, with its settings
    executed: dict | None = None  # OpenVINO: the precision each convolution executed in (``ExecutedPrecisions``)
    executed_summary: str = ""  # the same in one line, for people

    @property
    def violations(self) -> dict[str, list[str]]:
        found = {name: c.violations(self.tolerance) for name, c in self.cases.items()}
        return {name: v for name, v in found.items() if v}

    @property
    def passed(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {
            "artifact": self.artifact, "precision": self.precision, "passed": self.passed,
            "tolerance": vars(self.tolerance), "violations": self.violations,
            "cases": {name: c.as_dict() for name, c in self.cases.items()}, "dataset": self.dataset,
            "backend": self.backend, "executed": self.executed,
        }

    def text(self) -> str:
        """The report for people: a table of the cases, the dataset delta, each failure, PASS or FAIL."""
        rows = [[name, "×".join(map(str, c.shape)), f"{c.max_abs:.2e}", f"{c.max_rel:.2e}", f"{c.mean_abs:.2e}",
                 f"{c.psnr:.1f}", f"{c.off_by_level_pct:.3f}", str(c.nonfinite),
                 "ok" if not c.violations(self.tolerance) else "FAIL"] for name, c in self.cases.items()]
        lines = [self.executed_summary] if self.executed_summary else []
        lines += [f"parity of {self.artifact} ({self.precision}) against PyTorch FP32",
                  markdown_table(["case", "output", "max abs", "max rel", "mean abs", "PSNR dB", "% >1 level",
                                  "NaN/Inf", "status"], rows)]
        if self.dataset:
            d = self.dataset
            lines.append(f"dataset {d['name']}: PSNR vs ground truth {d['psnr_artifact']:.3f} dB (artifact) vs "
                         f"{d['psnr_reference']:.3f} dB (PyTorch): Δ {d['delta_db']:+.4f} dB")
        lines += [f"FAIL {name}: {'; '.join(problems)}" for name, problems in self.violations.items()]
        lines.append("PASS" if self.passed else "FAIL")
        return "\n".join(lines)


def check_cases(infer: Infer, cases: dict[str, tuple[np.ndarray, np.ndarray]], report: ParityReport) -> ParityReport:
    """Run ``infer`` on every case input and compare with its reference output."""
    for name, (x, reference) in cases.items():
        report.cases[name] = compare(infer(x), reference)
    return report
