"""Peak memory and time of ``srdeploy upscale`` against the image's size (issue 36: memory bounded by the tile).

    python -m srdeploy.benchmarks.memory_sweep --out benchmarks/results [--models fsrcnn,lesrcnn] [--max-mpx 200]

For FSRCNN ×2 and LESRCNN ×2 (FP32 ONNX on ONNX Runtime, exported here first), photos of growing size (a
held-out photo resized, so the content is a photo's) are upscaled to PNG by the command as a user runs it, each in
a process of its own: its peak resident memory (the process's ``VmHWM``) and its wall time, from 1 to
``--max-mpx`` megapixels of output, and the start-up (a 64×64 upscale, median of 3). The goal: ≤ 1 GB whatever
the size, time linear in pixels (seconds per output Mpx, start-up taken off, within ±15 %).
Writes ``memory_sweep_<machine>.{md,json,png}``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .bench import cpu_text, report_header, write_results
from ..calib.data import source_images
from ..export.options import ExportOptions, Progress
from ..models.spec import ModelSpec
from ..runtime.atomic import atomic_path
from ..runtime.tables import markdown_table
from ..runtime.targets import target

REPO = Path(__file__).resolve().parent.parent
OUTPUT_MPX = (1, 4, 16, 50, 100, 200)
GOAL_MB = 1024


def photo(path: Path, pixels: float) -> tuple[int, int]:
    """A held-out photo resized to about ``pixels`` (its aspect kept), written as PNG: (width, height)."""
    source = Image.open(source_images(None, "validation")[0]).convert("RGB")
    ratio = source.width / source.height
    height = int(round((pixels / ratio) ** 0.5))
    width = int(round(height * ratio))
    source.resize((width, height), Image.BICUBIC).save(path)
    return width, height


PEAK_PROBE = """import atexit, runpy, sys
def peak(path=sys.argv[1]):
    from srdeploy.benchmarks.bench import peak_rss_mb  # imported once the run is over: not in what it measures
    with open(path, 'w') as out:
        out.write(repr(peak_rss_mb()))
atexit.register(peak)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name='__main__')
"""


def run(artifact: Path, image: Path, out: Path) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``srdeploy upscale`` in a process of its own. The peak is the process's own
    ``VmHWM``, read as it exits: ``wait4``'s ``ru_maxrss`` would count the parent's pages the child had before
    ``exec`` (this benchmark's, with torch and the exported model: ~480 MB)."""
    peak = out.with_suffix(".peak")
    start = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", PEAK_PROBE, str(peak), str(REPO / "cli.py"), "upscale", str(image),
                            str(out), "--artifact", str(artifact)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise SystemExit(f"upscale failed: {child.stderr.decode()[-500:]}")
    return float(peak.read_text()), seconds


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rss, seconds) = plt.subplots(1, 2, figsize=(10, 3.8))
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        rss.plot([r["output_mpx"] for r in mine], [r["peak_rss_mb"] for r in mine], "o-", label=model)
        seconds.plot([r["output_mpx"] for r in mine], [r["seconds"] for r in mine], "o-", label=model)
    rss.axhline(GOAL_MB, color="grey", linestyle="--", label="1 GB goal")
    rss.set(xlabel="output megapixels", ylabel="peak RSS (MB)", title="memory")
    seconds.set(xlabel="output megapixels", ylabel="seconds", title="time")
    rss.legend(fontsize=8)
    seconds.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def summary(rows: list[dict]) -> list[str]:
    """Per model: the largest peak RSS against the goal, and how far the seconds per output Mpx (start-up, a 64×64
    upscale's time, taken off) stray from their median over the sizes."""
    lines = []
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        peak = max(r["peak_rss_mb"] for r in mine)
        lines.append(f"{model}: peak RSS at most {peak:.0f} MB up to {max(r['output_mpx'] for r in mine):.0f} Mpx out "
                     f"(goal ≤ {GOAL_MB} MB: {'met' if peak <= GOAL_MB else 'missed'})")
        rates = np.array([r["net_seconds_per_output_mpx"] for r in mine])
        median = float(np.median(rates))
        spread = float(np.abs(rates / median - 1).max())
        lines.append(f"{model}: {median:.3f} s per output Mpx after {mine[0]['startup_s']:.1f} s of start-up, every "
                     f"size within ±{100 * spread:.0f} % of that (goal ±15 %: {'met' if spread <= 0.15 else 'missed'})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--models", default="fsrcnn,lesrcnn")
    parser.add_argument("--max-mpx", type=float, default=200)
    args = parser.parse_args(argv)
    report = {**report_header("python -m srdeploy.benchmarks.memory_sweep", args.models, 2, None), "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for model in args.models.split(","):
            artifact = target("onnx").export(ModelSpec(model, 2).load(), ExportOptions(precision="fp32"), work,
                                             Progress(False)).artifacts[0]
            photo(work / "tiny.png", 64 * 64)
            startup = float(np.median([run(artifact, work / "tiny.png", work / "out.png")[1] for _ in range(3)]))
            for mpx in (m for m in OUTPUT_MPX if m <= args.max_mpx):
                width, height = photo(work / "in.png", mpx * 1e6 / 4)
                peak, seconds = run(artifact, work / "in.png", work / "out.png")
                output_mpx = 4 * width * height / 1e6
                report["rows"].append({"model": f"{model} ×2", "input": f"{width}x{height}", "output_mpx": output_mpx,
                                       "peak_rss_mb": peak, "seconds": seconds, "startup_s": startup,
                                       "net_seconds_per_output_mpx": (seconds - startup) / output_mpx})
                print(report["rows"][-1], flush=True)
                (work / "out.png").unlink()
    rows = report["rows"]
    report["summary"] = summary(rows)
    lines = [f"`{report['command']}` — {report['date']}", "",
             f"Machine: {cpu_text(report['machine'])}, {report['machine']['usable_cores']} cores; the FP32 ONNX on ONNX "
             "Runtime, default tile (256 LR pixels), PNG out; peak RSS of the whole command (Python, ONNX Runtime, the "
             "image: the process's VmHWM), wall time of the command; seconds per Mpx with the start-up taken off.", "",
             markdown_table(["model", "input", "output Mpx", "peak RSS MB", "seconds", "s per output Mpx (start-up off)"],
                            [[r["model"], r["input"], f"{r['output_mpx']:.1f}", f"{r['peak_rss_mb']:.0f}",
                              f"{r['seconds']:.1f}", f"{r['net_seconds_per_output_mpx']:.3f}"] for r in rows]), "",
             *(f"- {line}" for line in report["summary"])]
    base = write_results(args.out, "memory_sweep", report, "\n".join(lines))
    chart(rows, base.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
