"""Video throughput of ``upscale``: frames/s on a 640×360 → 1280×720 clip per model and backend, and how long
each stage (decode, network, encode) was busy.

    python -m srdeploy.benchmarks.video_bench [--frames 48] [--models fsrcnn,lesrcnn] [--out benchmarks/results]

The clip is a pan over a scikit-image photo (not a test set), H.264 at 24 frames/s. Each model is exported to
FP32 ONNX once and run by ONNX Runtime and by OpenVINO (f32), whole frames (no tiling), through
``runtime.video.upscale_video``, the function ``upscale`` runs. Writes ``video_<cpu>.json`` and ``.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from .bench import machine
from ..runtime.atomic import atomic_path
from ..runtime.tables import markdown_table

WIDTH, HEIGHT, RATE = 640, 360, 24


def make_clip(path: Path, frames: int) -> Path:
    """A slow pan over scikit-image's astronaut, enlarged to 1024², as H.264 (CRF 18) at 24 frames/s."""
    import av
    from PIL import Image
    from skimage import data

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((1024, 1024), Image.BICUBIC))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=RATE, options={"crf": "18"})
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for i in range(frames):
            top, left = 200 + i * 300 // frames, 50 + i * 300 // frames
            crop = np.ascontiguousarray(photo[top:top + HEIGHT, left:left + WIDTH])
            frame = av.VideoFrame.from_ndarray(crop, format="rgb24").reformat(format="yuv420p")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def measure(names: list[str], frames: int, work: Path) -> dict:
    from .. import models
    from ..export.onnx.onnx_export import save
    from ..export.precision import export_precision
    from ..runtime.opener import open_artifact
    from ..runtime.video import LocalFrames, upscale_video

    clip = make_clip(work / "clip.mp4", frames)
    rows = []
    for model in names:
        proto, _ = export_precision(models.load(model, 2), "fp32", progress=False)
        artifact = save(proto, work / f"{model}_x2_fp32.onnx")
        for backend in ("onnxruntime", "openvino"):
            print(f"{model} ×2 on {backend}: {frames} frames", file=sys.stderr, flush=True)
            session = open_artifact(artifact, backend=backend)
            video = upscale_video(clip, work / f"{model}_{backend}.mp4", LocalFrames(session.infer, 2, session.colour))
            rows.append({"model": model, "backend": backend, "frames": video.frames, "fps": video.fps,
                         "wall_s": video.wall_s, "busy_s": video.seconds})
    return {"clip": f"{WIDTH}x{HEIGHT} → {2 * WIDTH}x{2 * HEIGHT}, {frames} frames, H.264 CRF 18 in and out",
            "machine": machine(), "results": rows}


def markdown(report: dict) -> str:
    m = report["machine"]
    rows = [[r["model"], r["backend"], str(r["frames"]), f"{r['fps']:.2f}", f"{r['wall_s']:.1f}"]
            + [f"{r['busy_s'][s]:.1f} ({r['busy_s'][s] / r['wall_s']:.0%})" for s in ("decode", "infer", "encode")]
            for r in report["results"]]
    return "\n".join([
        f"Video ×2, {report['clip']}; machine: {m['cpu']}"
        + (f" ({', '.join(m['cpu_features'])})" if "cpu_features" in m else "")
        + f", {m['usable_cores']} usable cores; " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()) + ".",
        "",
        markdown_table(["model", "backend", "frames", "frames/s", "wall s", "decode busy s (share)",
                        "network busy s (share)", "encode busy s (share)"], rows),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--models", default="fsrcnn,lesrcnn")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="srdeploy-video-") as work:
        report = measure([m for m in args.models.split(",") if m], args.frames, Path(work))
    stem = "video_" + re.sub(r"[^a-z0-9]+", "_", report["machine"]["cpu"].lower()).strip("_")
    out = Path(args.out)
    with atomic_path(out / f"{stem}.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(out / f"{stem}.md") as tmp:
        tmp.write_text(markdown(report) + "\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
