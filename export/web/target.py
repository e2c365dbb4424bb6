"""The ``web`` target: a static folder ``NAME.web`` that upscales in the visitor's browser with onnxruntime-web
(WebAssembly with SIMD and threads; WebGPU on request), no install and no pixel sent anywhere.

The folder: ``index.html`` (pick or drop an image, before/after, download the PNG; ``?image=URL`` for programs),
``srdeploy-web.js`` (the tiling, colour handling and limits of ``runtime/``: receptive-radius context, DSRNet's gate
decided once over all tiles, luma networks with Pillow's bicubic chroma, alpha kept), the gated ONNX graph (and, for a
network whose gate reads the whole image, its four gate parts), onnxruntime-web pinned to one version (``ort_files``),
``serve.py`` (a loopback server with the COOP/COEP headers that WebAssembly threads need) and ``srdeploy-web.json``:
the model's facts and every file's sha256, which the page checks (SubtleCrypto) before it runs a graph.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path

from . import ort_files
from ..onnx.target import gated_onnx
from ..options import ExportOptions, ExportResult, Progress, result_for
from ...models.loading import SrModel
from ...runtime import images, web_serve
from ...runtime.artifact import srdeploy_metadata
from ...runtime.atomic import atomic_dir, check_bundle_folder
from ...runtime.errors import SrDeployError
from ...runtime.global_gate import gate_parts
from ...runtime.upscale import DEFAULT_TILE

PAGE = Path(__file__).resolve().parent / "page"
MANIFEST = "srdeploy-web.json"
FORMAT = "srdeploy-web-1"


def check(options: ExportOptions, out: Path) -> None:
    """The folder (new, empty or a previous web export) and float32 I/O, or one line (nothing written)."""
    if options.fp16_io:
        raise SrDeployError("--fp16-io: the page feeds the graph float32 tensors; drop --fp16-io with --target web")
    check_bundle_folder(out, MANIFEST, "srdeploy web folder")


IMPORT_MAP = "<!--srdeploy:importmap-->"


def import_map(ort: ort_files.OrtFiles) -> str:
    """The page's import map: onnxruntime-web's two entry modules, and the integrity of every module it loads."""
    url = {role: f"{ort.base}{name}" for role, (name, _) in ort_files.FILES.items()}
    mapping = {"imports": {"onnxruntime-web/wasm": url["wasm_entry"], "onnxruntime-web/webgpu": url["webgpu_entry"]},
               "integrity": {url[role]: ort.integrity[role] for role in url if not role.endswith("_binary")}}
    return f'<script type="importmap">\n{json.dumps(mapping, indent=2)}\n</script>'


def graph_files(proto) -> dict[str, bytes]:
    """``model.onnx``, and for a network whose gate reads the whole image its parts (``runtime.global_gate``)."""
    files = {"model.onnx": proto.SerializeToString()}
    if srdeploy_metadata((p.key, p.value) for p in proto.metadata_props).get("global_gate") == "true":
        files.update({f"{name}.onnx": part.SerializeToString() for name, part in gate_parts(proto).items()})
    return files


def page_manifest(net: SrModel, precision: str, proto, graphs: dict[str, bytes], ort: ort_files.OrtFiles,
                  report) -> dict:
    """What the page reads: the model's facts, its graphs with their sha256, onnxruntime-web's files."""
    meta = srdeploy_metadata((p.key, p.value) for p in proto.metadata_props)
    config, bounds = json.loads(meta["export_config"]), json.loads(meta["shape_bounds"])
    return {
        "format": FORMAT, "model": net.info.name, "scale": net.info.scale, "colour": net.info.colour,
        "channels": net.info.channels, "precision": precision, "receptive_radius": config["receptive_radius"],
        "min_size": bounds["min"][2], "whole_image": bool(config.get("whole_image", False)),
        "global_gate": "gate_features.onnx" in graphs, "tile": DEFAULT_TILE, "max_pixels": images.DEFAULT_MAX_PIXELS,
        "graphs": {Path(name).stem: {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                   for name, data in graphs.items()},
        "ort": ort.as_dict(), "srdeploy": metadata.version("srdeploy"),
        "gate": None if report is None else {"drop_db": report.drop_db, "validation_psnr": report.validation_psnr},
    }


def export(net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """``out`` (default ``out/MODEL_xSCALE_web``): the page's folder, written whole or not at all."""
    precision = options.precision
    proto, report = gated_onnx(net, precision, options, progress)
    graphs = graph_files(proto)
    with atomic_dir(check_bundle_folder(out, MANIFEST, "srdeploy web folder")) as work:
        ort = ort_files.vendor(work, progress)
        shutil.copyfile(PAGE / "srdeploy-web.js", work / "srdeploy-web.js")
        (work / "index.html").write_text((PAGE / "index.html").read_text().replace(IMPORT_MAP, import_map(ort)))
        shutil.copyfile(web_serve.__file__, work / "serve.py")
        for name, data in graphs.items():
            (work / name).write_bytes(data)
        manifest = page_manifest(net, precision, proto, graphs, ort, None if precision == "fp32" else report)
        manifest["files"] = {p.relative_to(work).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                             for p in sorted(work.rglob("*")) if p.is_file()}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
    progress(f"web: {precision} graph{'s' if len(graphs) > 1 else ''} ({sum(map(len, graphs.values())) / 1e6:.2f} MB), "
             f"{ort.source}")
    progress(f"web: open it with `python {out / 'serve.py'}` (WebAssembly threads need its COOP/COEP headers), or put "
             "the folder on any static host (HTTPS)")
    result = result_for(net, "web", options, report, web={"ort": ort.as_dict(), "graphs": manifest["graphs"]})
    result.artifacts.append(out)
    return result
