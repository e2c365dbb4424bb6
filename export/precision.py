"""Precision variants of an export with an accuracy gate measured in dB on held-out photos.

FP32: the checked graph of ``to_onnx``. FP16: overflow pre-flight on calibration crops, conversion.
INT8: the Q/DQ graph ``int8_search`` finds on calibration crops. Then the gate: PSNR (Y, the evaluation
protocol) on held-out validation crops must not drop by more than ``max_drop`` dB against FP32, or
nothing is written. Every artifact's metadata records its precision, the layers kept in float, the
INT8 share of convolution MACs and the measured drop.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from ..runtime.quality import crop_psnr
from ..calib.cache import cached_stats
from ..calib.data import CropSpec, fingerprint, lr_hr_crops, network_batch, source_images
from .accuracy_gate import DEFAULT_MAX_DROP, check_accuracy, limit_for, passes
from .onnx import fp16
from .quant import int8_calibration, int8_channels, int8_checker, int8_search, int8_store
from .onnx.onnx_export import proto_infer, set_metadata, to_onnx
from ..models.loading import ModelInfo, SrModel
from ..runtime.errors import SrDeployError
from ..runtime.precision import Precision
from ..runtime.progress import Stages

VALIDATION_SPEC = CropSpec(size=64, count=24, seed=1)
INT8_ALPHAS = (0.5, 1.0)  # activation-equalization strengths tried
INT8_MIN_MAC_FRACTION = 0.8  # float fallback stops before the INT8 share of MACs falls below this
INT8_SEARCH_CROPS = 16  # calibration crops the search scores on (the rest only calibrate)
INT8_TARGET_SHARE = 0.3  # the search aims at this share of the budget, leaving room for held-out data


@dataclass
class PrecisionReport:
    precision: Precision
    kept_float: list[str] = field(default_factory=list)
    validation_psnr_fp32: float | None = None  # None: not measured (FP32 is its own reference)
    validation_psnr: float | None = None
    drop_db: float = 0.0
    peak_activation: float | None = None
    int8_mac_fraction: float | None = None  # INT8 share of convolution MACs (int8 only)
    int8: dict | None = None  # the INT8 search: method, alpha, calibration drop, per-layer sensitivity
    # INT8 for TensorRT: its float parts in FP16 measured against the same gate (``fp16_float_parts``)
    fp16_float: dict | None = None

    def metadata(self) -> dict[str, str]:
        return {
            "srdeploy.precision": self.precision,
            "srdeploy.kept_float": json.dumps(self.kept_float),
            "srdeploy.validation_drop_db": f"{self.drop_db:.4f}",
            "srdeploy.int8_mac_fraction": "" if self.int8_mac_fraction is None else f"{self.int8_mac_fraction:.4f}",
            "srdeploy.precision_report": json.dumps(asdict(self)),
            **({"srdeploy.fp16_float": json.dumps(self.fp16_float)} if self.fp16_float else {}),
        }


def export_precision(
    model: SrModel,
    precision: Precision | str,
    calib_dir: str | None = None,
    max_drop: float | None = None,
    fp16_io: bool = False,
    spec: CropSpec = CropSpec(),
    progress: bool = True,
    method: str = "minmax",
    enforce: bool = True,
    fp16_float_parts: bool = False,
) -> tuple[onnx.ModelProto, PrecisionReport]:
    """The ONNX graph of ``model`` at ``precision`` and what it cost, or a one-line error if over budget
    (``enforce=False`` reports instead: the quality report measures every variant). ``fp16_float_parts``
    (INT8 for TensorRT): also measure the graph with its float parts in FP16 against the same gate; the
    report's ``fp16_float`` says whether TensorRT may run them in FP16 (the graph returned keeps them FP32)."""
    precision = Precision.parse(precision)
    info = model.info
    stage = Stages(f"{precision} {info.name} ×{info.scale}", progress)
    stage("ONNX graph from PyTorch (torch.export)")
    proto = to_onnx(model)
    report = PrecisionReport(precision)
    if precision == "fp32":
        set_metadata(proto, report.metadata())
        return proto, report
    limit = limit_for(DEFAULT_MAX_DROP, precision, max_drop)
    pairs, batch, data_key = calibration_crops(model, calib_dir, spec, progress, stage)
    rounding = info.eval_rounding
    if precision == "fp16":
        stage("overflow pre-flight: activation peaks (cached after the first export)")
        peaks = cached_stats({"stat": "activation_peaks", "graph": graph_digest(proto), **data_key},
                             lambda: fp16.activation_peaks(proto, batch))
        report.peak_activation = max(peaks.values())
        report.kept_float = fp16.overflow_risks(proto, peaks)
        converted = fp16.to_fp16(proto, report.kept_float, fp16_io)
    else:
        converted, plan, _ = search_int8(proto, pairs, batch, data_key, info, limit, method, progress, stage)
        report.kept_float, report.int8_mac_fraction, report.int8 = plan.kept_float, plan.int8_mac_fraction, asdict(plan)
    stage(f"accuracy gate: held-out PSNR against FP32 on {VALIDATION_SPEC.count} crops (limit {limit} dB)")
    validation = lr_hr_crops(source_images(calib_dir, "validation"), info.scale, VALIDATION_SPEC)
    report.validation_psnr_fp32 = crop_psnr(proto_infer(proto), validation, info.scale, info.colour, rounding)
    infer, io_dtype = proto_infer(converted), "float16" if fp16_io and precision == "fp16" else "float32"
    report.validation_psnr = crop_psnr(lambda x: infer(x.astype(io_dtype)), validation, info.scale, info.colour, rounding)
    report.drop_db = report.validation_psnr_fp32 - report.validation_psnr
    if enforce:
        check_accuracy(report, limit, f"{info.name} ×{info.scale}")
    if precision == "int8" and fp16_float_parts:
        stage("FP16 float parts: overflow pre-flight on the INT8 graph, then the same held-out gate")
        report.fp16_float = measure_fp16_float(converted, batch, validation, report, limit, info, rounding)
    set_metadata(converted, report.metadata())
    return converted, report


def measure_fp16_float(int8_proto: onnx.ModelProto, batch: np.ndarray, validation, report: PrecisionReport,
                       limit: float, info: ModelInfo, rounding: str) -> dict:
    """The INT8 graph with FP16 float parts (``fp16.int8_with_fp16_float``) on the held-out crops: its drop
    against FP32 on ONNX Runtime (the gate: FP16 tensors between ops) and on OpenVINO where installed (reported
    beside OpenVINO's drop for FP32 float parts: on CPUs without VNNI its INT8 sums saturate by themselves)."""
    keep_fp32 = fp16.overflow_risks(int8_proto, fp16.activation_peaks(int8_proto, batch))
    candidate = fp16.int8_with_fp16_float(int8_proto, keep_fp32)
    drop = lambda infer: report.validation_psnr_fp32 - crop_psnr(infer, validation, info.scale, info.colour, rounding)  # noqa: E731
    result = {"passed": False, "keep_fp32": keep_fp32, "drop_db_onnxruntime": round(drop(proto_infer(candidate)), 4),
              "drop_db_openvino": None, "drop_db_openvino_fp32_float": None}
    from ..runtime.sessions.openvino import proto_infer as openvino_infer, unavailable

    if unavailable() is None:

        result["drop_db_openvino"] = round(drop(openvino_infer(candidate)), 4)
        result["drop_db_openvino_fp32_float"] = round(drop(openvino_infer(int8_proto)), 4)
    result["passed"] = passes(result["drop_db_onnxruntime"], limit)
    return result


def float_summary(kept_float: list[str], float_channels: dict[str, list[int]]) -> str:
    """What stayed float, for people: ``"2 layers"`` or ``"1 layer + 20 channels"`` (a layer that reads
    float channels of a split tensor is counted as channels, ``int8_channels``)."""
    split = {f"{tensor}{int8_channels.FLOAT}" for tensor in float_channels}
    layers = sum(key.split("@")[-1] not in split for key in kept_float)
    channels = sum(len(c) for c in float_channels.values())
    parts = [f"{layers} layer{'s' * (layers != 1)}"] if layers or not channels else []
    return " + ".join(parts + ([f"{channels} channel{'s' * (channels != 1)}"] if channels else []))


def graph_digest(proto: onnx.ModelProto) -> str:
    """sha256 of a graph's nodes and weights (metadata excluded), for cache keys."""
    return hashlib.sha256(proto.graph.SerializeToString(deterministic=True)).hexdigest()


def calibration_crops(model: SrModel, calib_dir: str | None, spec: CropSpec, progress: bool,
                      stage: Stages) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray, dict]:
    """The calibration crops (LR, HR), their network batch, and the key that caches statistics on them."""
    info = model.info
    calibration = source_images(calib_dir, "calibration")
    data_key = {"checkpoint": info.checkpoint_sha256, "model": info.name, "scale": info.scale, "options": info.options,
                "data": fingerprint(calibration, info.scale, spec)}
    stage(f"{spec.count} calibration crops from {len(calibration)} photos")
    pairs = lr_hr_crops(calibration, info.scale, spec, progress)
    return pairs, network_batch(pairs, info.colour), data_key


def int8_search_for(model: SrModel, calib_dir: str | None, max_drop: float | None, progress: bool, stage: Stages
                    ) -> tuple[int8_search.Int8Plan, int8_search.Variant, list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """The INT8 search on ``model``'s ONNX graph for other quantizers to carry over (the ExecuTorch target): its
    plan, the variant it quantizes (equalized weights, weight codes), the calibration crops and their batch."""
    proto = to_onnx(model)
    pairs, batch, data_key = calibration_crops(model, calib_dir, CropSpec(), progress, stage)
    limit = limit_for(DEFAULT_MAX_DROP, Precision.INT8, max_drop)
    _, plan, variant = search_int8(proto, pairs, batch, data_key, model.info, limit, "minmax", progress, stage)
    return plan, variant, pairs, batch


def search_int8(
    proto: onnx.ModelProto,
    pairs: list[tuple[np.ndarray, np.ndarray]],
    batch: np.ndarray,
    data_key: dict,
    info: ModelInfo,
    limit: float,
    method: str,
    progress: bool,
    stage: Stages,
) -> tuple[onnx.ModelProto, int8_search.Int8Plan, int8_search.Variant]:
    """The ``int8_search`` plan's graph checked against TensorRT's Q/DQ rules, the plan, its variant."""
    score = int8_search.calibration_score(pairs[:INT8_SEARCH_CROPS], info.scale, info.colour, info.eval_rounding)

    histograms = method != "minmax"  # minmax needs the peaks only: one pass over the crops instead of two

    def stats_for(graph: onnx.ModelProto) -> dict:
        # keyed by the graph itself: the equalized weights depend on alpha and on the code that made them
        stat = "int8_histograms" if histograms else "int8_peaks"
        return cached_stats({"stat": stat, "graph": graph_digest(graph), **data_key},
                            lambda: int8_calibration.activation_histograms(graph, batch, histograms))

    key = {"graph": graph_digest(proto), **data_key, "limit": limit, "method": method}
    stored = int8_store.load(key)
    if stored is not None:
        stage("INT8 search: this graph's result on these crops at this limit, stored by an earlier export")
        converted, plan, variant = stored
    else:
        converted, plan, variant = int8_search.plan(proto, batch, score, INT8_TARGET_SHARE * limit, stats_for, method,
                                                    INT8_ALPHAS, INT8_MIN_MAC_FRACTION, progress, stage)
        int8_store.save(key, converted, plan, variant)
    problems = int8_checker.check_qdq(converted)
    if problems:
        raise SrDeployError(f"the INT8 graph breaks TensorRT's Q/DQ rules ({problems[0]}): this is a bug, please report it")
    return converted, plan, variant
