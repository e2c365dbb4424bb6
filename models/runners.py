"""What ``eval``, ``upscale`` and ``parity`` run, behind one ``infer()`` (Polygraphy's runners): an exported
artifact on its runtime, or the PyTorch model; and the PyTorch model an artifact came from (``reference_model``)."""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .spec import ModelSpec
from ..runtime.errors import SrDeployError
from ..runtime.opener import SessionOptions


@dataclass(frozen=True)
class Runner:
    """An artifact or the PyTorch model, with what tiling and evaluation need to know about it."""

    infer: Callable
    name: str
    scale: int
    colour: str
    receptive_radius: int
    min_size: int
    source: str
    max_shape: list[int] | None  # an artifact's largest N×C×H×W input; None for PyTorch
    decision_split: Callable | None  # a globally gated network's GateSplit factory, for tiling (runtime.global_gate)
    whole_image: bool = False  # an output pixel depends on the whole image: never tiled
    rounding: str = "truncate"  # how the evaluation makes 8 bits of the output (models.ModelInfo.eval_rounding)
    in_flight: int = 1  # requests worth running at once (the runtime's throughput mode)


def open_session(artifact: str | Path, session: SessionOptions | None = None, threads: int | None = None,
                 throughput: bool = False):
    """The session for an artifact as ``session`` says (its runtime and settings); ``threads``: the CPU threads of
    the sessions that take them, default the library's own; ``throughput``: the runtime's throughput mode."""
    from ..runtime.opener import open_artifact

    session = session or SessionOptions()
    return open_artifact(artifact, backend=session.backend, **session.settings(threads, throughput))


@contextmanager
def tile_workers(artifact: str | Path | None) -> Iterator[int]:
    """How many tiles run at once in this process: 1 for an artifact (its runtime has the threads; torch is not
    imported), PyTorch's threads for the PyTorch model, one per tile (``torch_runner.tiles_of_one_thread``)."""
    if artifact:
        yield 1
        return
    from .torch_runner import tiles_of_one_thread

    with tiles_of_one_thread() as workers:
        yield workers


def rounding(metadata: dict[str, str]) -> str:
    """An artifact's evaluation rounding (artifacts before it was recorded: their zoo architecture's)."""
    if "eval_rounding" in metadata:
        return metadata["eval_rounding"]
    from .registry import architecture

    return architecture(metadata["model"]).eval_rounding


def runner(what: str, artifact: str | Path | None = None, spec: ModelSpec | None = None,
           session: SessionOptions | None = None, threads: int | None = None, throughput: bool = False) -> Runner:
    """An artifact's runner, or the PyTorch model's (``spec``); ``threads``: the CPU threads it may use (default:
    the library's own choice); ``throughput``: an artifact's runtime in its throughput mode."""
    if artifact:
        opened = open_session(artifact, session, threads, throughput)
        return Runner(opened.infer, opened.metadata["model"], opened.scale, opened.colour,
                      opened.receptive_radius, opened.shape_bounds["min"][2], str(artifact),
                      opened.shape_bounds["max"], opened.gate_split if opened.has_global_gate else None,
                      opened.whole_image, rounding(opened.metadata), opened.in_flight)
    if spec is None or not spec.model:
        raise SrDeployError(f"{what} needs --artifact FILE, or --model NAME (a zoo name, or FILE.py:NAME)")
    import torch

    from .torch_runner import TorchRunner

    if threads:
        torch.set_num_threads(threads)
    net = spec.load()
    info, torch_runner = net.info, TorchRunner(net.network)
    return Runner(torch_runner.infer, info.name, info.scale, info.colour, info.export.receptive_radius,
                  info.export.min_size, info.checkpoint, None,
                  torch_runner.gate_split if torch_runner.has_global_gate else None, info.export.whole_image,
                  info.eval_rounding)


def reference_model(session, weights: str | None = None):
    """The PyTorch model an artifact came from, found through its metadata (checkpoint sha256 checked): a zoo
    model, or your own network rebuilt from the file or module, name, arguments and checkpoint it records."""
    from .loading import load
    from .registry import checkpoint_by_sha256

    meta = session.metadata
    if meta.get("source"):
        net = _own_reference(session, json.loads(meta["source"]), weights)
    elif weights is None and checkpoint_by_sha256(meta["checkpoint_sha256"]) is None:
        raise SrDeployError(
            f"{session.path.name} was exported from a non-official checkpoint (sha256 {meta['checkpoint_sha256'][:16]}…): "
            "pass it with --weights PATH, or check against golden files with --golden DIR"
        )
    else:
        net = load(meta["model"], int(meta["scale"]), weights, **json.loads(meta["options"]))
    if net.info.checkpoint_sha256 != meta["checkpoint_sha256"]:
        raise SrDeployError(f"--weights {weights} is not the checkpoint {session.path.name} was exported from")
    return net


def _own_reference(session, source: dict, weights: str | None):
    """Your own network again, from the file (or module) and checkpoint recorded at export, or ``weights``."""
    from .own import load_own, origin

    where = origin(source)
    if "file" in source and not Path(where).is_file():
        raise SrDeployError(f"{session.path.name} was exported from {where}, which is not here: run parity where it is, "
                            "or check against golden files with --golden DIR")
    weights = weights or source.get("checkpoint")
    if not weights or not Path(weights).is_file():
        raise SrDeployError(f"{session.path.name}'s checkpoint {weights} is not here: pass it with --weights PATH, or "
                            "check against golden files with --golden DIR")
    return load_own(f"{where}:{source['name']}", weights, source["args"])


def fitting(run: Runner) -> Callable:
    """``run.infer``, tiled (the receptive radius as context: equal to a whole-image run) where an input is larger
    than the artifact's largest input (an ExecuTorch program's bound); other inputs run whole, as before."""
    if run.max_shape is None or run.whole_image:
        return run.infer
    from ..runtime.upscale import tiler, tiling

    tile, overlap = tiling(run.name, None, None, run.receptive_radius, run.max_shape, run.whole_image)
    tiled = tiler(run.infer, run.scale, tile, overlap, run.min_size, run.decision_split)
    largest = run.max_shape
    return lambda x: run.infer(x) if x.shape[2] <= largest[2] and x.shape[3] <= largest[3] else tiled(x)


def tiled_runner(artifact: str | Path | None, spec: ModelSpec | None, session: SessionOptions | None = None,
                 tile: int | None = None, tile_overlap: int | None = None, threads: int | None = 1,
                 tile_workers: int = 1, throughput: bool = False) -> tuple[Callable, int, str]:
    """(tiled infer, scale, colour) of an artifact or a model: what ``upscale`` runs, and what each Ray worker builds
    once, on the one CPU Ray gives it (``threads`` 1, so workers on a node do not oversubscribe its cores; None: the
    library's own choice, for a local run); ``tile_workers``: tiles in flight at once; ``throughput``: the
    artifact's runtime in its throughput mode (the tiler's ``in_flight``: images or frames to run at once)."""
    from ..runtime.upscale import tiler, tiling

    run = runner("upscale", artifact, spec, session, threads, throughput)
    tile, overlap = tiling(run.name, tile, tile_overlap, run.receptive_radius, run.max_shape, run.whole_image)
    return (tiler(run.infer, run.scale, tile, overlap, run.min_size, run.decision_split, tile_workers, run.in_flight),
            run.scale, run.colour)
