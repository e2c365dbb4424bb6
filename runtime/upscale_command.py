"""The driver of ``srdeploy upscale``: an image, a folder of images or a video, in this process or on a Ray
cluster, tiled, every file written atomically and one failing image never stopping the rest.

What runs the network comes from the caller as ``setup(artifact, threads=…, tile_workers=…) → (tiled infer,
scale, colour)`` (an artifact's session, or the PyTorch model: ``models.runners.tiled_runner``), with
``local_threads(artifact)``, the context in which this process runs it (``models.runners.tile_workers``): the
same ``setup`` builds the network on each Ray worker.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from .errors import SrDeployError
from .targets import for_artifact, targets
from .upscale import collect, exit_status, plan_jobs, upscale_each

Setup = Callable[..., tuple[Callable, int, str]]


@dataclass(frozen=True)
class UpscaleOptions:
    """How ``upscale`` runs: tiling, limits, video encoding, and where (local or Ray)."""

    tile: int | None = None  # LR tile size (None: 256; 0: whole image)
    tile_overlap: int | None = None  # context per tile (None: the receptive radius)
    max_pixels: int = 100_000_000  # largest input image, from its header
    codec: str | None = None  # video: libx264 (libvpx-vp9 for .webm)
    crf: int = 18
    preset: str = "medium"
    engine: str = "local"  # local | ray
    ray_address: str | None = None  # ray: the cluster (None: a local one for the run)
    workers: int | None = None  # ray: worker processes (None: one per CPU of the cluster)
    throughput: bool = False  # local: the runtime's throughput mode, several images or frames in flight
    skip_existing: bool = False  # keep outputs already there (each written whole), so a stopped run continues


@dataclass
class UpscaleReport:
    """Each image written, each one that failed with its one-line reason, each output kept as it was
    (``skip_existing``); for a video, its ``VideoReport``."""

    written: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    video: Any = None  # runtime.video.VideoReport
    kept: list[Path] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        """0 every image written or kept; 1 some failed, the others written; 2 none written or kept."""
        return exit_status(len(self.failed), len(self.written) + len(self.kept) + len(self.failed))


def run_upscale(source: Path, target: Path, artifact: str | Path | None, backend: str, options: UpscaleOptions,
                setup: Setup, local_threads: Callable[[Any], ContextManager[int]], progress: bool) -> UpscaleReport:
    """Upscale ``source`` (image, folder or video) into ``target`` (see the module)."""
    from tqdm import tqdm

    from .video import is_video

    if options.engine not in ("local", "ray"):
        raise SrDeployError(f"--engine {options.engine}: choose local or ray")
    if options.throughput and options.engine == "ray":
        raise SrDeployError("--throughput is for a local run: on Ray, each worker already runs one request per CPU "
                            "(drop --throughput)")
    if options.throughput:
        setup = partial(setup, throughput=True)
    if is_video(source):
        frames = (partial(_ray_frames, artifact, backend, options, setup) if options.engine == "ray"
                  else partial(_local_frames, setup, artifact, local_threads))
        return _upscale_video(source, target, options, progress, frames)
    if options.skip_existing and options.engine == "ray":
        raise SrDeployError("--skip-existing is for a local run: drop it, or drop --engine ray")
    jobs = plan_jobs(source, target)  # paths checked before the model or artifact opens
    with local_threads(artifact) as tile_workers:
        if options.engine == "ray":
            from .ray_engine import upscale_on_ray

            results = upscale_on_ray(jobs, setup, ray_files(artifact, backend), options.workers,
                                     options.ray_address, options.max_pixels)
            kept = []
        else:
            tiled, _, colour = setup(artifact, threads=None, tile_workers=tile_workers)
            kept = [job.output(tiled.scale) for job in jobs if options.skip_existing and job.output(tiled.scale).exists()]
            jobs = [job for job in jobs if job.output(tiled.scale) not in kept]
            if kept and progress:
                print(f"kept {len(kept)} outputs already written (--skip-existing)", file=sys.stderr, flush=True)
            results = upscale_each(jobs, tiled, colour, options.max_pixels, tiled.in_flight)
        bar = tqdm(results, total=len(jobs), desc="upscale", unit="img", leave=False,
                   disable=True if len(jobs) <= 1 or not progress else None)
        return UpscaleReport(*collect(bar, len(jobs), progress), kept=kept)


def ray_files(artifact: str | Path | None, backend: str) -> dict[str, bytes]:
    """The files a Ray worker needs to open ``artifact`` ({} for the PyTorch model), after it was opened here (a
    damaged or foreign artifact: one line before any worker starts)."""
    from .opener import open_artifact

    if artifact is None:
        return {}
    path = Path(artifact)
    target = for_artifact(path)
    if target is None or not target.ray:
        shipped = [t.artifact for t in targets().values() if t.ray]
        raise SrDeployError(f"--engine ray runs {', '.join(shipped)} or --model, not {path.name}: export an .onnx, or "
                            "upscale without --engine ray")
    open_artifact(artifact, run=False, backend=backend)
    return {part.name: part.read_bytes() for part in target.files(path)}


@contextmanager
def _local_frames(setup: Setup, artifact: str | Path | None, local_threads) -> Iterator:
    """This process's runner as a video's frame upscaler (``video.LocalFrames``)."""
    from .video import LocalFrames

    with local_threads(artifact) as tile_workers:
        tiled, scale, colour = setup(artifact, threads=None, tile_workers=tile_workers)
        frames = LocalFrames(tiled, scale, colour, tiled.in_flight if tiled.in_flight > 1 else 0)
        try:
            yield frames
        finally:
            frames.close()


def _ray_frames(artifact: str | Path | None, backend: str, options: UpscaleOptions, setup: Setup):
    """A video's frames on Ray workers (``ray_engine.ray_frames``)."""
    from .ray_engine import ray_frames

    return ray_frames(setup, ray_files(artifact, backend), options.workers, options.ray_address)


def _upscale_video(source: Path, target: Path, options: UpscaleOptions, progress: bool, frames: Callable) -> UpscaleReport:
    """One video through the frame upscaler ``frames()`` opens (this process, or Ray workers); a frames/s and ETA
    bar while ``progress``."""
    from tqdm import tqdm

    from .video import VideoOptions, output_path, upscale_video

    output_path(source, target, 0)  # paths checked before the model or artifact opens
    with frames() as upscaler:
        target = output_path(source, target, upscaler.scale)
        if options.skip_existing and target.exists():
            if progress:
                print(f"kept {target}, already written (--skip-existing)", file=sys.stderr, flush=True)
            return UpscaleReport(kept=[target])
        bar = tqdm(desc="upscale", unit="frame", leave=False, disable=None if progress else True)

        def advance(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            video = upscale_video(source, target, upscaler, VideoOptions(options.codec, options.crf, options.preset),
                                  advance)
        finally:
            bar.close()
    if progress:
        print(f"{video.frames} frames at {video.fps:.1f} frames/s (busy: decode {video.seconds['decode']:.1f} s, "
              f"network {video.seconds['infer']:.1f} s, encode {video.seconds['encode']:.1f} s); copied: "
              f"{', '.join(video.copied_streams) or 'nothing'}", file=sys.stderr, flush=True)
        print(target, flush=True)
    return UpscaleReport(written=[target], video=video)
