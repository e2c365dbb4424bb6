"""A toy export target, defined outside srdeploy, as a plug-in would be: ``SRDEPLOY_TARGETS=tests.toy_target:TOY``.
It writes the gated FP32 ONNX graph under its own suffix, and opens it with ONNX Runtime under its own name."""
from __future__ import annotations

from pathlib import Path

from srdeploy.export.options import ExportOptions, ExportResult, Progress, result_for
from srdeploy.export.onnx.onnx_export import save
from srdeploy.export.onnx.target import gated_onnx
from srdeploy.runtime.sessions.onnxruntime import OnnxSession
from srdeploy.runtime.targets import Backend, Target


class ToySession(OnnxSession):
    runtime_name = "Toy runtime"


def export_toy(net, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    proto, report = gated_onnx(net, options.precision, options, progress)
    result = result_for(net, "toy", options, report)
    result.artifacts.append(save(proto, out / f"{net.info.name}_x{net.info.scale}_{options.precision}.toy"))
    return result


TOY = Target("toy", "a toy artifact", "a .toy file, ONNX under another name (a test's plug-in)", exporter=export_toy,
             session=ToySession, suffixes=(".toy",), artifact=".toy (Toy runtime)", runtime="toyruntime",
             backends=(Backend("toy", "Toy runtime, FP32 artifact", "fp32"),))
