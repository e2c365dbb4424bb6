"""INT8 quantizers compared: ONNX Runtime's ``quantize_static``, NVIDIA ModelOpt's ONNX PTQ and srdeploy.

    python -m srdeploy.benchmarks.int8_compare --models lesrcnn:2,fsrcnn:2 --out benchmarks/results \\
        [--modelopt-python /path/to/venv/bin/python]

Every quantizer gets the same FP32 graph and calibration crops (scikit-image photos) and TensorRT's
settings: symmetric int8 activations, per-channel symmetric int8 weights, float biases, Q/DQ on
convolution inputs only. Two placements each: every convolution in INT8, and the convolutions under 1 %
of the MACs (mean shifts, first and last layers) kept in float. The score is the PSNR drop against FP32
on the held-out crops (evaluation protocol), and whether ``int8_checker.check_qdq`` accepts the graph.
ModelOpt pins other onnx/onnxruntime versions than srdeploy, so it runs in its own virtualenv
(``pip install "nvidia-modelopt[onnx]"``), given by ``--modelopt-python``; its graphs are scored here.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from .. import models
from ..runtime.quality import crop_psnr
from ..calib.data import CropSpec, lr_hr_crops, network_batch, source_images
from ..export.quant import int8_calibration, int8_checker, int8_graph, int8_qdq, int8_search
from ..export.onnx import graph_rewrite
from ..export.onnx.onnx_export import proto_infer, to_onnx
from ..export.precision import VALIDATION_SPEC, export_precision, float_summary
from ..runtime.atomic import atomic_path
from ..runtime.tables import markdown_table

MODELOPT_SCRIPT = textwrap.dedent("""
    import sys, numpy as np
    from modelopt.onnx.quantization import quantize
    source, data, output, method, exclude = sys.argv[1:6]
    quantize(onnx_path=source, quantize_mode="int8", calibration_data={"lr": np.load(data)},
             calibration_method=method, calibration_eps=["cpu"], op_types_to_quantize=["Conv", "ConvTranspose"],
             nodes_to_exclude=[n for n in exclude.split(",") if n], high_precision_dtype="fp32", output_path=output,
             log_level="ERROR")
""")


class Reader:
    """onnxruntime.quantization's CalibrationDataReader over a batch, 8 images at a time."""

    def __init__(self, batch: np.ndarray):
        self.chunks = iter(np.split(batch, range(8, len(batch), 8)))

    def get_next(self):
        chunk = next(self.chunks, None)
        return None if chunk is None else {"lr": chunk}


def ort_quantize(source: Path, output: Path, batch: np.ndarray, method: str, exclude: list[str]) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    quantize_static(
        str(source), str(output), Reader(batch), quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["Conv", "ConvTranspose"],
        nodes_to_exclude=exclude, calibrate_method=getattr(CalibrationMethod, method),
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "OpTypesToExcludeOutputQuantization": ["Conv", "ConvTranspose"]},
    )


def int8_layer_keys(graph: onnx.ModelProto) -> set[str]:
    """Keys (weight@activation of the float graph) of the convolutions whose inputs both pass a Q/DQ pair."""
    producers = {o: n for _, n, _ in graph_rewrite.walk(graph.graph) for o in n.output}

    def source(name: str) -> str | None:
        dq = producers.get(name)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producers.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0].removesuffix(".int8")

    keys = set()
    for _, node, _ in graph_rewrite.walk(graph.graph):
        if node.op_type in int8_graph.WEIGHT_AXIS:
            activation, weight = source(node.input[0]), source(node.input[1])
            if activation and weight:
                keys.add(f"{weight.removesuffix('_quantized')}@{activation}")
    return keys


def cheap_nodes(proto: onnx.ModelProto, macs: dict[str, int]) -> tuple[list[str], set[str]]:
    """Node names and layer keys of the convolutions under 1 % of the MACs."""
    keys = int8_search.cheap_layers(macs, [s for s in int8_graph.layers(proto) if s.on_path])
    names = [n.name for n in proto.graph.node if n.op_type in int8_graph.WEIGHT_AXIS and f"{n.input[1]}@{n.input[0]}" in keys]
    return names, keys


def compare_model(name: str, scale: int, modelopt_python: str | None, tmp: Path) -> list[dict]:
    model = models.load(name, scale)
    info = model.info
    proto = to_onnx(model)
    source = tmp / f"{name}_x{scale}.onnx"
    onnx.save(proto, source)
    batch = network_batch(lr_hr_crops(source_images(), scale, CropSpec()), info.colour)
    np.save(tmp / "calib.npy", batch)
    validation = lr_hr_crops(source_images(split="validation"), scale, VALIDATION_SPEC)
    reference = crop_psnr(proto_infer(proto), validation, scale, info.colour, info.eval_rounding)
    stats = int8_calibration.activation_histograms(proto, batch)
    names, keys = cheap_nodes(proto, stats["macs"])
    rows = []

    total = sum(stats["macs"].values())

    def score(tool: str, method: str, placement: str, graph: onnx.ModelProto, share: float | None = None) -> None:
        """``share``: the INT8 share of MACs, counted here from the graph's INT8 layers unless given."""
        drop = reference - crop_psnr(proto_infer(graph), validation, scale, info.colour, info.eval_rounding)
        share = sum(stats["macs"].get(k, 0) for k in int8_layer_keys(graph)) / total if share is None else share
        rows.append({"model": name, "scale": scale, "tool": tool, "method": method, "placement": placement,
                     "heldout_drop_db": round(drop, 4), "int8_mac_fraction": share,
                     "tensorrt_rules": "ok" if not int8_checker.check_qdq(graph) else int8_checker.check_qdq(graph)[0]})

    placements = {"all INT8": ([], set()), "<1% MACs float": (names, keys)}
    jobs = [(p, m) for p in placements for m in ("MinMax", "Percentile", "Entropy")]
    for placement, method in tqdm(jobs, desc=f"{name} ×{scale} ONNX Runtime", leave=False):
        out = tmp / f"ort_{method}.onnx"
        ort_quantize(source, out, batch, method, placements[placement][0])
        score("ONNX Runtime quantize_static", method, placement, onnx.load(out))
    if modelopt_python:
        for placement in placements:
            for method in ("max", "entropy"):
                out = tmp / f"modelopt_{method}.onnx"
                subprocess.run([modelopt_python, "-c", MODELOPT_SCRIPT, str(source), str(tmp / "calib.npy"), str(out),
                                method, ",".join(placements[placement][0])], check=True, capture_output=True)
                score("ModelOpt onnx PTQ", method, placement, onnx.load(out))
    sites = int8_graph.layers(proto)
    for placement, (_, float_keys) in placements.items():
        for method in int8_calibration.METHODS:
            amax = {k: int8_calibration.activation_amax(v["histogram"], v["peak"], method) for k, v in stats.items() if k != "macs"}
            score("srdeploy int8_qdq.quantize", method, placement, int8_qdq.quantize(proto, amax, {s.key for s in sites} - float_keys))
    searched, report = export_precision(model, "int8", progress=False, enforce=False)
    # the search's graph is centred and split (renamed layers): its own MAC accounting
    kept = float_summary(report.kept_float, report.int8["float_channels"])
    score("srdeploy export (search)", "minmax", f"{kept} float", searched, report.int8_mac_fraction)
    return rows


def markdown(rows: list[dict]) -> str:
    header = ["model", "tool", "calibration", "placement", "held-out Δ dB", "INT8 MACs", "TensorRT rules"]
    return markdown_table(header, [[f"{r['model']} ×{r['scale']}", r["tool"], r["method"], r["placement"],
                                    f"{-r['heldout_drop_db']:+.3f}", f"{r['int8_mac_fraction']:.1%}", r["tensorrt_rules"]]
                                   for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="lesrcnn:2,fsrcnn:2", help="name:scale,…")
    parser.add_argument("--modelopt-python", help="python of a virtualenv with nvidia-modelopt[onnx]")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for item in args.models.split(","):
            name, scale = item.split(":")
            rows += compare_model(name, int(scale), args.modelopt_python, Path(tmp))
    table = markdown(rows)
    out = Path(args.out)
    with atomic_path(out / "int8_compare.json") as path:
        path.write_text(json.dumps({"command": " ".join(["python -m srdeploy.benchmarks.int8_compare", *(argv or sys.argv[1:])]),
                                    "rows": rows}, indent=2))
    with atomic_path(out / "int8_compare.md") as path:
        path.write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
