"""The web page against ONNX Runtime in Python, end to end (decode → upscale → PNG), in one run on this machine:
issue 39's performance table and the measurement that picks the page's default precision.

    python -m srdeploy.benchmarks.web_speed --out benchmarks/results [--models fsrcnn:2,lesrcnn:2,dsrnet:2]
    python -m srdeploy.benchmarks.web_speed --screenshot docs/web-page.png   # the page after an upscale, no timing

Each model is exported with ``--target web`` (FP32; FP16 and INT8 too for the precision table) and its page opened
in Debian's chromium, headless, served by ``runtime.web_serve`` (COOP/COEP: WebAssembly threads), with
``?image=…&threads=T&repeat=R``: the page times each of its R runs (the first, with the session's warm-up, is left
out). Python: the same graph on ONNX Runtime with T intra-op threads through ``runtime.upscale.upscale_file`` (the
same tiles of 256 with the receptive radius as context, the same colour work, a PNG written), the same images.
Inputs: a held-out photo (never Set5/Set14), cropped to 256×256 and resized to 1280×720. Writes
``web_speed_<machine>.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from . import web_browser
from .bench import cpu_text, report_header, write_results
from ..calib.data import source_images
from ..export.main import main_export
from ..export.options import ExportOptions, Progress
from ..export.web.ort_files import VERSION
from ..export.web.target import MANIFEST
from ..models.spec import ModelSpec
from ..runtime import images
from ..runtime.tables import markdown_table
from ..runtime.upscale import tiler, upscale_file

MODELS = ("fsrcnn:2", "lesrcnn:2", "dsrnet:2")
SIZES = {"256x256": (256, 256), "1280x720": (1280, 720)}
REPEATS = {"256x256": 6, "1280x720": 2}  # runs per page, the first left out
THREADS = (1, 2)
PRECISIONS = ("fp32", "fp16", "int8")  # the precision table: 256x256, 2 threads
TARGET_RATIO = {"fsrcnn": 1.5, "lesrcnn": 2.5}  # issue 39, with threads


def inputs(folder: Path) -> dict[str, Path]:
    """The held-out photo as a 256×256 crop and resized to 1280×720 (PNG, RGB)."""
    photo = Image.fromarray(images.read_rgb(source_images(None, "validation")[0]))
    made = {"256x256": photo.crop((0, 0, 256, 256)), "1280x720": photo.resize((1280, 720), Image.BICUBIC)}
    for name, picture in made.items():
        picture.save(folder / f"{name}.png")
    return {name: folder / f"{name}.png" for name in made}


def python_ms(web: Path, source: Path, threads: int, repeats: int) -> dict[str, float]:
    """``upscale_file`` with the folder's graph on ONNX Runtime (``threads``): median ms of the runs after the first."""
    import onnxruntime as ort

    manifest = json.loads((web / MANIFEST).read_text())
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(web / "model.onnx"), options)
    name = session.get_inputs()[0].name
    if manifest["global_gate"]:  # tiles of a whole-image gate: decided once, as the page does
        from ..runtime.global_gate import onnxruntime_split
        import onnx

        gate = lambda: onnxruntime_split(onnx.load(web / "model.onnx"), options, ["CPUExecutionProvider"])  # noqa: E731
    else:
        gate = None
    tiled = tiler(lambda x: session.run(None, {name: x})[0], manifest["scale"], manifest["tile"],
                  manifest["receptive_radius"], manifest["min_size"], gate)
    times = []
    with tempfile.TemporaryDirectory() as scratch:
        for _ in range(repeats):
            start = time.perf_counter()
            problem = upscale_file(source, Path(scratch) / "out.png", tiled, manifest["colour"])
            times.append((time.perf_counter() - start) * 1000)
            assert problem is None, problem
    return {"total": statistics.median(times[1:]), "runs": len(times) - 1}


def page_ms(browser: web_browser.Browser, image: str, threads: int, repeats: int) -> dict:
    """The page's own times (median of the runs after the first, per stage)."""
    result, = browser.open([browser.url(image, threads=threads, repeat=repeats)], timeout_s=1800)
    if not result.done:
        raise RuntimeError(f"the page failed: {result.error or result.title} {result.driver_error or ''}")
    runs = result.report["times"][1:]
    stages = {stage: statistics.median(run[stage] for run in runs) for stage in runs[0]}
    return {**stages, "threads": result.report["threads"], "tiles": result.report["tiles"], "runs": len(runs)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--screenshot", metavar="PNG", help="only a screenshot of LESRCNN ×2's page after an upscale")
    args = parser.parse_args(argv)
    missing = web_browser.unavailable()
    if missing:
        raise SystemExit(f"error: {missing}")
    if args.screenshot:
        screenshot(Path(args.screenshot))
        return
    report = report_header("python -m srdeploy.benchmarks.web_speed", "web", 0, None)
    report.update({"onnxruntime_web": VERSION, "chromium": chromium_version(), "rows": [], "precisions": []})
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        pictures = inputs(scratch)
        for entry in args.models.split(","):
            model, scale = entry.split(":")
            for precision in PRECISIONS if model != "dsrnet" else ("fp32",):
                web = scratch / f"{model}_x{scale}_{precision}"
                print(f"exporting {model} ×{scale} {precision} for the web", flush=True)
                main_export(ModelSpec(model, int(scale)), "web", ExportOptions(precision=precision), web, Progress(False))
                with web_browser.browser(web, scratch) as browser:
                    if precision != "fp32":
                        page = page_ms(browser, "256x256.png", 2, REPEATS["256x256"])
                        report["precisions"].append({"model": model, "scale": int(scale), "precision": precision,
                                                     "page": page})
                        print(f"  {precision} 256x256: {page['upscale']:.0f} ms upscale", flush=True)
                        continue
                    base = {"model": model, "scale": int(scale), "precision": "fp32"}
                    for size, path in pictures.items():
                        for threads in THREADS:
                            page = page_ms(browser, path.name, threads, REPEATS[size])
                            python = python_ms(web, path, threads, REPEATS[size])
                            row = {**base, "input": size, "threads": threads, "page": page, "python": python,
                                   "ratio": page["total"] / python["total"]}
                            report["rows"].append(row)
                            if (size, threads) == ("256x256", 2):  # FP32's row of the precision table
                                report["precisions"].append({**base, "page": page})
                            print(f"  {size} {threads} thread(s): page {page['total']:.0f} ms, Python "
                                  f"{python['total']:.0f} ms ({row['ratio']:.2f}×)", flush=True)
    write_results(args.out, "web_speed", report, markdown(report))


def screenshot(path: Path) -> None:
    """The page of LESRCNN ×2 after upscaling a 160×120 crop of the held-out photo, as a PNG at ``path``."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        Image.open(inputs(scratch)["256x256"]).crop((40, 60, 200, 180)).save(scratch / "photo.png")
        main_export(ModelSpec("lesrcnn", 2), "web", ExportOptions(), scratch / "web", Progress(False))
        with web_browser.browser(scratch / "web", scratch) as browser:
            result, = browser.open([browser.url("photo.png")], screenshot=path)
    if not result.done:
        raise SystemExit(f"error: the page failed: {result.error}")
    print(path)


def chromium_version() -> str:
    import subprocess

    done = subprocess.run([web_browser.CHROMIUM, "--version"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def markdown(report: dict) -> str:
    rows = [[f"{r['model']} ×{r['scale']}", r["input"], str(r["threads"]), f"{r['page']['total']:.0f}",
             f"{r['page']['decode']:.0f} / {r['page']['upscale']:.0f} / {r['page']['colour']:.0f} / {r['page']['png']:.0f}",
             str(r["page"]["tiles"]), f"{r['python']['total']:.0f}", f"{r['ratio']:.2f}×",
             (f"≤ {TARGET_RATIO[r['model']]}×: {'met' if r['ratio'] <= TARGET_RATIO[r['model']] else 'missed'}"
              if r["threads"] == 2 and r["model"] in TARGET_RATIO else "")] for r in report["rows"]]
    fp32 = {(p["model"]): p["page"]["upscale"] for p in report["precisions"] if p["precision"] == "fp32"}
    precision_rows = [[f"{p['model']} ×{p['scale']}", p["precision"], f"{p['page']['upscale']:.0f}",
                       f"{p['page']['upscale'] / fp32[p['model']]:.2f}×"] for p in report["precisions"]]
    return "\n".join([
        f"# The web page (onnxruntime-web {report['onnxruntime_web']}, WebAssembly) against ONNX Runtime in Python",
        "",
        f"{report['date']}, `{report['command']}`; {report['chromium']} headless; "
        f"{cpu_text(report['machine'])}, {report['machine']['usable_cores']} usable cores. One run; medians of the "
        "runs after the first; times in ms, end to end: decode → upscale (tiles of 256) → colour → PNG.",
        "",
        markdown_table(["model", "input", "threads", "page", "decode / upscale / colour / PNG", "tiles", "Python",
                        "page / Python", "target"], rows),
        "",
        "## Precision on WebAssembly (256×256, 2 threads, the page's upscale stage)",
        "",
        markdown_table(["model", "precision", "upscale ms", "vs FP32"], precision_rows),
    ])


if __name__ == "__main__":
    main()
