"""Peak memory and time of ``srdeploy upscale`` against the image's size (issue 36: memory bounded by the tile).

    python -m srdeploy.benchmarks.memory_sweep --out benchmarks/results [--models fsrcnn,lesrcnn] [--max-mpx 200]
                                               [--contents mosaic,resized]

For FSRCNN ×2 and LESRCNN ×2 (FP32 ONNX on ONNX Runtime, exported here first), images of growing size are
upscaled to PNG by the command as a user runs it, each in a process of its own: its peak resident memory (the
process's ``VmHWM``) and its wall time, from 1 to ``--max-mpx`` megapixels of output, and the start-up (a 64×64
upscale, median of 3); sizes up to 4 Mpx out are run 3 times (median), where a process's start-up noise weighs.
The goal: ≤ 1 GB whatever the size, time linear in pixels: a start-up plus seconds per output Mpx, every size
within ±15 % of the line's rate (the line fitted to the sizes: ``fit_line``). Two kinds of content (``--contents``):

- ``mosaic``: 96-pixel crops of the project's photos at their own resolution, placed at random: the same mix of
  photo detail per pixel at every size, so the time says how the pipeline scales;
- ``resized``: one held-out photo resized to each size: smoother the larger it gets (a 0.24 Mpx photo made 50
  Mpx), which some kernels run faster on (FSRCNN's PRelu in ONNX Runtime, zlib): time against size *and* content.

Writes ``memory_sweep_<machine>.{md,json,png}``.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from functools import cache
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
REPEATS_UP_TO_MPX = 4  # sizes run 3 times (median): their seconds are within a process start's noise
GOAL_MB = 1024
MOSAIC_BLOCK = 96  # pixels of one crop


def resized(path: Path, pixels: float) -> tuple[int, int]:
    """A held-out photo resized to about ``pixels`` (its aspect kept), written as PNG: (width, height)."""
    source = Image.open(source_images(None, "validation")[0]).convert("RGB")
    ratio = source.width / source.height
    height = int(round((pixels / ratio) ** 0.5))
    width = int(round(height * ratio))
    source.resize((width, height), Image.BICUBIC).save(path)
    return width, height


def mosaic(path: Path, pixels: float) -> tuple[int, int]:
    """About ``pixels`` (3:2) of ``MOSAIC_BLOCK``-pixel crops of the project's photos (calibration and held-out) at
    their own resolution, each from a random photo, place and mirroring (seeded), written as PNG: (width,
    height). Every size has the same mix of detail per pixel."""
    photos = _photos()
    rng = np.random.default_rng(0)
    height = int(round((pixels / 1.5) ** 0.5))
    width = int(round(height * 1.5))
    image = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, MOSAIC_BLOCK):
        for left in range(0, width, MOSAIC_BLOCK):
            source = photos[int(rng.integers(len(photos)))]
            y, x = (int(rng.integers(size - MOSAIC_BLOCK + 1)) for size in source.shape[:2])
            crop = source[y:y + MOSAIC_BLOCK, x:x + MOSAIC_BLOCK]
            crop = crop[:, ::-1] if rng.integers(2) else crop
            image[top:top + MOSAIC_BLOCK, left:left + MOSAIC_BLOCK] = crop[:height - top, :width - left]
    Image.fromarray(image).save(path)
    return width, height


@cache
def _photos() -> list[np.ndarray]:
    """The project's photos (calibration and held-out), RGB uint8, read once."""
    return [np.asarray(Image.open(p).convert("RGB")) for split in ("calibration", "validation")
            for p in source_images(None, split)]


CONTENTS = {"mosaic": mosaic, "resized": resized}


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
    for series, mine in by_series(rows).items():
        rss.plot([r["output_mpx"] for r in mine], [r["peak_rss_mb"] for r in mine], "o-", label=series)
        seconds.plot([r["output_mpx"] for r in mine], [r["seconds"] for r in mine], "o-", label=series)
    rss.axhline(GOAL_MB, color="grey", linestyle="--", label="1 GB goal")
    rss.set(xlabel="output megapixels", ylabel="peak RSS (MB)", title="memory")
    seconds.set(xlabel="output megapixels", ylabel="seconds", title="time")
    rss.legend(fontsize=8)
    seconds.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def by_series(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of each model and content ("fsrcnn ×2, mosaic"), in their order."""
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(f"{row['model']}, {row['content']}", []).append(row)
    return series


def fit_line(rows: list[dict]) -> tuple[float, float]:
    """(start-up seconds, seconds per output Mpx) of the line through the rows' (output Mpx, seconds), fitted by
    relative error (each size weighs alike). Its start-up is what a multi-tile run pays once: the process and its
    first full tile (the runtime's memory growing to the tile's size), which a 64×64 run does not show."""
    mpx = np.array([r["output_mpx"] for r in rows])
    seconds = np.array([r["seconds"] for r in rows])
    per_mpx, startup = np.polyfit(mpx, seconds, 1, w=1 / seconds)
    return float(startup), float(per_mpx)


def summary(rows: list[dict]) -> list[str]:
    """Per model and content: the largest peak RSS against the goal, the line time follows (``fit_line``, in each
    row) and how far each size's seconds per output Mpx (the line's start-up taken off) stray from the line's."""
    lines = []
    for series, mine in by_series(rows).items():
        peak = max(r["peak_rss_mb"] for r in mine)
        lines.append(f"{series}: peak RSS at most {peak:.0f} MB up to {max(r['output_mpx'] for r in mine):.0f} Mpx out "
                     f"(goal ≤ {GOAL_MB} MB: {'met' if peak <= GOAL_MB else 'missed'})")
        startup, per_mpx = mine[0]["fitted_startup_s"], mine[0]["fitted_seconds_per_output_mpx"]
        spread = max(abs(r["seconds_per_output_mpx"] / per_mpx - 1) for r in mine)
        lines.append(f"{series}: time = {startup:.2f} s + {per_mpx:.3f} s per output Mpx (a 64×64 upscale takes "
                     f"{mine[0]['startup_s']:.2f} s), every size within ±{100 * spread:.0f} % of that rate "
                     f"(goal ±15 %: {'met' if spread <= 0.15 else 'missed'})")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--models", default="fsrcnn,lesrcnn")
    parser.add_argument("--max-mpx", type=float, default=200)
    parser.add_argument("--contents", default="mosaic,resized", help=f"of {', '.join(CONTENTS)}")
    args = parser.parse_args(argv)
    contents = args.contents.split(",")
    if unknown := set(contents) - set(CONTENTS):
        parser.error(f"unknown content {', '.join(sorted(unknown))}: choose from {', '.join(CONTENTS)}")
    report = {**report_header("python -m srdeploy.benchmarks.memory_sweep", args.models, 2, None), "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for model in args.models.split(","):
            artifact = target("onnx").export(ModelSpec(model, 2).load(), ExportOptions(precision="fp32"), work,
                                             Progress(False)).artifacts[0]
            for content in contents:
                make = CONTENTS[content]
                make(work / "tiny.png", 64 * 64)
                startup = float(np.median([run(artifact, work / "tiny.png", work / "out.png")[1] for _ in range(3)]))
                for mpx in (m for m in OUTPUT_MPX if m <= args.max_mpx):
                    width, height = make(work / "in.png", mpx * 1e6 / 4)
                    runs = [run(artifact, work / "in.png", work / "out.png")
                            for _ in range(3 if mpx <= REPEATS_UP_TO_MPX else 1)]
                    peak, seconds = max(r[0] for r in runs), float(np.median([r[1] for r in runs]))
                    output_mpx = 4 * width * height / 1e6
                    report["rows"].append({"model": f"{model} ×2", "content": content, "input": f"{width}x{height}",
                                           "output_mpx": output_mpx, "peak_rss_mb": peak, "seconds": seconds,
                                           "runs": len(runs), "startup_s": startup})
                    print(report["rows"][-1], flush=True)
                    (work / "out.png").unlink()
    rows = report["rows"]
    for mine in by_series(rows).values():
        startup, per_mpx = fit_line(mine)
        for row in mine:
            row.update(fitted_startup_s=startup, fitted_seconds_per_output_mpx=per_mpx,
                       seconds_per_output_mpx=(row["seconds"] - startup) / row["output_mpx"])
    report["summary"] = summary(rows)
    lines = [f"`{report['command']}` — {report['date']}", "",
             f"Machine: {cpu_text(report['machine'])}, {report['machine']['usable_cores']} cores; the FP32 ONNX on ONNX "
             "Runtime, default tile (256 LR pixels), PNG out; peak RSS of the whole command (Python, ONNX Runtime, the "
             "image: the process's VmHWM), wall time of the command (median of 3 up to "
             f"{REPEATS_UP_TO_MPX} Mpx out); seconds per Mpx with the start-up (fitted: the summary) taken off. Content: *mosaic*, the same mix "
             "of photo crops at every size; *resized*, one photo resized (smoother as it grows).", "",
             markdown_table(["model", "content", "input", "output Mpx", "peak RSS MB", "seconds",
                             "s per output Mpx (fitted start-up off)"],
                            [[r["model"], r["content"], r["input"], f"{r['output_mpx']:.1f}", f"{r['peak_rss_mb']:.0f}",
                              f"{r['seconds']:.1f}", f"{r['seconds_per_output_mpx']:.3f}"] for r in rows]), "",
             *(f"- {line}" for line in report["summary"])]
    base = write_results(args.out, "memory_sweep", report, "\n".join(lines))
    chart(rows, base.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
