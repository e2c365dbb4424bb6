"""The TensorRT engine builder (TensorRT 10/11 Python API; 8.x weakly typed), its engine cache, and the
``--target trt`` export: build, check parity on the GPU against PyTorch, write engine + sidecar.

Everything TensorRT is asked to do comes from a ``BuildPlan`` (``export.trt.trt_plan``), the same value the
Jetson bundle's ``trtexec`` command line is rendered from.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .trt_plan import BuildPlan
from ...runtime.cache import cache_dir
from ...runtime.artifact import srdeploy_metadata
from ...runtime.atomic import atomic_path, scratch_dir
from ...runtime.sessions.cuda import Cuda
from ...runtime.errors import SrDeployError
from ...runtime.precision import Precision
from ...runtime.sessions.tensorrt import TrtSession, current_target, require_tensorrt
from ...runtime.sessions.tensorrt_sidecar import BuildTarget, file_sha256, sidecar_path, update_sidecar, write_sidecar

if TYPE_CHECKING:  # torch stays unimported until a model is built
    from ...models.loading import SrModel

MIN_TENSORRT = (8, 6)  # builder optimization levels and the ONNX parser's per-node errors


def check_version(trt) -> None:
    found = tuple(int(part) for part in trt.__version__.split(".")[:2])
    if found < MIN_TENSORRT:
        raise SrDeployError(f"TensorRT {trt.__version__} is older than 8.6, which srdeploy needs: upgrade TensorRT "
                            "(JetPack 6 ships 8.6 or 10.3)")


def supports_strong_typing(trt) -> bool:
    """TensorRT 9.1+ has strongly typed networks (and 11 has nothing else)."""
    return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")


def engine_cache_key(onnx_sha256: str, plan: BuildPlan, target: BuildTarget) -> str:
    """Engines are reusable only for the same ONNX, precision, profile, builder settings, TensorRT and GPU."""
    settings = {**plan.as_dict(), "timing_cache": None}  # where the timing cache lives changes no engine
    key = {"graph": onnx_sha256, "plan": settings, "target": vars(target)}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def engines_dir() -> Path:
    return cache_dir().parent / "engines"


def timing_cache_path(target: BuildTarget) -> Path:
    """One persistent timing cache per TensorRT version and GPU (the only place its timings hold)."""
    slug = "".join(c if c.isalnum() else "-" for c in f"{target.tensorrt_version}_{target.gpu_name}_{target.compute_capability}")
    return cache_dir().parent / "trt" / f"timing_{slug}.cache"


def _parser_errors(parser) -> str:
    """The ONNX parser's errors, one per node: "node 12 (Conv /head/conv): description"."""
    found = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node_name = getattr(error, "node_name", lambda: "")()
        operator = getattr(error, "node_operator", lambda: "")()
        found.append(f"node {error.node()} ({operator} {node_name}): {error.desc()}".replace("( ", "("))
    return "; ".join(found)


def build_engine(onnx_path: Path, plan: BuildPlan, engine_path: Path) -> None:
    """Build ``plan``'s engine from ``onnx_path`` and write it atomically; the timing cache is read and updated."""
    trt = require_tensorrt()
    check_version(trt)
    settings = plan.settings()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if settings["strongly_typed"]:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # required before TensorRT 10
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise SrDeployError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {_parser_errors(parser)}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings["workspace_bytes"])
    config.builder_optimization_level = settings["optimization_level"]
    for flag in settings["builder_flags"]:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if settings["clear_tf32"]:
        config.clear_flag(trt.BuilderFlag.TF32)
    if settings["layer_precisions"]:
        _pin_layer_precisions(trt, network, config, settings["layer_precisions"])
    shapes = settings["profile"]
    profile = builder.create_optimization_profile()
    profile.set_shape(shapes["input_name"], shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache_file = Path(settings["timing_cache"])
    cache = config.create_timing_cache(cache_file.read_bytes() if cache_file.is_file() else b"")
    config.set_timing_cache(cache, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise SrDeployError(f"TensorRT could not build an engine from {onnx_path.name} (its log above says why)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(cache_file) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))


def _pin_layer_precisions(trt, network, config, precisions: dict[str, str]) -> None:
    """``trtexec --precisionConstraints=obey --layerPrecisions=…`` in the Python API (weakly typed builds)."""
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    types = {"fp32": trt.float32, "fp16": trt.float16}
    found = set()
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name in precisions:
            layer.precision = types[precisions[layer.name]]
            for j in range(layer.num_outputs):
                layer.set_output_type(j, types[precisions[layer.name]])
            found.add(layer.name)
    missing = sorted(set(precisions) - found)
    if missing:
        raise SrDeployError(f"no TensorRT layer is named {missing[0]} (of {len(missing)} FP32 layers to pin): "
                            "the ONNX parser named its layers differently; this is a bug, please report it")


def engine_parity(session: TrtSession, reference, inputs: dict[str, np.ndarray], tolerance, infer=None,
                  what: str = "") -> dict:
    """Run ``infer`` (default: the engine; ``what`` names another, e.g. its gate parts) and the reference on each
    input inside the profile; the parity report as a dict."""
    from ...runtime.parity import ParityReport, check_cases

    profile_inputs = {name: x for name, x in inputs.items() if session.accepts(x.shape)}
    report = ParityReport(f"{session.path}{what}", session.metadata.get("precision", "fp32"), tolerance)
    check_cases(infer or session.infer, {name: (x, reference(x)) for name, x in profile_inputs.items()}, report)
    return report.as_dict()


def _engine(onnx_proto, plan: BuildPlan, engine: Path, target: BuildTarget) -> str:
    """Build ``plan``'s engine of ``onnx_proto`` into ``engine`` (or take it from the engine cache); the ONNX's sha256."""
    from ..onnx.onnx_export import save

    onnx_path = save(onnx_proto, engine.with_suffix(".onnx"))
    onnx_sha = file_sha256(onnx_path)
    cached = engines_dir() / f"{engine_cache_key(onnx_sha, plan, target)}.engine"
    if cached.is_file():
        shutil.copyfile(cached, engine)
    else:
        build_engine(onnx_path, plan, engine)
        with atomic_path(cached) as tmp:
            shutil.copyfile(engine, tmp)
    return onnx_sha


def export_engine(onnx_proto, plan_for, out_dir: Path, stem: str, reference, inputs: dict[str, np.ndarray],
                  tolerance, rebuild: str) -> Path:
    """Build (or take from the engine cache) the engine of ``onnx_proto``, check its parity against
    ``reference`` on ``inputs``, and only then write ``STEM.engine`` + sidecar into ``out_dir``. A network whose
    gate reads the whole image (DSRNet) also gets its gate parts as engines, ``STEM.PART.engine``
    (``runtime.global_gate.gate_parts``), listed in the sidecar and checked composed, so that tiles share one
    decision.

    ``plan_for(strongly_typed, timing_cache)`` makes the plan once TensorRT's abilities are known."""
    from ...runtime.global_gate import gate_parts, one_decision

    trt = require_tensorrt()
    target = current_target(trt, Cuda())
    plan = plan_for(supports_strong_typing(trt), str(timing_cache_path(target)))
    out_dir.mkdir(parents=True, exist_ok=True)
    work = scratch_dir(out_dir, stem)
    try:
        if plan.fp16_float_onnx:  # strongly typed: the FP16 float parts must be FP16 in the graph itself
            from ..onnx.fp16 import int8_with_fp16_float

            onnx_proto = int8_with_fp16_float(onnx_proto, list(plan.fp32_layers))
        metadata = srdeploy_metadata((p.key, p.value) for p in onnx_proto.metadata_props)
        engine = work / f"{stem}.engine"
        parts = gate_parts(onnx_proto) if metadata.get("global_gate") == "true" else {}
        built = {engine: (onnx_proto, plan), **{work / f"{stem}.{name}.engine": (part, plan.for_gate_part(name, part))
                                                for name, part in parts.items()}}
        for path, (proto, engine_plan) in built.items():
            write_sidecar(path, target, precision=engine_plan.precision, plan=engine_plan.as_dict(),
                          onnx_sha256=_engine(proto, engine_plan, path, target),
                          metadata=srdeploy_metadata((p.key, p.value) for p in proto.metadata_props), rebuild=rebuild,
                          built_by="srdeploy python builder", parity=None)
        if parts:
            update_sidecar(engine, gate_parts={name: f"{stem}.{name}.engine" for name in parts})
        session = TrtSession(engine)
        parity = engine_parity(session, reference, inputs, tolerance)
        checks = [parity] + ([engine_parity(session, reference, inputs, tolerance, one_decision(session.gate_split()),
                                            " (gate parts)")] if parts else [])
        session.close()
        for check in checks:
            if not check["passed"]:
                case, problems = next(iter(check["violations"].items()))
                raise SrDeployError(f"the {plan.precision} engine{'' if check is parity else ' (gate parts)'} fails "
                                    f"parity against PyTorch on {case} ({'; '.join(problems)}): nothing written")
        update_sidecar(engine, parity=parity, **({"gate_parts_parity": checks[1]} if len(checks) > 1 else {}))
        for built_engine in built:
            os.replace(built_engine, out_dir / built_engine.name)
            os.replace(sidecar_path(built_engine), sidecar_path(out_dir / built_engine.name))
        return out_dir / engine.name
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_model_engine(model: SrModel, proto, precision: Precision, profile, out_dir: Path, stem: str, rebuild: str) -> Path:
    """``export_engine`` for a loaded model: its plan from ``profile``, parity against the model itself on the
    parity suite's inputs (held-out photo crops for INT8, whose ranges are calibrated on photos)."""
    from ...calib.data import held_out_photo
    from .trt_plan import BuildPlan
    from ...runtime.compare import TOLERANCES
    from ...runtime.parity import probe_inputs
    from ...models.torch_runner import TorchRunner

    photo = held_out_photo(model.info.colour) if precision == "int8" else None
    inputs = probe_inputs(model.info.channels, {"min": list(profile.min), "max": list(profile.max)}, photo=photo)
    metadata = srdeploy_metadata((p.key, p.value) for p in proto.metadata_props)
    return export_engine(proto, lambda strong, cache: BuildPlan.for_artifact(metadata, profile, strong, timing_cache=cache),
                         out_dir, stem, TorchRunner(model.network).infer, inputs, TOLERANCES[precision], rebuild)
