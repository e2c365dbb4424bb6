"""``main_bench``: the driver of ``srdeploy bench``: the jobs (existing artifacts, or a model's artifacts for each
backend, exported first through the targets' own exporters, one gated graph per precision), one measurement per
(backend, size) in a child process (``bench.bench_one``), the report written where asked."""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

from tqdm import tqdm

from .backends import BenchBackend, backends, unavailable
from .bench import BenchOptions, bar_chart, bench_one, markdown, parse_size, report_header
from ..export.options import ExportOptions, Progress
from ..models.spec import ModelSpec
from ..runtime.atomic import atomic_path
from ..runtime.errors import SrDeployError
from ..runtime.targets import for_artifact, targets

Jobs = list[tuple[str, dict, "float | None"]]  # (backend, source, held-out PSNR drop)


def main_bench(artifacts: list[str] | tuple[str, ...], spec: ModelSpec | None, options: BenchOptions,
               out: Path | None, command: str, progress: bool) -> dict:
    """The report (``bench.report_header`` with its rows): of existing ``artifacts``, or of ``spec``'s artifacts
    for ``options.backends``. With ``out``: bench.md, bench.json, bench.png and the exported artifacts there."""
    pixels = [parse_size(s) for s in options.sizes.split(",") if s]
    work = Path(out or tempfile.mkdtemp(prefix="srdeploy-bench-"))
    if artifacts:
        jobs, (name, scale, channels) = _artifact_jobs(artifacts)
    else:
        jobs, (name, scale, channels) = _model_jobs(spec, options.backends, pixels, work, progress)
    try:  # MACs of the zoo's PyTorch architecture; without torch, or for your own network, none
        from .complexity import measure as complexity

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
                                               options.warmup, options.runs, options.budget, options.threads, drop))
            bar.update()
    bar.close()
    if out:
        _write(report, work)
    return report


def _write(report: dict, folder: Path) -> None:
    with atomic_path(folder / "bench.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    with atomic_path(folder / "bench.md") as tmp:
        tmp.write_text(markdown(report) + "\n")
    if bar_chart(report, folder / "bench.png") is None:
        warnings.warn("no bench.png: no backend ran, or matplotlib is missing (pip install matplotlib)", stacklevel=1)


def _artifact_jobs(artifacts) -> tuple[Jobs, tuple[str, int, int]]:
    """A job per existing artifact (its target's backend at its precision), and (model, scale, channels)."""
    from ..runtime.opener import open_artifact

    jobs, identity = [], None
    for path in map(str, artifacts):
        session = open_artifact(path, run=False)  # bench runs it in its own process (or lists it as skipped)
        precision = session.metadata.get("precision", "fp32")
        plain = [b for b in (for_artifact(path) or for_artifact(".onnx")).backends if not b.options]
        # the backend at the artifact's precision; else its first (an FP16-weights IR computes at f32 inference
        # precision, as the FP32 one does)
        backend = next((b for b in plain if b.precision == precision), plain[0])
        drop = None if precision == "fp32" else float(session.metadata.get("validation_drop_db") or 0)
        jobs.append((backend.name, {"artifact": path, **recorded_macs(session.metadata)}, drop))
        identity = (session.metadata["model"], session.scale, session.channels)
    return jobs, identity


def _model_jobs(spec: ModelSpec | None, names: str, pixels: list[tuple[int, int]], work: Path,
                progress: bool) -> tuple[Jobs, tuple[str, int, int]]:
    """A job per backend, its artifact exported into ``work/artifacts`` (one per target and precision)."""
    if spec is None:
        raise SrDeployError("bench needs --model NAME (a zoo name, or FILE.py:NAME), or artifact files")
    known = backends()
    chosen = [b for b in names.split(",") if b]
    unknown = [b for b in chosen if b not in known]
    if unknown:
        raise SrDeployError(f"unknown backend {', '.join(unknown)}: choose from {', '.join(known)}")
    net = spec.load()
    sizes = ",".join(dict.fromkeys(f"{h}x{w}" for w, h in pixels))  # Core ML: the bench sizes, enumerated
    height, width = max(((h, w) for w, h in pixels), key=lambda hw: hw[0] * hw[1])
    options = ExportOptions(min_shape="16x16", opt_shape=f"{height}x{width}", max_shape=f"{height}x{width}",
                            shapes=sizes, graphs={})
    exported: dict[tuple[str, str], tuple[dict, float | None]] = {}
    jobs = []
    for name in chosen:
        backend = known[name]
        source = {"model": spec.model, "scale": net.info.scale, "weights": spec.weights, "options": spec.options,
                  "model_args": spec.model_args}
        drop = None
        if backend.needs_artifact and not unavailable(backend):
            key = (backend.target, backend.precision)  # openvino-bf16 runs the FP32 IR
            if key not in exported:
                exported[key] = _export(net, backend, options, work / "artifacts", progress)
            artifact, drop = exported[key]
            source = {**source, **artifact}
        jobs.append((name, source, drop))
    return jobs, (net.info.name, net.info.scale, net.info.channels)


def _export(net, backend: BenchBackend, options: ExportOptions, folder: Path,
            progress: bool) -> tuple[dict, float | None]:
    """The artifact a backend runs ({"artifact": path} or {"unavailable": why}) and its held-out drop, through
    its target's exporter (an INT8 graph searched once for every target)."""
    from dataclasses import replace

    from ..runtime.opener import open_artifact

    target = targets()[backend.target]
    try:
        result = target.export(net, replace(options, precision=backend.precision), folder, Progress(progress))
    except SrDeployError as exc:
        return {"unavailable": f"the {target.title} {backend.precision} export failed its gate: {exc}"}, None
    drop = None if backend.precision == "fp32" else result.report.drop_db
    path = result.artifacts[0]
    return {"artifact": str(path), **recorded_macs(open_artifact(path, run=False).metadata)}, drop


def recorded_macs(metadata: dict[str, str]) -> dict:
    """{"macs_per_output_pixel": …} that an artifact records for its own graph (export rewrites can make it
    less than the architecture's); {} where it records none (Core ML packages run the traced PyTorch model)."""
    value = metadata.get("macs_per_output_pixel")
    return {} if value is None else {"macs_per_output_pixel": float(value)}
