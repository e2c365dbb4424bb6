"""Core ML behind the runtime's one interface: a package from ``export --target coreml``.

The package's srdeploy metadata and input bounds are read anywhere (coremltools reads the spec on Linux
too); predictions need Core ML itself, which only macOS has: ``infer`` elsewhere is a one-line error.
The model loads on the first ``infer`` (Core ML compiles it then), with the compute units asked for.
"""
from __future__ import annotations

import hashlib
import json
import logging
import platform
from pathlib import Path

import numpy as np

from .. import digest
from ..atomic import inside
from ..artifact import ArtifactSession, srdeploy_metadata
from ..errors import SrDeployError, command
from ..global_gate import GateSplit, parts_split

PACKAGE_SUFFIX = ".mlpackage"
COMPUTE_UNITS = ("ALL", "CPU_AND_NE", "CPU_AND_GPU", "CPU_ONLY")
SPEC_FILE = Path("Data/com.apple.CoreML/model.mlmodel")
WEIGHTS_FILE = Path("Data/com.apple.CoreML/weights/weight.bin")
WEIGHTS_KEY = "srdeploy.weights_sha256"
REEXPORT = f"re-export it with {command('export --target coreml')}"
NOT_HERE = "Core ML runs models only on macOS ({name} was read, not run): use the ONNX artifact here, or run this on a Mac"


def import_coremltools():
    """coremltools, without the notices its import logs (untested torch versions, macOS-only libraries)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    try:
        import coremltools
    except ImportError:
        raise SrDeployError("Core ML packages need coremltools: pip install coremltools") from None
    return coremltools


def unavailable(**_) -> str | None:
    """Why Core ML cannot run models here (macOS only), or None."""
    import importlib.util
    import platform

    if platform.system() != "Darwin":
        return "Core ML runs models only on macOS (export --target coreml checks packages on Linux; it cannot time them)"
    if importlib.util.find_spec("coremltools") is None:
        return "coremltools is not installed: pip install -e '.[coreml]'"
    return None


def check_package(path: Path) -> None:
    """The package's spec against the digest sealed into it, and its weights against the sha256 the spec
    records; one line naming the package and the fix otherwise (``runtime.digest``)."""
    spec = path / SPEC_FILE
    links = [str(file.relative_to(path)) for file in path.rglob("*") if inside(path, str(file.relative_to(path))) is None]
    if links:
        raise SrDeployError(f"{path}: {links[0][:60]} is a link out of the package: refused unread; {REEXPORT}")
    if not spec.is_file():
        raise SrDeployError(f"{path} has no {SPEC_FILE}: the package is damaged; {REEXPORT}")
    data = spec.read_bytes()
    digest.check(data, path, REEXPORT)
    weights = path / WEIGHTS_FILE
    found = digest.recorded(data, WEIGHTS_KEY)  # sealed with the spec, so present in every package we wrote
    if found is None or not weights.is_file() or hashlib.sha256(weights.read_bytes()).hexdigest().encode() != found[1]:
        raise SrDeployError(f"artifact {path} is damaged (its weights no longer match the sha256 recorded at export): "
                            f"{REEXPORT}")


class CoreMLSession(ArtifactSession):
    runtime_name = "Core ML"

    def __init__(self, path: str | Path, compute_units: str = "ALL", run: bool = True):
        """``run=False`` reads the package's metadata only (anywhere); else a machine without Core ML refuses it here."""
        self.path = Path(path)
        if not (self.path / "Manifest.json").is_file():
            raise SrDeployError(f"{self.path} is not a Core ML package (no Manifest.json): export one with "
                                f"{command('export --target coreml')}")
        if compute_units not in COMPUTE_UNITS:
            raise SrDeployError(f"compute units {compute_units!r} unknown: choose one of {', '.join(COMPUTE_UNITS)}")
        check_package(self.path)
        if run and platform.system() != "Darwin":
            raise SrDeployError(NOT_HERE.format(name=self.path.name))
        ct = import_coremltools()
        try:
            spec = ct.utils.load_spec(str(self.path))
        except Exception as exc:  # noqa: BLE001 - coremltools raises anything from its protobuf reader
            raise SrDeployError(f"cannot read the Core ML package {self.path} ({type(exc).__name__}): it is damaged; "
                                f"re-export it with {command('export --target coreml')}") from None
        self.metadata = srdeploy_metadata(spec.description.metadata.userDefined.items())
        self.check_metadata()
        try:
            options = json.loads(self.metadata.get("coreml_options", "{}"))
        except (ValueError, RecursionError):
            options = None
        if not isinstance(options, dict):  # found by fuzzing: options that are not a JSON object
            raise SrDeployError(f"artifact {self.path} has unusable srdeploy metadata (coreml_options is not a JSON "
                                f"object): {REEXPORT}")
        if options.get("image_io"):
            raise SrDeployError(f"{self.path.name} takes images (--image-io), not arrays: re-export without --image-io "
                                "to run it here, or feed it CVPixelBuffers from Swift")
        self.bounds = json.loads(self.metadata["shape_bounds"])
        self.input_name = spec.description.input[0].name
        self.compute_units = compute_units
        self._model = None

    def _loaded(self):
        if self._model is None:
            self._model = load_mlmodel(self.path, self.compute_units)
        return self._model

    def infer(self, x: np.ndarray) -> np.ndarray:
        """1×C×H×W float32 in [0, 1] → 1×C×sH×sW float32 (packages take one image: their batch bound is 1)."""
        self.check_input(x)
        return predict(self._loaded(), self.input_name, x)

    def gate_split(self) -> GateSplit:
        """The gate-part packages exported beside this one (``export.coreml.coreml_gate_parts``), for tiles that share
        the whole image's decision; a package without them refuses to tile (one line)."""
        parts = json.loads(self.metadata.get("gate_parts") or "{}")
        if not parts:
            return super().gate_split()
        sessions = {name: CoreMLSession(self.path.with_name(file), self.compute_units) for name, file in parts.items()}
        return parts_split({name: session.infer for name, session in sessions.items()})


def load_mlmodel(path: str | Path, compute_units: str = "ALL"):
    """Core ML's own model for a package (Core ML compiles it here); a one-line error off macOS."""
    if platform.system() != "Darwin":
        raise SrDeployError(NOT_HERE.format(name=Path(path).name))
    ct = import_coremltools()

    return ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, compute_units))


def predict(mlmodel, input_name: str, x: np.ndarray) -> np.ndarray:
    """One Core ML prediction: float32 1×C×H×W in, the first output as float32."""
    output = next(iter(mlmodel.predict({input_name: x.astype(np.float32, copy=False)}).values()))
    return np.asarray(output, dtype=np.float32)
