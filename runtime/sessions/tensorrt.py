"""TensorRT backend: ``TrtSession(path).infer(x)`` with the same interface as ``OnnxSession``.

numpy + tensorrt (+ libcudart through ``runtime.sessions.cuda``), never torch. The engine's sidecar is checked
before TensorRT sees the file: an engine built for another TensorRT version, GPU or compute capability
is refused with the reason and the rebuild command. One explicit non-blocking CUDA stream; device and
pinned host buffers are allocated for the largest shape seen and reused; with ``cuda_graphs=True`` each
input shape's enqueue is captured once into a CUDA graph and replayed (a shape whose capture fails runs
with plain enqueues, and says so).
"""
from __future__ import annotations

import ctypes
import warnings
from pathlib import Path

import numpy as np

from ..artifact import ArtifactSession
from .cuda import DEVICE_TO_HOST, HOST_TO_DEVICE, Cuda
from ..errors import SrDeployError, command
from ..global_gate import GateSplit, parts_split
from .tensorrt_sidecar import BuildTarget, incompatibility, read_sidecar

INSTALL_HINT = (
    "on an x86-64 machine with an NVIDIA GPU `pip install tensorrt` (10.x or newer); on a Jetson it comes with "
    "JetPack (`sudo apt install python3-libnvinfer`)"
)


def require_tensorrt():
    """``import tensorrt``, or a one-line error saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise SrDeployError(
            f"TensorRT's Python package is not installed here ({exc}): {INSTALL_HINT}; "
            f"{command('export --target jetson')} builds a device bundle without it"
        ) from None
    return tensorrt


def unavailable(**_) -> str | None:
    """Why TensorRT cannot run here (its package, a GPU with its driver), or None."""
    try:
        require_tensorrt()
        Cuda()
    except SrDeployError as exc:
        return str(exc).split(":")[0]
    return None


def current_target(trt, cuda: Cuda) -> BuildTarget:
    return BuildTarget(trt.__version__, cuda.device_name(), cuda.compute_capability())


class _Buffer:
    """A device allocation and its pinned host twin, grown (never shrunk) to the largest request."""

    def __init__(self, cuda: Cuda):
        self.cuda, self.capacity, self.device, self.host = cuda, 0, 0, 0

    def reserve(self, nbytes: int) -> bool:
        """Ensure ``nbytes``; True when the addresses changed (captured graphs are then stale)."""
        if nbytes <= self.capacity:
            return False
        self.release()
        device = self.cuda.malloc(nbytes)
        try:
            self.host = self.cuda.malloc_host(nbytes)
        except BaseException:
            self.cuda.free(device)
            raise
        self.device, self.capacity = device, nbytes
        return True

    def host_array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        count = int(np.prod(shape))
        raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(self.host)
        return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)

    def release(self) -> None:
        if self.capacity:
            self.cuda.free(self.device)
            self.cuda.free_host(self.host)
            self.capacity = 0


class TrtSession(ArtifactSession):
    """A TensorRT engine with its sidecar, ready to run on this machine's GPU."""

    runtime_name = "TensorRT"

    def __init__(self, path: str | Path, cuda_graphs: bool = False, device: int = 0):
        self.path = Path(path)
        self.record = read_sidecar(self.path)
        trt = require_tensorrt()
        self.cuda, self.device = Cuda(device), device
        reason = incompatibility(self.record, current_target(trt, self.cuda))
        if reason:
            raise SrDeployError(reason)
        self.metadata = dict(self.record["metadata"])
        self.check_metadata()
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise SrDeployError(f"TensorRT could not load engine {self.path}: rebuild it with `{self.record.get('rebuild')}`")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise SrDeployError(f"engine {self.path} has inputs {inputs} and outputs {outputs}: expected one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        self.input_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        self.output_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(self.output_name)))
        low, _, high = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.bounds = {"min": list(low), "max": list(high)}
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.cuda_graphs = cuda_graphs
        self._input, self._output = _Buffer(self.cuda), _Buffer(self.cuda)
        self._graphs: dict[tuple[int, ...], int] = {}  # 0: capture failed, plain enqueue
        self.graph_fallbacks: dict[tuple[int, ...], str] = {}

    def infer(self, x: np.ndarray) -> np.ndarray:
        """N×C×H×W in [0, 1] → float32 N×C×(s·H)×(s·W), within the engine's optimization profile."""
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        self.check_input(x)
        if not self.context.set_input_shape(self.input_name, x.shape):
            raise SrDeployError(f"TensorRT rejected input shape {x.shape} for {self.path.name}")
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        moved = self._input.reserve(x.nbytes)
        moved |= self._output.reserve(int(np.prod(out_shape)) * self.output_dtype.itemsize)
        if moved:
            self._drop_graphs()
            for name, buffer in ((self.input_name, self._input), (self.output_name, self._output)):
                if not self.context.set_tensor_address(name, buffer.device):
                    raise SrDeployError(f"TensorRT refused the device address of tensor {name!r} of {self.path.name}")
        self._input.host_array(x.shape, self.input_dtype)[...] = x
        self.cuda.copy_async(self._input.device, self._input.host, x.nbytes, HOST_TO_DEVICE, self.stream)
        self._enqueue(x.shape)
        out_bytes = int(np.prod(out_shape)) * self.output_dtype.itemsize
        self.cuda.copy_async(self._output.host, self._output.device, out_bytes, DEVICE_TO_HOST, self.stream)
        self.cuda.synchronize(self.stream)
        return self._output.host_array(out_shape, self.output_dtype).astype(np.float32)

    def device_memory_mb(self) -> float:
        """Device memory in use now (the driver's count: this process and any other)."""
        free, total = self.cuda.memory_info()
        return (total - free) / 2**20

    def gate_split(self) -> GateSplit:
        """The gate's part engines its sidecar lists (``runtime.global_gate.gate_parts``), for tiles that share the
        whole image's decision; an engine built without them is refused (one line: rebuild, or --tile 0)."""
        parts = self.record.get("gate_parts")
        if not parts:
            raise SrDeployError(f"{self.path.name} was built without the gate parts that let tiles share the whole "
                                f"image's decision: rebuild it with `{self.record.get('rebuild')}`, or upscale with "
                                "--tile 0 (whole image)")
        sessions = {name: TrtSession(self.path.with_name(file), self.cuda_graphs, self.device)
                    for name, file in parts.items()}
        return parts_split({name: session.infer for name, session in sessions.items()})

    def _execute(self, shape: tuple[int, ...]) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise SrDeployError(f"TensorRT failed to run {self.path.name} on input {shape}")

    def _enqueue(self, shape: tuple[int, ...]) -> None:
        """Plain enqueue, or the shape's CUDA graph: captured on first use, as trtexec does, with a plain
        enqueue for good when the capture fails (recorded in ``graph_fallbacks`` and warned once)."""
        if self.cuda_graphs and shape not in self._graphs:
            # one plain enqueue after a shape change lets TensorRT settle its state before capture
            self._execute(shape)
            self.cuda.synchronize(self.stream)
            try:
                self._graphs[shape] = self.cuda.capture(self.stream, lambda: self._execute(shape))
            except SrDeployError as exc:
                self._graphs[shape] = 0
                self.graph_fallbacks[shape] = str(exc)
                warnings.warn(f"{self.path.name}: no CUDA graph for input {shape} ({exc}); plain enqueues instead",
                              stacklevel=3)
        if self._graphs.get(shape):
            self.cuda.launch(self._graphs[shape], self.stream)
        else:
            self._execute(shape)

    def _drop_graphs(self) -> None:
        for graph in self._graphs.values():
            if graph:
                self.cuda.destroy_graph(graph)
        self._graphs.clear()

    def close(self) -> None:
        """Free the CUDA resources now (also done when the session is garbage-collected)."""
        if getattr(self, "stream", None):
            self.cuda.synchronize(self.stream)
            self._drop_graphs()
            self._input.release()
            self._output.release()
            self.cuda.destroy_stream(self.stream)
            self.stream = 0

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown may have unloaded libcudart already
            pass
