"""The JSON sidecar beside every TensorRT engine, and the check that refuses an engine built elsewhere.

A serialized engine only loads on the TensorRT version and GPU it was built with ("Version tag does not
match" is what TensorRT itself says). The sidecar records where it was built, from which ONNX, with
which plan and what parity it measured, so srdeploy refuses a foreign engine with the reason and the
command that rebuilds it, before TensorRT fails obscurely. numpy-free, torch-free, TensorRT-free.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from ..atomic import atomic_path
from ..errors import COMMAND, SrDeployError, command, shown

FORMAT = "srdeploy-trt-engine/1"


@dataclass(frozen=True)
class BuildTarget:
    """Where an engine runs: TensorRT version, GPU name, compute capability ("8.7")."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} (compute {self.compute_capability})"


def sidecar_path(engine: str | Path) -> Path:
    return Path(f"{engine}.json")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_sidecar(engine: str | Path, target: BuildTarget, **fields) -> Path:
    """Write ``ENGINE.json`` atomically: format, engine sha256, the build target and ``fields`` (precision,
    plan, onnx_sha256, metadata, parity, rebuild command, ...)."""
    record = {"format": FORMAT, "engine": Path(engine).name, "engine_sha256": file_sha256(engine),
              "target": asdict(target), **fields}
    path = sidecar_path(engine)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return path


def update_sidecar(engine: str | Path, **fields) -> Path:
    """Rewrite ``ENGINE.json`` with ``fields`` replaced (e.g. the parity measured after the build)."""
    record = read_sidecar(engine)
    kept = {k: v for k, v in record.items() if k not in ("format", "engine", "engine_sha256", "target")}
    return write_sidecar(engine, BuildTarget(**record["target"]), **{**kept, **fields})


def read_sidecar(engine: str | Path) -> dict:
    """The sidecar of ``engine``, checked to belong to it; a one-line error otherwise."""
    engine, path = Path(engine), sidecar_path(engine)
    if not engine.is_file():
        raise SrDeployError(f"engine {engine} does not exist: build one with {command('export --target trt')}")
    if not path.is_file():
        raise SrDeployError(
            f"engine {engine} has no sidecar {path.name} (where and from what it was built): rebuild it with "
            f"{command('export --target trt')}, or the bundle's build.sh"
        )
    try:
        record = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # not UTF-8 or not JSON; RecursionError: [[[… a thousand deep
        raise SrDeployError(f"sidecar {path} is not valid JSON ({type(exc).__name__}): rebuild the engine") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise SrDeployError(f"sidecar {path} is not an {FORMAT} record: rebuild the engine with this srdeploy")
    target, metadata = record.get("target"), record.get("metadata")  # found by fuzzing: each one missing
    if not (isinstance(record.get("engine_sha256"), str) and isinstance(target, dict)
            and sorted(target) == sorted(BuildTarget.__dataclass_fields__) and all(isinstance(v, str) for v in target.values())
            and isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
            and isinstance(record.get("rebuild", ""), str) and isinstance(record.get("engine"), str)):
        raise SrDeployError(f"sidecar {path} is damaged (its engine, engine_sha256, target or metadata is missing or "
                            "malformed): rebuild the engine")
    if record["engine_sha256"] != file_sha256(engine):
        raise SrDeployError(f"engine {engine} is not the file its sidecar describes (sha256 differs): rebuild it")
    return record


def incompatibility(record: dict, here: BuildTarget) -> str | None:
    """Why an engine built for ``record['target']`` cannot run ``here``, or None if it can."""
    built = BuildTarget(**record["target"])
    differences = [label for label, a, b in (
        ("TensorRT version", built.tensorrt_version, here.tensorrt_version),
        ("GPU", built.gpu_name, here.gpu_name),
        ("compute capability", built.compute_capability, here.compute_capability),
    ) if a != b]
    if not differences:
        return None
    rebuild = record.get("rebuild") or f"{COMMAND} export --target trt"
    return shown(  # the record's strings may hold anything (found by fuzzing: a newline in a GPU's name)
        f"engine {record['engine']} was built for {built.describe()} but this machine has {here.describe()} "
        f"({', '.join(differences)} differ; engines only run where they were built): rebuild it here with `{rebuild}`",
        600)
