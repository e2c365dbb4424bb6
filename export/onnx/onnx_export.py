"""PyTorch → ONNX: torch.export-based tracing with symbolic batch/height/width, onnxsim simplification
checked on ONNX Runtime, exact rewrites (``graph_rewrite``), ``onnx.checker``, a check against PyTorch,
provenance in ``metadata_props``, atomic write.

Why the torch.export (dynamo) exporter: it captures the whole program with symbolic shapes and checks
the bounds it is given (a data-dependent Python branch fails loudly instead of being frozen), and it is
the exporter PyTorch maintains. The legacy TorchScript exporter traces one concrete run: control flow
on tensor values would be baked in for the example input, and dynamic axes are only declared after the
fact (``dynamic_axes``), not checked.
"""
from __future__ import annotations

import io
import json
import logging
import warnings
from contextlib import contextmanager, redirect_stderr
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnx
import torch

from .graph_rewrite import merge_shared_branches, tensorrt86_gate
from .onnx_macs import onnx_macs_per_output_pixel
from ..failures import onnx_failure, user_frame
from ...models.loading import SrModel
from ...models.registry import ExportConfig
from ...runtime import digest
from ...runtime.atomic import atomic_path
from ...runtime.cpu import threads_cap
from ...runtime.errors import SrDeployError

SRDEPLOY_VERSION = "0.1.0"


def _trace(model: SrModel, config: ExportConfig) -> onnx.ModelProto:
    info = model.info
    example = torch.rand(2, info.channels, config.trace_size, config.trace_size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=config.min_batch, max=config.max_batch)
    height = torch.export.Dim("height", min=config.min_size, max=config.max_size)
    width = torch.export.Dim("width", min=config.min_size, max=config.max_size)
    shapes = ({0: batch, 2: height, 3: width},)
    # The exporter logs a line per torchvision op it cannot register (none of them is used here), and a failed
    # trace logs its graph before raising: the failure is reported in one line instead.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), _no_warning_logs():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                model.network, (example,), dynamo=True, dynamic_shapes=shapes, input_names=[config.input_name],
                output_names=[config.output_name], opset_version=config.opset, verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - torch.export and the exporter raise many types
            raise SrDeployError(onnx_failure(info.name, exc, partial(_locate, model, example, shapes))) from None
    return program.model_proto


@contextmanager
def _no_warning_logs() -> Iterator[None]:
    """Log records of WARNING and below dropped, and stderr held back, for the duration (torch's loggers set
    their own levels; a failed trace prints its graph)."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(previous)


def _locate(model: SrModel, example: torch.Tensor, shapes: tuple, op: str) -> str | None:
    """Where the first node calling ``op`` comes from in the network's source (a failed export's diagnosis)."""
    try:
        program = torch.export.export(model.network, (example,), dynamic_shapes=shapes, strict=False)
    except Exception:  # noqa: BLE001 - then the exporter's own message has to do
        return None
    return next((user_frame(node.meta.get("stack_trace", "")) for node in program.graph.nodes
                 if op in str(node.target)), None)


def cpu_session(proto: onnx.ModelProto):
    """An ONNX Runtime CPU session of an in-memory graph, quiet below errors."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads_cap() or 0  # 0: ONNX Runtime's own default
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def proto_infer(proto: onnx.ModelProto) -> Callable[[np.ndarray], np.ndarray]:
    """``infer(x)`` over one ONNX Runtime CPU session of ``proto``: its first output, as float32."""
    session = cpu_session(proto)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0].astype(np.float32, copy=False)


def run_proto(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """One run of ``proto`` on ``x`` (a fresh session; use ``proto_infer`` for repeated runs)."""
    return proto_infer(proto)(x)


def simplify(proto: onnx.ModelProto, probe: np.ndarray, rtol: float) -> tuple[onnx.ModelProto, bool]:
    """onnxsim, kept only if ONNX Runtime gives the same output before and after; else the original."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception as exc:  # noqa: BLE001 - onnxsim raises anything from its C++ core
        warnings.warn(f"onnxsim failed ({exc}); keeping the unsimplified graph", stacklevel=2)
        return proto, False
    before, after = run_proto(proto, probe), run_proto(simplified, probe)
    if not ok or np.abs(before - after).max() > rtol * np.abs(before).max():
        warnings.warn("onnxsim changed the outputs; keeping the unsimplified graph", stacklevel=2)
        return proto, False
    return simplified, True


def metadata(model: SrModel, config: ExportConfig, simplified: bool,
             rewrites: dict[str, int] | None = None, macs_per_output_pixel: float | None = None) -> dict[str, str]:
    info = model.info
    entries = {
        "srdeploy.model": info.name,
        "srdeploy.scale": str(info.scale),
        "srdeploy.channels": str(info.channels),
        "srdeploy.colour": info.colour,
        "srdeploy.value_range": "0,1",
        "srdeploy.precision": "fp32",
        "srdeploy.checkpoint_sha256": info.checkpoint_sha256,
        "srdeploy.layout": info.layout,
        "srdeploy.options": json.dumps(info.options, sort_keys=True),
        "srdeploy.eval_rounding": info.eval_rounding,
        "srdeploy.shape_bounds": json.dumps(config.shape_bounds(info.channels)),
        "srdeploy.export_config": json.dumps(asdict(config), sort_keys=True),
        "srdeploy.simplified": str(simplified).lower(),
        # an output pixel depends on the whole image (tiling then takes the gate's decision once, on the whole)
        "srdeploy.global_gate": str(model.has_global_gate).lower(),
        "srdeploy.version": SRDEPLOY_VERSION,
        "srdeploy.torch_version": torch.__version__,
    }
    if info.source is not None:  # your own network: where parity finds it again
        entries["srdeploy.source"] = json.dumps(info.source, sort_keys=True)
    if rewrites is not None:
        entries["srdeploy.rewrites"] = json.dumps(rewrites, sort_keys=True)
    if macs_per_output_pixel is not None:
        entries["srdeploy.macs_per_output_pixel"] = repr(macs_per_output_pixel)
    return entries


def to_onnx(model: SrModel) -> onnx.ModelProto:
    """A loaded model (``models.load``) as a checked FP32 ONNX graph with symbolic N, H, W and metadata."""
    info = model.info
    config = info.export
    proto = _trace(model, config)
    probe = np.random.default_rng(0).random((1, info.channels, 19, 23), dtype=np.float32)
    proto, simplified = simplify(proto, probe, config.fp32_rtol)
    rewrites = {"merge_shared_branches": merge_shared_branches(proto), "tensorrt86_gate": tensorrt86_gate(proto)}
    onnx.checker.check_model(proto, full_check=True)
    with torch.inference_mode():
        expected = model(torch.from_numpy(probe)).numpy()
    error = np.abs(run_proto(proto, probe) - expected).max()
    if error > config.fp32_rtol * np.abs(expected).max():
        raise SrDeployError(f"ONNX export of {info.name} ×{info.scale} differs from PyTorch by {error:.3g}: not written")
    set_metadata(proto, metadata(model, config, simplified, rewrites, onnx_macs_per_output_pixel(proto, info.scale)))
    return proto


def set_metadata(proto: onnx.ModelProto, entries: dict[str, str]) -> None:
    """Add or replace ``metadata_props`` entries."""
    existing = {p.key: p.value for p in proto.metadata_props}
    onnx.helper.set_model_props(proto, {**existing, **entries})


def portable(proto: onnx.ModelProto, colour: str) -> onnx.ModelProto:
    """The graph for runtimes without control flow (OpenCV's DNN module, which C++ and mobile apps use; ONNX
    consumers that reject ``If``): a whole-image gate's ``If`` as a per-image select
    (``runtime.global_gate.select_form``), recorded as ``srdeploy.portable``. Checked on ONNX Runtime against the
    ``If`` graph on crops of a held-out photo (a batch of two: each image decides for itself) before it is
    returned."""
    from ...calib.data import held_out_photo
    from ...runtime.global_gate import select_form

    photo = held_out_photo(colour)[:, :64, :64]
    probe = np.stack([photo, photo[:, ::-1, ::-1]])

    if any(node.op_type == "If" for node in proto.graph.node):
        result = select_form(proto)
        half = proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
        probe = probe.astype(np.float16 if half else np.float32)
        expected, found = run_proto(proto, probe), run_proto(result, probe)
        if not np.abs(found - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max())):
            raise SrDeployError("the If-free (portable) graph computes other outputs than the exported one: "
                                "export without --portable")
    else:
        result = onnx.ModelProto.FromString(proto.SerializeToString())
    set_metadata(result, {"srdeploy.portable": "true"})
    return result


def save(proto: onnx.ModelProto, path: str | Path) -> Path:
    """Write atomically (temporary file + rename), sealed with the sha256 of its own bytes
    (``runtime.digest``: every session checks it on open)."""
    sealed = onnx.ModelProto()
    sealed.CopyFrom(proto)
    entries = [p for p in sealed.metadata_props if p.key != digest.KEY]
    del sealed.metadata_props[:]
    sealed.metadata_props.extend(entries)
    sealed.metadata_props.add(key=digest.KEY, value=digest.PLACEHOLDER.decode())
    with atomic_path(path) as tmp:
        tmp.write_bytes(digest.seal(sealed.SerializeToString()))
    return Path(path)


def export_onnx(model: SrModel, path: str | Path) -> Path:
    """Export a loaded model to an FP32 ONNX file (see ``to_onnx``)."""
    return save(to_onnx(model), path)
