"""srdeploy command line: ``srdeploy {models,eval,export,upscale,parity,bench} …`` (``--help`` on each); in a
checkout, ``python cli.py …`` is the same command."""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from typing import Callable, NamedTuple

if __name__ == "__main__" and not __package__:  # `python cli.py` in a checkout: the checkout is the srdeploy package
    import importlib
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    if "srdeploy" not in sys.modules:
        _spec = importlib.machinery.ModuleSpec("srdeploy", None, is_package=True)
        _spec.submodule_search_locations = [str(Path(__file__).resolve().parent)]
        sys.modules["srdeploy"] = importlib.util.module_from_spec(_spec)
    sys.exit(importlib.import_module("srdeploy.cli").main())

from .runtime.errors import COMMAND, SrDeployError, command
from .runtime.tables import markdown_table


def _model_options(args: argparse.Namespace) -> dict:
    return {"gate": args.gate} if getattr(args, "gate", None) else {}


def cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models

    entries = list_models()
    if args.json:
        print(json.dumps([
            {
                "model": e.architecture.name, "scale": e.scale, "channels": e.architecture.channels,
                "colour": e.architecture.colour, "multi_scale": e.architecture.multi_scale,
                "checkpoint": None if e.checkpoint is None else {
                    "url": e.checkpoint.url, "sha256": e.checkpoint.sha256, "layout": e.checkpoint.layout,
                    "metrics": {d: vars(m) for d, m in e.checkpoint.metrics.items()},
                    "reference_psnr": dict(e.checkpoint.reference_psnr),
                },
            }
            for e in entries
        ], indent=2))
        return 0
    rows = []
    for e in entries:
        c = e.checkpoint
        quality = "  ".join(f"{d} {m.psnr:.2f}/{m.ssim:.4f}" for d, m in c.metrics.items()) if c else ""
        source = f"{c.repository}/{c.path}" if c else "no public checkpoint: --weights PATH"
        rows.append([e.architecture.name, f"×{e.scale}", e.architecture.colour.upper(), source, quality])
    print(markdown_table(["model", "scale", "in/out", "official checkpoint", "PSNR/SSIM (Y)"], rows))
    return 0


class Runner(NamedTuple):
    """What ``eval`` and ``upscale`` run: an exported artifact or the PyTorch model."""

    infer: Callable
    name: str
    scale: int
    colour: str
    receptive_radius: int
    min_size: int
    source: str
    max_shape: list[int] | None  # an artifact's largest N×C×H×W input; None for PyTorch
    gate: Callable | None  # a globally gated network's GateSplit, for tiling (runtime.global_gate); else None


def _open_artifact(args: argparse.Namespace):
    """The session for ``--artifact`` on the ``--backend`` asked for (OpenVINO: at ``--inference-precision``)."""
    from .runtime.opener import open_artifact

    options = {}
    if args.inference_precision:
        if not (args.backend == "openvino" or str(args.artifact).lower().endswith(".xml")):
            raise SrDeployError("--inference-precision is an OpenVINO setting: add --backend openvino or open an .xml")
        options["inference_precision"] = args.inference_precision
    return open_artifact(args.artifact, backend=args.backend, **options)


def _runner(args: argparse.Namespace) -> Runner:
    """The runner ``--artifact FILE`` or ``--model NAME --scale S [--weights] [--gate]`` asks for."""
    if args.artifact:
        session = _open_artifact(args)
        return Runner(session.infer, session.metadata["model"], session.scale, session.colour,
                      session.receptive_radius, session.shape_bounds["min"][2], str(args.artifact),
                      session.shape_bounds["max"], session.gate_split if session.has_global_gate else None)
    if not (args.model and args.scale):
        raise SrDeployError(f"{args.command} needs --artifact FILE, or --model NAME and --scale S")
    from . import models
    from .export.config import export_config
    from .runtime.torch_runner import TorchRunner

    model = models.load(args.model, args.scale, args.weights, **_model_options(args))
    runner = TorchRunner(model)
    return Runner(runner.infer, args.model, args.scale, model.srdeploy.colour,
                  export_config(args.model).receptive_radius, 1, model.srdeploy.checkpoint, None,
                  runner.gate_split if runner.has_global_gate else None)


def cmd_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .runtime.quality import dataset_pairs, evaluate
    from .models.registry import architecture

    runner = _runner(args)
    infer, name, scale, source = runner.infer, runner.name, runner.scale, runner.source
    arch = architecture(name)
    pairs = dataset_pairs(args.dataset, scale)
    report = evaluate(
        infer, pairs, model=name, scale=scale, colour=arch.colour,
        rounding=arch.eval_rounding, dataset=Path(args.dataset).name, progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    rows = [[image, f"{v['psnr']:.2f}", f"{v['ssim']:.4f}"] for image, v in report.images.items()]
    rows.append(["mean", f"{report.psnr:.2f}", f"{report.ssim:.4f}"])
    print(f"{name} ×{scale} on {report.dataset} (Y, shave {scale}, {source})")
    print(markdown_table(["image", "PSNR (dB)", "SSIM"], rows))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import models
    from .export.config import export_config
    from .export.trt_plan import profile_from_args

    from .models.registry import architecture, check_scale

    arch = architecture(args.model)  # every flag is checked before any work (model load, download, export)
    check_scale(arch, args.scale)
    if args.target == "trt":  # nothing to build with: nothing written
        from .runtime.cuda import Cuda
        from .runtime.trt_backend import require_tensorrt

        require_tensorrt()
        Cuda()
    if args.target == "openvino":
        from .runtime.openvino_backend import import_openvino

        import_openvino()
    apple = args.target in ("coreml", "ios")
    args.precision = args.precision or ("fp16" if apple else "fp32")
    if apple:
        _coreml_options(args)
    profile = profile_from_args(export_config(args.model).input_name, arch.channels, args.scale,
                                args.min_shape, args.opt_shape, args.max_shape)
    if args.out is None:
        args.out = f"out/{args.model}_x{args.scale}_{args.target}"
        print(f"output folder: {args.out} (the default; choose another with --out DIR)", file=sys.stderr)
    if not args.json:
        print(f"exporting {args.model} ×{args.scale} for {args.target} ({args.precision}): loading the checkpoint",
              file=sys.stderr, flush=True)
    if args.target in ("jetson", "ios"):  # a foreign --out folder too
        from .export.ios_bundle import check_destination as ios_destination
        from .export.jetson import check_destination as jetson_destination

        (jetson_destination if args.target == "jetson" else ios_destination)(args.out)
    model = models.load(args.model, args.scale, args.weights, **_model_options(args))
    if apple:
        return _export_apple(args, model, _coreml_options(args, profile))
    if args.target == "jetson":
        return _export_jetson(args, model, profile)
    if args.target == "openvino":
        return _export_openvino(args, model)
    proto, report = _export_onnx(args, model, args.precision, args.max_psnr_drop)
    stem = f"{args.model}_x{args.scale}_{args.precision}"
    if args.target == "trt":
        path = _export_trt(args, model, proto, profile, stem)
    else:
        from .export.onnx_export import save

        path = save(proto, Path(args.out) / f"{stem}.onnx")
    if args.json:
        print(json.dumps({"artifacts": [str(path)], "model": args.model, "scale": args.scale,
                          "target": args.target, "precision": args.precision, "report": vars(report)}))
    else:
        print(path)
    return 0


def _coreml_options(args: argparse.Namespace, profile=None):
    """Core ML options from the export flags: ``--shapes`` (enumerated) or the profile's range."""
    from .export.coreml_export import CoreMLOptions, CoreMLShapes, parse_sizes

    if args.shapes:
        shapes = CoreMLShapes(enumerated=parse_sizes(args.shapes))
    elif profile is not None:
        shapes = CoreMLShapes(min=profile.min[2:], default=profile.opt[2:], max=profile.max[2:])
    else:
        shapes = CoreMLShapes()
    return CoreMLOptions(precision=args.precision, shapes=shapes, image_io=args.image_io, fp16_io=args.fp16_io,
                         compression=args.compress, deployment_target=args.deployment_target)


def _export_apple(args: argparse.Namespace, model, options) -> int:
    """``--target coreml``: a checked .mlpackage; ``--target ios``: the package, Swift code and README."""
    from pathlib import Path

    if args.target == "ios":
        from .export.ios_bundle import write_ios_bundle

        path, report = write_ios_bundle(model, options, Path(args.out), args.calib, args.max_psnr_drop)
    else:
        from .export.coreml_package import export_package

        path, report = export_package(model, options, Path(args.out), args.calib, args.max_psnr_drop)
    if args.json:
        print(json.dumps({"artifacts": [str(path)], "model": args.model, "scale": args.scale, "target": args.target,
                          "precision": args.precision, "report": report.as_dict()}))
        return 0
    checks = report.verification
    worst = min(c["fp16_psnr"] for c in checks["cases"].values())
    print(f"coreml {args.precision} ({options.compression} weights, {options.shapes.kind} sizes): "
          f"{checks['constants']['checked']} checkpoint tensors matched, FP16-emulated ≥ {worst:.1f} dB vs PyTorch, "
          f"held-out PSNR {report.validation_psnr_coreml:.3f} vs {report.validation_psnr_pytorch:.3f} dB "
          f"(drop {report.drop_db:+.4f} dB), {report.size_mb:.2f} MB", file=sys.stderr)
    print(path)
    return 0


def _export_onnx(args: argparse.Namespace, model, precision: str, max_drop: float | None):
    """The ONNX graph at ``precision`` through its accuracy gate; the cost is printed on stderr."""
    from .export.precision import export_precision, float_summary

    for_tensorrt = args.target in ("trt", "jetson")  # INT8 engines: may their float parts run in FP16?
    proto, report = export_precision(model, precision, args.calib, max_drop, args.fp16_io,
                                     progress=not args.json, method=args.calib_method, fp16_float_parts=for_tensorrt)
    if precision != "fp32" and not args.json:
        share = "" if report.int8_mac_fraction is None else f", {report.int8_mac_fraction:.1%} of conv MACs in INT8"
        kept = float_summary(report.kept_float, (report.int8 or {}).get("float_channels", {}))
        print(f"{precision}: {kept} kept in float{share}, held-out PSNR "
              f"{report.validation_psnr:.3f} dB vs {report.validation_psnr_fp32:.3f} dB FP32 "
              f"(drop {report.drop_db:+.4f} dB)", file=sys.stderr)
    if report.fp16_float and not args.json:
        f16 = report.fp16_float
        verdict = "TensorRT runs them in FP16" if f16["passed"] else "over the limit: TensorRT keeps them in FP32"
        openvino = "" if f16["drop_db_openvino"] is None else f"; OpenVINO {f16['drop_db_openvino']:+.4f} dB"
        print(f"int8 with FP16 float parts: drop {f16['drop_db_onnxruntime']:+.4f} dB on ONNX Runtime{openvino}: "
              f"{verdict}", file=sys.stderr)
    return proto, report


def _export_trt(args: argparse.Namespace, model, proto, profile, stem: str):
    """Build the engine on this GPU, check its parity against PyTorch, write engine + sidecar."""
    from pathlib import Path

    from .export.trt_build import export_model_engine

    shapes = "".join(f" --{k}-shape {'x'.join(map(str, v))}" for k, v in
                     (("min", profile.min), ("opt", profile.opt), ("max", profile.max)))
    rebuild = f"{COMMAND} export --model {args.model} --scale {args.scale} --target trt --precision {args.precision}{shapes}"
    return export_model_engine(model, proto, args.precision, profile, Path(args.out), stem, rebuild)


def _export_openvino(args: argparse.Namespace, model) -> int:
    """IR of the gated ONNX graph, gated again on OpenVINO; the executed precisions on stderr."""
    from pathlib import Path

    from .export.openvino_export import export_ir

    path, report, measured = export_ir(model, args.precision, Path(args.out), args.calib, args.max_psnr_drop,
                                       args.calib_method, progress=not args.json)
    if args.json:
        print(json.dumps({"artifacts": [str(path)], "model": args.model, "scale": args.scale, "target": args.target,
                          "precision": args.precision, "report": vars(report), "openvino": measured}))
        return 0
    share = "" if report.int8_mac_fraction is None else (
        f", {measured['int8_executed_mac_fraction']:.1%} of conv MACs executed in u8/i8 "
        f"({report.int8_mac_fraction:.1%} carry Q/DQ)")
    print(f"openvino {args.precision} ({measured['inference_precision']} inference precision, int8 dot product "
          f"{measured['int8_dot']}){share}: held-out PSNR {measured['validation_psnr']:.3f} vs "
          f"{measured['validation_psnr_fp32']:.3f} dB FP32 (drop {measured['drop_db']:+.4f} dB)", file=sys.stderr)
    print(path)
    return 0


def _export_jetson(args: argparse.Namespace, model, profile) -> int:
    """FP32/FP16/INT8 ONNX through their gates, golden outputs, build.sh and the thin runtime in one folder."""
    from pathlib import Path

    from .calib.data import held_out_photo
    from .export.jetson import write_bundle
    from .runtime.torch_runner import TorchRunner

    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    unknown = sorted(set(precisions) - {"fp32", "fp16", "int8"})
    if unknown or not precisions:
        raise SrDeployError(f"--precisions {args.precisions!r}: choose from fp32,fp16,int8")
    artifacts = {p: _export_onnx(args, model, p, args.max_psnr_drop if p == "int8" else None)[0] for p in precisions}
    if not args.json:
        print("jetson bundle: golden outputs (PyTorch FP32 on held-out photo crops), build.sh, runtime, manifest",
              file=sys.stderr, flush=True)
    out = write_bundle(Path(args.out), args.model, args.scale, artifacts, profile,
                       held_out_photo(model.srdeploy.colour), TorchRunner(model).infer)
    if args.json:
        print(json.dumps({"artifacts": [str(out)], "model": args.model, "scale": args.scale, "target": "jetson",
                          "precisions": precisions}))
    else:
        print(out)
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from .runtime.upscale import fit_tile, plan_jobs, report, upscale_each

    jobs = plan_jobs(Path(args.input), Path(args.output))  # paths checked before the model or artifact opens
    runner = _runner(args)
    overlap = runner.receptive_radius if args.tile_overlap is None else args.tile_overlap
    tile = fit_tile(args.tile, overlap, runner.max_shape)
    results = upscale_each(jobs, runner.infer, runner.scale, runner.colour, tile, overlap, runner.min_size,
                           args.max_pixels, runner.gate)
    return report(tqdm(results, total=len(jobs), desc="upscale", unit="img", leave=False,
                       disable=True if len(jobs) == 1 else None), len(jobs))


def _reference_model(session, weights: str | None):
    """The PyTorch model an artifact came from, found through its metadata (checkpoint sha256 checked)."""
    from . import models
    from .models.registry import checkpoint_by_sha256

    meta = session.metadata
    official = checkpoint_by_sha256(meta["checkpoint_sha256"])
    if weights is None and official is None:
        raise SrDeployError(
            f"{session.path.name} was exported from a non-official checkpoint (sha256 {meta['checkpoint_sha256'][:16]}…): "
            "pass it with --weights PATH, or check against golden files with --golden DIR"
        )
    model = models.load(meta["model"], int(meta["scale"]), weights, **json.loads(meta["options"]))
    if model.srdeploy.checkpoint_sha256 != meta["checkpoint_sha256"]:
        raise SrDeployError(f"--weights {weights} is not the checkpoint {session.path.name} was exported from")
    return model


def _print_parity(report) -> None:
    rows = [[name, "×".join(map(str, c.shape)), f"{c.max_abs:.2e}", f"{c.max_rel:.2e}", f"{c.mean_abs:.2e}",
             f"{c.psnr:.1f}", f"{c.off_by_level_pct:.3f}", str(c.nonfinite),
             "ok" if not c.violations(report.tolerance) else "FAIL"] for name, c in report.cases.items()]
    print(f"parity of {report.artifact} ({report.precision}) against PyTorch FP32")
    print(markdown_table(["case", "output", "max abs", "max rel", "mean abs", "PSNR dB", "% >1 level", "NaN/Inf",
                         "status"], rows))
    if report.dataset:
        d = report.dataset
        print(f"dataset {d['name']}: PSNR vs ground truth {d['psnr_artifact']:.3f} dB (artifact) vs "
              f"{d['psnr_reference']:.3f} dB (PyTorch): Δ {d['delta_db']:+.4f} dB")
    for name, problems in report.violations.items():
        print(f"FAIL {name}: {'; '.join(problems)}")
    print("PASS" if report.passed else "FAIL")


def cmd_parity(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .runtime.compare import TOLERANCES
    from .runtime.golden import load_golden, save_golden
    from .runtime.parity import ParityReport, check_cases, probe_inputs
    from .runtime.pipeline import network_input

    session = _open_artifact(args)
    precision = session.metadata.get("precision", "fp32")
    report = ParityReport(str(args.artifact), precision, TOLERANCES[precision])
    progress = not args.json
    if args.golden:
        cases, manifest = load_golden(args.golden)
        if manifest["checkpoint_sha256"] != session.metadata["checkpoint_sha256"]:
            raise SrDeployError(f"golden files in {args.golden} belong to another checkpoint than {args.artifact}")
    else:
        from .runtime.quality import dataset_pairs, evaluate
        from .models.registry import architecture
        from .runtime import images
        from .runtime.torch_runner import TorchRunner

        model = _reference_model(session, args.weights)
        reference = TorchRunner(model).infer
        photo = None
        if precision == "int8":  # calibrated on photos: probe with a held-out photo, not noise
            from .calib.data import held_out_photo

            photo = held_out_photo(session.colour)
        inputs = probe_inputs(session.channels, session.shape_bounds, photo=photo)
        if args.dataset:
            pairs = dataset_pairs(args.dataset, session.scale)
            inputs.update({f"image_{p.name}": network_input(images.read_rgb(p.lr), session.colour) for p in pairs})
            kwargs = dict(model=session.metadata["model"], scale=session.scale, colour=session.colour,
                          rounding=architecture(session.metadata["model"]).eval_rounding,
                          dataset=Path(args.dataset).name, progress=progress)
            ours, theirs = evaluate(session.infer, pairs, **kwargs), evaluate(reference, pairs, **kwargs)
            report.dataset = {"name": Path(args.dataset).name, "psnr_artifact": ours.psnr,
                              "psnr_reference": theirs.psnr, "delta_db": ours.psnr - theirs.psnr}
        cases = {name: (x, reference(x)) for name, x in inputs.items()}
        if args.save_golden:
            save_golden(args.save_golden, cases, {
                "model": session.metadata["model"], "scale": session.scale,
                "checkpoint_sha256": session.metadata["checkpoint_sha256"], "reference": "pytorch fp32",
            })
    check_cases(session.infer, cases, report)
    report.backend = type(session).__name__
    if hasattr(session, "executed_precisions"):
        executed = session.executed_precisions()
        report.backend = f"OpenVINO {executed.inference_precision}"
        report.executed = executed.as_dict()
        if not args.json:
            print(executed.summary())
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        _print_parity(report)
    return 0 if report.passed else 1


def cmd_bench(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from tqdm import tqdm

    from .benchmarks.bench import (
        bar_chart,
        bench_one,
        markdown,
        parse_size,
        report_header,
    )
    from .runtime.atomic import atomic_path

    sizes = [parse_size(s) for s in args.sizes.split(",") if s]
    work = Path(args.out or tempfile.mkdtemp(prefix="srdeploy-bench-"))
    jobs, (name, scale, channels) = _bench_jobs(args, work)
    try:  # MACs of the PyTorch architecture; without torch the report has no GFLOP/s for it
        from .benchmarks.complexity import measure as complexity

        per_pixel = complexity(name, scale).macs_per_output_pixel
    except ImportError:
        per_pixel = None
    report = report_header(f"{COMMAND} " + " ".join(sys.argv[1:]) if sys.argv[0].endswith(("cli.py", COMMAND)) else "bench",
                           name, scale, per_pixel)
    progress = tqdm(total=len(jobs) * len(sizes), desc="bench", unit="run", disable=None if not args.json else True)
    for backend, source, drop in jobs:
        for width, height in sizes:
            progress.set_postfix_str(f"{backend} {width}x{height}")
            # artifacts carry their graph's own count (export rewrites remove work); torch: the architecture
            row_pixel = source.get("macs_per_output_pixel", per_pixel)
            report["results"].append(bench_one(backend, (width, height), source, channels, scale,
                                               row_pixel and row_pixel * width * height * scale * scale,
                                               args.warmup, args.runs,
                                               args.budget, args.threads, drop))
            progress.update()
    progress.close()
    table = markdown(report)
    if args.out:
        with atomic_path(work / "bench.json") as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        with atomic_path(work / "bench.md") as tmp:
            tmp.write_text(table + "\n")
        if bar_chart(report, work / "bench.png") is None:
            warnings.warn("no bench.png: no backend ran, or matplotlib is missing (pip install matplotlib)", stacklevel=1)
    print(json.dumps({"machine": report["machine"], "results": report["results"]}) if args.json else table)
    return 0


def _bench_jobs(args: argparse.Namespace, work) -> tuple[list[tuple[str, dict, float | None]], tuple[str, int, int]]:
    """(backend, source, held-out PSNR drop) per backend, and (model, scale, channels): from ``--model`` with
    artifacts exported into ``work/artifacts``, or from existing artifacts (``bench ARTIFACT...``)."""
    from .benchmarks.backends import BACKENDS

    if args.artifacts:
        from .runtime.opener import open_artifact

        jobs, identity = [], None
        for path in args.artifacts:
            session = open_artifact(path, run=False)  # bench runs it in its own process (or lists it as skipped)
            precision = session.metadata.get("precision", "fp32")
            kind = "trt" if path.endswith((".engine", ".plan", ".trt")) else "openvino" if path.endswith(".xml") else "onnx"
            # an FP16-weights IR computes at f32 inference precision, as the FP32 one does
            backend = kind if precision == "fp32" or (kind, precision) == ("openvino", "fp16") else f"{kind}-{precision}"
            if path.rstrip("/").endswith(".mlpackage"):
                backend = "coreml"
            drop = None if precision == "fp32" else float(session.metadata.get("validation_drop_db") or 0)
            jobs.append((backend, {"artifact": str(path), **_recorded_macs(session.metadata)}, drop))
            identity = (session.metadata["model"], session.scale, session.channels)
        return jobs, identity
    if not (args.model and args.scale):
        raise SrDeployError("bench needs --model NAME --scale S, or artifact files")
    names = [b for b in args.backends.split(",") if b]
    unknown = [b for b in names if b not in BACKENDS]
    if unknown:
        raise SrDeployError(f"unknown backend {', '.join(unknown)}: choose from {', '.join(BACKENDS)}")
    from . import models
    from .benchmarks.backends import unavailable

    model = models.load(args.model, args.scale, args.weights)
    exported: dict[str, tuple[dict, float | None]] = {}
    jobs = []
    for name in names:
        backend = BACKENDS[name]
        source = {"model": args.model, "scale": args.scale, "weights": args.weights}
        drop = None
        if backend.needs_artifact and not unavailable(backend):
            key = f"{'onnx' if backend.kind == 'openvino' else backend.kind}-{backend.precision}"  # OpenVINO runs the .onnx
            if key not in exported:
                exported[key] = _bench_artifact(args, model, backend, work / "artifacts")
            artifact, drop = exported[key]
            source = {**source, **artifact}
        jobs.append((name, source, drop))
    return jobs, (args.model, args.scale, model.srdeploy.channels)


def _bench_artifact(args: argparse.Namespace, model, backend, folder) -> tuple[dict, float | None]:
    """Export the artifact a backend runs ({"artifact": path} or {"unavailable": why}) and its held-out drop."""
    from .export.onnx_export import save
    from .export.precision import export_precision
    from .runtime.artifact import srdeploy_metadata

    if backend.kind == "coreml":
        return _bench_coreml_package(args, model, folder)
    try:
        proto, report = export_precision(model, backend.precision, progress=not args.json)
    except SrDeployError as exc:
        return {"unavailable": f"the {backend.precision} export failed its gate: {exc}"}, None
    drop = None if backend.precision == "fp32" else report.drop_db
    stem = f"{args.model}_x{args.scale}_{backend.precision}"
    macs = _recorded_macs(srdeploy_metadata((p.key, p.value) for p in proto.metadata_props))  # engines too
    if backend.kind in ("onnx", "openvino"):
        return {"artifact": str(save(proto, folder / f"{stem}.onnx")), **macs}, drop
    from .benchmarks.bench import parse_size
    from .export.trt_build import export_model_engine
    from .export.trt_plan import Profile

    width, height = max((parse_size(s) for s in args.sizes.split(",") if s), key=lambda wh: wh[0] * wh[1])
    channels = model.srdeploy.channels
    profile = Profile("lr", (1, channels, 16, 16), (1, channels, height, width), (1, channels, height, width))
    engine = export_model_engine(model, proto, backend.precision, profile, folder, stem,
                                 f"{COMMAND} bench --model {args.model} --scale {args.scale} --backends {backend.name}")
    return {"artifact": str(engine), **macs}, drop


def _bench_coreml_package(args: argparse.Namespace, model, folder) -> tuple[dict, float | None]:
    """A checked FP16 package with the bench sizes as its enumerated sizes (the Neural Engine's fast path)."""
    from .benchmarks.bench import parse_size
    from .export.coreml_export import CoreMLOptions, CoreMLShapes
    from .export.coreml_package import export_package

    sizes = tuple(dict.fromkeys((h, w) for w, h in (parse_size(s) for s in args.sizes.split(",") if s)))
    try:
        package, report = export_package(model, CoreMLOptions(shapes=CoreMLShapes(enumerated=sizes)), folder)
    except SrDeployError as exc:
        return {"unavailable": f"the Core ML export failed its check: {exc}"}, None
    return {"artifact": str(package)}, report.drop_db


def _recorded_macs(metadata: dict[str, str]) -> dict:
    """{"macs_per_output_pixel": …} that an artifact records for its own graph (export rewrites can make it
    less than the architecture's); {} where it records none (Core ML packages run the traced PyTorch model)."""
    value = metadata.get("macs_per_output_pixel")
    return {} if value is None else {"macs_per_output_pixel": float(value)}


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, naming the command's --help (exit 2, like every refusal)."""

    def error(self, message: str):
        self.exit(2, f"error: {message}: see `python {self.prog} --help`\n")


def _number(kind: type, low: float, strict: bool = False) -> Callable[[str], float]:
    """An argparse type: a ``kind`` number ≥ ``low`` (> ``low`` when ``strict``), checked before any work."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '≥'} {low}, not {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="srdeploy", description="srdeploy: super-resolution CNNs from PyTorch to edge devices, verified."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list the model zoo: scales, checkpoints, measured quality")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=cmd_models)

    p = sub.add_parser("eval", help="PSNR/SSIM of a model or an artifact on a BasicSR-layout dataset")
    _add_model_arguments(p, required=False)
    p.add_argument("--artifact", help="evaluate an exported artifact instead of the PyTorch model: .onnx (ONNX Runtime), "
                                      ".xml (OpenVINO), .engine (TensorRT) or .mlpackage (Core ML, macOS)")
    _add_backend_arguments(p)
    p.add_argument("--dataset", required=True, help="folder with HR/ and LR_bicubic/X{scale}/")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("export", help="export a model: ONNX, a TensorRT engine, a Jetson bundle, Core ML, an iOS bundle")
    _add_model_arguments(p)
    p.add_argument("--target", choices=("onnx", "trt", "jetson", "coreml", "ios", "openvino"), default="onnx",
                   help="onnx: an .onnx file; trt: a TensorRT engine built here (needs TensorRT and a GPU); "
                        "openvino: OpenVINO IR (.xml + .bin) for CPUs, gated on OpenVINO itself; "
                        "jetson: a folder with the ONNX files, build.sh and golden outputs for the device; "
                        "coreml: a checked .mlpackage; ios: the .mlpackage with Swift code and a README")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                   help="numeric precision (default fp32; coreml/ios: fp16 compute); int8: TensorRT-compatible Q/DQ")
    p.add_argument("--calib", metavar="DIR", help="calibration/validation photos (default: scikit-image's bundled photos)")
    p.add_argument("--max-psnr-drop", type=_number(float, 0), metavar="DB",
                   help="largest PSNR loss vs FP32 on the held-out photos (default: fp16 0.01, int8 0.1)")
    p.add_argument("--calib-method", choices=("minmax", "percentile", "mse"), default="minmax",
                   help="int8: activation range calibration (default minmax: measured best, see README)")
    p.add_argument("--fp16-io", action="store_true", help="fp16: FP16 input and output tensors (default FP32 I/O)")
    for bound, default in (("min", "16x16"), ("opt", "the 720p frame's LR size"), ("max", "the 1080p frame's LR size")):
        p.add_argument(f"--{bound}-shape", metavar="HxW", help=f"trt/jetson: {bound} LR input of the optimization "
                       f"profile, HxW (batch 1) or NxCxHxW; default {default}")
    p.add_argument("--shapes", metavar="HxW,...", help="coreml/ios: enumerated LR sizes (each can run on the Neural "
                   "Engine; at most 128) instead of the --min/--opt/--max-shape range")
    p.add_argument("--image-io", action="store_true", help="coreml: image input (CVPixelBuffer, /255 baked in) and "
                   "image output instead of [0, 1] arrays")
    p.add_argument("--compress", choices=("none", "linear8", "palette6", "palette4"), default="none",
                   help="coreml/ios: weight compression (8-bit linear, 6/4-bit palettes); its PSNR cost is measured "
                        "and gated (default limit 0.1 dB)")
    p.add_argument("--deployment-target", default="iOS16", choices=("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15"),
                   help="coreml/ios: minimum OS (default iOS16; iOS18 gives palettes per channel group)")
    p.add_argument("--precisions", default="fp32,fp16,int8",
                   help="jetson: precisions in the bundle (default fp32,fp16,int8; --max-psnr-drop applies to int8)")
    p.add_argument("--out", help="output folder (default: out/MODEL_xSCALE_TARGET, printed)")
    p.add_argument("--json", action="store_true", help='print {"artifacts": [...], ...} on stdout')
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("upscale", help="upscale an image or a folder of images (tiled, bounded memory)",
                       epilog="Exit status: 0 every image written; 1 some images failed (each named on stderr, the "
                              "others written); 2 nothing done (bad arguments, or every image failed).")
    p.add_argument("input", help="image file or folder")
    p.add_argument("output", help="output file, or folder (created) for NAME_x{scale}.png")
    p.add_argument("--artifact", help="an exported .onnx (ONNX Runtime), .xml (OpenVINO), .engine (TensorRT) or "
                                      ".mlpackage (Core ML, macOS); no torch needed")
    _add_backend_arguments(p)
    _add_model_arguments(p, required=False)
    p.add_argument("--tile", type=_number(int, 0), default=256, help="LR tile size in pixels (0: whole image); default 256")
    p.add_argument("--tile-overlap", type=_number(int, 0),
                   help="context margin per tile (default: the model's receptive radius)")
    p.add_argument("--max-pixels", type=_number(int, 1), default=100_000_000,
                   help="largest input image in pixels, checked from the file header (default 100000000)")
    p.set_defaults(run=cmd_upscale)

    p = sub.add_parser("bench", help="latency of backends side by side: median/p90/p99, MP/s, GFLOP/s, memory")
    p.add_argument("artifacts", nargs="*", help="existing .onnx/.xml/.engine/.mlpackage artifacts to benchmark (instead "
                                                 "of --model)")
    p.add_argument("--model", help="zoo name: artifacts for the backends are exported first")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=2, help="upscaling factor (default 2)")
    p.add_argument("--weights", help="checkpoint path (default: the official checkpoint)")
    p.add_argument("--backends", default="torch,onnx,onnx-fp16,onnx-int8",
                   help="comma-separated, from: torch, torch-cuda, torch-cuda-fp16, onnx, onnx-fp16, onnx-int8, "
                        "openvino, openvino-bf16, openvino-int8, onnx-cuda, onnx-trt, trt, trt-fp16, trt-int8, coreml "
                        "(unavailable ones are listed as skipped)")
    p.add_argument("--sizes", default="256x256", help="LR input sizes, WxH, comma-separated (default 256x256)")
    p.add_argument("--warmup", type=_number(int, 0), default=2, help="untimed calls first (default 2)")
    p.add_argument("--runs", type=_number(int, 1), default=30, help="most timed calls per measurement (default 30)")
    p.add_argument("--budget", type=_number(float, 0, strict=True), default=20.0,
                   help="seconds of timed calls per measurement, at least 3 calls")
    p.add_argument("--threads", type=_number(int, 1), help="CPU threads per backend (default: each library's own default)")
    p.add_argument("--out", help="folder for bench.md, bench.json, bench.png and the exported artifacts")
    p.add_argument("--json", action="store_true", help='print {"machine": ..., "results": [...]} on stdout')
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("parity", help="check an artifact against the PyTorch model it came from (or golden files)")
    p.add_argument("artifact", help="an exported .onnx, .xml (OpenVINO IR), .engine (with its sidecar) or .mlpackage "
                                    "(Core ML, macOS)")
    _add_backend_arguments(p)
    p.add_argument("--weights", help="checkpoint the artifact was exported from, if not an official one")
    p.add_argument("--dataset", help="BasicSR-layout dataset: real images and the PSNR-vs-ground-truth delta")
    p.add_argument("--save-golden", metavar="DIR", help="also write the inputs and PyTorch outputs to DIR")
    p.add_argument("--golden", metavar="DIR", help="compare with golden files instead of PyTorch (no torch needed)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=cmd_parity)
    return parser


def _add_backend_arguments(p: argparse.ArgumentParser) -> None:
    from .runtime.opener import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="what runs an .onnx artifact: onnxruntime (auto) or openvino; other files choose their own")
    p.add_argument("--inference-precision", choices=("f32", "bf16", "f16"),
                   help="OpenVINO's compute precision (default f32; bf16 where the CPU has AVX-512 BF16 or AMX)")


def _add_model_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help="zoo name (srdeploy models)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), default=2, help="upscaling factor (default 2)")
    p.add_argument("--weights", help="checkpoint path (default: the official checkpoint, downloaded and verified)")
    p.add_argument("--gate", choices=("argmax", "branch0", "branch1"),
                   help="DSRNet only: per-image argmax of the gate (default) or a forced branch")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        return args.run(args)
    except SrDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `cli.py models | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes stdout at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
