"""Upscaling files: an image, or a folder of images, through any ``infer`` (tiled), each written atomically and
one failing file never stopping the rest. numpy + Pillow only: ``cli.py upscale`` and the Jetson bundle's
``runtime.bundle_upscale`` both run it.

Exit status of a run (``report``): 0 every image written; 1 some failed, the others written; 2 none written.
"""
from __future__ import annotations

import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from . import images
from .errors import SrDeployError, os_error_line
from .global_gate import GateSplit
from .pipeline import Infer, Window, upscale_bands, upscale_picture
from .tiling import tiled_bands, tiled_infer


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path  # the output file, or the folder it goes into
    into_folder: bool

    def output(self, scale: int) -> Path:
        return self.target / f"{self.source.stem}_x{scale}.png" if self.into_folder else self.target


def plan_jobs(source: Path, target: Path) -> list[Job]:
    """One job per input image. The output is a folder when it is one or has no extension, a file when it has an
    image extension (one input image only); anything else is refused, before any model or artifact is opened."""
    if not (source.is_dir() or source.is_file()):
        raise SrDeployError(f"input {source} does not exist: pass an image or a folder of images")
    suffix = target.suffix.lower()
    to_folder = target.is_dir() or not suffix
    if not to_folder and suffix not in images.IMAGE_SUFFIXES:
        raise SrDeployError(f"output {target}: {suffix!r} is not an image extension ({', '.join(images.IMAGE_SUFFIXES)}); "
                            "name an image file, or a folder (no extension)")
    if source.is_file():
        return [Job(source, target, to_folder)]
    if not to_folder:
        raise SrDeployError(f"input {source} is a folder, so the output must be a folder, not the image file {target}")
    jobs = [Job(p, target, True) for p in sorted(source.iterdir()) if p.suffix.lower() in images.IMAGE_SUFFIXES]
    if not jobs:
        raise SrDeployError(f"{source} holds no images ({', '.join(images.IMAGE_SUFFIXES)})")
    return jobs


@dataclass(frozen=True)
class Tiler:
    """``infer`` run tile by tile: called on a whole input (``tiling.tiled_infer``), or band by band from the top
    (``bands``: ``tiling.tiled_bands``, one row of tiles held at a time). ``gate``: a globally gated network's
    GateSplit factory; ``workers``: tiles in flight at once; ``in_flight``: images or frames worth running at once."""

    infer: Infer
    scale: int
    tile: int
    overlap: int
    min_size: int = 1
    gate: Callable[[], GateSplit] | None = None
    workers: int = 1
    in_flight: int = 1  # images or frames worth running at once (the runtime's throughput mode)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return tiled_infer(x, self.infer, self.scale, self.tile, self.overlap, self.min_size, self.gate, self.workers)

    def bands(self, window: Window, height: int, width: int) -> Iterator[np.ndarray]:
        return tiled_bands(window, height, width, self.infer, self.scale, self.tile, self.overlap, self.min_size,
                           self.gate, self.workers)


def tiler(infer: Infer, scale: int, tile: int, overlap: int, min_size: int = 1,
          gate: Callable[[], GateSplit] | None = None, workers: int = 1, in_flight: int = 1) -> Tiler:
    """``infer`` run tile by tile (``Tiler``)."""
    return Tiler(infer, scale, tile, overlap, min_size, cache(gate) if gate else None, workers,  # the split compiles once
                 in_flight)


def upscale_each(jobs: list[Job], tiled: Tiler, colour: str, max_pixels: int = images.DEFAULT_MAX_PIXELS,
                 in_flight: int = 1) -> Iterator[tuple[Job, Path, str | None]]:
    """For each job, in order: (job, output, None) once written, or (job, output, the one-line reason it failed);
    ``in_flight`` images at once on as many threads (throughput mode: a runtime that computes several requests
    at once), each image's memory bounded by its tiles."""
    outputs = [(job, job.output(tiled.scale)) for job in jobs]
    if in_flight <= 1:
        for job, output in outputs:
            yield job, output, upscale_file(job.source, output, tiled, colour, max_pixels)
        return
    with ThreadPoolExecutor(in_flight, thread_name_prefix="srdeploy-image") as threads:
        pending: deque = deque()
        for number, (job, output) in enumerate(outputs, 1):
            pending.append((job, output, threads.submit(upscale_file, job.source, output, tiled, colour, max_pixels)))
            while pending and (len(pending) >= in_flight or number == len(outputs)):  # the last: drain
                job_done, written, future = pending.popleft()
                yield job_done, written, future.result()


def upscale_file(source: Path, output: Path, infer: Infer, colour: str,
                 max_pixels: int = images.DEFAULT_MAX_PIXELS) -> str | None:
    """Upscale one image file into ``output`` (written atomically); None, or the one-line reason it failed. A PNG
    from a ``Tiler`` is written band by band as the tiles come (memory bounded by the tile, not the image); other
    formats, and a network that runs on the whole image, hold the whole output (in 8 bits)."""
    try:
        picture = images.read_picture(source, max_pixels)
        if isinstance(infer, Tiler) and output.suffix.lower() == ".png":
            height, width = picture.rgb.shape[:2]
            images.write_png_rows(output, width * infer.scale, height * infer.scale,
                                  upscale_bands(picture, infer.bands, colour), picture.icc_profile)
        else:
            images.write_picture(output, upscale_picture(picture, infer, colour))
    except SrDeployError as exc:
        return str(exc)
    except OSError as exc:  # writing it: a full disk, a read-only folder; the next image is still tried
        return os_error_line(exc)
    return None


DEFAULT_TILE = 256  # LR pixels


def fit_tile(tile: int, overlap: int, max_shape: list[int] | None) -> int:
    """``tile`` (0: whole image) shrunk so that a tile with its context fits the artifact's largest input."""
    if not tile or max_shape is None:
        return tile
    return max(1, min(tile, min(max_shape[2], max_shape[3]) - 2 * overlap))


def tiling(name: str, tile: int | None, overlap: int | None, receptive_radius: int, max_shape: list[int] | None,
           whole_image: bool) -> tuple[int, int]:
    """(tile, overlap) to run: ``tile`` (None: ``DEFAULT_TILE``) shrunk to fit ``max_shape``, ``overlap`` (None: the
    receptive radius); (0, 0), the whole image, for a network whose output depends on the whole image, which
    refuses an explicit ``tile``."""
    if whole_image:
        if tile:
            raise SrDeployError(f"{name}'s output depends on the whole image (global pooling or attention, as "
                                "measured): tiles would differ from a whole-image run; drop --tile (it then runs whole)")
        return 0, 0
    overlap = receptive_radius if overlap is None else overlap
    return fit_tile(DEFAULT_TILE if tile is None else tile, overlap, max_shape), overlap


def collect(results: Iterable[tuple[Job, Path, str | None]], total: int,
            show: bool = True) -> tuple[list[Path], dict[Path, str]]:
    """The outputs written and the failures ({input: reason}); while ``show``, each output on stdout and each
    failure on stderr as it comes (one line each, then a count)."""
    written, failed = [], {}
    for job, output, problem in results:
        if problem:
            failed[job.source] = problem
            if show:
                print(f"skipped {job.source}: {problem}", file=sys.stderr)
        else:
            written.append(output)
            if show:
                print(output, flush=True)
    if failed and show:
        print(f"error: {len(failed)} of {total} images failed (see above)", file=sys.stderr)
    return written, failed


def exit_status(failed: int, total: int) -> int:
    """0 every image written; 1 some failed, the others written; 2 none written."""
    return 0 if not failed else 2 if failed == total else 1


def report(results: Iterable[tuple[Job, Path, str | None]], total: int) -> int:
    """``collect`` with its lines shown; the exit status."""
    return exit_status(len(collect(results, total)[1]), total)
