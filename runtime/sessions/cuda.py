"""The few CUDA runtime calls the TensorRT backend needs, through ctypes on ``libcudart``.

Why not cuda-python or PyCUDA: the device side must need only numpy + tensorrt (JetPack ships both,
and ``libcudart`` comes with every TensorRT install). Polygraphy wraps libcudart the same way for the
same reason. Every call is checked; a failing status becomes an error naming the call and CUDA's text.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from typing import Callable

from ..errors import SrDeployError

HOST_TO_DEVICE, DEVICE_TO_HOST = 1, 2  # cudaMemcpyKind
STREAM_NON_BLOCKING = 1  # cudaStreamNonBlocking
CAPTURE_MODE_THREAD_LOCAL = 1  # cudaStreamCaptureModeThreadLocal: other threads' CUDA calls do not break it
ATTR_CC_MAJOR, ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor/Minor
_PROPS_BYTES = 8192  # larger than cudaDeviceProp in every CUDA version; the name is its first field
_NAME_BYTES = 256


def _candidates() -> list[str]:
    """libcudart locations: $SRDEPLOY_CUDART, the loader's search path, pip's nvidia wheels, CUDA installs."""
    found = [os.environ.get("SRDEPLOY_CUDART", "")]
    found.append(ctypes.util.find_library("cudart") or "")
    found += ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    for root in sys.path:
        found += sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libcudart.so*")), reverse=True)
        found += sorted(glob.glob(os.path.join(root, "nvidia", "cuda_runtime", "lib", "libcudart.so*")), reverse=True)
    for root in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib", "/usr/lib/aarch64-linux-gnu"):
        found += sorted(glob.glob(os.path.join(root, "libcudart.so*")), reverse=True)
    return [name for name in dict.fromkeys(found) if name]


def load_cudart() -> ctypes.CDLL:
    """The first libcudart that loads *and* works with this machine's driver.

    A runtime newer than the driver loads fine and fails only at its first call (CUDA 13's libcudart beside
    a CUDA 12 driver: "CUDA driver version is insufficient"), so each candidate is asked for the device
    count before it is taken; the next one is tried when it cannot answer.
    """
    refusals = []
    for name in _candidates():
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        problem = _unusable(library)
        if problem is None:
            return library
        refusals.append(f"{name}: {problem}")
    if refusals:
        raise SrDeployError(
            f"no usable CUDA runtime ({'; '.join(refusals)}): check the NVIDIA driver (nvidia-smi), or set "
            "SRDEPLOY_CUDART to a libcudart.so that matches it"
        )
    raise SrDeployError(
        "the CUDA runtime (libcudart) was not found: install CUDA (JetPack includes it) or "
        "`pip install nvidia-cuda-runtime-cu12`, or set SRDEPLOY_CUDART to the path of libcudart.so"
    )


def _unusable(library: ctypes.CDLL) -> str | None:
    """Why ``library`` cannot drive this machine's GPU (CUDA's own text), or None when it can."""
    try:
        count_devices = library.cudaGetDeviceCount
    except AttributeError:
        return "not a CUDA runtime library"
    count = ctypes.c_int()
    status = count_devices(ctypes.byref(count))
    if status == 0:
        return None if count.value > 0 else "no CUDA device"
    library.cudaGetErrorString.restype = ctypes.c_char_p
    library.cudaGetLastError()
    return f"error {status} ({library.cudaGetErrorString(status).decode(errors='replace')})"


class Cuda:
    """Device memory, pinned host memory, streams, events and graphs of device 0 (or ``device``)."""

    def __init__(self, device: int = 0, library: ctypes.CDLL | None = None):
        self.lib = library or load_cudart()
        self.lib.cudaGetErrorString.restype = ctypes.c_char_p
        self.device = device
        self._call("cudaSetDevice", ctypes.c_int(device))

    def _call(self, name: str, *args) -> None:
        status = getattr(self.lib, name)(*args)
        if status != 0:
            # CUDA keeps a failed call's status as the thread's "last error" until someone reads it; left
            # there, the next library on this thread (PyTorch, TensorRT) reports it as its own failure.
            self.lib.cudaGetLastError()
            text = self.lib.cudaGetErrorString(status).decode(errors="replace")
            raise SrDeployError(f"CUDA call {name} failed with error {status} ({text})")

    def _out(self, name: str, kind, *args):
        value = kind()
        self._call(name, ctypes.byref(value), *args)
        return value.value

    # device facts
    def device_name(self) -> str:
        props = ctypes.create_string_buffer(_PROPS_BYTES)
        self._call("cudaGetDeviceProperties", props, ctypes.c_int(self.device))
        return props.raw[:_NAME_BYTES].split(b"\0", 1)[0].decode(errors="replace")

    def compute_capability(self) -> str:
        major = self._out("cudaDeviceGetAttribute", ctypes.c_int, ctypes.c_int(ATTR_CC_MAJOR), ctypes.c_int(self.device))
        minor = self._out("cudaDeviceGetAttribute", ctypes.c_int, ctypes.c_int(ATTR_CC_MINOR), ctypes.c_int(self.device))
        return f"{major}.{minor}"

    def memory_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self._call("cudaMemGetInfo", ctypes.byref(free), ctypes.byref(total))
        return free.value, total.value

    # memory
    def malloc(self, nbytes: int) -> int:
        return self._out("cudaMalloc", ctypes.c_void_p, ctypes.c_size_t(nbytes)) or 0

    def free(self, pointer: int) -> None:
        self._call("cudaFree", ctypes.c_void_p(pointer))

    def malloc_host(self, nbytes: int) -> int:
        """Page-locked host memory: the only kind an asynchronous copy overlaps with."""
        return self._out("cudaMallocHost", ctypes.c_void_p, ctypes.c_size_t(nbytes)) or 0

    def free_host(self, pointer: int) -> None:
        self._call("cudaFreeHost", ctypes.c_void_p(pointer))

    def copy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: int) -> None:
        self._call("cudaMemcpyAsync", ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                   ctypes.c_int(kind), ctypes.c_void_p(stream))

    # streams and events
    def stream(self) -> int:
        return self._out("cudaStreamCreateWithFlags", ctypes.c_void_p, ctypes.c_uint(STREAM_NON_BLOCKING)) or 0

    def synchronize(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", ctypes.c_void_p(stream))

    def destroy_stream(self, stream: int) -> None:
        self._call("cudaStreamDestroy", ctypes.c_void_p(stream))

    def event(self) -> int:
        return self._out("cudaEventCreate", ctypes.c_void_p) or 0

    def record(self, event: int, stream: int) -> None:
        self._call("cudaEventRecord", ctypes.c_void_p(event), ctypes.c_void_p(stream))

    def elapsed_ms(self, start: int, end: int) -> float:
        self._call("cudaEventSynchronize", ctypes.c_void_p(end))
        return float(self._out("cudaEventElapsedTime", ctypes.c_float, ctypes.c_void_p(start), ctypes.c_void_p(end)))

    def destroy_event(self, event: int) -> None:
        self._call("cudaEventDestroy", ctypes.c_void_p(event))

    # graphs
    def capture(self, stream: int, enqueue: Callable[[], None]) -> int:
        """The work ``enqueue`` puts on ``stream``, captured and instantiated as a graph (thread-local mode).

        When ``enqueue`` or the capture fails, the capture is still ended, so the stream is usable again (for
        plain enqueues), and the error is raised.
        """
        self._call("cudaStreamBeginCapture", ctypes.c_void_p(stream), ctypes.c_int(CAPTURE_MODE_THREAD_LOCAL))
        graph = ctypes.c_void_p()
        try:
            enqueue()
        except BaseException:
            self.lib.cudaStreamEndCapture(ctypes.c_void_p(stream), ctypes.byref(graph))
            if graph.value:
                self.lib.cudaGraphDestroy(graph)
            self.lib.cudaGetLastError()
            raise
        self._call("cudaStreamEndCapture", ctypes.c_void_p(stream), ctypes.byref(graph))
        try:  # cudaGraphInstantiateWithFlags: one signature in CUDA 11.4+
            return self._out("cudaGraphInstantiateWithFlags", ctypes.c_void_p, graph, ctypes.c_ulonglong(0)) or 0
        finally:
            self._call("cudaGraphDestroy", graph)

    def launch(self, graph_exec: int, stream: int) -> None:
        self._call("cudaGraphLaunch", ctypes.c_void_p(graph_exec), ctypes.c_void_p(stream))

    def destroy_graph(self, graph_exec: int) -> None:
        self._call("cudaGraphExecDestroy", ctypes.c_void_p(graph_exec))
