"""A folder of images, or the frames of a video, spread over a Ray cluster (``upscale … --engine ray
[--ray-address ADDR]``).

Each worker is a Ray actor that builds its network once (``setup``: an artifact's runner, or the PyTorch model)
and then upscales one image (or frame) at a time with the same image path as a local run, so the files it returns
are bit-identical to the local ones. A video is decoded and encoded by the driver; its frames go round the
workers, a few per worker in flight, and come back in order (``RayFrames``, a ``video.FrameUpscaler``). The
artifact's files and every image travel through Ray's object store, and
the encoded results come back to the driver, which writes them atomically: the nodes of a real cluster need
srdeploy installed, but no shared filesystem. Without an address, a local cluster is started for the run and
stopped after it.
"""
from __future__ import annotations

import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import images
from .atomic import atomic_path
from .errors import SrDeployError
from .pipeline import Infer, upscale_rgb
from .upscale import Job, upscale_file

Setup = Callable[[Path | None], tuple[Infer, int, str]]  # local artifact path → (tiled infer, scale, colour)


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise SrDeployError(f"--engine ray needs Ray, which is not installed ({exc}): pip install 'ray[default]'") from None
    return ray


def check_reachable(address: str | None) -> None:
    """A one-line refusal, within seconds, of a cluster address nothing answers at (Ray itself retries for
    minutes). ``None`` and ``auto`` are left to Ray."""
    if address in (None, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as exc:
        raise SrDeployError(f"cannot reach the Ray cluster at {address} ({exc}): check --ray-address (HOST:6379, or "
                            "ray://HOST:10001 for Ray Client), or leave it out to start a local cluster") from None


class Worker:
    """One network, built once from the shipped files; upscales encoded images into encoded images."""

    def __init__(self, setup: Setup, files: dict[str, bytes], max_pixels: int):
        self.folder = Path(tempfile.mkdtemp(prefix="srdeploy-ray-"))
        for name, data in files.items():
            (self.folder / name).write_bytes(data)
        main = next((name for name in files if not name.endswith(".bin")), None)  # an IR's .bin goes with its .xml
        self.max_pixels, self.problem = max_pixels, None
        try:
            self.infer, self.scale, self.colour = setup(None if main is None else self.folder / main)
        except Exception as exc:  # noqa: BLE001 - told by scale_of: Ray's actor-death message would bury it
            self.problem = str(exc) if isinstance(exc, SrDeployError) else f"{type(exc).__name__}: {exc}"

    def scale_of(self) -> tuple[int | None, str | None]:
        """(the network's scale, None), or (None, the one-line reason it could not be built)."""
        return (None, self.problem) if self.problem else (self.scale, None)

    def upscale(self, name: str, data: bytes, suffix: str) -> tuple[bytes | None, str | None]:
        """(the output file's bytes, None), or (None, the one-line reason the image failed)."""
        source, target = self.folder / f"in{Path(name).suffix}", self.folder / f"out{suffix}"
        source.write_bytes(data)
        try:
            problem = upscale_file(source, target, self.infer, self.colour, self.max_pixels)
            return (None, problem.replace(str(source), name)) if problem else (target.read_bytes(), None)
        finally:
            source.unlink(missing_ok=True)
            target.unlink(missing_ok=True)

    def frame(self, rgb: np.ndarray) -> np.ndarray:
        """One video frame, H×W×3 uint8 RGB, through the image path."""
        return upscale_rgb(rgb, self.infer, self.colour)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def _cluster(address: str | None):
    """Ray, initialised for the duration: the cluster at ``address``, or a local one started and stopped here."""
    ray = import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        check_reachable(address)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SrDeployError(f"cannot reach the Ray cluster at {address} ({exc}): check --ray-address, or leave "
                                "it out to start a local cluster") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def _start_workers(ray, setup: Setup, files: dict[str, bytes], count: int, max_pixels: int) -> tuple[list, int]:
    """``count`` actors with the network built, and its scale; a one-line error if a worker cannot build it."""
    shipped = ray.put(files)
    actors = [ray.remote(num_cpus=1)(Worker).remote(setup, shipped, max_pixels) for _ in range(count)]
    try:
        built = ray.get([actor.scale_of.remote() for actor in actors])
    except ray.exceptions.RayError as exc:  # a worker died (out of memory, a crash): Ray's first line
        raise SrDeployError(f"a Ray worker died while building the network: {_first_line(exc)}") from None
    problem = next((why for _, why in built if why), None)
    if problem:
        raise SrDeployError(f"a Ray worker could not build the network: {problem}")
    return actors, built[0][0]


def _first_line(exc: Exception) -> str:
    """The first line of Ray's message, without its terminal colours."""
    return re.sub(r"\x1b\[[0-9;]*m", "", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def _worker_count(ray, workers: int | None, most: int) -> int:
    return max(1, min(most, workers or max(1, int(ray.cluster_resources().get("CPU", 1)))))


class RayFrames:
    """A ``video.FrameUpscaler`` on Ray actors: frames round-robin, two per worker in flight, results in order."""

    def __init__(self, ray, actors: list, scale: int):
        self.ray, self.actors, self.scale = ray, actors, scale
        self.in_flight = 2 * len(actors)
        self.sent = 0

    def submit(self, rgb: np.ndarray):
        actor = self.actors[self.sent % len(self.actors)]
        self.sent += 1
        return actor.frame.remote(rgb)

    def result(self, handle) -> np.ndarray:
        return self.ray.get(handle)


@contextmanager
def ray_frames(setup: Setup, files: dict[str, bytes], workers: int | None = None,
               address: str | None = None) -> Iterator[RayFrames]:
    """Video frames upscaled on ``workers`` actors (default: one per CPU of the cluster) for the duration."""
    with _cluster(address) as ray:
        actors, scale = _start_workers(ray, setup, files, _worker_count(ray, workers, 1 << 16), images.DEFAULT_MAX_PIXELS)
        yield RayFrames(ray, actors, scale)
        ray.get([actor.close.remote() for actor in actors])


def upscale_on_ray(jobs: list[Job], setup: Setup, files: dict[str, bytes], workers: int | None = None,
                   address: str | None = None, max_pixels: int = images.DEFAULT_MAX_PIXELS,
                   ) -> Iterator[tuple[Job, Path, str | None]]:
    """For each job, in order: (job, output, None) once written, or (job, output, why it failed), as
    ``upscale.upscale_each`` gives them; the work runs on ``workers`` actors (default: one per CPU of the
    cluster, at most one per image)."""
    from ray.util import ActorPool

    with _cluster(address) as ray:
        count = _worker_count(ray, workers, len(jobs))
        actors, scale = _start_workers(ray, setup, files, count, max_pixels)
        pool = ActorPool(actors)
        waiting = iter(jobs)

        def submit() -> None:  # at most two images per worker in flight: memory stays bounded
            job = next(waiting, None)
            if job is not None:
                payload = (str(job.source), job.source.read_bytes(), job.output(scale).suffix)
                pool.submit(lambda actor, args: actor.upscale.remote(*args), payload)

        for _ in range(2 * count):
            submit()
        for job in jobs:
            data, problem = pool.get_next()
            submit()
            output = job.output(scale)
            if problem is None:
                with atomic_path(output) as tmp:
                    tmp.write_bytes(data)
            yield job, output, problem
        ray.get([actor.close.remote() for actor in actors])
