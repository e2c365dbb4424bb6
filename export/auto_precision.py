"""``--precision auto``: the fastest precision that passes its gate, measured on this machine.

Each candidate of the target (``Target.auto``: FP32, BF16 where the CPU computes it, INT8, …) is exported through
its own gate into a temporary folder; those that pass are timed in one interleaved run on this machine
(``runtime.timing.interleaved_medians``, the sessions as a user opens them, LR ``SIZE``×``SIZE``); the fastest is
exported into ``out`` recording what was measured (``srdeploy.precision_choice``: every candidate's median or why
it was refused, the machine), and the export's line says so. The gated graphs are shared between the two exports
of the chosen one (``ExportOptions.graphs``), so no search runs twice.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from .options import ExportOptions, ExportResult, Progress
from ..models.loading import SrModel
from ..runtime.cpu import cpu_name, features, int8_dot
from ..runtime.errors import SrDeployError
from ..runtime.opener import open_artifact
from ..runtime.targets import Target
from ..runtime.timing import interleaved_medians

AUTO = "auto"
SIZE = 256  # LR pixels, square: the size the latency comparisons of the docs use
ROUNDS = 7


def cpu_record() -> dict:
    """The machine the choice was measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_name(), "cpu_features": features(), "int8_dot": int8_dot(), "usable_cores": cores}


def export_auto(chosen: Target, net: SrModel, options: ExportOptions, out: Path, progress: Progress) -> ExportResult:
    """The fastest passing candidate of ``chosen.auto``, exported into ``out`` with the measurement recorded."""
    options = replace(options, graphs={} if options.graphs is None else options.graphs)
    passed, refused = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for precision in chosen.auto:
            progress(f"precision auto: exporting the {precision} candidate")
            try:
                result = chosen.export(net, replace(options, precision=precision), Path(scratch) / precision,
                                       Progress(False))
            except SrDeployError as exc:
                refused[precision] = str(exc)
                progress(f"precision auto: {precision} refused: {str(exc).split(': nothing written')[0]}")
                continue
            passed[precision] = result.artifacts[0]
        if not passed:
            raise SrDeployError(f"--precision auto: no candidate passed its gate ({'; '.join(refused.values())})")
        x = np.random.default_rng(0).random((1, net.info.channels, SIZE, SIZE), dtype=np.float32)
        progress(f"precision auto: timing {', '.join(passed)} on this CPU, {SIZE}×{SIZE}, {ROUNDS} interleaved rounds")
        medians = interleaved_medians({p: open_artifact(path).infer for p, path in passed.items()}, x, ROUNDS)
    fastest = min(medians, key=medians.get)
    record = {"chosen": fastest, "median_ms": {p: round(ms, 3) for p, ms in medians.items()}, "refused": refused,
              "size": f"{SIZE}x{SIZE}", "machine": cpu_record()}
    final = replace(options, precision=fastest,
                    metadata={**(options.metadata or {}), "precision_choice": json.dumps(record)})
    result = chosen.export(net, final, out, progress)
    others = ", ".join(f"{p} {ms:.1f} ms" for p, ms in sorted(medians.items(), key=lambda item: item[1]) if p != fastest)
    progress(f"precision auto: {fastest} ({medians[fastest]:.1f} ms at {SIZE}×{SIZE}) over {others or 'nothing else'}"
             + "".join(f"; {p} refused by its gate" for p in refused)
             + f" on this CPU ({record['machine']['cpu']}, {', '.join(features_summary(record['machine']))})")
    result.details["precision_choice"] = record
    return result


def features_summary(machine: dict) -> list[str]:
    """The CPU facts that decide precisions: its widest vectors and its int8 dot product."""
    return [*(f for f in machine["cpu_features"] if f in ("avx512_bf16", "amx_bf16", "avx512f", "avx2")),
            f"int8 dot product {machine['int8_dot']}"]

