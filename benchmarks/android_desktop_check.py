"""The Android bundle's C++ on this desktop against srdeploy's Python session (issue 37: a script, not CI; ncnn's
build from source takes minutes).

    python -m srdeploy.benchmarks.android_desktop_check --ncnn NCNN_INSTALL [--precision fp32|fp16|int8]
                                                        [--out benchmarks/results]

``NCNN_INSTALL``: ncnn built from source and installed (``cmake -DNCNN_VULKAN=OFF … && cmake --install``). For
FSRCNN ×2 (luma, Pillow's bicubic chroma), LESRCNN ×2 (RGB) and DSRNet ×2 (its gate parts, one decision for the
whole image): the bundle is exported, its ``build_desktop.sh`` builds ``cpp/`` (the file the app's JNI library
is built from), and the upscaler runs on a 96×80 crop of a held-out photo, whole and in 48-pixel tiles, with ncnn
running the graphs and through a ``GraphRunner`` on flat floats (``SRDEPLOY_GRAPH_RUNNER=flat``: the path the app's
ExecuTorch CPU path takes, here backed by ncnn's nets), the latter also with the facts capped at ``max_size 64`` (tiles
cut to a program's largest input, as for the ExecuTorch program). Its network output (float) is compared with
``NcnnSession`` run the same way (``runtime.tiling.tiled_infer``), and its 8-bit image with
``runtime.pipeline.upscale_rgb``. Writes ``android_desktop_check[_PRECISION].{md,json}`` (no suffix for fp32).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from .bench import cpu_text, report_header
from ..calib.data import source_images
from ..export.options import ExportOptions, Progress
from ..models.spec import ModelSpec
from ..runtime import images
from ..runtime.atomic import atomic_path
from ..runtime.pipeline import network_input, upscale_rgb
from ..runtime.sessions.ncnn import NcnnSession
from ..runtime.tables import markdown_table
from ..runtime.targets import target
from ..runtime.tiling import tiled_infer

MODELS = ("fsrcnn", "lesrcnn", "dsrnet")
TILES = (0, 48)
CAP = 64  # max_size written into the facts for the capped run


def write_ppm(path: Path, rgb: np.ndarray) -> None:
    path.write_bytes(f"P6\n{rgb.shape[1]} {rgb.shape[0]}\n255\n".encode() + np.ascontiguousarray(rgb).tobytes())


def read_ppm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic, width, height, peak, pixels = data.split(maxsplit=4)
    assert magic == b"P6" and peak == b"255"
    return np.frombuffer(pixels, dtype=np.uint8).reshape(int(height), int(width), 3)


def check_model(model: str, ncnn: Path, work: Path, photo: np.ndarray, precision: str) -> list[dict]:
    bundle = work / f"{model}_android"
    net = ModelSpec(model, 2).load()
    target("android").export(net, ExportOptions(precision=precision), bundle, Progress(False))
    session = NcnnSession(bundle / "assets" / "model")
    write_ppm(work / "in.ppm", photo)
    capped = work / f"{model}_capped"
    shutil.copytree(bundle / "assets" / "model", capped)
    (capped / "srdeploy.txt").write_text((capped / "srdeploy.txt").read_text() + f"max_size {CAP}\n")
    radius, least = session.receptive_radius, session.shape_bounds["min"][2]
    runs = [(tile, "ncnn", bundle / "assets" / "model", tile) for tile in TILES]
    runs += [(tile, "runner", bundle / "assets" / "model", tile) for tile in TILES]
    runs += [(0, f"runner, max_size {CAP}", capped, max(CAP - 2 * radius, least))]
    rows = []
    for tile, path, model_dir, python_tile in runs:
        out_ppm, raw = work / f"{model}_{tile}.ppm", work / f"{model}_{tile}.f32"
        command = ["bash", str(bundle / "build_desktop.sh"), str(ncnn), str(work / "in.ppm"), str(out_ppm), str(tile),
                   str(raw)] if not (bundle / "build" / "srdeploy_upscale").is_file() else \
            [str(bundle / "build" / "srdeploy_upscale"), str(model_dir), str(work / "in.ppm"), str(out_ppm), str(tile),
             str(raw)]
        env = {**os.environ, "SRDEPLOY_GRAPH_RUNNER": "flat" if path.startswith("runner") else ""}
        done = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env)
        if done.returncode != 0:
            raise SystemExit(f"the desktop build or run failed for {model}: {done.stderr[-2000:]}")
        x = network_input(photo, session.colour)
        infer = (lambda t: (lambda v: tiled_infer(v, session.infer, session.scale, t, radius, least,
                                                  gate=session.gate_split if session.has_global_gate else None)))(python_tile)
        expected = infer(x)
        found = np.fromfile(raw, dtype=np.float32).reshape(expected.shape)
        cpp_image, python_image = read_ppm(out_ppm), upscale_rgb(photo, infer, session.colour)
        rows.append({"model": model, "colour": session.colour, "tile": tile, "graphs": len(session.nets), "path": path,
                     "output_max_abs": float(np.abs(found - expected).max()),
                     "pixels_equal": float(np.mean(cpp_image == python_image)),
                     "pixels_max_level_diff": int(np.abs(cpp_image.astype(int) - python_image.astype(int)).max()),
                     "stdout": done.stdout.strip()})
        print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ncnn", required=True, help="an ncnn install (lib/cmake/ncnn/ncnnConfig.cmake inside)")
    parser.add_argument("--ncnn-source", default="", help="what the install was built from, for the record")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "int8"), help="the bundles' ncnn model")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    photo = images.read_rgb(source_images(None, "validation")[0])[:80, :96]
    report = {**report_header("python -m srdeploy.benchmarks.android_desktop_check", ", ".join(MODELS), 2, None),
              "ncnn_source": args.ncnn_source, "precision": args.precision, "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        for model in MODELS:
            report["rows"] += check_model(model, Path(args.ncnn), Path(folder), photo, args.precision)
    rows = [[r["model"], r["colour"], str(r["graphs"]), r["path"], str(r["tile"]), f"{r['output_max_abs']:.2e}",
             f"{r['pixels_equal']:.4%}", str(r["pixels_max_level_diff"])] for r in report["rows"]]
    text = (f"`{report['command']}` — {report['date']}\n\nMachine: {cpu_text(report['machine'])}; {args.precision} "
            "ncnn models; the bundle's C++ "
            f"built against ncnn from source ({args.ncnn_source or args.ncnn}, CPU, no Vulkan); the Python side: "
            f"ncnn {report['machine']['libraries'].get('ncnn')} from PyPI. Input: a 96×80 crop of a held-out photo.\n\n"
            + markdown_table(["model", "colour", "graphs", "graphs run by", "tile (0: whole)",
                              "network output max abs (C++ vs Python)",
                              "8-bit pixels equal", "max level difference"], rows) + "\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "android_desktop_check" + ("" if args.precision == "fp32" else f"_{args.precision}")
    with atomic_path(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
