"""What an export takes and gives, whatever the target: ``ExportOptions`` in, ``ExportResult`` out, ``Progress`` for
the lines people read (``export.main`` drives; each target's exporter has the shape it describes)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..runtime.precision import Precision


@dataclass(frozen=True)
class Progress:
    """Progress and stage summaries for people, on stderr while ``shown``: ``progress("…")``."""

    shown: bool = True

    def __call__(self, message: str) -> None:
        if self.shown:
            print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ExportOptions:
    """How to export, whatever the target (each reads what concerns it; ``export --help`` says which)."""

    precision: str | None = None  # fp32 | fp16 | int8; None: the target's default
    calib: str | None = None  # calibration/validation photos (default: scikit-image's bundled photos)
    max_psnr_drop: float | None = None  # dB on held-out photos (default per precision or compression)
    calib_method: str = "minmax"  # int8 activation ranges: minmax | percentile | mse
    fp16_io: bool = False  # fp16: FP16 input and output tensors
    min_shape: str | None = None  # trt/jetson/coreml: the LR shape range, HxW or NxCxHxW
    opt_shape: str | None = None
    max_shape: str | None = None
    shapes: str | None = None  # coreml/ios: enumerated LR sizes instead of the range
    image_io: bool = False  # coreml: image input and output
    compress: str = "none"  # coreml/ios weight compression
    deployment_target: str = "iOS16"  # coreml/ios minimum OS
    precisions: str = "fp32,fp16,int8"  # jetson: the bundle's precisions
    portable: bool = False  # onnx: the graph without control flow
    metadata: dict[str, str] | None = None  # extra srdeploy metadata the artifact records (``precision_choice``)
    graphs: dict | None = field(default=None, compare=False, repr=False)  # gated ONNX graphs by precision, shared
    # by the exports of one model (bench: one INT8 search for ONNX Runtime, OpenVINO and TensorRT)


@dataclass
class ExportResult:
    """What an export wrote and what its gates measured (``details``: what the target measured beyond the
    report, printed by ``--json`` under its own keys)."""

    artifacts: list[Path]
    model: str
    scale: int
    target: str
    precision: Precision
    report: Any = None  # export.precision.PrecisionReport, export.coreml.coreml_package.CoreMLReport, or None
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out: dict = {"artifacts": [str(p) for p in self.artifacts], "model": self.model, "scale": self.scale,
                     "target": self.target}
        if self.report is not None:
            out["precision"] = self.precision
            out["report"] = self.report.as_dict() if hasattr(self.report, "as_dict") else vars(self.report)
        return {**out, **self.details}


def result_for(net, target: str, options: ExportOptions, report: Any = None, **details) -> ExportResult:
    """An empty result of ``net`` for ``target``, for an exporter to fill."""
    return ExportResult([], net.info.name, net.info.scale, target, Precision.parse(options.precision), report, details)
