"""The gated ONNX graph → an ncnn artifact, the folder ``NAME.ncnn`` (``runtime.sessions.ncnn`` reads it).

pnnx (Tencent's converter, the one ncnn's authors maintain) turns each ONNX graph into ncnn's ``.param`` (layers)
and ``.bin`` (weights): FP32 weights for fp32, FP16 weights for fp16 (``fp16=1``, ncnn's own storage format). A
network whose gate reads the whole image (DSRNet) becomes its four gate parts (``runtime.global_gate.gate_parts``:
its ``If``, and the per-image select that replaces it elsewhere, are no ncnn layers). A strided transposed
convolution stays one: ncnn ran FSRCNN ×2's deconvolution 2.4–2.6× faster than the sub-pixel convolution that
replaces it for OpenVINO (256×256, 1 and 2 threads, Xeon with AVX-512; docs/ncnn.md).

Each graph goes through ncnn itself before anything is written: the whole folder is built in a temporary folder,
opened by ``NcnnSession`` (the seal, the metadata), and gated on held-out photo crops (FP32: within 1e-5 of
PyTorch; FP16 and INT8: the PSNR drop against PyTorch FP32, on the CPU and, where ncnn sees one, on a Vulkan
device). INT8 (``ncnn_int8``) carries the gated INT8 ONNX graph's search into ncnn's INT8 layout.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .ncnn_int8 import Int8Conv, Int8Twin, quantize_graph
from .ncnn_param import read_param
from ..accuracy_gate import DEFAULT_MAX_DROP, limit_for
from ..precision import VALIDATION_SPEC
from ...calib.data import lr_hr_crops, network_batch, source_images
from ...models.loading import SrModel
from ...models.torch_runner import TorchRunner
from ...runtime.artifact import srdeploy_metadata
from ...runtime.atomic import atomic_dir, check_bundle_folder
from ...runtime.errors import SrDeployError
from ...runtime.global_gate import gate_parts
from ...runtime.manifest import MANIFEST, seal_manifest
from ...runtime.precision import Precision
from ...runtime.quality import crop_psnr
from ...runtime.sessions.ncnn import FORMAT, SUFFIX, NcnnSession, import_ncnn, vulkan_devices

FP32_MAX_ABS = 1e-5  # × max(1, max|PyTorch|): FP32 ncnn against PyTorch on the held-out crops


def import_pnnx():
    try:
        import pnnx
    except ImportError:
        raise SrDeployError("--target ncnn converts with pnnx, which is not installed: pip install pnnx ncnn (or pip "
                            "install -e '.[ncnn]')") from None
    return pnnx


def blobs(param: str) -> tuple[str, str]:
    """(input, output) blob of an ncnn ``.param``: the Input layer's top, and the one blob no layer reads."""
    layers = read_param(param)
    consumed = {name for layer in layers for name in layer.bottoms}
    inputs = [name for layer in layers if layer.kind == "Input" for name in layer.tops]
    outputs = [b for layer in layers for b in layer.tops if b not in consumed and b not in inputs]
    if len(inputs) != 1 or len(outputs) != 1:
        raise SrDeployError(f"pnnx made an ncnn graph with inputs {inputs} and outputs {outputs}, not one of each")
    return inputs[0], outputs[0]


def convert(proto: onnx.ModelProto, shapes: list[list[int]], fp16_weights: bool, work: Path) -> tuple[bytes, bytes]:
    """One ONNX graph → (``.param`` text, ``.bin`` weights) by pnnx, at the input ``shapes`` (two: dynamic H, W)."""
    pnnx = import_pnnx()
    onnx.save(proto, work / "graph.onnx")
    names = {key: work / f"out.{key}" for key in ("pnnxparam", "pnnxbin", "pnnxpy", "pnnxonnx", "ncnnparam",
                                                  "ncnnbin", "ncnnpy")}
    shape_args = [f"inputshape{'' if i == 0 else i + 1}=[{','.join(map(str, s))}]" for i, s in enumerate(shapes)]
    done = subprocess.run([pnnx.EXEC_PATH, str(work / "graph.onnx"), *shape_args, f"fp16={int(fp16_weights)}",
                           *(f"{k}={v}" for k, v in names.items())], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not names["ncnnparam"].is_file():
        last = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()] or ["no output"]
        raise SrDeployError(f"pnnx could not convert the ONNX graph to ncnn ({last[-1][:160]})")
    param = padding_layers(names["ncnnparam"].read_text(), names["pnnxparam"].read_text())
    ncnn = import_ncnn()
    unknown = sorted({layer.kind for layer in read_param(param) if ncnn.layer_to_index(layer.kind) < 0})
    if unknown:
        raise SrDeployError(f"pnnx left operators ncnn has no layer for ({', '.join(unknown)}): this graph cannot run "
                            "on ncnn")
    return param.encode(), names["ncnnbin"].read_bytes()


def padding_layers(param: str, pnnx_param: str) -> str:
    """``param`` with each ONNX ``Pad`` that pnnx left unconverted (zeros on H and W: the explicit padding of
    centred INT8 inputs, ``export.quant.int8_centre``) as ncnn's ``Padding`` layer; pnnx's own graph has its pads."""
    pads = dict(re.findall(r"^Pad\s+(\S+)\s.*\bpads=\(([-\d,]+)\)", pnnx_param, re.MULTILINE))
    lines = param.splitlines()
    for layer in (layer for layer in read_param(param) if layer.kind == "Pad"):
        values = [int(v) for v in pads.get(layer.name, "").split(",") if v]
        if len(values) != 8 or any(values[i] for i in (0, 1, 4, 5)) or re.search(
                rf"^Pad\s+{re.escape(layer.name)}\s.*\b(mode|value)=", pnnx_param, re.MULTILINE):
            continue  # left for the unknown-layer check
        top, left, bottom, right = values[2], values[3], values[6], values[7]
        lines[layer.line] = (f"{'Padding':<24} {layer.name:<24} {len(layer.bottoms)} {len(layer.tops)} "
                             f"{' '.join(layer.bottoms + layer.tops)} 0={top} 1={bottom} 2={left} 3={right} 4=0 "
                             "5=0.000000e+00")
    return "\n".join(lines) + "\n"


def graphs_of(proto: onnx.ModelProto, metadata: dict[str, str]) -> dict[str, tuple[onnx.ModelProto, str]]:
    """name → (ONNX graph, kind of input): the model itself, or a whole-image gate's four parts."""
    if metadata.get("global_gate") != "true":
        return {"model": (proto, "image")}
    return {name: (part, "mean" if name == "gate_margin" else "image") for name, part in gate_parts(proto).items()}


def write_folder(proto: onnx.ModelProto, precision: Precision, work: Path, extra: dict,
                 int8: list[Int8Conv] | None = None) -> int:
    """The artifact's files in ``work``: each graph's .param/.bin and the sealed manifest; with ``int8`` (``proto``
    is then the INT8 graph's float twin) those convolutions in ncnn's INT8 layout. Returns how many there are."""
    metadata = {k: v for k, v in srdeploy_metadata((p.key, p.value) for p in proto.metadata_props).items()
                if k != "sha256"}
    metadata["precision"] = str(precision)
    bounds = json.loads(metadata["shape_bounds"])
    channels, size = bounds["min"][1], max(bounds["min"][2], 32)
    files, graphs, quantized = {}, {}, 0
    with tempfile.TemporaryDirectory() as scratch:
        for name, (graph, kind) in graphs_of(proto, metadata).items():
            if kind == "mean":  # the gate's mean feature, N×C×1×1
                shapes = [[1, graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value, 1, 1]]
            else:
                shapes = [[1, channels, size, size], [1, channels, size + 16, size + 8]]
            folder = Path(scratch) / name
            folder.mkdir()
            param, weights = convert(graph, shapes, precision == Precision.FP16, folder)
            source, target = blobs(param.decode())
            if int8 is not None:
                param, weights, count = quantize_graph(graph, int8, param, weights, source)
                quantized += count
            files[f"{name}.param"], files[f"{name}.bin"] = param, weights
            graphs[name] = {"param": f"{name}.param", "bin": f"{name}.bin", "input": source, "output": target}
    manifest = {"format": FORMAT, "metadata": metadata, "graphs": graphs,
                "files": sorted(files), **extra}
    for name, data in files.items():
        (work / name).write_bytes(data)
    (work / MANIFEST).write_bytes(seal_manifest(manifest, files))
    return quantized


def gate(folder: Path, model: SrModel, precision: Precision, calib_dir: str | None, max_drop: float | None) -> dict:
    """The artifact in ``folder`` measured by ncnn on held-out crops, or a one-line refusal: FP32 within
    ``FP32_MAX_ABS`` of PyTorch; FP16 and INT8 within their PSNR limits, on the CPU and on each Vulkan device."""
    info = model.info
    validation = lr_hr_crops(source_images(calib_dir, "validation"), info.scale, VALIDATION_SPEC)
    reference = TorchRunner(model.network).infer
    devices = [("cpu", False)] + ([("vulkan", True)] if precision != Precision.FP32 and vulkan_devices() else [])
    measured: dict = {"vulkan_device": (vulkan_devices() or [None])[0]}
    if precision == Precision.FP32:
        batch = network_batch(validation[:8], info.colour)
        expected, found = reference(batch), NcnnSession(folder).infer(batch)
        error = float(np.abs(found - expected).max() / max(1.0, float(np.abs(expected).max())))
        measured["fp32_max_abs_vs_pytorch"] = error
        if not error <= FP32_MAX_ABS:
            raise SrDeployError(f"ncnn computes {info.name} ×{info.scale} {error:.2e} away from PyTorch in FP32 (limit "
                                f"{FP32_MAX_ABS:.0e}): nothing written")
        return measured
    limit = limit_for(DEFAULT_MAX_DROP, precision, max_drop)
    score = lambda infer: crop_psnr(infer, validation, info.scale, info.colour, info.eval_rounding)  # noqa: E731
    measured["validation_psnr_pytorch"] = score(reference)
    for device, vulkan in devices:
        drop = measured["validation_psnr_pytorch"] - score(NcnnSession(folder, vulkan=vulkan).infer)
        measured[f"drop_db_{device}"] = drop
        if not drop <= limit:
            raise SrDeployError(f"ncnn {precision} {info.name} ×{info.scale} on {device} loses {drop:.4f} dB of "
                                f"held-out PSNR against PyTorch FP32 (limit {limit} dB; {precision} arithmetic there): "
                                "nothing written; export fp32, or allow more with --max-psnr-drop")
    measured["drop_db"] = max(measured[f"drop_db_{device}"] for device, _ in devices)
    return measured


def export_ncnn(proto: onnx.ModelProto, model: SrModel, precision: Precision, out: Path, calib_dir: str | None,
                max_drop: float | None, versions: dict, int8: Int8Twin | None = None) -> tuple[Path, dict]:
    """``out/MODEL_xSCALE_PRECISION.ncnn`` from the gated FP32 ONNX graph ``proto`` (INT8: ``int8``, the gated INT8
    graph's float twin, ``ncnn_int8``), after ncnn's own gate: (the folder, what the gate measured)."""
    target = check_bundle_folder(out / f"{model.info.name}_x{model.info.scale}_{precision}{SUFFIX}", MANIFEST,
                                 "srdeploy ncnn artifact")
    with atomic_dir(target) as work:
        quantized = write_folder(int8.graph if int8 else proto, precision, work, {"converter": versions},
                                 int8.convs if int8 else None)
        measured = gate(work, model, precision, calib_dir, max_drop)
        if int8 is not None:
            measured.update(int8_convolutions=quantized, int8_mac_fraction=int8.mac_fraction)
        manifest = {k: v for k, v in json.loads((work / MANIFEST).read_text()).items() if k != "sha256"}
        manifest["metadata"].update(validation_drop_db=f"{measured.get('drop_db', 0.0):.4f}",
                                    ncnn_report=json.dumps(measured))
        (work / MANIFEST).write_bytes(seal_manifest(manifest, {name: (work / name).read_bytes()
                                                               for name in manifest["files"]}))
    return target, measured

