"""OpenVINO IR (``.xml`` + ``.bin``) from the ONNX graph ``export_precision`` gated, gated again on OpenVINO.

FP32 and INT8: our FP32 and Q/DQ graphs (OpenVINO turns each Q/DQ pair into a FakeQuantize it compiles into
u8/i8 convolutions); in the INT8 IR, centred tensors are u8 with a zero point (``zero_point``: the same codes
without the centring ``Pad``/``Sub`` OpenVINO cannot fuse). A gate that reads the whole image (DSRNet) is written
as a per-image select instead of an ``If`` (``global_gate.select_form``: the same outputs, both branches computed),
since OpenVINO fuses nothing across an ``If``'s boundaries and runs it slower; a strided ``ConvTranspose`` as
a sub-pixel convolution (``subpixel``); an INT8 convolution's input channels in the order that keeps CPUs without
VNNI from saturating int16 pairs (``pair_order``). FP16: the FP32 graph with its weights stored in
FP16 (OpenVINO's compressed IR). The written files are compiled at f32 inference precision and scored on
the held-out crops before they are moved into place: the gate measures what OpenVINO computes, integer
kernels included, not what ONNX Runtime computes. The IR's rt_info carries the srdeploy metadata, the OpenVINO measurement, and a digest over both
files (``runtime.sessions.openvino.check_ir``).
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnx

from ...runtime.quality import crop_psnr
from ...calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from ..onnx.onnx_export import proto_infer
from ..accuracy_gate import DEFAULT_MAX_DROP, limit_for, check_openvino_accuracy
from ..precision import VALIDATION_SPEC, PrecisionReport, export_precision
from .pair_order import pair_order_form
from ..subpixel import subpixel_form
from .zero_point import zero_point_form
from ...models.loading import ModelInfo, SrModel
from ...runtime import digest
from ...runtime.artifact import PREFIX
from ...runtime.atomic import scratch_dir
from ...runtime.cpu import int8_dot
from ...runtime.global_gate import select_form
from ...runtime.errors import SrDeployError
from ...runtime.sessions.openvino import (RT_SECTION, OpenVinoSession, cpu_supports, import_openvino, ir_weights,
                                           seal_ir)
from ...runtime.precision import Precision
from ...runtime.progress import Stages

# Calibration crops the INT8 IR's channel pairs are ordered on (``pair_order``): 16 × 64² windows, 8192 sampled.
PAIR_ORDER_SPEC = CropSpec(count=16)


def export_ir(
    model: SrModel,
    precision: Precision | str,
    out: Path,
    calib_dir: str | None = None,
    max_drop: float | None = None,
    method: str = "minmax",
    progress: bool = True,
) -> tuple[Path, PrecisionReport, dict]:
    """Write ``out/<model>_x<scale>_<precision>.xml`` (+ ``.bin``) after both gates: (path, the OpenVINO gate's
    report, the OpenVINO measurement). Over the limit: a one-line error and nothing written."""
    import_openvino()
    precision = Precision.parse(precision)
    proto, report = export_precision(model, "fp32" if precision == "fp16" else precision, calib_dir, max_drop,
                                     progress=progress, method=method)
    return write_ir(proto, report, model.info, precision, out, calib_dir, max_drop, progress)


def ir_graph(proto: onnx.ModelProto, precision: Precision, calibration: np.ndarray | None) -> tuple[onnx.ModelProto, dict]:
    """The ONNX graph an IR is converted from, and what was rewritten: an INT8 graph's centred tensors as u8 zero
    points (``zero_point_tensors``); strided transposed convolutions as sub-pixel convolutions
    (``subpixel_deconvolutions``: OpenVINO runs a ``ConvTranspose`` far below convolution speed); a whole-image
    gate's ``If`` as a per-image select (``gate_as_select``: one static graph OpenVINO fuses across, where an
    ``If``'s boundaries stop its fusions); INT8 convolutions' input channels ordered against int16 pair overflow
    on CPUs without VNNI (``pair_reordered_tensors``), measured on ``calibration`` (N×C×H×W network inputs,
    required for INT8)."""
    int8 = precision == Precision.INT8
    if int8 and calibration is None:
        raise ValueError("an INT8 IR graph needs calibration crops to order its channel pairs")
    graph, zero_point_tensors = zero_point_form(proto) if int8 else (proto, 0)
    graph, subpixel = subpixel_form(graph)
    gate_as_select = (any(node.op_type == "If" for node in graph.graph.node)
                      and any((p.key, p.value) == (f"{PREFIX}global_gate", "true") for p in proto.metadata_props))
    if gate_as_select:
        graph = select_form(graph)
    graph, reordered = pair_order_form(graph, calibration) if int8 else (graph, 0)
    return graph, {"zero_point_tensors": zero_point_tensors, "subpixel_deconvolutions": subpixel,
                   "gate_as_select": gate_as_select, "pair_reordered_tensors": reordered}


def pair_order_crops(calib_dir: str | None, info: ModelInfo) -> np.ndarray:
    """The calibration crops ``ir_graph`` orders INT8 channel pairs on (``PAIR_ORDER_SPEC``), as network input."""
    return network_batch(lr_hr_crops(source_images(calib_dir), info.scale, PAIR_ORDER_SPEC), info.colour)


def write_ir(
    proto: onnx.ModelProto,
    report: PrecisionReport,
    info: ModelInfo,
    precision: Precision,
    out: Path,
    calib_dir: str | None = None,
    max_drop: float | None = None,
    progress: bool = True,
) -> tuple[Path, PrecisionReport, dict]:
    """The IR of ``proto`` (``export_precision``'s graph and ``report``; FP32 for ``precision`` fp16, and for bf16,
    which OpenVINO computes in bfloat16: refused on a CPU without AVX-512 BF16 or AMX, where it cannot be gated),
    through the gate on OpenVINO (see ``export_ir``); ``info``: the model's ``srdeploy`` record."""
    ov = import_openvino()
    if precision == Precision.BF16 and not cpu_supports("bf16"):
        raise SrDeployError("--precision bf16 is computed by OpenVINO in bfloat16, which this CPU has no native support "
                            "for (AVX-512 BF16 or AMX): export it on such a CPU, or choose fp32 or int8")
    limit = limit_for(DEFAULT_MAX_DROP, precision, max_drop)
    stage = Stages(f"openvino {precision} {info.name} ×{info.scale}", progress)
    stem = f"{info.name}_x{info.scale}_{precision}"
    out.mkdir(parents=True, exist_ok=True)
    work = scratch_dir(out, stem)
    try:
        stage("OpenVINO IR from the ONNX graph")
        graph, rewrites = ir_graph(proto, precision,
                                   pair_order_crops(calib_dir, info) if precision == Precision.INT8 else None)
        onnx.save(graph, work / "graph.onnx")
        ir = ov.convert_model(str(work / "graph.onnx"))
        metadata = {k.removeprefix(PREFIX): v for k, v in ((p.key, p.value) for p in proto.metadata_props)
                    if k.startswith(PREFIX) and k != digest.KEY}
        computes = "bf16" if precision == Precision.BF16 else "f32"
        metadata.update(precision=precision, openvino_weights="fp16" if precision == "fp16" else "fp32",
                        inference_precision=computes)
        draft = _save(ov, ir, metadata, work / f"{stem}.xml", precision == "fp16")
        stage(f"accuracy gate on OpenVINO ({computes} inference precision, int8 dot product: {int8_dot()}): held-out "
              f"PSNR against FP32 on {VALIDATION_SPEC.count} crops (limit {limit} dB)")
        with warnings.catch_warnings():  # the draft is what is being validated here
            warnings.simplefilter("ignore")
            session = OpenVinoSession(draft, cache=False)
        validation = lr_hr_crops(source_images(calib_dir, "validation"), info.scale, VALIDATION_SPEC)
        rounding = info.eval_rounding
        reference = report.validation_psnr_fp32
        if reference is None:  # an FP32 graph: measure its ONNX Runtime score here
            reference = crop_psnr(proto_infer(proto), validation, info.scale, info.colour, rounding)
        measured = crop_psnr(session.infer, validation, info.scale, info.colour, rounding)
        executed = session.executed_precisions()
        gated = replace(report, precision=precision, validation_psnr=measured, validation_psnr_fp32=reference,
                        drop_db=reference - measured)
        check_openvino_accuracy(gated, report, limit, f"{info.name} ×{info.scale}", int8_dot())
        measurement = {"openvino": ov.get_version(), "inference_precision": session.compiled_precision,
                       "int8_dot": int8_dot(), "validation_psnr": measured, "validation_psnr_fp32": reference,
                       "drop_db": reference - measured, "int8_executed_mac_fraction": executed.int8_mac_fraction,
                       **rewrites}
        metadata.update(openvino_report=json.dumps(measurement), validation_drop_db=f"{reference - measured:.4f}",
                        precision_report=json.dumps(asdict(gated)))
        final = _save(ov, ov.Core().read_model(draft), metadata, work / "final" / f"{stem}.xml", precision == "fp16")
        target = out / f"{stem}.xml"
        os.replace(ir_weights(final), ir_weights(target))  # the .bin first: the .xml is the entry point
        os.replace(final, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target, gated, measurement


def _save(ov, ir, metadata: dict[str, str], path: Path, fp16_weights: bool) -> Path:
    """``ir`` written with ``metadata`` as its only rt_info besides OpenVINO's own, sealed (``seal_ir``)."""
    info = ir.get_rt_info()
    for section in ("framework", "conversion_parameters", RT_SECTION):  # the ONNX's keys, our temporary paths
        if section in info.keys():
            del info[section]
    for key, value in {**metadata, "sha256": digest.PLACEHOLDER.decode()}.items():
        ir.set_rt_info(value, [RT_SECTION, key])
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ir, str(path), compress_to_fp16=fp16_weights)
    path.write_bytes(seal_ir(path.read_bytes(), ir_weights(path).read_bytes()))
    return path
