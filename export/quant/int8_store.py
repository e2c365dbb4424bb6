"""INT8 search results kept on disk: exporting the same model again, for another target (ncnn after ONNX, the
Android bundle after ncnn, ExecuTorch after either) takes the search's result instead of searching again (34–274 s
per official checkpoint on 2 cores). Keyed by the exported graph, the calibration data, the limit, the range method
and the search's own code (``search_code``: its sources and the numeric libraries' versions), so a changed search
never reads an old result; every export still gates what it writes on its own runtime. Written atomically, read without
pickle (JSON, ONNX, ``.npz``), under ``<cache>/int8_search``.
"""
from __future__ import annotations

import hashlib
import json
from zipfile import BadZipFile
from dataclasses import asdict
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from .int8_search import Int8Plan, Variant
from ...runtime.atomic import atomic_dir
from ...runtime.cache import cache_root

FILES = ("plan.json", "variant.json", "codes.npz", "variant.onnx", "graph.onnx")


@cache
def search_code() -> str:
    """sha256 of the code that decides a search's result (the search, how it scores and runs graphs) and of the
    versions of the libraries it computes with."""
    import onnxruntime

    here = Path(__file__).resolve().parent
    package = here.parent.parent
    sources = sorted(here.glob("*.py")) + [package / "export" / name for name in (
        "precision.py", "accuracy_gate.py", "onnx/onnx_export.py")] + [package / "runtime" / "quality.py"]
    versions = " ".join(module.__version__ for module in (np, onnx, onnxruntime))
    return hashlib.sha256(b"".join(p.read_bytes() for p in sources) + versions.encode()).hexdigest()


def folder(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps({**key, "code": search_code()}, sort_keys=True).encode()).hexdigest()[:32]
    return cache_root() / "int8_search" / digest


def load(key: dict) -> tuple[onnx.ModelProto, Int8Plan, Variant] | None:
    """The stored result for ``key``, or None (none stored, or unreadable: then it is searched again)."""
    where = folder(key)
    if not all((where / name).is_file() for name in FILES):
        return None
    try:
        meta = json.loads((where / "variant.json").read_text())
        with np.load(where / "codes.npz", allow_pickle=False) as arrays:
            codes = {name: (arrays[f"{name}/codes"], arrays[f"{name}/scale"]) for name in meta["codes"]} \
                if meta["codes"] is not None else None
        variant = Variant(onnx.load(where / "variant.onnx"), meta["centres"], meta["alpha"], meta["rounding"],
                          meta["amax"], codes, meta["macs"])
        plan = Int8Plan(**json.loads((where / "plan.json").read_text()))
        return onnx.load(where / "graph.onnx"), plan, variant
    except (OSError, ValueError, KeyError, TypeError, EOFError, BadZipFile, DecodeError):
        return None


def save(key: dict, graph: onnx.ModelProto, plan: Int8Plan, variant: Variant) -> None:
    with atomic_dir(folder(key)) as work:
        (work / "plan.json").write_text(json.dumps(asdict(plan), default=lambda v: v.item()))  # numpy scalars
        meta = {"centres": variant.centres, "alpha": variant.alpha, "rounding": variant.rounding,
                "amax": variant.amax, "macs": variant.macs,
                "codes": None if variant.codes is None else sorted(variant.codes)}
        (work / "variant.json").write_text(json.dumps(meta, default=lambda v: v.item()))
        arrays = {f"{name}/{part}": value for name, (codes, scale) in (variant.codes or {}).items()
                  for part, value in (("codes", codes), ("scale", scale))}
        np.savez(work / "codes.npz", **arrays)
        onnx.save(variant.graph, work / "variant.onnx")
        onnx.save(graph, work / "graph.onnx")
