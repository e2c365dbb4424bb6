"""Video in, video out: decode → tiled inference → encode, streaming, with PyAV (FFmpeg's libraries).

Three stages run at once, joined by small bounded queues, so memory stays bounded whatever the clip's length
and the slowest stage sets the pace: a thread demuxes and decodes, the caller's thread runs the network
(ONNX Runtime, OpenVINO and PyTorch release the GIL while they compute), a thread encodes and muxes. Audio,
subtitle and data streams are copied packet by packet, without re-encoding. Each frame goes through the
image path (``pipeline.upscale_rgb``): its RGB from the clip's own matrix and range, and back into that
matrix and range, so a Y-only network (FSRCNN) upscales luma through the network and chroma bicubically,
exactly as for images. The output is written under a temporary name and renamed when complete.

The network stage is a ``FrameUpscaler``: ``LocalFrames`` runs each frame as it comes, or several at once on
threads of this process (throughput mode); ``ray_engine.RayFrames`` keeps several frames in flight on a Ray
cluster's workers; both give their results back in stream order.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from .atomic import atomic_path
from .errors import SrDeployError
from .pipeline import Infer, upscale_rgb

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")
DEFAULT_CODEC = {".webm": "libvpx-vp9"}  # everything else: libx264
CODECS = ("libx264", "libx265", "libvpx-vp9", "mpeg4")
QUEUE = 4  # frames in flight between two stages
_END = object()


@dataclass
class VideoOptions:
    """How the output is encoded: codec, quality (CRF, lower is better), x264/x265 preset, pixel format."""

    codec: str | None = None  # None: libx264, or libvpx-vp9 for .webm
    crf: int = 18
    preset: str = "medium"
    pix_fmt: str = "yuv420p"


@dataclass
class VideoReport:
    """What was written, and where the time went (seconds each stage was busy)."""

    source: Path
    output: Path
    frames: int = 0
    fps: float = 0.0  # frames per second of the whole run
    copied_streams: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "infer": 0.0, "encode": 0.0})
    wall_s: float = 0.0


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def output_path(source: Path, target: Path, scale: int) -> Path:
    """The output file for ``source``: ``target`` itself, or NAME_x{scale} with the input's extension in
    ``target`` when it is a folder (or has no extension); a one-line refusal when it cannot be a video."""
    if not source.is_file():
        raise SrDeployError(f"input {source} does not exist: pass a video file")
    if target.is_dir() or not target.suffix:
        return target / f"{source.stem}_x{scale}{source.suffix}"
    if not is_video(target):
        raise SrDeployError(f"output {target}: a video needs a video extension ({', '.join(VIDEO_SUFFIXES)})")
    return target


def import_av():
    try:
        import av
    except ImportError as exc:
        raise SrDeployError(f"video needs PyAV, which is not installed ({exc}): pip install av") from None
    return av


class FrameUpscaler(Protocol):
    """Upscales RGB frames, possibly several at once: ``submit`` a frame, take its ``result`` later; results are
    taken in submission order, at most ``in_flight`` frames behind."""

    scale: int
    in_flight: int

    def submit(self, rgb: np.ndarray) -> Any: ...

    def result(self, handle: Any) -> np.ndarray: ...


@dataclass
class LocalFrames:
    """Frames through ``infer`` (N×C×H×W float32 → N×C×(s·H)×(s·W), tiled already if it should be) in this
    process: each as it comes (``in_flight`` 0), or ``in_flight`` frames at once on as many threads, for a
    runtime that computes several requests at once (OpenVINO's throughput streams, ONNX Runtime sessions of
    one thread each); results come back in order. ``close()`` ends the threads."""

    infer: Infer
    scale: int
    colour: str
    in_flight: int = 0
    _threads: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)

    def submit(self, rgb: np.ndarray) -> Any:
        if not self.in_flight:
            return upscale_rgb(rgb, self.infer, self.colour)
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.in_flight, thread_name_prefix="srdeploy-frame")
        return self._threads.submit(upscale_rgb, rgb, self.infer, self.colour)

    def result(self, handle: Any) -> np.ndarray:
        return handle.result() if isinstance(handle, Future) else handle

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(cancel_futures=True)


def upscale_video(source: str | Path, target: str | Path, upscaler: FrameUpscaler, options: VideoOptions | None = None,
                  progress: Callable[[int, int | None], Any] | None = None) -> VideoReport:
    """Upscale the first video stream of ``source`` into ``target`` with ``upscaler`` (``LocalFrames``, or Ray's),
    copying every other stream. ``progress(frames_done, total)`` is called after each frame. Any failure leaves
    nothing under ``target``."""
    scale = upscaler.scale
    av = import_av()
    options = options or VideoOptions()
    source = Path(source)
    target = output_path(source, Path(target), scale)
    codec = options.codec or DEFAULT_CODEC.get(target.suffix.lower(), "libx264")
    if codec not in CODECS:
        raise SrDeployError(f"--codec {codec}: choose one of {', '.join(CODECS)}")
    report = VideoReport(source, target)
    started = time.perf_counter()
    try:
        with _open_input(av, source) as clip, atomic_path(target) as tmp:
            video = clip.streams.video[0]
            with av.open(str(tmp), "w") as out:
                encoder = _video_stream(out, video, codec, options, scale)
                copies = {}
                for stream in clip.streams:
                    if stream.index != video.index and stream.type in ("audio", "subtitle", "data"):
                        try:
                            copies[stream.index] = out.add_stream_from_template(stream)
                        except (ValueError, av.FFmpegError) as exc:
                            raise SrDeployError(f"{source}: its {stream.type} stream ({stream.codec_context.name}) "
                                                f"cannot be copied into {target.suffix} ({exc}): choose another "
                                                "container (.mkv takes almost anything)") from None
                report.copied_streams = [f"{s.type} {s.codec_context.name}" for s in copies.values()]
                total = video.frames or None
                _run(av, clip, video, copies, out, encoder, upscaler, report, progress, total)
    except av.FFmpegError as exc:
        raise SrDeployError(f"{source} cannot be read as a video, or {target} written ({exc}): check the file, "
                            "or choose another --codec or container") from None
    report.wall_s = time.perf_counter() - started
    report.fps = report.frames / report.wall_s if report.wall_s else 0.0
    return report


def _open_input(av, source: Path):
    try:
        clip = av.open(str(source))
    except av.FFmpegError as exc:
        raise SrDeployError(f"{source} is not a readable video ({exc}): check the file") from None
    if not clip.streams.video:
        clip.close()
        raise SrDeployError(f"{source} has no video stream: pass a video file")
    return clip


def _video_stream(out, video, codec: str, options: VideoOptions, scale: int):
    """The output video stream: ``codec`` at the input's frame rate and colour tags, ``scale`` × its size."""
    rate = video.average_rate or video.guessed_rate
    try:
        stream = out.add_stream(codec, rate=rate)
    except ValueError as exc:  # the container does not take the codec
        raise SrDeployError(f"--codec {codec} cannot be written into {Path(out.name).suffix} ({exc}): choose another "
                            "--codec, or another container (.mkv takes almost anything)") from None
    context = video.codec_context
    stream.width, stream.height = context.width * scale, context.height * scale
    stream.pix_fmt = options.pix_fmt
    stream.time_base = video.time_base
    for tag in ("colorspace", "color_range", "color_primaries", "color_trc"):
        value = getattr(context, tag, None)
        if value is not None and hasattr(stream.codec_context, tag):
            setattr(stream.codec_context, tag, value)
    stream.options = {"crf": str(options.crf)} | ({"preset": options.preset} if codec in ("libx264", "libx265")
                                                 else {"b": "0"} if codec == "libvpx-vp9" else {})
    return stream


def _run(av, clip, video, copies, out, encoder, upscaler: FrameUpscaler, report, progress, total) -> None:
    """Decode (thread) → upscale (here, up to ``upscaler.in_flight`` frames at once) → encode and mux (thread),
    in stream order, through bounded queues."""
    decoded: queue.Queue = queue.Queue(QUEUE)
    upscaled: queue.Queue = queue.Queue(QUEUE)
    failures: list[BaseException] = []
    stop = threading.Event()

    def put(q: queue.Queue, item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(q: queue.Queue):
        while not stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                continue
        return _END

    def decode() -> None:
        try:
            for item in _demux(clip, video, copies, report):
                if not put(decoded, item):
                    return
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failures.append(exc)
        put(decoded, _END)

    def encode() -> None:
        try:
            while (item := get(upscaled)) is not _END:
                started = time.perf_counter()
                if isinstance(item, av.Packet):
                    out.mux(item)
                else:
                    out.mux(encoder.encode(item))
                report.seconds["encode"] += time.perf_counter() - started
            started = time.perf_counter()
            out.mux(encoder.encode(None))  # flush
            report.seconds["encode"] += time.perf_counter() - started
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=decode, daemon=True), threading.Thread(target=encode, daemon=True)]
    for thread in threads:
        thread.start()
    pending: deque = deque()  # (decoded frame, its handle) or (copied packet, None), in stream order

    def emit() -> None:
        item, handle = pending.popleft()
        if handle is None:
            put(upscaled, item)
            return
        started = time.perf_counter()
        frame = _output_frame(av, item, upscaler.result(handle), encoder)
        report.seconds["infer"] += time.perf_counter() - started
        put(upscaled, frame)
        report.frames += 1
        if progress:
            progress(report.frames, total)

    finished = False
    try:
        while (item := get(decoded)) is not _END:
            if isinstance(item, av.Packet):
                pending.append((item, None))
            else:
                started = time.perf_counter()
                pending.append((item, upscaler.submit(_rgb(item))))
                report.seconds["infer"] += time.perf_counter() - started
            while len(pending) > upscaler.in_flight:
                emit()
        while pending and not failures:
            emit()
        finished = not failures
    finally:
        if finished:
            put(upscaled, _END)
        else:
            stop.set()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]


def _demux(clip, video, copies, report) -> Iterator:
    """Decoded video frames and the packets of copied streams, in file order."""
    started = time.perf_counter()
    for packet in clip.demux([video, *(clip.streams[i] for i in copies)]):
        if packet.stream.index == video.index:
            frames = packet.decode()
            report.seconds["decode"] += time.perf_counter() - started
            yield from frames
        elif packet.dts is not None:  # flush packets of copied streams carry nothing
            packet.stream = copies[packet.stream.index]
            report.seconds["decode"] += time.perf_counter() - started
            yield packet
        started = time.perf_counter()


def _rgb(frame) -> np.ndarray:
    """H×W×3 uint8 RGB, converted with the frame's own matrix and range."""
    return frame.to_ndarray(format="rgb24", src_colorspace=frame.colorspace or None,
                            src_color_range=frame.color_range or None)


def _output_frame(av, frame, rgb: np.ndarray, encoder):
    """``rgb`` as a frame in the encoder's pixel format, in the input's matrix and range, at the input's time."""
    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    out = out.reformat(format=encoder.pix_fmt, dst_colorspace=frame.colorspace or None,
                       dst_color_range=frame.color_range or None)
    out.pts, out.time_base = frame.pts, frame.time_base
    return out
