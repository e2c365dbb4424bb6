"""The ``trt`` target: a TensorRT engine built here from the gated ONNX graph (``trt_build``), with its sidecar."""
from __future__ import annotations

from pathlib import Path

from .trt_build import export_model_engine
from .trt_plan import profile_from_args
from ..options import ExportOptions, ExportResult, Progress, result_for
from ..onnx.target import gated_onnx
from ...models.loading import SrModel
from ...models.spec import command_flags
from ...runtime.errors import COMMAND


def check(options: ExportOptions, out: Path) -> None:
    """TensorRT and a GPU to build with, or one line naming how to get them (nothing written)."""
    from ...runtime.sessions.cuda import Cuda
    from ...runtime.sessions.tensorrt import require_tensorrt

    require_tensorrt()
    Cuda()


def export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """``out/MODEL_xSCALE_PRECISION.engine`` for the profile of ``--min/--opt/--max-shape``."""
    info = net.info
    proto, report = gated_onnx(net, options.precision, options, progress, for_tensorrt=True)
    profile = profile_from_args(info.export.input_name, info.channels, info.scale, options.min_shape,
                                options.opt_shape, options.max_shape)
    bounds = "".join(f" --{k}-shape {'x'.join(map(str, v))}" for k, v in
                     (("min", profile.min), ("opt", profile.opt), ("max", profile.max)))
    rebuild = f"{COMMAND} export {command_flags(info)} --target trt --precision {options.precision}{bounds}"
    result = result_for(net, "trt", options, report)
    stem = f"{info.name}_x{info.scale}_{options.precision}"
    result.artifacts.append(export_model_engine(net, proto, options.precision, profile, out, stem, rebuild))
    return result
