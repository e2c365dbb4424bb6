"""FP32 ONNX → FP16 ONNX, with an overflow pre-flight.

Super-resolution networks are known to give black or NaN images in FP16 when an activation exceeds the
FP16 range (65504). The pre-flight runs the FP32 graph on calibration crops, records every tensor's
largest |value|, and keeps in FP32 each node that produces or consumes a tensor within ``headroom``× of
that range (so the cast into FP16 cannot overflow either). The conversion itself is onnxconverter-common's
``convert_float_to_float16`` (Microsoft's maintained converter, with per-node block lists and If
subgraph support), rather than hand-written graph surgery.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .onnx_export import cpu_session

FP16_MAX = 65504.0
DEFAULT_HEADROOM = 16.0


def activation_peaks(proto: onnx.ModelProto, batch: np.ndarray, chunk: int = 8) -> dict[str, float]:
    """Largest |value| of every float tensor of the main graph over ``batch`` (FP32 run)."""
    probe = onnx.shape_inference.infer_shapes(proto)
    types = {v.name: v.type.tensor_type.elem_type for v in probe.graph.value_info}
    graph_outputs = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for name in node.output:
            if name and name not in graph_outputs and types.get(name) == TensorProto.FLOAT:
                probe.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = cpu_session(probe)
    float_names = [o.name for o in session.get_outputs() if o.type == "tensor(float)"]
    peaks = dict.fromkeys(float_names, 0.0)
    input_name = session.get_inputs()[0].name
    for start in range(0, len(batch), chunk):
        values = session.run(float_names, {input_name: batch[start : start + chunk]})
        for name, value in zip(float_names, values):
            peaks[name] = max(peaks[name], float(np.abs(value).max(initial=0.0)))
    return peaks


def overflow_risks(proto: onnx.ModelProto, peaks: dict[str, float], headroom: float = DEFAULT_HEADROOM) -> list[str]:
    """Names of the nodes that produce or consume a tensor whose peak is within ``headroom``× of FP16_MAX."""
    risky = {name for name, peak in peaks.items() if peak * headroom > FP16_MAX}
    return [n.name for n in proto.graph.node if risky.intersection(n.output) or risky.intersection(n.input)]


def to_fp16(proto: onnx.ModelProto, keep_fp32: list[str], fp16_io: bool = False) -> onnx.ModelProto:
    """FP16 copy of ``proto``; ``keep_fp32`` nodes stay FP32; I/O stays FP32 unless ``fp16_io``."""
    from onnxconverter_common import float16

    unnamed = [n for n in proto.graph.node if not n.name]
    if unnamed:
        raise ValueError(f"{len(unnamed)} nodes have no name: the block list needs names")
    converted = onnx.ModelProto()
    converted.CopyFrom(proto)  # the converter edits the graph it is given
    # The converter's default clips constants above 1e4; FP16 itself holds up to 65504.
    return float16.convert_float_to_float16(
        converted, keep_io_types=not fp16_io, node_block_list=keep_fp32, disable_shape_infer=True,
        max_finite_val=FP16_MAX,
    )


QDQ_FP16_OPSET = 19  # QuantizeLinear/DequantizeLinear take FP16 inputs and scales from opset 19


def int8_with_fp16_float(proto: onnx.ModelProto, keep_fp32: list[str]) -> onnx.ModelProto:
    """An INT8 Q/DQ graph whose float parts run in FP16: the float side of every Q/DQ, the layers the INT8
    search kept in float, the residual adds. What a strongly typed TensorRT engine then runs in FP16 instead of
    FP32. Opset 19 (FP16 scales); ``keep_fp32`` nodes (the overflow pre-flight's) stay FP32."""
    bumped = onnx.ModelProto()
    bumped.CopyFrom(proto)
    for entry in bumped.opset_import:
        if entry.domain in ("", "ai.onnx"):
            entry.version = max(entry.version, QDQ_FP16_OPSET)
    return to_fp16(bumped, keep_fp32)
