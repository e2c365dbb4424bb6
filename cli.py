"""srdeploy command line: ``srdeploy {models,eval,export,upscale,parity,bench,serve} …`` (``--help`` on each); in a
checkout, ``python cli.py …`` is the same command."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import sys
import typing
import warnings
from typing import Callable

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

from . import api
from .runtime.errors import COMMAND, SrDeployError, os_error_line
from .runtime.opener import backend_names
from .runtime.targets import DEFAULT_TARGET, artifact_kinds, runnable, targets


CLI_ONLY = ("command", "run", "json", "no_progress")  # the parser's own, and how the result is printed
MODEL_OPTIONS = ("gate",)  # options of a zoo architecture (DSRNet's --gate), for ModelSpec.options
MODEL = ("model", "scale", "weights", "model_args", *MODEL_OPTIONS)  # what makes the ModelSpec


def arguments(function: Callable, args: argparse.Namespace) -> dict:
    """``function``'s keyword arguments from the parsed options: each parameter from the option of its name;
    ``model`` as a ``ModelSpec`` of --model/--scale/--weights/--model-args and the architecture's options; each
    value (``SessionOptions``, ``ExportOptions``, ``UpscaleOptions``, ``BenchOptions``) from the options named as
    its fields. An option that reaches nothing is a mistake of this file: refused, not dropped."""
    given, used, kwargs = vars(args), set(CLI_ONLY), {}
    hints = typing.get_type_hints(function)
    for name in inspect.signature(function).parameters:
        value = _value_type(hints.get(name))
        if value is not None and value is not api.ModelSpec:
            fields = [f.name for f in dataclasses.fields(value) if f.name in given]
            kwargs[name] = value(**{f: given[f] for f in fields})
            used.update(fields)
        elif name == "model" and api.ModelSpec in typing.get_args(hints[name]):
            if given.get("model") is not None:
                kwargs[name] = api.ModelSpec(given["model"], given.get("scale"), given.get("weights"),
                                             {k: given[k] for k in MODEL_OPTIONS if given.get(k) is not None},
                                             given.get("model_args"))
            used.update(k for k in MODEL if k in given)
        elif name in given:
            kwargs[name] = given[name]
            used.add(name)
    unused = sorted(set(given) - used)
    if unused:
        raise TypeError(f"options {unused} reach no parameter of api.{function.__name__}")
    return kwargs


def _value_type(hint) -> type | None:
    """The dataclass in an ``X | None`` annotation, if any."""
    return next((t for t in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(t)), None)


def _call(function: Callable, args: argparse.Namespace, **given):
    """``function`` called with the parsed options (``arguments``) and ``given``."""
    return function(**{**arguments(function, args), **given})


def _show(report, args: argparse.Namespace, text: Callable[[], str], indent: int | None = 2) -> None:
    print(json.dumps(report.as_dict(), indent=indent) if args.json else text())


def cmd_models(args: argparse.Namespace) -> int:
    report = api.zoo()
    _show(report, args, report.table)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    report = _call(api.evaluate, args)
    _show(report, args, report.table)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    result = _call(api.export_model, args)
    _show(result, args, lambda: "\n".join(map(str, result.artifacts)), indent=None)
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    return _call(api.upscale, args).exit_status


def cmd_parity(args: argparse.Namespace) -> int:
    report = _call(api.parity, args)
    _show(report, args, report.text)
    return 0 if report.passed else 1


def cmd_serve(args: argparse.Namespace) -> int:
    _call(api.serve, args)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    typed = sys.argv[0].endswith(("cli.py", COMMAND))  # the command line the report records
    report = _call(api.bench, args, command=f"{COMMAND} " + " ".join(sys.argv[1:]) if typed else "bench")
    _show(report, args, report.markdown, indent=None)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, naming the command's --help (exit 2, like every refusal)."""

    def error(self, message: str):
        shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)  # an argument's newline stays inside
        self.exit(2, f"error: {shown}: see `{self.prog} --help`\n")


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
    p.add_argument("--artifact", help=f"evaluate an exported artifact instead of the PyTorch model: {artifact_kinds()}")
    _add_backend_arguments(p)
    p.add_argument("--dataset", required=True, help="folder with HR/ and LR_bicubic/X{scale}/")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("export", help=f"export a model: {', '.join(t.title for t in targets().values())}")
    _add_model_arguments(p)
    p.add_argument("--target", choices=list(targets()), default=DEFAULT_TARGET,
                   help="; ".join(f"{t.name}: {t.writes}" for t in targets().values()))
    p.add_argument("--precision", choices=[*(str(v) for v in api.Precision), "auto"],
                   help=f"numeric precision (default fp32; {_other_defaults()}); int8: TensorRT-compatible Q/DQ; bf16: "
                        "OpenVINO computes the FP32 graph in bfloat16 (AVX-512 BF16, AMX); auto (CPU targets): the "
                        "fastest that passes its gate, timed here")
    p.add_argument("--calib", metavar="DIR", help="calibration/validation photos (default: scikit-image's bundled photos)")
    p.add_argument("--max-psnr-drop", type=_number(float, 0), metavar="DB",
                   help="largest PSNR loss vs FP32 on the held-out photos (default: fp16 0.01, int8 0.1)")
    p.add_argument("--calib-method", choices=("minmax", "percentile", "mse"), default="minmax",
                   help="int8: activation range calibration (default minmax: measured best, see README)")
    p.add_argument("--fp16-io", action="store_true", help="fp16: FP16 input and output tensors (default FP32 I/O)")
    p.add_argument("--portable", action="store_true", help="onnx: a graph without control flow (If), for runtimes "
                   "that have none, such as OpenCV's DNN module; the same outputs (NAME_portable.onnx)")
    for bound, default in (("min", "16x16"), ("opt", "the 720p frame's LR size"), ("max", "the 1080p frame's LR size")):
        p.add_argument(f"--{bound}-shape", metavar="HxW", help=f"trt/jetson: {bound} LR input of the optimization "
                       f"profile, HxW (batch 1) or NxCxHxW; default {default}" + (
                           "; executorch: its largest LR input (default 320x320)" if bound == "max" else ""))
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

    p = sub.add_parser("upscale", help="upscale an image, a folder of images or a video (tiled, bounded memory)",
                       epilog="Exit status: 0 every image written; 1 some images failed (each named on stderr, the "
                              "others written); 2 nothing done (bad arguments, every image failed, or the video "
                              "failed: nothing is left under its name).")
    p.add_argument("input", help="image file or folder, or a video (.mp4, .mkv, .mov, .webm, .avi, .m4v; audio and "
                                 "subtitles are copied)")
    p.add_argument("output", help="output file, or folder (created) for NAME_x{scale}.png (a video: NAME_x{scale} "
                                  "with the input's extension)")
    p.add_argument("--artifact", help=f"an exported {artifact_kinds()}; no torch needed")
    _add_backend_arguments(p)
    _add_model_arguments(p, required=False)
    p.add_argument("--tile", type=_number(int, 0), help="LR tile size in pixels (0: whole image); default 256, and the "
                                                        "whole image for a network whose output depends on all of it")
    p.add_argument("--tile-overlap", type=_number(int, 0),
                   help="context margin per tile (default: the model's receptive radius)")
    p.add_argument("--codec", choices=("libx264", "libx265", "libvpx-vp9", "mpeg4"),
                   help="video: output codec (default libx264; libvpx-vp9 for .webm)")
    p.add_argument("--crf", type=_number(int, 0), default=18, help="video: quality, lower is better (default 18)")
    p.add_argument("--preset", default="medium", help="video: x264/x265 speed preset (default medium)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="ray: spread a folder's images over a Ray cluster (bit-identical files; default local)")
    p.add_argument("--ray-address", metavar="ADDR", help="ray: the cluster to join, e.g. ray://head:10001 "
                   "(default: start a local one for the run)")
    p.add_argument("--workers", type=_number(int, 1), help="ray: worker processes (default: one per CPU of the cluster)")
    p.add_argument("--max-pixels", type=_number(int, 1), default=100_000_000,
                   help="largest input image in pixels, checked from the file header (default 100000000)")
    p.add_argument("--throughput", action="store_true",
                   help="an artifact on ONNX Runtime or OpenVINO in its throughput mode: several images or video "
                        "frames in flight at once (OpenVINO's THROUGHPUT streams; ONNX Runtime, a thread each)")
    p.add_argument("--skip-existing", action="store_true",
                   help="keep outputs that exist already (each was written whole: a stopped or killed run leaves no "
                        "partial file under an output's name), so a rerun continues where the last one stopped")
    p.set_defaults(run=cmd_upscale)

    p = sub.add_parser("bench", help="latency of backends side by side: median/p90/p99, MP/s, GFLOP/s, memory")
    p.add_argument("artifacts", nargs="*", help=f"existing {'/'.join(t.suffixes[0] for t in runnable())} artifacts to "
                                                 "benchmark (instead of --model)")
    p.add_argument("--model", help=f"{MODEL_HELP}: artifacts for the backends are exported first")
    p.add_argument("--scale", type=int, help=SCALE_HELP)
    p.add_argument("--weights", help="checkpoint path (default: the official checkpoint)")
    p.add_argument("--model-args", metavar="JSON", help=MODEL_ARGS_HELP)
    p.add_argument("--backends", default="torch,onnx,onnx-fp16,onnx-int8",
                   help=f"comma-separated, from: {', '.join(api.bench_backends())} (unavailable ones are listed as "
                        "skipped)")
    p.add_argument("--sizes", default="256x256", help="LR input sizes, WxH, comma-separated (default 256x256)")
    p.add_argument("--warmup", type=_number(int, 0), default=2, help="untimed calls first (default 2)")
    p.add_argument("--runs", type=_number(int, 1), default=30, help="most timed calls per measurement (default 30)")
    p.add_argument("--budget", type=_number(float, 0, strict=True), default=20.0,
                   help="seconds of timed calls per measurement, at least 3 calls")
    p.add_argument("--threads", type=_number(int, 1), help="CPU threads per backend (default: each library's own default)")
    p.add_argument("--out", help="folder for bench.md, bench.json, bench.png and the exported artifacts")
    p.add_argument("--json", action="store_true", help='print {"machine": ..., "results": [...]} on stdout')
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("serve", help="serve a web export on loopback (the headers WebAssembly threads need)")
    p.add_argument("folder", help="the folder export --target web wrote")
    p.add_argument("--port", type=int, default=8000, help="loopback port (default 8000)")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser("parity", help="check an artifact against the PyTorch model it came from (or golden files)")
    p.add_argument("artifact", help=f"an exported {artifact_kinds()}")
    _add_backend_arguments(p)
    p.add_argument("--weights", help="checkpoint the artifact was exported from, if not an official one")
    p.add_argument("--dataset", help="BasicSR-layout dataset: real images and the PSNR-vs-ground-truth delta")
    p.add_argument("--save-golden", metavar="DIR", help="also write the inputs and PyTorch outputs to DIR")
    p.add_argument("--golden", metavar="DIR", help="compare with golden files instead of PyTorch (no torch needed)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=cmd_parity)
    return parser


def _other_defaults() -> str:
    """``coreml/ios: fp16 compute``: the targets whose default precision is not fp32."""
    other = [t for t in targets().values() if t.default_precision != "fp32"]
    return "; ".join(f"{'/'.join(t.name for t in other if t.default_precision == p)}: {p} compute"
                     for p in dict.fromkeys(t.default_precision for t in other))


def _add_backend_arguments(p: argparse.ArgumentParser) -> None:
    names = backend_names()
    p.add_argument("--backend", choices=names, default="auto",
                   help=f"what runs an .onnx artifact: {names[1]} (auto) or {', '.join(names[2:])}; other files "
                        "choose their own")
    p.add_argument("--inference-precision", choices=("f32", "bf16", "f16"),
                   help="OpenVINO's compute precision (default f32; bf16 where the CPU has AVX-512 BF16 or AMX)")
    p.add_argument("--vulkan", action="store_true",
                   help="ncnn: compute on the Vulkan device (a GPU, or Mesa's lavapipe in software)")


MODEL_HELP = "zoo name (srdeploy models), or your own network: FILE.py:NAME or package.module:NAME (class or factory)"
SCALE_HELP = "upscaling factor of a zoo model, 2, 3 or 4 (default 2); your own network's is measured"
MODEL_ARGS_HELP = "your own network's keyword arguments as a JSON object, e.g. '{\"scale\": 2}'"


def _add_model_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--model", required=required, help=MODEL_HELP)
    p.add_argument("--scale", type=int, help=SCALE_HELP)
    p.add_argument("--weights", help="checkpoint path (default: the official checkpoint, downloaded and verified; "
                                     "required for your own network)")
    p.add_argument("--model-args", metavar="JSON", help=MODEL_ARGS_HELP)
    p.add_argument("--gate", choices=("argmax", "branch0", "branch1"),
                   help="DSRNet only: per-image argmax of the gate (default) or a forced branch")


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # the target table, with any plug-ins $SRDEPLOY_TARGETS names
    except SrDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.progress = not (getattr(args, "json", False) or getattr(args, "no_progress", False))
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
    except OSError as exc:  # a full disk, a read-only folder, a file size limit: one line, nothing half-written
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
