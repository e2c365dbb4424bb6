"""The Jetson bundle: everything a device needs to build its own TensorRT engines and prove them.

    DIR/
      build.sh              trtexec with the BuildPlan's flags (strongly or weakly typed, whichever the
                            installed TensorRT accepts), then parity + latency on the device
      manifest.json         model, profile, per precision (ONNX + sha256, both plans, trtexec args, tolerance),
                            and the sha256 of every other file (checked whenever the bundle runs)
      onnx/NAME_xS_P.onnx   the FP32 / FP16 / INT8-Q/DQ graphs
      golden/               held-out photo crops and PyTorch FP32 outputs
      runtime/              the thin runtime (numpy + tensorrt; onnxruntime for the CPU check; Pillow to
                            upscale images: python3 -m runtime.bundle_upscale)
      README.md             for the person at the device

Written into a temporary folder and renamed into place: a failed export leaves nothing behind.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
from pathlib import Path

import numpy as np
import onnx

from ..onnx.fp16 import int8_with_fp16_float
from ..onnx.onnx_export import save
from ..trt.trt_plan import BuildPlan, Profile
from ...runtime.artifact import srdeploy_metadata
from ...runtime.atomic import atomic_dir, check_bundle_folder
from ...runtime.precision import Precision
from ...runtime.bundle_check import FORMAT, GRAPH, MANIFEST
from ...runtime.compare import TOLERANCES
from ...runtime.errors import SrDeployError
from ...runtime.global_gate import GATE_PARTS, gate_parts
from ...runtime.golden import save_golden
from ...runtime.parity import probe_inputs
from ...runtime.pipeline import Infer

RUNTIME_FILES = (
    "__init__.py", "errors.py", "atomic.py", "artifact.py", "compare.py", "digest.py", "golden.py", "tables.py",
    "timing.py", "bundle_check.py", "images.py", "pipeline.py", "tiling.py", "global_gate.py", "upscale.py",
    "bundle_upscale.py", "cache.py", "cpu.py", "precision.py", "sessions/__init__.py",
    "sessions/cuda.py", "sessions/tensorrt_sidecar.py", "sessions/tensorrt.py", "sessions/onnxruntime.py",
    "sessions/openvino.py",
)
TYPINGS = {"strong": True, "weak": False}
REFERENCE = "PyTorch FP32"


def golden_inputs(photo: np.ndarray, profile: Profile) -> dict[str, np.ndarray]:
    """Held-out photo crops at the parity suite's probe shapes that the profile admits, named by shape
    (one case per shape)."""
    bounds = {"min": list(profile.min), "max": list(profile.max)}
    inputs = probe_inputs(profile.min[1], bounds, photo=photo)
    return {f"photo_{'x'.join(map(str, x.shape))}": x for x in inputs.values()
            if all(lo <= s <= hi for lo, s, hi in zip(profile.min, x.shape, profile.max))}


def _metadata(proto: onnx.ModelProto) -> dict[str, str]:
    return srdeploy_metadata((p.key, p.value) for p in proto.metadata_props)


def _engine_entry(proto: onnx.ModelProto, name: str, plans: dict[str, BuildPlan], sources: dict[str, onnx.ModelProto],
                  work: Path, engine_rel: str) -> dict:
    """One engine's manifest entry: its ONNX, the ONNX each typing builds from (written into ``work/onnx``),
    both typings' plans and trtexec lines."""
    proto_path = save(proto, work / GRAPH / f"{name}.onnx")
    built = {typing: proto_path if source is proto else save(source, work / GRAPH / f"{name}_fp16float.onnx")
             for typing, source in sources.items()}
    build_onnx = {typing: f"onnx/{path.name}" for typing, path in built.items()}
    return {
        GRAPH: f"{GRAPH}/{proto_path.name}",
        "onnx_sha256": hashlib.sha256(proto_path.read_bytes()).hexdigest(),
        "build_onnx": build_onnx,
        "engine": engine_rel,
        "metadata": _metadata(proto),
        "plans": {typing: plan.as_dict() for typing, plan in plans.items()},
        "trtexec": {typing: plan.trtexec_args(build_onnx[typing], engine_rel) for typing, plan in plans.items()},
    }


def precision_entry(stem: str, precision: Precision, work: Path, proto: onnx.ModelProto, profile: Profile) -> dict:
    """Write the precision's ONNX (and, for an INT8 graph whose FP16 float parts passed, their FP16 form, which
    strongly typed builds read) into ``work/onnx``; the manifest entry with both typings' trtexec lines. A network
    whose gate reads the whole image also gets its gate parts (``runtime.global_gate.gate_parts``) as engines, so
    that tiles share one decision on the device too."""
    name = f"{stem}_{precision}"
    plans = {typing: BuildPlan.for_artifact(_metadata(proto), profile, strong) for typing, strong in TYPINGS.items()}
    sources = {typing: int8_with_fp16_float(proto, list(plan.fp32_layers)) if plan.fp16_float_onnx else proto
               for typing, plan in plans.items()}
    entry = {**_engine_entry(proto, name, plans, sources, work, f"engines/{name}.engine"),
             "tolerance": vars(TOLERANCES[precision])}
    if _metadata(proto).get("global_gate") == "true":
        portable = gate_parts(proto)
        parts = {typing: portable if source is proto else gate_parts(source) for typing, source in sources.items()}
        entry["gate_parts"] = {
            part: _engine_entry(portable[part], f"{name}.{part}",
                                {typing: plan.for_gate_part(part, parts[typing][part]) for typing, plan in plans.items()},
                                {typing: parts[typing][part] for typing in TYPINGS}, work, f"engines/{name}.{part}.engine")
            for part in GATE_PARTS}
    return entry


def build_script(manifest: dict) -> str:
    """``build.sh``: pick the typing the installed trtexec supports, build, then run the device check."""
    precisions = list(manifest["precisions"])
    engines = {p: {f"ARGS_{p}": entry, **{f"ARGS_{p}_{part}": e for part, e in entry.get("gate_parts", {}).items()}}
               for p, entry in manifest["precisions"].items()}  # per precision: the network, then any gate parts
    arrays = "\n".join(
        [f"{name}_{typing}=({' '.join(shlex.quote(a) for a in e['trtexec'][typing])})"
         for p in engines for name, e in engines[p].items() for typing in TYPINGS]
        + [f"ENGINES_{p}=({' '.join(engines[p])})" for p in engines])
    return f"""#!/usr/bin/env bash
# srdeploy Jetson bundle: {manifest['model']} x{manifest['scale']}. Builds the TensorRT engines on this device
# with trtexec, then checks them against the golden outputs and measures latency.
#   bash build.sh [--build-only] [{'|'.join(precisions)} ...]      (TRTEXEC=/path/to/trtexec to override)
set -euo pipefail
cd "$(dirname "$0")"

usage() {{ echo "usage: bash build.sh [--build-only] [{' '.join(precisions)}]" >&2; exit 2; }}
BUILD_ONLY=0
PRECISIONS=()
for arg in "$@"; do
  case "$arg" in
    --build-only) BUILD_ONLY=1 ;;
    {'|'.join(precisions)}) PRECISIONS+=("$arg") ;;
    *) usage ;;
  esac
done
[ ${{#PRECISIONS[@]}} -eq 0 ] && PRECISIONS=({' '.join(precisions)})

TRTEXEC="${{TRTEXEC:-$(command -v trtexec || true)}}"
if [ -z "$TRTEXEC" ] && [ -x /usr/src/tensorrt/bin/trtexec ]; then TRTEXEC=/usr/src/tensorrt/bin/trtexec; fi
if [ -z "$TRTEXEC" ]; then
  echo "error: trtexec not found: JetPack installs it as /usr/src/tensorrt/bin/trtexec (sudo apt install tensorrt), or set TRTEXEC=/path/to/trtexec" >&2
  exit 2
fi
HELP="$("$TRTEXEC" --help 2>&1 || true)"
if ! grep -q -- "--builderOptimizationLevel" <<<"$HELP"; then
  echo "error: $TRTEXEC is older than TensorRT 8.6 (no --builderOptimizationLevel): use JetPack 6 or newer" >&2
  exit 2
fi
if grep -q -- "--stronglyTyped" <<<"$HELP"; then
  TYPING=strong
  echo "trtexec: $TRTEXEC supports strong typing: building with --stronglyTyped (precision comes from each ONNX)"
else
  TYPING=weak
  echo "trtexec: $TRTEXEC has no strong typing: building weakly typed with --fp16 / --int8 as each ONNX needs"
fi

{arrays}

mkdir -p engines
for p in "${{PRECISIONS[@]}}"; do
  engines="ENGINES_${{p}}[@]"
  for engine in "${{!engines}}"; do
    args="${{engine}}_${{TYPING}}[@]"
    echo "building $p: trtexec ${{!args}}"
    "$TRTEXEC" "${{!args}}"
  done
done

if [ "$BUILD_ONLY" = 1 ]; then
  echo "engines built; check them with: python3 -m runtime.bundle_check --typing $TYPING ${{PRECISIONS[*]}}"
  exit 0
fi
python3 -m runtime.bundle_check --typing "$TYPING" "${{PRECISIONS[@]}}"
"""


def device_readme(manifest: dict) -> str:
    profile = manifest["profile"]
    rows = "\n".join(
        f"| {p} | `{e[GRAPH]}` | {float(e['metadata'].get('validation_drop_db') or 0):.3f} | "
        f"{e['metadata'].get('int8_mac_fraction') or '-'} | PSNR ≥ {e['tolerance']['min_psnr']} dB |"
        for p, e in manifest["precisions"].items()
    )
    dims = lambda shape: "×".join(map(str, shape))  # noqa: E731
    return f"""# {manifest['model']} ×{manifest['scale']} for Jetson (srdeploy bundle)

Build the TensorRT engines on the device, check them against PyTorch, and measure latency — one command:

    bash build.sh            # or: bash build.sh int8     (TRTEXEC=/path/to/trtexec to pick a trtexec)

Needs JetPack 6 (TensorRT 8.6 or 10.x; TensorRT 11 works too), `python3-numpy` and the TensorRT Python
package (`python3-libnvinfer`). Nothing else: no PyTorch. Engines only run on the TensorRT version and
GPU they were built with, which is why they are built here.

## What build.sh does
1. Finds `trtexec` and asks it whether it knows `--stronglyTyped` (TensorRT 10 and newer): if so every
   engine is built strongly typed and takes its precision from the ONNX; on older TensorRT it passes
   `--fp16` / `--int8` instead (the same precision, chosen by the builder). It prints which it used.
2. Builds `engines/*.engine` with one optimization profile for `{profile['input_name']}`: min
   {dims(profile['min'])}, opt {dims(profile['opt'])}, max {dims(profile['max'])} (N×C×H×W, LR input),
   a {manifest['workspace_mib']} MiB workspace, builder optimization level {manifest['optimization_level']}, and a
   persistent `timing.cache` that makes rebuilds fast.
3. Runs `python3 -m runtime.bundle_check`: writes each engine's sidecar (`*.engine.json`: TensorRT
   version, GPU, plan, parity), compares each engine with the {REFERENCE} outputs in `golden/` (PSNR, max
   error, % of pixels off by more than one 8-bit level) and times it at the profile's min, opt and max
   shapes (median, p90, p99; host input to host output). Exit code 0 only if every precision passes.

| precision | ONNX | held-out PSNR drop vs FP32 (dB) | INT8 share of MACs | engine must reach |
|---|---|---|---|---|
{rows}

Without a GPU the same check runs on the ONNX files: `python3 -m runtime.bundle_check --backend onnxruntime`.
`manifest.json` holds the exact `trtexec` arguments for both typings, and the sha256 of every file of the
bundle: each run checks them first, and a damaged file is named in one line.

## Upscale images on the device

    python3 -m runtime.bundle_upscale photo.jpg photo_x{manifest['scale']}.png        # or a folder: IN_DIR OUT_DIR
    python3 -m runtime.bundle_upscale IN_DIR OUT_DIR --precision int8 --tile 256

Runs the engine `build.sh` built (`--backend onnxruntime` for the ONNX files on the CPU), tiled so that every
tile stays inside the optimization profile, with the network's receptive radius as context (the result equals a
whole-image run). A network whose gate reads the whole image (DSRNet) takes the gate's decision once, on the
whole image, and every tile runs the branch it chose: `build.sh` builds its gate parts too (the features the gate
averages, the gate, each branch), and the check runs every golden case through them as well. Needs Pillow
(`sudo apt install python3-pil`); with `pip3 install isal` (optional) the PNGs are deflated by ISA-L, 4× as fast
as zlib, same pixels. Images are read as a viewer shows them (EXIF orientation, CMYK, transparency and
colour profiles kept). Exit status: 0 all written, 1 some images failed
(each named, the others written), 2 nothing done.
"""


def check_destination(out: str | Path) -> Path:
    """``out`` may be new, empty, or a previous bundle (replaced); anything else is refused."""
    return check_bundle_folder(out, MANIFEST, "srdeploy bundle")


def write_bundle(out: Path, model_name: str, scale: int, artifacts: dict[str, onnx.ModelProto], profile: Profile,
                 photo: np.ndarray, reference: Infer) -> Path:
    """Write the bundle for ``artifacts`` ({precision: ONNX}) atomically into ``out``."""
    out = check_destination(out)
    with atomic_dir(out) as work:
        stem = f"{model_name}_x{scale}"
        plan = BuildPlan(Precision.FP32, profile)
        manifest = {"format": FORMAT, "model": model_name, "scale": scale, "reference": REFERENCE,
                    "golden": "golden", "profile": profile.as_dict(), "workspace_mib": plan.workspace_mib,
                    "optimization_level": plan.optimization_level, "precisions": {}}
        for precision, proto in artifacts.items():
            manifest["precisions"][precision] = precision_entry(stem, precision, work, proto, profile)
        cases = {name: (x, reference(x)) for name, x in golden_inputs(photo, profile).items()}
        save_golden(work / "golden", cases, {"model": model_name, "scale": scale, "reference": REFERENCE,
                                             "checkpoint_sha256": _metadata(next(iter(artifacts.values())))["checkpoint_sha256"]})
        source = Path(__file__).resolve().parents[2] / "runtime"
        for name in RUNTIME_FILES:
            (work / "runtime" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, work / "runtime" / name)
        (work / "build.sh").write_text(build_script(manifest))
        os.chmod(work / "build.sh", 0o755)
        (work / "README.md").write_text(device_readme(manifest))
        manifest["files"] = {p.relative_to(work).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                             for p in sorted(work.rglob("*")) if p.is_file()}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out



def bundle_precisions(text: str) -> list[str]:
    """``--precisions fp32,fp16,int8`` as a list, or one line naming the choices."""
    chosen = [p.strip() for p in text.split(",") if p.strip()]
    if not chosen or set(chosen) - {"fp32", "fp16", "int8"}:
        raise SrDeployError(f"--precisions {text!r}: choose from fp32,fp16,int8")
    return chosen


def check(options, out: Path) -> None:
    """The bundle's folder (new, empty or a previous bundle) and its precisions, or one line."""
    check_destination(out)
    bundle_precisions(options.precisions)


def export(net, options, out: Path, progress):
    """FP32/FP16/INT8 ONNX through their gates (``--max-psnr-drop`` applies to INT8), golden outputs, build.sh and
    the thin runtime in one folder (``export.main`` shape)."""
    from dataclasses import replace

    from ..options import result_for
    from ..onnx.target import gated_onnx
    from ..trt.trt_plan import profile_from_args
    from ...calib.data import held_out_photo
    from ...models.torch_runner import TorchRunner

    chosen = bundle_precisions(options.precisions)
    default_limits = replace(options, max_psnr_drop=None)  # the same graphs cache; the limit applies to INT8 only
    artifacts = {p: gated_onnx(net, p, options if p == "int8" else default_limits, progress, for_tensorrt=True)[0]
                 for p in chosen}
    progress("jetson bundle: golden outputs (PyTorch FP32 on held-out photo crops), build.sh, runtime, manifest")
    info = net.info
    profile = profile_from_args(info.export.input_name, info.channels, info.scale, options.min_shape,
                                options.opt_shape, options.max_shape)
    result = result_for(net, "jetson", options, precisions=chosen)
    result.artifacts.append(write_bundle(out, info.name, info.scale, artifacts, profile, held_out_photo(info.colour),
                                         TorchRunner(net.network).infer))
    return result
