"""Throughput of folders and video against what the network alone sustains (issue 36: throughput mode).

    python -m srdeploy.benchmarks.throughput [--frames 24] [--models fsrcnn,lesrcnn] [--out benchmarks/results]

For FSRCNN ×2 and LESRCNN ×2 (FP32 ONNX, exported here), each runtime in each mode: ONNX Runtime and OpenVINO,
latency (one request at a time on every core) and throughput (several requests in flight: ONNX Runtime
sessions of one thread each, OpenVINO's THROUGHPUT hint with its optimal number of requests). For each, in one
run on this machine:
- **network alone**: the tiled network on the clip's frames made into network inputs beforehand (no decoding,
  colour or encoding), as many in flight as the mode keeps: what the pipelines can at best reach;
- **video**: ``upscale`` of a 640×360 H.264 clip (``video_bench.make_clip``) → 1280×720, frames/s;
- **folder**: the same frames as PNG files, a folder ``upscale``, images/s;
and each pipeline as a share of the network alone in the same mode, and of the best network-alone mode. The
goal: ≥ 90 %. Writes ``throughput_<machine>.{md,json}``.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bench import cpu_text, report_header, write_results
from .video_bench import make_clip
from ..export.options import ExportOptions, Progress
from ..models.spec import ModelSpec
from ..runtime.atomic import atomic_path
from ..runtime.pipeline import CHUNK
from ..runtime.tables import markdown_table
from ..runtime.targets import target

GOAL = 0.9
MODES = ("latency", "throughput")


def frames_of(clip: Path) -> list[np.ndarray]:
    """The clip's frames as RGB uint8, decoded as the video path decodes them."""
    import av

    from ..runtime.video import _rgb

    with av.open(str(clip)) as container:
        return [_rgb(frame) for frame in container.decode(video=0)]


def network_alone(tiled, colour: str, frames: list[np.ndarray], in_flight: int) -> float:
    """Frames/s of the tiled network alone on inputs made beforehand, ``in_flight`` at once."""
    from ..runtime.pipeline import network_input

    inputs = [network_input(rgb, colour) for rgb in frames]
    tiled(inputs[0])  # warm-up: compiles and allocates
    started = time.perf_counter()
    if in_flight <= 1:
        for x in inputs:
            tiled(x)
    else:
        with ThreadPoolExecutor(in_flight) as threads:
            list(threads.map(tiled, inputs))
    return len(inputs) / (time.perf_counter() - started)


@dataclass
class Replay:
    """A ``FrameUpscaler`` that hands back outputs computed beforehand: ``upscale_video`` with no network and no
    colour work, its decoding, conversions, encoding and muxing only."""

    outputs: list[np.ndarray]
    scale: int = 2
    in_flight: int = 0

    def submit(self, rgb: np.ndarray) -> np.ndarray:
        return self.outputs.pop(0)

    def result(self, handle: np.ndarray) -> np.ndarray:
        return handle


def codec_cpu(clip: Path, folder: Path, upscaled: Path, work: Path) -> dict:
    """CPU milliseconds (every thread of this process) per frame of what the pipelines do besides the network and
    the colour: the video's decoding, pixel-format conversions, H.264 encoding (upscale's defaults) and muxing; the
    folder's PNG decoding and streamed PNG writing, each on the outputs the folder run wrote (``upscaled``)."""
    from ..runtime import images
    from ..runtime.video import upscale_video

    inputs = sorted(folder.glob("*.png"))
    outputs = [images.read_rgb(upscaled / f"{path.stem}_x2.png") for path in inputs]
    started = time.process_time()
    upscale_video(clip, work / "codec.mp4", Replay(list(outputs)))
    video = (time.process_time() - started) / len(outputs)
    started = time.process_time()
    for path, rgb in zip(inputs, outputs):
        images.read_picture(path)
        images.write_png_rows(work / "codec.png", rgb.shape[1], rgb.shape[0],
                              (rgb[row:row + CHUNK] for row in range(0, rgb.shape[0], CHUNK)))
    folder_ms = (time.process_time() - started) / len(outputs)
    return {"video_ms": 1e3 * video, "folder_ms": 1e3 * folder_ms}


def ceiling(codec_ms: float, network_fps: float, cores: int) -> float:
    """The highest share of the network-alone rate a pipeline can reach when the network keeps every core busy
    (``cores`` / ``network_fps`` of CPU per frame) and the codecs' ``codec_ms`` of CPU per frame come on top, all
    other work free."""
    network_ms = 1e3 * cores / network_fps
    return network_ms / (network_ms + codec_ms)


def measure(model: str, artifact: Path, backend: str, mode: str, clip: Path, folder: Path, frames: list[np.ndarray],
            work: Path) -> dict:
    from ..runtime.upscale import plan_jobs, upscale_each
    from ..runtime.video import LocalFrames, upscale_video
    from ..models.runners import tiled_runner
    from ..runtime.opener import SessionOptions

    tiled, scale, colour = tiled_runner(artifact, None, SessionOptions(backend=backend), threads=None,
                                        throughput=mode == "throughput")
    in_flight = tiled.in_flight
    alone = network_alone(tiled, colour, frames, in_flight)
    video = upscale_video(clip, work / "out.mp4", LocalFrames(tiled, scale, colour, in_flight if in_flight > 1 else 0))
    jobs = plan_jobs(folder, work / "out")
    started = time.perf_counter()
    failed = [problem for _, _, problem in upscale_each(jobs, tiled, colour, in_flight=in_flight) if problem]
    if failed:
        raise SystemExit(f"folder upscale failed: {failed[0]}")
    images_per_s = len(jobs) / (time.perf_counter() - started)
    row = {"model": f"{model} ×2", "backend": backend, "mode": mode, "in_flight": in_flight,
           "network_alone_fps": alone, "video_fps": video.fps, "folder_images_per_s": images_per_s,
           "video_busy_s": video.seconds}
    print(row, file=sys.stderr, flush=True)
    return row


def chart(rows: list[dict], path: Path) -> None:
    """Per model, network alone / video / folder throughput of each runtime and mode, as a share of the best
    network-alone rate, with the 90 % goal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.6), squeeze=False)
    for ax, model in zip(axes[0], names):
        mine = [r for r in rows if r["model"] == model]
        best = max(r["network_alone_fps"] for r in mine)
        at = np.arange(len(mine))
        for k, (key, label) in enumerate((("network_alone_fps", "network alone"), ("video_fps", "video"),
                                          ("folder_images_per_s", "folder"))):
            ax.bar(at + (k - 1) * 0.27, [100 * r[key] / best for r in mine], 0.27, label=label)
        ax.axhline(100 * GOAL, color="grey", linestyle="--", label="90 % goal")
        ax.set_xticks(at, [f"{r['backend'].replace('onnxruntime', 'ORT').replace('openvino', 'OV')}\n{r['mode']}"
                           for r in mine], fontsize=8)
        ax.set(title=f"{model} (100 % = {best:.2f} frames/s)", ylabel="% of the best network-alone rate")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--models", default="fsrcnn,lesrcnn")
    parser.add_argument("--backends", default="onnxruntime,openvino")
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args(argv)
    from PIL import Image

    report = {**report_header("python -m srdeploy.benchmarks.throughput", args.models, 2, None), "rows": []}
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        clip = make_clip(work / "clip.mp4", args.frames)
        frames = frames_of(clip)
        (work / "frames").mkdir()
        for i, rgb in enumerate(frames):
            Image.fromarray(rgb).save(work / "frames" / f"frame_{i:03d}.png")
        for model in args.models.split(","):
            artifact = target("onnx").export(ModelSpec(model, 2).load(), ExportOptions(precision="fp32"), work,
                                             Progress(False)).artifacts[0]
            for backend in args.backends.split(","):
                for mode in MODES:
                    report["rows"].append(measure(model, artifact, backend, mode, clip, work / "frames", frames, work))
            report.setdefault("codecs", {})[f"{model} ×2"] = codec_cpu(clip, work / "frames", work / "out", work)
    rows = report["rows"]
    best = {r["model"]: max(x["network_alone_fps"] for x in rows if x["model"] == r["model"]) for r in rows}
    table = [[r["model"], r["backend"], r["mode"], str(r["in_flight"]), f"{r['network_alone_fps']:.2f}",
              f"{r['video_fps']:.2f}", f"{r['video_fps'] / r['network_alone_fps']:.0%}",
              f"{r['folder_images_per_s']:.2f}", f"{r['folder_images_per_s'] / r['network_alone_fps']:.0%}",
              f"{max(r['video_fps'], r['folder_images_per_s']) / best[r['model']]:.0%}"] for r in rows]
    lines = [f"`{report['command']}` — {report['date']}", "",
             f"Machine: {cpu_text(report['machine'])}, {report['machine']['usable_cores']} cores. {args.frames} frames "
             "640×360 → 1280×720 (a pan over a photo, H.264 CRF 18 in and out; the folder: the same frames as PNG), "
             "FP32 ONNX, default tile (256); frames/s of the whole run, start-up excluded.", "",
             markdown_table(["model", "runtime", "mode", "in flight", "network alone frames/s", "video frames/s",
                             "video / alone", "folder images/s", "folder / alone", "best pipeline / best alone"],
                            table)]
    cores = report["machine"]["usable_cores"]
    floors = [[model, f"{1e3 * cores / best[model]:.0f}", f"{codec['video_ms']:.0f}",
               f"{ceiling(codec['video_ms'], best[model], cores):.0%}", f"{codec['folder_ms']:.0f}",
               f"{ceiling(codec['folder_ms'], best[model], cores):.0%}"] for model, codec in report["codecs"].items()]
    lines += ["", "The codecs' share: CPU per frame of what the pipelines do besides the network and the colour "
              "(video: decoding, pixel-format conversions, H.264 encoding at upscale's defaults, muxing; folder: PNG "
              "decoding and writing), measured on the folder run's outputs, against the network's CPU per frame "
              "(cores / best network-alone rate). Ceiling: the best share of the network-alone rate a pipeline "
              "could reach with everything else free.", "",
              markdown_table(["model", "network CPU ms/frame", "video codec CPU ms/frame", "video ceiling",
                              "folder codec CPU ms/image", "folder ceiling"], floors)]
    base = write_results(args.out, "throughput", report, "\n".join(lines))
    chart(rows, base.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
