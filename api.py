"""The srdeploy library API: one function per command, each returning a typed report.

``srdeploy export|parity|upscale|eval|bench|models`` is argument parsing plus one call to these (cli.py)::

    from srdeploy import api
    result = api.export_model("lesrcnn", 2, target="onnx", precision="int8", out="out")
    result.artifacts, result.report.drop_db
    api.parity(result.artifacts[0]).passed
    api.upscale("photo.png", "big.png", artifact=result.artifacts[0]).failed
    api.evaluate("Set5", model="fsrcnn", scale=3).report.psnr
    api.bench(model="lesrcnn", scale=2, backends="torch,onnx").markdown()
    api.zoo().table()

Reports print themselves (``text()``/``table()``/``markdown()``) and serialise (``as_dict()``); progress and
stage summaries go to stderr while ``progress`` is true.
"""
from __future__ import annotations

import json
import sys
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from .runtime.errors import COMMAND, SrDeployError
from .runtime.precision import Precision
from .runtime.tables import markdown_table


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


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


# ---------------------------------------------------------------------------------------------------- runners


@dataclass(frozen=True)
class Runner:
    """What ``evaluate`` and ``upscale`` run: an exported artifact or the PyTorch model."""

    infer: Callable
    name: str
    scale: int
    colour: str
    receptive_radius: int
    min_size: int
    source: str
    max_shape: list[int] | None  # an artifact's largest N×C×H×W input; None for PyTorch
    gate: Callable | None  # a globally gated network's GateSplit factory, for tiling (runtime.global_gate)
    whole_image: bool = False  # an output pixel depends on the whole image: never tiled
    rounding: str = "truncate"  # how the evaluation makes 8 bits of the output (models.ModelInfo.eval_rounding)


def open_session(artifact: str | Path, backend: str = "auto", inference_precision: str | None = None,
                 threads: int | None = None):
    """The session for an artifact on ``backend`` (OpenVINO: at ``inference_precision``, f32 by default;
    ``threads``: CPU threads of an ONNX Runtime or OpenVINO session, default the library's own)."""
    from .runtime.opener import open_artifact

    options = {"threads": threads} if threads else {}
    if inference_precision:
        if not (backend == "openvino" or str(artifact).lower().endswith(".xml")):
            raise SrDeployError("--inference-precision is an OpenVINO setting: add --backend openvino or open an .xml")
        options["inference_precision"] = inference_precision
    return open_artifact(artifact, backend=backend, **options)


def _rounding(metadata: dict[str, str]) -> str:
    """An artifact's evaluation rounding (artifacts before it was recorded: their zoo architecture's)."""
    if "eval_rounding" in metadata:
        return metadata["eval_rounding"]
    from .models.registry import architecture

    return architecture(metadata["model"]).eval_rounding


def runner(what: str, artifact: str | Path | None = None, backend: str = "auto", inference_precision: str | None = None,
           model: str | None = None, scale: int | None = None, weights: str | None = None,
           gate: str | None = None, threads: int | None = None, model_args: dict | str | None = None) -> Runner:
    """An artifact's runner, or the PyTorch model's (``model`` a zoo name [, ``scale``, ``weights``, ``gate``], or
    FILE.py:NAME / package.module:NAME with ``weights`` [, ``model_args``]); ``threads``: the CPU threads it may use
    (default: the library's own choice)."""
    if artifact:
        session = open_session(artifact, backend, inference_precision, threads)
        return Runner(session.infer, session.metadata["model"], session.scale, session.colour,
                      session.receptive_radius, session.shape_bounds["min"][2], str(artifact),
                      session.shape_bounds["max"], session.gate_split if session.has_global_gate else None,
                      session.whole_image, _rounding(session.metadata))
    if not model:
        raise SrDeployError(f"{what} needs --artifact FILE, or --model NAME (a zoo name, or FILE.py:NAME)")
    import torch

    from .models import load_model
    from .runtime.torch_runner import TorchRunner

    if threads:
        torch.set_num_threads(threads)
    net = load_model(model, scale, weights, gate, model_args)
    info, torch_runner = net.info, TorchRunner(net.network)
    return Runner(torch_runner.infer, info.name, info.scale, info.colour, info.export.receptive_radius,
                  info.export.min_size, info.checkpoint, None,
                  torch_runner.gate_split if torch_runner.has_global_gate else None, info.export.whole_image,
                  info.eval_rounding)


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


def evaluate(dataset: str | Path, artifact: str | Path | None = None, backend: str = "auto",
             inference_precision: str | None = None, model: str | None = None, scale: int | None = None,
             weights: str | None = None, gate: str | None = None, model_args: dict | str | None = None,
             progress: bool = True) -> EvalReport:
    """PSNR/SSIM on Y of an artifact or a model (zoo or your own) on a BasicSR-layout dataset (``srdeploy eval``)."""
    from .runtime.quality import dataset_pairs
    from .runtime.quality import evaluate as evaluate_pairs

    run = runner("eval", artifact, backend, inference_precision, model, scale, weights, gate, model_args=model_args)
    report = evaluate_pairs(run.infer, dataset_pairs(dataset, run.scale), model=run.name, scale=run.scale,
                            colour=run.colour, rounding=run.rounding, dataset=Path(dataset).name,
                            progress=progress)
    return EvalReport(report, run.source)


# ---------------------------------------------------------------------------------------------------- export


@dataclass
class ExportResult:
    """What ``export_model`` wrote and what its gates measured."""

    artifacts: list[Path]
    model: str
    scale: int
    target: str
    precision: Precision
    report: Any = None  # export.precision.PrecisionReport, or export.coreml_package.CoreMLReport (coreml/ios)
    openvino: dict | None = None  # OpenVINO's own measurement of the IR (target openvino)
    precisions: list[str] = field(default_factory=list)  # the bundle's precisions (target jetson)

    def as_dict(self) -> dict:
        out = {"artifacts": [str(p) for p in self.artifacts], "model": self.model, "scale": self.scale,
               "target": self.target}
        if self.target == "jetson":
            return {**out, "precisions": self.precisions}
        out["precision"] = self.precision
        out["report"] = self.report.as_dict() if hasattr(self.report, "as_dict") else vars(self.report)
        if self.target == "openvino":
            out["openvino"] = self.openvino
        return out


def export_model(model: str, scale: int | None = None, target: str = "onnx", precision: Precision | str | None = None,
                 out: str | Path | None = None, weights: str | None = None, gate: str | None = None,
                 model_args: dict | str | None = None,
                 calib: str | None = None, max_psnr_drop: float | None = None, calib_method: str = "minmax",
                 fp16_io: bool = False, min_shape: str | None = None, opt_shape: str | None = None,
                 max_shape: str | None = None, shapes: str | None = None, image_io: bool = False,
                 compress: str = "none", deployment_target: str = "iOS16", precisions: str = "fp32,fp16,int8",
                 portable: bool = False, progress: bool = True) -> ExportResult:
    """Export a model for ``target`` (onnx, trt, jetson, coreml, ios, openvino) at ``precision`` (default fp32;
    coreml/ios fp16) into ``out``, after its accuracy gate (``srdeploy export``). ``model``: a zoo name (``scale``
    default 2), or your own network, FILE.py:NAME or package.module:NAME with ``weights`` [and ``model_args``],
    whose scale, channels and receptive radius are measured. Every argument is checked before any work; nothing is
    written when a gate fails. ``portable`` (onnx): the graph without control flow, for runtimes without ``If``
    (OpenCV DNN), with the same outputs."""
    from .export.trt.trt_plan import profile_from_args
    from .models import is_own, load_model
    from .models.own import check_options
    from .models.registry import architecture, check_scale

    check_options(model, gate, model_args)
    if portable and target != "onnx":
        raise SrDeployError(f"--portable is a form of the ONNX file: use it with --target onnx, not {target}")
    own = None
    if is_own(model):  # measured (nothing written) before the other arguments are checked against it
        own = load_model(model, scale, weights, gate, model_args, say=partial(_say, progress))
        scale, channels, input_name = own.info.scale, own.info.channels, own.info.export.input_name
        _say(progress, _measured(own.info))
    else:
        arch = architecture(model)
        scale = scale or 2
        check_scale(arch, scale)
        channels, input_name = arch.channels, arch.export.input_name
    if target == "trt":  # nothing to build with: nothing written
        from .runtime.cuda import Cuda
        from .runtime.trt_backend import require_tensorrt

        require_tensorrt()
        Cuda()
    if target == "openvino":
        from .runtime.openvino_backend import import_openvino

        import_openvino()
    apple = target in ("coreml", "ios")
    precision = Precision.parse(precision or ("fp16" if apple else "fp32"))
    coreml = dict(precision=precision, shapes=shapes, image_io=image_io, fp16_io=fp16_io, compress=compress,
                  deployment_target=deployment_target)
    if apple:
        _coreml_options(**coreml)
    profile = profile_from_args(input_name, channels, scale, min_shape, opt_shape, max_shape)
    name = own.info.name if own else model
    if out is None:
        out = f"out/{name}_x{scale}_{target}"
        print(f"output folder: {out} (the default; choose another with --out DIR)", file=sys.stderr)
    out = Path(out)
    _say(progress, f"exporting {name} ×{scale} for {target} ({precision})" + ("" if own else ": loading the checkpoint"))
    if target in ("jetson", "ios"):  # a foreign --out folder too
        from .export.bundles.ios_bundle import check_destination as ios_destination
        from .export.bundles.jetson import check_destination as jetson_destination

        (jetson_destination if target == "jetson" else ios_destination)(out)
    net = own or load_model(model, scale, weights, gate)
    result = ExportResult([], name, scale, target, precision)
    gate_args = dict(calib=calib, max_drop=max_psnr_drop, fp16_io=fp16_io, method=calib_method, progress=progress,
                     for_tensorrt=target in ("trt", "jetson"))
    if apple:
        _export_apple(result, net, _coreml_options(**coreml, profile=profile), out, calib, max_psnr_drop, progress)
    elif target == "jetson":
        _export_jetson(result, net, profile, out, precisions, gate_args)
    elif target == "openvino":
        _export_openvino(result, net, out, calib, max_psnr_drop, calib_method, progress)
    else:
        proto, result.report = _export_onnx(net, precision, **gate_args)
        stem = f"{name}_x{scale}_{precision}"
        if target == "trt":
            from .export.trt.trt_build import export_model_engine

            bounds = "".join(f" --{k}-shape {'x'.join(map(str, v))}" for k, v in
                             (("min", profile.min), ("opt", profile.opt), ("max", profile.max)))
            rebuild = f"{COMMAND} export {_model_flags(net)} --target trt --precision {precision}{bounds}"
            result.artifacts.append(export_model_engine(net, proto, precision, profile, out, stem, rebuild))
        else:
            from .export.onnx.onnx_export import portable as portable_graph, save

            if portable:
                proto, stem = portable_graph(proto, net.info.colour), f"{stem}_portable"
            result.artifacts.append(save(proto, out / f"{stem}.onnx"))
    return result


def _measured(info) -> str:
    """What was measured on your own network, for people."""
    config = info.export
    tiling = ("whole image only: an output pixel depends on all of it" if config.whole_image
              else f"receptive radius {config.receptive_radius} LR pixels (tiles equal the whole image)")
    return (f"{info.name}: ×{info.scale}, {'RGB' if info.channels == 3 else 'luma (Y)'} in and out, {tiling}, "
            f"inputs from {config.min_size}×{config.min_size}")


def _model_flags(net) -> str:
    """The command-line flags that load ``net`` again."""
    import shlex

    from .models.own import origin

    info, source = net.info, net.info.source
    if source is None:
        return f"--model {info.name} --scale {info.scale}" + "".join(f" --{k} {v}" for k, v in info.options.items())
    spec = f"{origin(source)}:{source['name']}"
    args = f" --model-args {shlex.quote(json.dumps(source['args']))}" if source["args"] else ""
    return f"--model {shlex.quote(spec)} --weights {shlex.quote(info.checkpoint)}{args}"


def _coreml_options(precision: Precision, shapes: str | None, image_io: bool, fp16_io: bool, compress: str,
                    deployment_target: str, profile=None):
    """Core ML options: ``shapes`` (enumerated sizes) or the profile's range."""
    from .export.coreml.coreml_export import CoreMLOptions, CoreMLShapes, parse_sizes

    if shapes:
        sizes = CoreMLShapes(enumerated=parse_sizes(shapes))
    elif profile is not None:
        sizes = CoreMLShapes(min=profile.min[2:], default=profile.opt[2:], max=profile.max[2:])
    else:
        sizes = CoreMLShapes()
    return CoreMLOptions(precision=precision, shapes=sizes, image_io=image_io, fp16_io=fp16_io, compression=compress,
                         deployment_target=deployment_target)


def _export_apple(result: ExportResult, net, options, out: Path, calib, max_drop, progress: bool) -> None:
    """coreml: a checked .mlpackage; ios: the package, Swift code and README."""
    if result.target == "ios":
        from .export.bundles.ios_bundle import write_ios_bundle

        path, report = write_ios_bundle(net, options, out, calib, max_drop)
    else:
        from .export.coreml.coreml_package import export_package

        path, report = export_package(net, options, out, calib, max_drop)
    result.artifacts.append(path)
    result.report = report
    checks = report.verification
    worst = min(c["fp16_psnr"] for c in checks["cases"].values())
    _say(progress, f"coreml {options.precision} ({options.compression} weights, {options.shapes.kind} sizes): "
         f"{checks['constants']['checked']} checkpoint tensors matched{_folded(checks['constants'])}, FP16-emulated "
         f"≥ {worst:.1f} dB vs PyTorch, "
         f"held-out PSNR {report.validation_psnr_coreml:.3f} vs {report.validation_psnr_pytorch:.3f} dB "
         f"(drop {report.drop_db:+.4f} dB), {report.size_mb:.2f} MB")


def _folded(constants: dict) -> str:
    """`` and 4 with constants folded in (×0.1 …)``: checkpoint tensors the converter folded constants into."""
    folded = constants.get("folded") or {}
    if not folded:
        return ""
    kinds = ", ".join(dict.fromkeys(folded.values()))
    return f" and {len(folded)} with constants folded in ({kinds})"


def _export_onnx(net, precision: Precision, calib, max_drop, fp16_io: bool, method: str, progress: bool, for_tensorrt: bool):
    """The ONNX graph at ``precision`` through its accuracy gate; what it cost on stderr."""
    from .export.precision import export_precision, float_summary

    # INT8 engines: may their float parts run in FP16?
    proto, report = export_precision(net, precision, calib, max_drop, fp16_io, progress=progress, method=method,
                                     fp16_float_parts=for_tensorrt)
    if precision != "fp32":
        share = "" if report.int8_mac_fraction is None else f", {report.int8_mac_fraction:.1%} of conv MACs in INT8"
        kept = float_summary(report.kept_float, (report.int8 or {}).get("float_channels", {}))
        _say(progress, f"{precision}: {kept} kept in float{share}, held-out PSNR {report.validation_psnr:.3f} dB vs "
             f"{report.validation_psnr_fp32:.3f} dB FP32 (drop {report.drop_db:+.4f} dB)")
    if report.fp16_float:
        f16 = report.fp16_float
        verdict = "TensorRT runs them in FP16" if f16["passed"] else "over the limit: TensorRT keeps them in FP32"
        openvino = "" if f16["drop_db_openvino"] is None else f"; OpenVINO {f16['drop_db_openvino']:+.4f} dB"
        _say(progress, f"int8 with FP16 float parts: drop {f16['drop_db_onnxruntime']:+.4f} dB on ONNX Runtime"
             f"{openvino}: {verdict}")
    return proto, report


def _export_openvino(result: ExportResult, net, out: Path, calib, max_drop, method: str, progress: bool) -> None:
    """IR of the gated ONNX graph, gated again on OpenVINO; the executed precisions on stderr."""
    from .export.openvino.openvino_export import export_ir

    path, report, measured = export_ir(net, result.precision, out, calib, max_drop, method, progress=progress)
    result.artifacts.append(path)
    result.report, result.openvino = report, measured
    share = "" if report.int8_mac_fraction is None else (
        f", {measured['int8_executed_mac_fraction']:.1%} of conv MACs executed in u8/i8 "
        f"({report.int8_mac_fraction:.1%} carry Q/DQ; {measured['pair_reordered_tensors']} conv inputs in int16 pair "
        "order)")
    _say(progress, f"openvino {result.precision} ({measured['inference_precision']} inference precision, int8 dot "
         f"product {measured['int8_dot']}){share}: held-out PSNR {measured['validation_psnr']:.3f} vs "
         f"{measured['validation_psnr_fp32']:.3f} dB FP32 (drop {measured['drop_db']:+.4f} dB)")


def _export_jetson(result: ExportResult, net, profile, out: Path, precisions: str, gate_args: dict) -> None:
    """FP32/FP16/INT8 ONNX through their gates, golden outputs, build.sh and the thin runtime in one folder."""
    from .calib.data import held_out_photo
    from .export.bundles.jetson import write_bundle
    from .runtime.torch_runner import TorchRunner

    chosen = [p.strip() for p in precisions.split(",") if p.strip()]
    unknown = sorted(set(chosen) - {"fp32", "fp16", "int8"})
    if unknown or not chosen:
        raise SrDeployError(f"--precisions {precisions!r}: choose from fp32,fp16,int8")
    max_drop = gate_args.pop("max_drop")
    artifacts = {p: _export_onnx(net, p, max_drop=max_drop if p == "int8" else None, **gate_args)[0] for p in chosen}
    _say(gate_args["progress"], "jetson bundle: golden outputs (PyTorch FP32 on held-out photo crops), build.sh, "
         "runtime, manifest")
    result.artifacts.append(write_bundle(out, result.model, result.scale, artifacts, profile,
                                         held_out_photo(net.info.colour), TorchRunner(net.network).infer))
    result.precisions = chosen


# ---------------------------------------------------------------------------------------------------- upscale


@dataclass
class UpscaleReport:
    """Each image written, each one that failed with its one-line reason; for a video, its ``VideoReport``."""

    written: list[Path] = field(default_factory=list)
    failed: dict[Path, str] = field(default_factory=dict)
    video: Any = None  # runtime.video.VideoReport

    @property
    def exit_status(self) -> int:
        """0 every image written; 1 some failed, the others written; 2 none written."""
        from .runtime.upscale import exit_status

        return exit_status(len(self.failed), len(self.written) + len(self.failed))


def upscale(input: str | Path, output: str | Path, artifact: str | Path | None = None, backend: str = "auto",
            inference_precision: str | None = None, model: str | None = None, scale: int | None = None,
            weights: str | None = None, gate: str | None = None, tile: int | None = None,
            tile_overlap: int | None = None, max_pixels: int = 100_000_000, codec: str | None = None, crf: int = 18,
            preset: str = "medium", engine: str = "local", ray_address: str | None = None, workers: int | None = None,
            model_args: dict | str | None = None, progress: bool = True) -> UpscaleReport:
    """Upscale an image, a folder of images, or a video (.mp4/.mkv/.mov/.webm/...), tiled (``srdeploy upscale``):
    ``tile`` LR pixels (default 256; 0: whole image) with the receptive radius as context, so the result equals a
    whole-image run; a network whose output depends on the whole image runs whole (``tile`` is refused).
    Each written path is printed on stdout and each failure on stderr as it happens, while ``progress``; one failing
    image never stops the rest. Video: ``codec`` (libx264; libvpx-vp9 for .webm), ``crf``, ``preset``.
    ``engine="ray"``: the images are spread over a Ray cluster (``ray_address``, or a local one; ``workers``
    actors, default one per CPU), with files bit-identical to a local run."""
    from tqdm import tqdm

    from .runtime.upscale import collect, plan_jobs, upscale_each
    from .runtime.video import VideoOptions, is_video

    if engine not in ("local", "ray"):
        raise SrDeployError(f"--engine {engine}: choose local or ray")
    setup = partial(_tiled_runner, backend=backend, inference_precision=inference_precision, model=model,
                    scale=scale, weights=weights, gate=gate, tile=tile, tile_overlap=tile_overlap, model_args=model_args)
    if is_video(input):
        return _upscale_video(Path(input), Path(output), VideoOptions(codec, crf, preset), progress,
                              partial(_ray_frames, artifact, backend, setup, workers, ray_address)
                              if engine == "ray" else partial(_local_frames, setup, artifact))
    jobs = plan_jobs(Path(input), Path(output))  # paths checked before the model or artifact opens
    with _tiles_of_one_thread(artifact) as tile_workers:
        if engine == "ray":
            from .runtime.ray_engine import upscale_on_ray

            files = _ray_files(artifact, backend)
            results = upscale_on_ray(jobs, setup, files, workers, ray_address, max_pixels)
        else:
            run = runner("upscale", artifact, backend, inference_precision, model, scale, weights, gate,
                         model_args=model_args)
            results = upscale_each(jobs, run.infer, run.scale, run.colour, *_tiling(run, tile, tile_overlap),
                                   run.min_size, max_pixels, run.gate, tile_workers)
        bar = tqdm(results, total=len(jobs), desc="upscale", unit="img", leave=False,
                   disable=True if len(jobs) == 1 or not progress else None)
        return UpscaleReport(*collect(bar, len(jobs), progress))


@contextmanager
def _tiles_of_one_thread(artifact: str | Path | None) -> Iterator[int]:
    """How many tiles run at once in this process: 1 for an artifact; for the PyTorch model, as many as PyTorch
    has threads, each tile computed by one thread for the duration (PyTorch's CPU kernels sum in another order
    at another thread count: one thread per tile gives the same bytes here, on Ray's one-CPU workers and on a
    machine with any number of cores)."""
    if artifact:
        yield 1
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


def _tiled_runner(artifact: Path | None, backend: str, inference_precision: str | None, model: str | None,
                  scale: int | None, weights: str | None, gate: str | None, tile: int | None,
                  tile_overlap: int | None, model_args: dict | str | None = None,
                  threads: int | None = 1, tile_workers: int = 1) -> tuple[Callable, int, str]:
    """(tiled infer, scale, colour) of an artifact or a model: what each Ray worker builds once, on the one
    CPU Ray gives it (``threads`` 1, so workers on a node do not oversubscribe its cores; None: the library's
    own choice, for a local run); ``tile_workers``: tiles in flight at once."""
    run = runner("upscale", artifact, backend, inference_precision, model, scale, weights, gate, threads=threads,
                 model_args=model_args)
    return _tiled(run, tile, tile_overlap, tile_workers), run.scale, run.colour


def _ray_files(artifact: str | Path | None, backend: str) -> dict[str, bytes]:
    """The artifact's files for the Ray workers, after it was opened here (a damaged or foreign artifact: one
    line before any worker starts)."""
    from .runtime.opener import open_artifact

    files = _artifact_files(artifact)
    if artifact:
        open_artifact(artifact, run=False, backend=backend)
    return files


@contextmanager
def _local_frames(setup: Callable, artifact: str | Path | None) -> Iterator:
    """This process's runner as a video's frame upscaler (``runtime.video.LocalFrames``)."""
    from .runtime.video import LocalFrames

    with _tiles_of_one_thread(artifact) as tile_workers:
        yield LocalFrames(*setup(artifact, threads=None, tile_workers=tile_workers))


def _ray_frames(artifact: str | Path | None, backend: str, setup: Callable, workers: int | None,
                address: str | None):
    """A video's frames on Ray workers (``runtime.ray_engine.ray_frames``)."""
    from .runtime.ray_engine import ray_frames

    return ray_frames(setup, _ray_files(artifact, backend), workers, address)


def _tiling(run: Runner, tile: int | None, tile_overlap: int | None) -> tuple[int, int]:
    """(tile, overlap) for the runner (``runtime.upscale.tiling``)."""
    from .runtime.upscale import tiling

    return tiling(run.name, tile, tile_overlap, run.receptive_radius, run.max_shape, run.whole_image)


def _tiled(run: Runner, tile: int | None, tile_overlap: int | None, workers: int = 1) -> Callable:
    """The runner's infer tile by tile (``_tiling``), ``workers`` tiles at once."""
    from .runtime.upscale import tiler

    return tiler(run.infer, run.scale, *_tiling(run, tile, tile_overlap), run.min_size, run.gate, workers)


def _artifact_files(artifact: str | Path | None) -> dict[str, bytes]:
    """The files a worker needs to open ``artifact`` ({} for a zoo model): an .onnx, or an IR's .xml and .bin."""
    if artifact is None:
        return {}
    path = Path(artifact)
    if path.suffix.lower() == ".onnx":
        return {path.name: path.read_bytes()}
    if path.suffix.lower() == ".xml":
        return {path.name: path.read_bytes(), path.with_suffix(".bin").name: path.with_suffix(".bin").read_bytes()}
    raise SrDeployError(f"--engine ray runs .onnx artifacts, OpenVINO IR (.xml) or --model, not {path.name}: "
                        "export an .onnx, or upscale without --engine ray")


def _upscale_video(source: Path, target: Path, options, progress: bool, frames: Callable) -> UpscaleReport:
    """One video through the frame upscaler ``frames()`` opens (this process, or Ray workers); a frames/s and ETA
    bar while ``progress``."""
    from tqdm import tqdm

    from .runtime.video import output_path, upscale_video

    output_path(source, target, 0)  # paths checked before the model or artifact opens
    with frames() as upscaler:
        target = output_path(source, target, upscaler.scale)
        bar = tqdm(desc="upscale", unit="frame", leave=False, disable=None if progress else True)

        def advance(done: int, total: int | None) -> None:
            bar.total = total
            bar.update(done - bar.n)

        try:
            video = upscale_video(source, target, upscaler, options, advance)
        finally:
            bar.close()
    _say(progress, f"{video.frames} frames at {video.fps:.1f} frames/s (busy: decode {video.seconds['decode']:.1f} s, "
         f"network {video.seconds['infer']:.1f} s, encode {video.seconds['encode']:.1f} s); copied: "
         f"{', '.join(video.copied_streams) or 'nothing'}")
    if progress:
        print(target, flush=True)
    return UpscaleReport(written=[target], video=video)


# ---------------------------------------------------------------------------------------------------- parity


def reference_model(session, weights: str | None = None):
    """The PyTorch model an artifact came from, found through its metadata (checkpoint sha256 checked): a zoo
    model, or your own network rebuilt from the file or module, name, arguments and checkpoint it records."""
    from . import models
    from .models.registry import checkpoint_by_sha256

    meta = session.metadata
    if meta.get("source"):
        net = _own_reference(session, json.loads(meta["source"]), weights)
    elif weights is None and checkpoint_by_sha256(meta["checkpoint_sha256"]) is None:
        raise SrDeployError(
            f"{session.path.name} was exported from a non-official checkpoint (sha256 {meta['checkpoint_sha256'][:16]}…): "
            "pass it with --weights PATH, or check against golden files with --golden DIR"
        )
    else:
        net = models.load(meta["model"], int(meta["scale"]), weights, **json.loads(meta["options"]))
    if net.info.checkpoint_sha256 != meta["checkpoint_sha256"]:
        raise SrDeployError(f"--weights {weights} is not the checkpoint {session.path.name} was exported from")
    return net


def _own_reference(session, source: dict, weights: str | None):
    """Your own network again, from the file (or module) and checkpoint recorded at export, or ``weights``."""
    from .models.own import load_own, origin

    where = origin(source)
    if "file" in source and not Path(where).is_file():
        raise SrDeployError(f"{session.path.name} was exported from {where}, which is not here: run parity where it is, "
                            "or check against golden files with --golden DIR")
    weights = weights or source.get("checkpoint")
    if not weights or not Path(weights).is_file():
        raise SrDeployError(f"{session.path.name}'s checkpoint {weights} is not here: pass it with --weights PATH, or "
                            "check against golden files with --golden DIR")
    return load_own(f"{where}:{source['name']}", weights, source["args"])


def parity(artifact: str | Path, backend: str = "auto", inference_precision: str | None = None,
           weights: str | None = None, dataset: str | Path | None = None, save_golden: str | Path | None = None,
           golden: str | Path | None = None, progress: bool = True):
    """An artifact against the PyTorch model it came from, or against golden files (``srdeploy parity``): a
    ``runtime.parity.ParityReport`` judged at the tolerance of the artifact's precision."""
    from .runtime.compare import TOLERANCES
    from .runtime.golden import load_golden, save_golden as write_golden
    from .runtime.parity import ParityReport, check_cases

    session = open_session(artifact, backend, inference_precision)
    precision = Precision.parse(session.metadata.get("precision", "fp32"))
    report = ParityReport(str(artifact), precision, TOLERANCES[precision])
    if golden:
        cases, manifest = load_golden(golden)
        if manifest["checkpoint_sha256"] != session.metadata["checkpoint_sha256"]:
            raise SrDeployError(f"golden files in {golden} belong to another checkpoint than {artifact}")
    else:
        cases = _reference_cases(session, precision, weights, dataset, report, progress)
        if save_golden:
            write_golden(save_golden, cases, {
                "model": session.metadata["model"], "scale": session.scale,
                "checkpoint_sha256": session.metadata["checkpoint_sha256"], "reference": "pytorch fp32",
            })
    check_cases(session.infer, cases, report)
    report.backend = type(session).__name__
    if hasattr(session, "executed_precisions"):
        executed = session.executed_precisions()
        report.backend = f"OpenVINO {executed.inference_precision}"
        report.executed = executed.as_dict()
        report.executed_summary = executed.summary()
    return report


def _reference_cases(session, precision: Precision, weights, dataset, report, progress: bool) -> dict:
    """Probe inputs (and the dataset's images) with the PyTorch model's outputs; the dataset's PSNR delta into
    ``report``."""
    from .models.registry import architecture
    from .runtime import images
    from .runtime.parity import probe_inputs
    from .runtime.pipeline import network_input
    from .runtime.quality import dataset_pairs, evaluate as evaluate_pairs
    from .runtime.torch_runner import TorchRunner

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
                      rounding=_rounding(session.metadata), dataset=Path(dataset).name,
                      progress=progress)
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


def bench(artifacts: list[str] | tuple[str, ...] = (), model: str | None = None, scale: int | None = None,
          weights: str | None = None, model_args: dict | str | None = None, backends: str = "torch,onnx,onnx-fp16,onnx-int8", sizes: str = "256x256",
          warmup: int = 2, runs: int = 30, budget: float = 20.0, threads: int | None = None,
          out: str | Path | None = None, command: str = "bench", progress: bool = True) -> BenchReport:
    """Latency of backends side by side (``srdeploy bench``): of existing ``artifacts``, or of ``model``'s
    artifacts for ``backends``, exported first. With ``out``: bench.md, bench.json, bench.png and the artifacts
    there. ``command``: the command line the report records."""
    from tqdm import tqdm

    from .benchmarks.bench import bar_chart, bench_one, markdown, parse_size, report_header
    from .runtime.atomic import atomic_path

    pixels = [parse_size(s) for s in sizes.split(",") if s]
    work = Path(out or tempfile.mkdtemp(prefix="srdeploy-bench-"))
    if artifacts:
        jobs, (name, scale, channels) = _artifact_jobs(artifacts)
    else:
        jobs, (name, scale, channels) = _model_jobs(model, scale, weights, model_args, backends, pixels, work, progress)
    try:  # MACs of the zoo's PyTorch architecture; without torch, or for your own network, none
        from .benchmarks.complexity import measure as complexity

        per_pixel = complexity(name, scale).macs_per_output_pixel
    except (ImportError, KeyError):
        per_pixel = None
    report = report_header(command, name, scale, per_pixel)
    bar = tqdm(total=len(jobs) * len(pixels), desc="bench", unit="run", disable=None if progress else True)
    for backend, source, drop in jobs:
        for width, height in pixels:
            bar.set_postfix_str(f"{backend} {width}x{height}")
            # artifacts carry their graph's own count (export rewrites remove work); torch: the architecture
            row_pixel = source.get("macs_per_output_pixel", per_pixel)
            report["results"].append(bench_one(backend, (width, height), source, channels, scale,
                                               row_pixel and row_pixel * width * height * scale * scale,
                                               warmup, runs, budget, threads, drop))
            bar.update()
    bar.close()
    if out:
        with atomic_path(work / "bench.json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        with atomic_path(work / "bench.md") as tmp:
            tmp.write_text(markdown(report) + "\n")
        if bar_chart(report, work / "bench.png") is None:
            warnings.warn("no bench.png: no backend ran, or matplotlib is missing (pip install matplotlib)", stacklevel=1)
    return BenchReport(report)


BenchJobs = tuple[list[tuple[str, dict, "float | None"]], tuple[str, int, int]]


def _artifact_jobs(artifacts) -> BenchJobs:
    """(backend, source, held-out PSNR drop) per existing artifact, and (model, scale, channels)."""
    from .runtime.opener import open_artifact

    jobs, identity = [], None
    for path in map(str, artifacts):
        session = open_artifact(path, run=False)  # bench runs it in its own process (or lists it as skipped)
        precision = session.metadata.get("precision", "fp32")
        kind = "trt" if path.endswith((".engine", ".plan", ".trt")) else "openvino" if path.endswith(".xml") else "onnx"
        # an FP16-weights IR computes at f32 inference precision, as the FP32 one does
        backend = kind if precision == "fp32" or (kind, precision) == ("openvino", "fp16") else f"{kind}-{precision}"
        if path.rstrip("/").endswith(".mlpackage"):
            backend = "coreml"
        drop = None if precision == "fp32" else float(session.metadata.get("validation_drop_db") or 0)
        jobs.append((backend, {"artifact": path, **_recorded_macs(session.metadata)}, drop))
        identity = (session.metadata["model"], session.scale, session.channels)
    return jobs, identity


def _model_jobs(model: str | None, scale: int | None, weights: str | None, model_args: dict | str | None, backends: str,
                pixels: list[tuple[int, int]], work: Path, progress: bool) -> BenchJobs:
    """(backend, source, held-out PSNR drop) per backend, the artifacts exported into ``work/artifacts``."""
    from .benchmarks.backends import BACKENDS, unavailable

    if not model:
        raise SrDeployError("bench needs --model NAME (a zoo name, or FILE.py:NAME), or artifact files")
    names = [b for b in backends.split(",") if b]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise SrDeployError(f"unknown backend {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    from .models import load_model

    net = load_model(model, scale, weights, model_args=model_args)
    exported: dict[str, tuple[dict, float | None]] = {}
    graphs: dict[str, tuple | SrDeployError] = {}  # precision → export_precision's (graph, report): one search each
    jobs = []
    for name in names:
        backend = BACKENDS[name]
        source = {"model": model, "scale": net.info.scale, "weights": weights, "model_args": model_args}
        drop = None
        if backend.needs_artifact and not unavailable(backend):
            key = f"{backend.kind}-{backend.precision}"  # openvino-bf16 runs the FP32 IR
            if key not in exported:
                exported[key] = _bench_artifact(net, backend, pixels, work / "artifacts", progress, graphs)
            artifact, drop = exported[key]
            source = {**source, **artifact}
        jobs.append((name, source, drop))
    return jobs, (net.info.name, net.info.scale, net.info.channels)


def _bench_artifact(net, backend, pixels: list[tuple[int, int]], folder: Path, progress: bool,
                    graphs: dict) -> tuple[dict, float | None]:
    """Export the artifact a backend runs ({"artifact": path} or {"unavailable": why}) and its held-out drop:
    the ONNX graph, the OpenVINO IR (``export --target openvino``: gated again on OpenVINO) or an engine."""
    from .export.onnx.onnx_export import save
    from .export.precision import export_precision
    from .runtime.artifact import srdeploy_metadata

    if backend.kind == "coreml":
        return _bench_coreml_package(net, pixels, folder)
    if backend.precision not in graphs:
        try:
            graphs[backend.precision] = export_precision(net, backend.precision, progress=progress)
        except SrDeployError as exc:
            graphs[backend.precision] = exc
    if isinstance(graphs[backend.precision], SrDeployError):
        return {"unavailable": f"the {backend.precision} export failed its gate: {graphs[backend.precision]}"}, None
    proto, report = graphs[backend.precision]
    drop = None if backend.precision == "fp32" else report.drop_db
    info = net.info
    stem = f"{info.name}_x{info.scale}_{backend.precision}"
    macs = _recorded_macs(srdeploy_metadata((p.key, p.value) for p in proto.metadata_props))  # engines too
    if backend.kind == "onnx":
        return {"artifact": str(save(proto, folder / f"{stem}.onnx")), **macs}, drop
    if backend.kind == "openvino":
        from .export.openvino.openvino_export import write_ir

        try:
            path, gated, _ = write_ir(proto, report, info, Precision.parse(backend.precision), folder, progress=progress)
        except SrDeployError as exc:
            return {"unavailable": f"the OpenVINO {backend.precision} IR failed its gate: {exc}"}, None
        return {"artifact": str(path), **macs}, None if backend.precision == "fp32" else gated.drop_db
    from .export.trt.trt_build import export_model_engine
    from .export.trt.trt_plan import Profile

    width, height = max(pixels, key=lambda wh: wh[0] * wh[1])
    profile = Profile("lr", (1, info.channels, 16, 16), (1, info.channels, height, width),
                      (1, info.channels, height, width))
    engine = export_model_engine(net, proto, backend.precision, profile, folder, stem,
                                 f"{COMMAND} bench {_model_flags(net)} --backends {backend.name}")
    return {"artifact": str(engine), **macs}, drop


def _bench_coreml_package(net, pixels: list[tuple[int, int]], folder: Path) -> tuple[dict, float | None]:
    """A checked FP16 package with the bench sizes as its enumerated sizes (the Neural Engine's fast path)."""
    from .export.coreml.coreml_export import CoreMLOptions, CoreMLShapes
    from .export.coreml.coreml_package import export_package

    sizes = tuple(dict.fromkeys((h, w) for w, h in pixels))
    try:
        package, report = export_package(net, CoreMLOptions(shapes=CoreMLShapes(enumerated=sizes)), folder)
    except SrDeployError as exc:
        return {"unavailable": f"the Core ML export failed its check: {exc}"}, None
    return {"artifact": str(package)}, report.drop_db


def _recorded_macs(metadata: dict[str, str]) -> dict:
    """{"macs_per_output_pixel": …} that an artifact records for its own graph (export rewrites can make it
    less than the architecture's); {} where it records none (Core ML packages run the traced PyTorch model)."""
    value = metadata.get("macs_per_output_pixel")
    return {} if value is None else {"macs_per_output_pixel": float(value)}
