"""The srdeploy library API: one function per command, each returning a typed report.

``srdeploy export|parity|upscale|eval|bench|models`` is argument parsing plus one call to these (cli.py)::

    from srdeploy import api
    result = api.export_model("lesrcnn", 2, target="onnx", precision="int8", out="out")
    result.artifacts, result.report.drop_db
    api.parity(result.artifacts[0]).passed
    api.upscale("photo.png", "big.png", artifact=result.artifacts[0]).failed
    api.evaluate("Set5", model="fsrcnn", scale=3).report.psnr
    api.bench(model="lesrcnn", scale=2, options=api.BenchOptions(backends="torch,onnx")).markdown()
    api.zoo().table()

What a command works on and how come as values: ``ModelSpec`` (the network: a zoo name with its scale, checkpoint
and options, or your own), ``ExportOptions``, ``UpscaleOptions``, ``BenchOptions``; the export targets are the
rows of ``runtime.targets`` (``api.targets()``). Reports print themselves (``text()``/``table()``/``markdown()``)
and serialise (``as_dict()``); progress and stage summaries go to stderr while ``progress`` is true.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from .benchmarks.bench import BenchOptions
from .export.options import ExportOptions, ExportResult, Progress
from .models.spec import ModelSpec
from .runtime.errors import COMMAND, SrDeployError
from .runtime.opener import SessionOptions
from .runtime.precision import Precision
from .runtime.tables import markdown_table
from .runtime.targets import DEFAULT_TARGET, Target, register, targets
from .runtime.upscale_command import UpscaleOptions, UpscaleReport

__all__ = ["BenchOptions", "BenchReport", "COMMAND", "EvalReport", "ExportOptions", "ExportResult", "ModelSpec",
           "Precision", "SessionOptions", "SrDeployError", "Target", "UpscaleOptions", "UpscaleReport", "ZooReport", "bench",
           "bench_backends", "evaluate", "export_model", "parity", "register", "targets", "upscale", "zoo"]


def _spec(model: str | ModelSpec | None, scale: int | None, weights: str | Path | None) -> ModelSpec | None:
    """``model`` as a ``ModelSpec`` (a name: with ``scale`` and ``weights``; a spec: those override its own)."""
    if model is None or isinstance(model, ModelSpec):
        return model if model is None or (scale is None and weights is None) else replace(
            model, scale=scale if scale is not None else model.scale, weights=weights or model.weights)
    return ModelSpec(model, scale, weights)


# ---------------------------------------------------------------------------------------------------- models


@dataclass
class ZooReport:
    """Every (architecture, scale) of the zoo with its official checkpoint, if any."""

    entries: list

    def as_dict(self) -> list[dict]:
        return [{
            "model": e.architecture.name, "scale": e.scale, "channels": e.architecture.channels,
            "colour": e.architecture.colour, "multi_scale": e.architecture.multi_scale,
            "checkpoint": None if e.checkpoint is None else {
                "url": e.checkpoint.url, "sha256": e.checkpoint.sha256, "layout": e.checkpoint.layout,
                "metrics": {d: vars(m) for d, m in e.checkpoint.metrics.items()},
                "reference_psnr": dict(e.checkpoint.reference_psnr),
            },
        } for e in self.entries]

    def table(self) -> str:
        rows = []
        for e in self.entries:
            c = e.checkpoint
            quality = "  ".join(f"{d} {m.psnr:.2f}/{m.ssim:.4f}" for d, m in c.metrics.items()) if c else ""
            source = f"{c.repository}/{c.path}" if c else "no public checkpoint: --weights PATH"
            rows.append([e.architecture.name, f"×{e.scale}", e.architecture.colour.upper(), source, quality])
        return markdown_table(["model", "scale", "in/out", "official checkpoint", "PSNR/SSIM (Y)"], rows)


def zoo() -> ZooReport:
    """The model zoo (``srdeploy models``)."""
    from .models import list_models

    return ZooReport(list_models())


# ---------------------------------------------------------------------------------------------------- eval


@dataclass
class EvalReport:
    """PSNR/SSIM on a dataset and what produced them."""

    report: Any  # runtime.quality.QualityReport
    source: str

    def as_dict(self) -> dict:
        return self.report.as_dict()

    def table(self) -> str:
        r = self.report
        rows = [[image, f"{v['psnr']:.2f}", f"{v['ssim']:.4f}"] for image, v in r.images.items()]
        rows.append(["mean", f"{r.psnr:.2f}", f"{r.ssim:.4f}"])
        return (f"{r.model} ×{r.scale} on {r.dataset} (Y, shave {r.scale}, {self.source})\n"
                + markdown_table(["image", "PSNR (dB)", "SSIM"], rows))


def evaluate(dataset: str | Path, artifact: str | Path | None = None, model: str | ModelSpec | None = None,
             scale: int | None = None, weights: str | None = None, session: SessionOptions | None = None,
             progress: bool = True) -> EvalReport:
    """PSNR/SSIM on Y of an artifact or a model (zoo or your own) on a BasicSR-layout dataset (``srdeploy eval``)."""
    from .models.runners import fitting, runner
    from .runtime.quality import dataset_pairs
    from .runtime.quality import evaluate as evaluate_pairs

    run = runner("eval", artifact, _spec(model, scale, weights), session)
    report = evaluate_pairs(fitting(run), dataset_pairs(dataset, run.scale), model=run.name, scale=run.scale,
                            colour=run.colour, rounding=run.rounding, dataset=Path(dataset).name,
                            progress=progress)
    return EvalReport(report, run.source)


# ---------------------------------------------------------------------------------------------------- export


def export_model(model: str | ModelSpec, scale: int | None = None, target: str = DEFAULT_TARGET,
                 precision: Precision | str | None = None, out: str | Path | None = None,
                 weights: str | Path | None = None, options: ExportOptions | None = None,
                 progress: bool = True) -> ExportResult:
    """Export a model for ``target`` (a row of ``targets()``) at ``precision`` (default: the target's) into
    ``out``, after its accuracy gate (``srdeploy export``). ``model``: a zoo name (``scale`` default 2), your own
    network, FILE.py:NAME or package.module:NAME with ``weights``, or a ``ModelSpec`` (options of the
    architecture, your network's arguments). Every argument is checked before any work; nothing is written when
    a gate fails (``export.main.main_export``)."""
    from .export.main import main_export

    options = options or ExportOptions()
    if precision is not None:
        options = replace(options, precision=str(precision))
    return main_export(_spec(model, scale, weights), target, options, out, Progress(progress))


# ---------------------------------------------------------------------------------------------------- upscale


def upscale(input: str | Path, output: str | Path, artifact: str | Path | None = None,
            model: str | ModelSpec | None = None, scale: int | None = None, weights: str | None = None,
            session: SessionOptions | None = None, options: UpscaleOptions | None = None,
            progress: bool = True) -> UpscaleReport:
    """Upscale an image, a folder of images, or a video (.mp4/.mkv/.mov/.webm/...), tiled (``srdeploy upscale``):
    ``options.tile`` LR pixels (default 256; 0: whole image) with the receptive radius as context, so the result
    equals a whole-image run; a network whose output depends on the whole image runs whole (a tile is refused).
    Each written path is printed on stdout and each failure on stderr as it happens, while ``progress``; one failing
    image never stops the rest. ``options.engine="ray"``: the images (or a video's frames) are spread over a Ray
    cluster, with files bit-identical to a local run (``runtime.upscale_command``)."""
    from .models.runners import tile_workers, tiled_runner
    from .runtime.upscale_command import run_upscale

    options, session = options or UpscaleOptions(), session or SessionOptions()
    setup = partial(tiled_runner, spec=_spec(model, scale, weights), session=session, tile=options.tile,
                    tile_overlap=options.tile_overlap)
    return run_upscale(Path(input), Path(output), artifact, session.backend, options, setup, tile_workers,
                       progress)


# ---------------------------------------------------------------------------------------------------- serve


def serve(folder: str | Path, port: int = 8000, progress: bool = True) -> None:
    """Serve a web export (``export --target web``) on loopback until Ctrl-C (``srdeploy serve``), with the COOP/COEP
    headers that WebAssembly threads need (``runtime.web_serve``, which the folder also holds as ``serve.py``)."""
    from .export.web.target import MANIFEST
    from .runtime import web_serve

    if not (Path(folder) / MANIFEST).is_file():
        raise SrDeployError(f"{folder} is not a web export (no {MANIFEST}): pass the folder that export --target web "
                            "wrote")
    try:
        web_serve.serve(folder, port, announce=progress)
    except OSError as exc:
        raise SrDeployError(f"port {port} cannot be opened ({exc.strerror or exc}): choose another with --port") from None


# ---------------------------------------------------------------------------------------------------- parity


def parity(artifact: str | Path, session: SessionOptions | None = None, weights: str | None = None,
           dataset: str | Path | None = None, save_golden: str | Path | None = None,
           golden: str | Path | None = None, progress: bool = True):
    """An artifact against the PyTorch model it came from, or against golden files (``srdeploy parity``): a
    ``runtime.parity.ParityReport`` judged at the tolerance of the artifact's precision."""
    from .models.runners import open_session
    from .runtime.compare import TOLERANCES
    from .runtime.golden import load_golden, save_golden as write_golden
    from .runtime.parity import ParityReport, check_cases

    opened = open_session(artifact, session)
    precision = Precision.parse(opened.metadata.get("precision", "fp32"))
    report = ParityReport(str(artifact), precision, TOLERANCES[precision])
    if golden:
        cases, manifest = load_golden(golden)
        if manifest["checkpoint_sha256"] != opened.metadata["checkpoint_sha256"]:
            raise SrDeployError(f"golden files in {golden} belong to another checkpoint than {artifact}")
    else:
        cases = _reference_cases(opened, precision, weights, dataset, report, progress)
        if save_golden:
            write_golden(save_golden, cases, {
                "model": opened.metadata["model"], "scale": opened.scale,
                "checkpoint_sha256": opened.metadata["checkpoint_sha256"], "reference": "pytorch fp32",
            })
    check_cases(opened.infer, cases, report)
    report.backend = type(opened).__name__
    if hasattr(opened, "executed_precisions"):
        executed = opened.executed_precisions()
        report.backend = f"{opened.runtime_name} {executed.inference_precision}"
        report.executed = executed.as_dict()
        report.executed_summary = executed.summary()
    return report


def _reference_cases(session, precision: Precision, weights, dataset, report, progress: bool) -> dict:
    """Probe inputs (and the dataset's images) with the PyTorch model's outputs; the dataset's PSNR delta into
    ``report``."""
    from .models.runners import reference_model, rounding
    from .models.torch_runner import TorchRunner
    from .runtime import images
    from .runtime.parity import probe_inputs
    from .runtime.pipeline import network_input
    from .runtime.quality import dataset_pairs, evaluate as evaluate_pairs

    reference = TorchRunner(reference_model(session, weights).network).infer
    photo = None
    if precision == "int8":  # calibrated on photos: probe with a held-out photo, not noise
        from .calib.data import held_out_photo

        photo = held_out_photo(session.colour)
    inputs = probe_inputs(session.channels, session.shape_bounds, photo=photo)
    if dataset:
        pairs = dataset_pairs(dataset, session.scale)
        inputs.update({f"image_{p.name}": network_input(images.read_rgb(p.lr), session.colour) for p in pairs})
        kwargs = dict(model=session.metadata["model"], scale=session.scale, colour=session.colour,
                      rounding=rounding(session.metadata), dataset=Path(dataset).name, progress=progress)
        ours, theirs = evaluate_pairs(session.infer, pairs, **kwargs), evaluate_pairs(reference, pairs, **kwargs)
        report.dataset = {"name": Path(dataset).name, "psnr_artifact": ours.psnr, "psnr_reference": theirs.psnr,
                          "delta_db": ours.psnr - theirs.psnr}
    return {name: (x, reference(x)) for name, x in inputs.items()}


# ---------------------------------------------------------------------------------------------------- bench


@dataclass
class BenchReport:
    """Latency rows per (backend, size) and the machine they ran on (``benchmarks.bench``'s report dict)."""

    data: dict

    def as_dict(self) -> dict:
        return {"machine": self.data["machine"], "results": self.data["results"]}

    def markdown(self) -> str:
        from .benchmarks.bench import markdown

        return markdown(self.data)


def bench_backends() -> list[str]:
    """The backends ``bench`` knows: PyTorch's and every target's (``benchmarks.backends``)."""
    from .benchmarks.backends import backends

    return list(backends())


def bench(artifacts: list[str] | tuple[str, ...] = (), model: str | ModelSpec | None = None, scale: int | None = None,
          weights: str | None = None, options: BenchOptions | None = None, out: str | Path | None = None,
          command: str = "bench", progress: bool = True) -> BenchReport:
    """Latency of backends side by side (``srdeploy bench``): of existing ``artifacts``, or of ``model``'s
    artifacts for ``options.backends``, exported first through their targets. With ``out``: bench.md, bench.json,
    bench.png and the artifacts there. ``command``: the command line the report records."""
    from .benchmarks.side_by_side import main_bench

    return BenchReport(main_bench(artifacts, _spec(model, scale, weights), options or BenchOptions(),
                                  None if out is None else Path(out), command, progress))
