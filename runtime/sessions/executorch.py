"""ExecuTorch behind the runtime's one interface: a folder ``NAME.executorch`` from ``export --target executorch``,
run by ExecuTorch's own runtime (XNNPACK on the CPU), as a phone runs it.

The folder holds ``model.pte`` (the program, lowered to XNNPACK) and ``srdeploy.json``, the sealed manifest the
``.pte`` has no room for (``runtime.manifest``). The program's one method is ``forward``, or, for a network whose gate
reads the whole image (DSRNet), the four gate parts (``runtime.global_gate``), so that tiles share one decision.
Each takes one image, N=1, of any size within the shape bounds it was exported for (a bounded range: the tiler fits
its tiles to the largest); a batch runs image by image.

This session needs torch: ExecuTorch's Python runtime (``executorch.runtime``) takes and returns torch tensors.
The torch-free ``executorch-numpy-runtime`` (PyPI) was measured and rejected: it needs Python ≥ 3.12 and runs
exactly ExecuTorch 1.3.1's programs; a 1.5.1 ``.pte`` loads and returns all NaN (FSRCNN ×2, 2026-12-07). A phone
runs the ``.pte`` with ExecuTorch's C++ runtime, without torch.
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from ..artifact import ArtifactSession
from ..cache import cache_root
from ..errors import SrDeployError, command
from ..global_gate import GATE_PARTS, GateSplit, one_decision, parts_split
from ..manifest import MANIFEST, read_manifest
from ..progress import native_stderr_silenced

SUFFIX = ".executorch"
FORMAT = "srdeploy-executorch-1"
PROGRAM = "model.pte"
REEXPORT = f"re-export it with {command('export --target executorch')}"


def quiet_imports() -> None:
    """What ExecuTorch's imports warn about on stderr, not the user's concern (their errors still show): torchao's
    CUDA kernels that do not load on a CPU machine, torch's note on an Enum torchao registers."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def import_executorch_runtime():
    quiet_imports()
    try:
        import torch
        from executorch.runtime import Runtime
    except ImportError:
        raise SrDeployError("ExecuTorch is not installed: pip install executorch (or pip install -e '.[executorch]')"
                            ) from None
    return torch, Runtime


def unavailable(**_) -> str | None:
    """Why ExecuTorch cannot run here, or None."""
    import importlib.util

    if importlib.util.find_spec("executorch") is None:
        return "ExecuTorch is not installed: pip install executorch"
    return None


def artifact_folder(path: str | Path) -> Path:
    """The artifact's folder: ``path`` itself, or the folder of a ``.pte`` inside it."""
    path = Path(path)
    if path.suffix.lower() == ".pte":
        path = path.parent
    if not path.is_dir():
        raise SrDeployError(f"artifact {path} does not exist: export one with {command('export --target executorch')}")
    return path


LOADED = "executorch-loaded"  # sha256 of the programs that ExecuTorch loaded in a process that lived on
PROBE = """import sys
from executorch.runtime import Runtime
program = Runtime.get().load_program(sys.stdin.buffer.read())
for name in program.method_names:
    program.load_method(name)
"""


def _loaded_mark(program: bytes) -> Path:
    return cache_root() / LOADED / hashlib.sha256(program).hexdigest()


def vouch(program: bytes) -> None:
    """Records that ``program`` loads without harm (the exporter's own program, or one a probe loaded): later opens
    load it in this process at once."""
    mark = _loaded_mark(program)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()


def probed(program: bytes, path: Path) -> None:
    """``program`` loaded once in a child process before this process loads it, unless it loaded before: ExecuTorch's
    C++ logs names it reads from the file (the XNNPACK payload's too), and its Python bindings abort the process when
    those bytes are not UTF-8 (found by fuzzing), which no exception reports. ~5 s, once per program."""
    if _loaded_mark(program).is_file():
        return
    done = subprocess.run([sys.executable, "-c", PROBE], input=program, capture_output=True, timeout=600)
    if done.returncode != 0:
        lines = done.stderr.decode(errors="replace").strip().splitlines()
        reason = (f"ExecuTorch aborted the process that loaded it: signal {-done.returncode}"
                  if done.returncode < 0 or not lines else lines[-1][:160])
        raise SrDeployError(f"artifact {path}: {PROGRAM} cannot be loaded by ExecuTorch ({reason}): {REEXPORT}")
    vouch(program)


def parsed(program: bytes, path: Path) -> None:
    """``program`` read by ExecuTorch's own Python deserializer first, or one line: ExecuTorch's C++ loader logs names
    it reads from the file, and its Python bindings abort the process when those bytes are not UTF-8 (a crafted
    identifier, operator name: found by fuzzing). The deserializer raises instead (6 ms for FSRCNN ×2)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        deserialize_pte_binary(program)
    except Exception as exc:  # noqa: BLE001 - whatever the deserializer meets in a damaged or crafted file
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise SrDeployError(f"artifact {path}: {PROGRAM} is not a readable ExecuTorch program ({reason}): {REEXPORT}"
                            ) from None


class ProgramRunner:
    """A ``.pte`` in memory, its methods run by ExecuTorch image by image (N=1 each); it keeps the program's bytes as
    long as its methods."""

    def __init__(self, program: bytes):
        self._torch, executorch_runtime = import_executorch_runtime()
        self.bytes = program
        with native_stderr_silenced():  # ExecuTorch's CPU probing prints as XNNPACK starts
            self.program = executorch_runtime.get().load_program(program)
            self.methods = {name: self.program.load_method(name) for name in sorted(self.program.method_names)}

    def run(self, name: str, x: np.ndarray) -> np.ndarray:
        outputs = [self.methods[name].execute([self._torch.from_numpy(np.ascontiguousarray(image[None], np.float32))])
                   for image in x]
        return np.concatenate([output.numpy().astype(np.float32, copy=False) for (output,) in outputs])

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.run("forward", x)


class ExecuTorchSession(ArtifactSession):
    """An ExecuTorch artifact ready to run, with its srdeploy metadata."""

    runtime_name = "ExecuTorch"

    def __init__(self, path: str | Path, threads: int | None = None):
        import_executorch_runtime()
        self.path = artifact_folder(path)
        manifest, files = read_manifest(self.path, FORMAT, REEXPORT, "ExecuTorch")
        if PROGRAM not in files:  # a sealed manifest that does not list the program (else a KeyError below)
            raise SrDeployError(f"{self.path / MANIFEST} is damaged (it does not list {PROGRAM}): {REEXPORT}")
        self.metadata = manifest["metadata"]
        self.check_metadata()
        self.bounds = json.loads(self.metadata["shape_bounds"])
        if threads:  # ExecuTorch's one thread pool, which XNNPACK computes on (torch's thread count is not it)
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(threads)  # "unsafe" while another program runs: sessions open before they run
        parsed(files[PROGRAM], self.path)
        probed(files[PROGRAM], self.path)
        try:
            self.runner = ProgramRunner(files[PROGRAM])
        except (RuntimeError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise SrDeployError(f"artifact {self.path} cannot be loaded by ExecuTorch ({reason}): {REEXPORT}") from None
        names = list(self.runner.methods)
        if names != (sorted(GATE_PARTS) if self.has_global_gate else ["forward"]):
            raise SrDeployError(f"artifact {self.path}: its program's methods ({', '.join(names)[:80]}) are not the "
                                f"{'four gate parts' if self.has_global_gate else 'forward method'} its manifest says: "
                                f"{REEXPORT}")

    def _run(self, name: str, x: np.ndarray) -> np.ndarray:
        try:
            return self.runner.run(name, x)
        except RuntimeError as exc:  # a sealed program that loads and then fails in a delegate (found by fuzzing)
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise SrDeployError(f"ExecuTorch cannot run artifact {self.path} ({name}: {reason}): its program does not "
                                f"compute; {REEXPORT}") from None

    def infer(self, x: np.ndarray) -> np.ndarray:
        """N×C×H×W in [0, 1] → float32 N×C×(s·H)×(s·W), image by image."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.check_input(x)
        if self.has_global_gate:
            return one_decision(self.gate_split())(x)
        return self._run("forward", x)

    def gate_split(self) -> GateSplit:
        """The gate's features, decision and branches: this program's four methods."""
        return parts_split({name: (lambda name: lambda x: self._run(name, x))(name) for name in self.runner.methods})
