"""The checks that need an NVIDIA GPU, marked ``gpu``: run on the device machine with ``pytest -m gpu`` (the GPU
run, ``benchmarks/gpu_run.py``, does so and records the outcome); here they skip, naming the missing CUDA device.

- Every golden fixture through PyTorch on CUDA, FP32 with TF32 off (the CPU test's 1e-5·max|ref|) and FP16 (the
  FP16 artifact tolerance of ``runtime.compare``).
- DSRNet ×2 with a gate that flips between 48-pixel tiles of a Set5 image, tiled on the device with the whole
  image's decision shared: equal to the whole image, unlike tiles deciding alone; the device equal to the CPU.
- The ctypes CUDA layer under the TensorRT session (``runtime/sessions/cuda.py``, its buffers) against the real driver,
  without TensorRT: device facts against PyTorch's, pinned round trips, copies into PyTorch's memory, a captured
  and replayed CUDA graph, a failed capture that leaves the stream usable, CUDA's error text.
"""
from __future__ import annotations

import ctypes
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import SHARED, need_shared

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=(
    f"needs a CUDA device (torch {torch.__version__}, built for CUDA {torch.version.cuda}): run on the device "
    "machine with pytest -m gpu"))]


def _fixtures():
    from srdeploy.benchmarks.reference_fixtures import load_fixtures

    return load_fixtures(SHARED)


@pytest.mark.parametrize("fixture", _fixtures(), ids=lambda f: f.name)
def test_golden_fixture_on_cuda(fixture):
    from srdeploy.benchmarks.gpu_run import fixture_verdicts, set_tf32

    set_tf32(False)
    rows = fixture_verdicts(fixture, "cuda")
    assert rows and all(r["passed"] for r in rows), [r for r in rows if not r["passed"]]


def test_dsrnet_tiles_on_cuda_with_the_whole_image_decision():
    from srdeploy import models
    from srdeploy.benchmarks.gpu_run import set_tf32
    from srdeploy.models.registry import architecture
    from srdeploy.models.torch_runner import TorchRunner
    from srdeploy.runtime import images, metrics
    from srdeploy.runtime.tiling import tiled_infer
    from tests.gate_sensitive import TILE, butterfly, gate_sensitive_state

    image, checkpoint = butterfly(SHARED), need_shared("weights", "dsrnet_x2.pth")
    set_tf32(False)
    radius = architecture("dsrnet").export.receptive_radius
    x = images.to_unit_float(images.read_rgb(image))
    state = gate_sensitive_state(models.load("dsrnet", 2, checkpoint).network,
                                 torch.load(checkpoint, map_location="cpu", weights_only=True), torch.from_numpy(x), radius)
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / "dsrnet_gate_sensitive.pth")
        network = models.load("dsrnet", 2, Path(folder) / "dsrnet_gate_sensitive.pth").network
    cpu, runner = TorchRunner(network).infer(x), TorchRunner(network, "cuda")

    def sr(output: np.ndarray) -> np.ndarray:
        return images.to_uint8(output[0].transpose(1, 2, 0))

    whole = sr(runner.infer(x))
    shared = sr(tiled_infer(x, runner.infer, 2, TILE, radius, 8, gate=runner.gate_split))
    alone = sr(tiled_infer(x, runner.infer, 2, TILE, radius, 8))
    assert metrics.psnr(shared, whole) >= 60 > 50 > metrics.psnr(alone, whole)
    assert metrics.psnr(whole, sr(cpu)) >= 60


@pytest.fixture(scope="module")
def cuda():
    from srdeploy.runtime.sessions.cuda import Cuda, load_cudart

    return Cuda(0, load_cudart())


def test_the_cuda_layer_reads_the_device_pytorch_sees(cuda):
    props = torch.cuda.get_device_properties(0)
    assert cuda.device_name() == props.name
    assert cuda.compute_capability() == f"{props.major}.{props.minor}"
    assert cuda.memory_info()[1] == torch.cuda.mem_get_info(0)[1]
    version = ctypes.c_int()
    cuda._call("cudaRuntimeGetVersion", ctypes.byref(version))
    assert version.value > 0


def test_pinned_copies_round_trip_and_reach_pytorch_memory(cuda):
    from srdeploy.runtime.sessions.tensorrt import _Buffer

    stream = cuda.stream()
    source, target = _Buffer(cuda), _Buffer(cuda)
    nbytes = 64 * 2**20
    source.reserve(nbytes), target.reserve(nbytes)
    count = nbytes // 4
    data = np.random.default_rng(0).random(count, dtype=np.float32)
    source.host_array((count,), np.dtype(np.float32))[...] = data
    cuda.copy_async(source.device, source.host, nbytes, 1, stream)
    cuda.copy_async(target.host, source.device, nbytes, 2, stream)
    cuda.synchronize(stream)
    assert np.array_equal(target.host_array((count,), np.dtype(np.float32)), data)
    tensor = torch.empty(count, dtype=torch.float32, device="cuda")
    cuda.copy_async(tensor.data_ptr(), source.host, nbytes, 1, stream)
    cuda.synchronize(stream)
    assert torch.equal(tensor.cpu(), torch.from_numpy(data))
    source.release(), target.release()
    cuda.destroy_stream(stream)


def test_a_captured_graph_replays_and_a_failed_capture_leaves_the_stream_usable(cuda):
    from srdeploy.runtime.errors import SrDeployError
    from srdeploy.runtime.sessions.tensorrt import _Buffer

    stream = cuda.stream()
    source, target = _Buffer(cuda), _Buffer(cuda)
    small = 4 * 2**20
    source.reserve(small), target.reserve(small)

    def copies() -> None:
        cuda.copy_async(source.device, source.host, small, 1, stream)
        cuda.copy_async(target.host, source.device, small, 2, stream)

    graph = cuda.capture(stream, copies)
    fresh = np.random.default_rng(1).random(small // 4, dtype=np.float32)
    source.host_array((small // 4,), np.dtype(np.float32))[...] = fresh  # the graph copies what is there now
    cuda.launch(graph, stream)
    cuda.synchronize(stream)
    assert np.array_equal(target.host_array((small // 4,), np.dtype(np.float32)), fresh)
    cuda.destroy_graph(graph)
    with pytest.raises(SrDeployError):  # synchronising a capturing stream is illegal
        cuda.capture(stream, lambda: cuda.synchronize(stream))
    copies()
    cuda.synchronize(stream)
    assert np.array_equal(target.host_array((small // 4,), np.dtype(np.float32)), fresh)
    assert float(torch.ones(4, device="cuda").sum().item()) == 4.0
    source.release(), target.release()
    cuda.destroy_stream(stream)


def test_a_cuda_error_names_the_call_and_leaves_pytorch_working(cuda):
    from srdeploy.runtime.errors import SrDeployError

    with pytest.raises(SrDeployError, match="cudaFree"):
        cuda.free(0x10)  # not an allocation
    assert float(torch.ones(4, device="cuda").sum().item()) == 4.0
