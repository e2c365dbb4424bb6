"""ncnn behind the runtime's one interface: a folder ``NAME.ncnn`` from ``export --target ncnn`` — numpy and the
``ncnn`` package only, never torch.

The folder holds each graph's ``.param`` (layers) and ``.bin`` (weights), written by pnnx, and ``srdeploy.json``, the
manifest ncnn's own files have no room for: the srdeploy metadata, each graph's input and output blob, and a
sha256 sealed over the manifest and every file (checked on every open). A plain network is one graph, ``model``;
a network whose gate reads the whole image (DSRNet) is its four gate parts (``runtime.global_gate.gate_parts``):
the image runs through the gate's features, their mean decides, and the chosen branch computes the output, so
tiles share the whole image's decision. ``vulkan``: ncnn's GPU path (any Vulkan device: a GPU, or Mesa's lavapipe
in software); ``fp16``: FP16 storage and arithmetic where the device has them (ncnn's default on ARM), by
default for FP16 artifacts only.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from .. import manifest
from ..artifact import ArtifactSession
from ..cpu import threads_cap
from ..errors import SrDeployError, command
from ..global_gate import GATE_PARTS, GateSplit, one_decision, parts_split
from ..progress import native_stderr_silenced

SUFFIX = ".ncnn"
MANIFEST = manifest.MANIFEST
FORMAT = "srdeploy-ncnn-1"
REEXPORT = f"re-export it with {command('export --target ncnn')}"


def import_ncnn():
    try:
        import ncnn
    except ImportError:
        raise SrDeployError("ncnn is not installed: pip install ncnn (or pip install -e '.[ncnn]')") from None
    return ncnn


@functools.cache
def vulkan_devices() -> tuple[str, ...]:
    """The Vulkan devices ncnn sees (none without a driver: apt install mesa-vulkan-drivers libvulkan1 for
    Mesa's software one). ncnn describes each device on stderr as it starts Vulkan: not here."""
    ncnn = import_ncnn()
    with native_stderr_silenced():
        return tuple(ncnn.get_gpu_info(i).device_name() for i in range(ncnn.get_gpu_count()))


def unavailable(vulkan: bool = False, **_) -> str | None:
    """Why ncnn cannot run here (on Vulkan with ``vulkan``), or None."""
    import importlib.util

    if importlib.util.find_spec("ncnn") is None:
        return "ncnn is not installed: pip install ncnn"
    if vulkan and not vulkan_devices():
        return "ncnn sees no Vulkan device (apt install mesa-vulkan-drivers libvulkan1 gives a software one)"
    return None


def read_manifest(folder: Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest of an ncnn artifact and its files' bytes, after the seal is checked (one line if not)."""
    return manifest.read_manifest(folder, FORMAT, REEXPORT, "ncnn")


def artifact_folder(path: str | Path) -> Path:
    """The artifact's folder: ``path`` itself, or the folder of a ``.param`` inside it."""
    path = Path(path)
    if path.suffix.lower() == ".param":
        if not (path.parent / MANIFEST).is_file():
            raise SrDeployError(f"{path} has no {MANIFEST} beside it: srdeploy runs the NAME{SUFFIX} folders it "
                                f"exports (ncnn's own files carry no metadata); {REEXPORT}")
        return path.parent
    if not path.is_dir():
        raise SrDeployError(f"artifact {path} does not exist: export one with {command('export --target ncnn')}")
    return path


class NcnnSession(ArtifactSession):
    """An ncnn artifact ready to run, with its srdeploy metadata."""

    runtime_name = "ncnn"

    def __init__(self, path: str | Path, threads: int | None = None, vulkan: bool = False, fp16: bool | None = None):
        ncnn = import_ncnn()
        self.path = artifact_folder(path)
        contents, files = read_manifest(self.path)
        graphs = contents.get("graphs")
        if not (isinstance(graphs, dict) and sorted(graphs) in (["model"], sorted(GATE_PARTS)) and all(
                isinstance(g, dict) and all(isinstance(g.get(k), str) for k in ("param", "bin", "input", "output"))
                and g["param"] in files and g["bin"] in files for g in graphs.values())):
            raise SrDeployError(f"{self.path / MANIFEST} is damaged (its graphs are not one model or the four gate "
                                f"parts, each the param, bin, input and output of sealed files): {REEXPORT}")
        self.metadata = contents["metadata"]
        self.check_metadata()
        self.bounds = json.loads(self.metadata["shape_bounds"])
        if vulkan and not vulkan_devices():
            raise SrDeployError(unavailable(vulkan=True))
        fp16 = self.metadata.get("precision") == "fp16" if fp16 is None else fp16
        self.vulkan, self.fp16 = vulkan, fp16
        # ncnn's pool allocators (benchncnn's and the apps' setting) reuse the feature maps' memory between calls
        # instead of allocating it afresh. Where the allocator hands such blocks back to the kernel each call, that
        # costs: LESRCNN ×2 at 256² 720 → 623 ms, FSRCNN ×2 95 → 54 ms with pools (2 threads, Xeon); where it
        # keeps them (the ncnn_speed benchmark's process) the times stay within 1 %.
        # The nets go before the pools when the session does (an attribute set later is released later).
        pools = (ncnn.PoolAllocator(), ncnn.PoolAllocator())
        self.nets = {name: self._load(ncnn, graph, threads, pools) for name, graph in contents["graphs"].items()}
        self._pools = pools
        self.graphs = contents["graphs"]

    def _load(self, ncnn, graph: dict, threads: int | None, pools: tuple):
        """One graph's net, from the files whose bytes the seal just checked; ``pools``: its blob and workspace
        allocators."""
        net = ncnn.Net()
        net.opt.blob_allocator, net.opt.workspace_allocator = pools
        net.opt.use_vulkan_compute = self.vulkan
        for flag in ("use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic"):
            setattr(net.opt, flag, self.fp16)
        net.opt.use_bf16_storage = False  # FP32 artifacts compute in FP32 (ncnn would pick bf16 on AVX-512 BF16)
        threads = threads or threads_cap()
        if threads:
            net.opt.num_threads = threads
        if net.load_param(str(self.path / graph["param"])) != 0 or net.load_model(str(self.path / graph["bin"])) != 0:
            raise SrDeployError(f"artifact {self.path} cannot be loaded by ncnn ({graph['param']}): {REEXPORT}")
        return net

    def _run(self, name: str, x: np.ndarray) -> np.ndarray:
        """One graph on each image of a batch (ncnn has no batch axis)."""
        import ncnn

        graph, outputs = self.graphs[name], []
        for image in np.ascontiguousarray(x, dtype=np.float32):
            with self.nets[name].create_extractor() as extractor:
                extractor.input(graph["input"], ncnn.Mat(image).clone())
                status, out = extractor.extract(graph["output"])
                if status != 0:
                    raise SrDeployError(f"ncnn could not run {self.path.name} ({name}, status {status})")
                outputs.append(np.array(out, dtype=np.float32))
        return np.stack(outputs)

    def infer(self, x: np.ndarray) -> np.ndarray:
        """N×C×H×W in [0, 1] → float32 N×C×(s·H)×(s·W)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.check_input(x)
        if "model" in self.nets:
            return self._run("model", x)
        return one_decision(self.gate_split())(x)

    @property
    def has_global_gate(self) -> bool:
        return "model" not in self.nets

    def gate_split(self) -> GateSplit:
        """The gate's features, decision and branches: this artifact's four graphs."""
        return parts_split({name: (lambda name: lambda x: self._run(name, x))(name) for name in self.nets})
