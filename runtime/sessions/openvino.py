"""OpenVINO backend: ``OpenVinoSession(path).infer(x)`` — numpy and openvino only, never torch.

Opens OpenVINO IR (``.xml`` + ``.bin`` from ``export --target openvino``) and any of our ``.onnx`` artifacts.
OpenVINO compiles the Q/DQ pairs of an INT8 graph into u8/i8 convolutions, as TensorRT's explicit
quantization does; ``executed_precisions`` reads the compiled model back and says, per convolution, in
which precision it runs. The inference precision is always set (OpenVINO would pick bf16 by itself on
CPUs with AVX-512 BF16 or AMX), and compiled models are cached so a second open does not recompile.
"""
from __future__ import annotations

import json
import re
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import digest
from ..artifact import ArtifactSession, refuse_external_data, srdeploy_metadata
from ..cpu import threads_cap
from ..errors import SrDeployError, command
from ..global_gate import DECISION_OP, GateSplit

INFERENCE_PRECISIONS = ("f32", "bf16", "f16")
CONV_TYPES = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData")
INTEGER = ("u8", "i8")
RT_SECTION = "srdeploy"  # the IR's rt_info section holding the srdeploy metadata
FIX = f"re-export it with {command('export --target openvino')}"


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise SrDeployError("OpenVINO is not installed: pip install openvino (or pip install -e '.[openvino]')") from None
    return openvino


def unavailable(inference_precision: str = "f32", **_) -> str | None:
    """Why OpenVINO cannot run here at ``inference_precision``, or None."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return "OpenVINO is not installed: pip install openvino"
    if not cpu_supports(inference_precision):
        return f"this CPU has no native {inference_precision} (OpenVINO would compute in f32)"
    return None


def compile_cache_dir() -> Path:
    """Where OpenVINO keeps compiled models: beside the checkpoint cache (``$SRDEPLOY_CACHE_DIR``)."""
    from ..cache import cache_root

    return cache_root() / "openvino"


# ---- IR files: metadata and the digest over both files -------------------------------------------

_IR_DIGEST = re.compile(rb'<sha256 value="([^"]{64})"')


def ir_weights(xml: Path) -> Path:
    return xml.with_suffix(".bin")


def seal_ir(xml: bytes, weights: bytes) -> bytes:
    """``xml`` (holding the digest placeholder once) with the sha256 of xml + weights in its place."""
    return digest.seal(xml, extra=weights)


def check_ir(xml_path: Path) -> None:
    """A one-line error unless the IR's .xml and .bin are the pair the export sealed."""
    weights = ir_weights(xml_path)
    if weights.exists() and weights.resolve().parent != xml_path.resolve().parent:  # both linked alike is fine
        raise SrDeployError(f"artifact {xml_path}: {weights.name} is a link out of its folder: refused unread; {FIX}")
    if not weights.is_file():
        raise SrDeployError(f"artifact {xml_path} has no weights file {weights.name} beside it: {FIX}")
    xml = xml_path.read_bytes()
    found = [m for m in _IR_DIGEST.finditer(xml)]
    if len(found) != 1:
        raise SrDeployError(f"artifact {xml_path} carries no srdeploy digest (damaged, or not exported by this "
                            f"srdeploy version): {FIX}")
    digest.verify(xml, found[0].start(1), xml_path, FIX, extra=weights.read_bytes())


def _rt_metadata(model) -> dict[str, str]:
    """srdeploy metadata of a model OpenVINO read: our IR's ``srdeploy`` section, or an ONNX file's
    ``metadata_props`` (OpenVINO puts them under ``framework``)."""
    info = model.get_rt_info()
    for section in (RT_SECTION, "framework"):
        if section in info.keys() and isinstance(info[section], dict):
            # values only: a nested section, which a crafted IR may hold (found by fuzzing), is no metadata of ours
            pairs = [(k, v.astype(str)) for k, v in info[section].items() if hasattr(v, "astype")]
            return dict(pairs) if section == RT_SECTION else srdeploy_metadata(pairs)
    return {}


# ---- what the compiled model executes --------------------------------------------------------------

@dataclass
class ExecutedConv:
    name: str  # the convolution's name in the graph OpenVINO read
    layer: str  # the compiled layer it runs in (Convolution, Deconvolution, ...)
    precision: str  # the precision the compiled layer computes in: u8/i8 (integer kernels), f32, bf16, f16
    macs_per_output_pixel: float


@dataclass
class ExecutedPrecisions:
    """Per convolution, the precision the compiled model runs it in; the shares of conv MACs."""

    inference_precision: str
    convs: list[ExecutedConv]
    qdq_mac_fraction: float | None  # what the export put between Q/DQ pairs (None: a float artifact)

    @property
    def int8_mac_fraction(self) -> float:
        total = sum(c.macs_per_output_pixel for c in self.convs)
        return sum(c.macs_per_output_pixel for c in self.convs if c.precision in INTEGER) / total if total else 0.0

    def summary(self) -> str:
        claimed = "" if self.qdq_mac_fraction is None else f" ({self.qdq_mac_fraction:.1%} carry Q/DQ)"
        return (f"OpenVINO runs {self.int8_mac_fraction:.1%} of conv MACs in u8/i8{claimed}, "
                f"{self.inference_precision} inference precision")

    def as_dict(self) -> dict:
        return {"inference_precision": self.inference_precision, "int8_mac_fraction": self.int8_mac_fraction,
                "qdq_mac_fraction": self.qdq_mac_fraction, "convs": [asdict(c) for c in self.convs]}


def conv_macs(model, channels: int, size: int = 64, scale: int = 1) -> dict[str, float]:
    """MACs per output pixel of each convolution of ``model``, by name (shapes from a ``size``² input)."""
    static = model.clone()
    static.reshape({0: [1, channels, size, size]})
    pixels = size * size * scale * scale
    names = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() in CONV_TYPES]
    # a clone gets new generated names (an unnamed ConvolutionBackpropData_N): matched by position instead
    convs = [op for op in static.get_ordered_ops() if op.get_type_name() in CONV_TYPES]
    macs = {}
    for name, op in zip(names, convs, strict=True):
        kind = op.get_type_name()
        weight = list(op.input(1).get_shape())
        per_tap = np.prod(weight[2 if kind.startswith("Group") else 1:])
        if kind.endswith("BackpropData"):  # every input pixel is scattered through the kernel
            count = np.prod(op.input(0).get_shape()) * per_tap
        else:  # every output pixel gathers from the kernel
            count = np.prod(op.output(0).get_shape()) * per_tap
        macs[name] = float(count) / pixels
    return macs


def _name_convolutions(model) -> None:
    """Give each convolution OpenVINO named by a counter (an unnamed ``ConvolutionBackpropData_26506``) a
    name from its position, the same in every process: the compiled model, from the cache or not, reports
    the names of the layers it fused, and ``conv_macs`` finds them."""
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() in CONV_TYPES]
    for i, op in enumerate(convs):
        if re.fullmatch(rf"{op.get_type_name()}_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{op.get_type_name()}.{i}")


def executed_convs(compiled, macs: dict[str, float]) -> list[ExecutedConv]:
    """The convolutions of ``macs`` as the compiled model runs them (matched through the names of the
    layers each compiled layer fused)."""
    found = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        for name in info["originalLayersNames"].astype(str).split(","):
            if name in macs:
                found.append(ExecutedConv(name, info["layerType"].astype(str), info["runtimePrecision"].astype(str),
                                          macs[name]))
    missing = set(macs) - {c.name for c in found}
    if missing:
        raise SrDeployError(f"OpenVINO's compiled model does not show where convolution {sorted(missing)[0]} runs: "
                            "this OpenVINO version names layers differently; please report it")
    return found


def compile_config(inference_precision: str = "f32", threads: int | None = None, cache: bool = True,
                   throughput: bool = False) -> dict:
    """OpenVINO's CPU settings: the inference precision always explicit (bf16 CPUs would default to bf16), the
    performance hint (latency: one request at a time as fast as it goes; ``throughput``: CPU streams, several
    requests in flight), the compile cache."""
    config = {"INFERENCE_PRECISION_HINT": inference_precision,
              "PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
    threads = threads or threads_cap()
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if cache:
        config["CACHE_DIR"] = str(compile_cache_dir())
    return config


class ShapeCompiled:
    """A model run on OpenVINO: compiled once with its dynamic shapes, or, where it holds an ``If``, once per
    input shape, reshaped to it: OpenVINO 2026.4's CPU plugin returns wrong values from a dynamic-shape ``If``
    (DSRNet's gate: max |error| 0.26 on the first inference at 64×64, garbage at 32×32; correct when static).
    Callable from several threads at once: each thread runs its own infer request (OpenVINO's requests are not
    thread-safe; the compiled model is)."""

    def __init__(self, model, compile_model, compiled=None):
        self.model, self.compile_model = model, compile_model
        self.per_shape = any(op.get_type_name() == "If" for op in model.get_ordered_ops())
        self.compiled: dict[tuple | None, object] = {} if self.per_shape else {None: compiled or compile_model(model)}
        self._compiling = threading.Lock()
        self._requests = threading.local()

    def _request(self, shapes: tuple | None):
        requests = self._requests.__dict__.setdefault("by_shape", {})
        if shapes not in requests:
            with self._compiling:
                if shapes not in self.compiled:
                    static = self.model.clone()
                    static.reshape({i: list(shape) for i, shape in enumerate(shapes)})
                    self.compiled[shapes] = self.compile_model(static)
                requests[shapes] = self.compiled[shapes].create_infer_request()
        return requests[shapes]

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        request = self._request(tuple(a.shape for a in inputs) if self.per_shape else None)
        request.infer(list(inputs))
        return [request.get_output_tensor(i).data for i in range(len(self.model.outputs))]


def proto_infer(proto, inference_precision: str = "f32"):
    """``infer(x)`` of an in-memory ONNX graph on OpenVINO's CPU plugin (measurements; no file, no cache)."""
    ov = import_openvino()
    core = ov.Core()
    config = compile_config(inference_precision, None, False)
    run = ShapeCompiled(core.read_model(proto.SerializeToString()), lambda model: core.compile_model(model, "CPU", config))
    return lambda x: run(np.ascontiguousarray(x, dtype=np.float32))[0].astype(np.float32, copy=True)


# ---- cutting a global gate (runtime.global_gate) -------------------------------------------------

def split_model(model) -> tuple[object, object, object]:
    """(features, decide, forced) models of a globally gated network, cut where ``global_gate.gate_parts`` cuts ONNX."""
    ov = import_openvino()

    def only(graph, op_type: str):  # OpenVINO reads ONNX's GlobalAveragePool and ReduceMean as ReduceMean
        found = [op for op in graph.get_ordered_ops() if op.get_type_name() == op_type]
        if len(found) != 1:
            raise SrDeployError(f"the model has {len(found)} {op_type} operations, not the one global gate srdeploy "
                                f"can cut: re-export it with {command('export')}")
        return found[0]

    features_graph = model.clone()
    features = ov.Model([only(features_graph, "ReduceMean").input_value(0)], features_graph.get_parameters(), "gate_features")
    decide_graph = model.clone()
    pool, decision = only(decide_graph, "ReduceMean"), only(decide_graph, DECISION_OP)
    mean = ov.opset13.parameter(pool.output(0).get_partial_shape(), pool.output(0).get_element_type(), "mean")
    pool.output(0).replace(mean.output(0))
    decide = ov.Model([decision.output(0)], [mean], "gate_decide")
    forced_graph = model.clone()
    decision = only(forced_graph, DECISION_OP)
    chosen = ov.opset13.parameter(decision.output(0).get_partial_shape(), decision.output(0).get_element_type(), "branch1")
    for target in list(decision.output(0).get_target_inputs()):
        target.replace_source_output(chosen.output(0))
    forced = ov.Model(forced_graph.outputs, [*forced_graph.get_parameters(), chosen], "gate_forced")
    return features, decide, forced


# ---- the session ---------------------------------------------------------------------------------

class OpenVinoSession(ArtifactSession):
    """An IR or ONNX artifact compiled by OpenVINO for the CPU, with its srdeploy metadata."""

    runtime_name = "OpenVINO"

    def __init__(self, path: str | Path, inference_precision: str | None = None, threads: int | None = None,
                 cache: bool = True, device: str = "CPU", run: bool = True, throughput: bool = False):
        ov = import_openvino()
        self.path = Path(path)
        if not self.path.is_file():
            raise SrDeployError(f"artifact {self.path} does not exist: export one with {command('export')}")
        if inference_precision is not None and inference_precision not in INFERENCE_PRECISIONS:
            raise SrDeployError(f"inference precision {inference_precision!r}: choose one of "
                                f"{', '.join(INFERENCE_PRECISIONS)}")
        if self.path.suffix.lower() == ".xml":
            check_ir(self.path)
        else:
            data = self.path.read_bytes()
            digest.check(data, self.path, f"re-export it with {command('export')}")
            refuse_external_data(data, self.path)  # OpenVINO reads an ONNX file's external data from disk
        core = ov.Core()
        try:
            self.model = core.read_model(self.path)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises untyped errors on bad files
            reason = str(exc).strip().splitlines()[0][:160]
            raise SrDeployError(f"artifact {self.path} cannot be read by OpenVINO ({reason}): {FIX}") from None
        try:
            _name_convolutions(self.model)
            self.metadata = _rt_metadata(self.model)
        except UnicodeDecodeError:  # found by fuzzing: bytes that are no UTF-8 in a layer's name or the metadata
            raise SrDeployError(f"artifact {self.path} has names or metadata that are not UTF-8 text: {FIX}") from None
        self.check_metadata()
        self.bounds = json.loads(self.metadata["shape_bounds"])
        # an artifact exported for an inference precision (bf16) computes in it unless told otherwise
        inference_precision = inference_precision or self.metadata.get("inference_precision", "f32")
        self.inference_precision = inference_precision
        if not run:  # metadata only
            return
        _warn_if_unvalidated(self.metadata, self.path)
        if self.metadata.get("inference_precision") == inference_precision != "f32" and not cpu_supports(inference_precision):
            warnings.warn(f"{self.path.name} was exported for {inference_precision}, which this CPU does not compute "
                          "natively: OpenVINO computes it in f32 here (slower, no less accurate)", stacklevel=3)
        config = compile_config(inference_precision, threads, cache, throughput)
        self._compile = lambda model: core.compile_model(model, device, config)
        self.compiled = self._compile(self.model)
        self._run = ShapeCompiled(self.model, self._compile, self.compiled)
        if throughput:  # OpenVINO's CPU streams: as many requests in flight as it says keep them busy
            self.in_flight = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        # what OpenVINO compiled for, read back: the record of every report
        self.compiled_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """N×C×H×W in [0, 1] → float32 N×C×(s·H)×(s·W)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.check_input(x)
        return self._run(x)[0].astype(np.float32, copy=True)

    def gate_split(self) -> GateSplit:
        """The gate's features, decision and forced model cut from this one (``runtime.global_gate``)."""
        features, decide, forced = (ShapeCompiled(part, self._compile) for part in split_model(self.model))
        mean_rank = decide.model.input(0).get_partial_shape().rank.get_length()  # N×C, or N×C×1×1
        return GateSplit(lambda x: features(np.ascontiguousarray(x, dtype=np.float32))[0],
                         lambda mean: decide(mean.astype(np.float32).reshape(*mean.shape, *[1] * (mean_rank - 2)))[0].copy(),
                         lambda x, chosen: forced(np.ascontiguousarray(x, dtype=np.float32), chosen.astype(bool))[0])

    def executed_precisions(self) -> ExecutedPrecisions:
        """Per convolution, the precision the compiled model executes it in."""
        macs = conv_macs(self.model, self.channels, scale=self.scale)
        claimed = self.metadata.get("int8_mac_fraction") or None
        return ExecutedPrecisions(self.compiled_precision, executed_convs(self.compiled, macs),
                                  None if claimed is None else float(claimed))


def _warn_if_unvalidated(metadata: dict[str, str], path: Path) -> None:
    """Warn when INT8 runs on a CPU that adds int8 products pairwise in int16 (no VNNI), and the artifact's
    accuracy was not measured on such a CPU: the sums can saturate (FSRCNN ×2 loses 0.5 dB on an AVX2 EPYC)."""
    from ..cpu import int8_dot

    if metadata.get("precision") != "int8" or int8_dot() != "pairwise-int16":
        return
    validated = json.loads(metadata.get("openvino_report") or "{}").get("int8_dot")
    if validated != "pairwise-int16":
        warnings.warn(f"{path.name} is INT8 and this CPU has no VNNI: OpenVINO adds int8 products pairwise in int16, "
                      f"which can saturate, and its accuracy was measured {'on a ' + validated + ' CPU' if validated else 'on ONNX Runtime'}"
                      f": check it here with {command(f'parity {path.name} --backend openvino')}", stacklevel=3)


def cpu_supports(precision: str) -> bool:
    """Whether this machine's CPU computes ``precision`` natively (OpenVINO's capability list)."""
    ov = import_openvino()
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}[precision] in capabilities

