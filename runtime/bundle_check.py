"""The Jetson bundle's device-side check: parity against the golden outputs shipped in the bundle, then
latency at the optimization profile's shapes. numpy + tensorrt (or onnxruntime) only.

    python3 -m runtime.bundle_check                       # TensorRT engines built by build.sh
    python3 -m runtime.bundle_check --backend onnxruntime # the bundle's ONNX files, anywhere

``build.sh`` runs it right after building, with ``--typing``: the engines were just built here, so their
sidecars (TensorRT version, GPU, plan, parity) are written then. Exit 0 when every precision passes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from .atomic import inside
from .compare import Tolerance, compare
from .errors import SrDeployError, command, shown
from .global_gate import one_decision
from .golden import load_golden
from .tables import markdown_table
from .timing import measure

BUNDLE = Path(__file__).resolve().parent.parent
MANIFEST = "manifest.json"
FORMAT = "srdeploy-jetson-bundle/2"  # /2: manifest lists every file with its sha256


def load_manifest(root: Path = BUNDLE) -> dict:
    """The bundle's manifest, after every file it lists was checked against its sha256."""
    path = root / MANIFEST
    if not path.is_file():
        raise SrDeployError(f"{path} is missing: run this from an srdeploy Jetson bundle")
    try:
        manifest = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:  # not UTF-8 or not JSON; RecursionError: [[[… a thousand deep
        raise SrDeployError(f"{path} is damaged ({type(exc).__name__}): copy the bundle again, or re-export it") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SrDeployError(f"{path} is not an {FORMAT} manifest: re-export the bundle with this srdeploy")
    files = manifest.get("files")
    if not (isinstance(files, dict) and all(isinstance(v, str) for v in files.values())
            and isinstance(manifest.get("model"), str) and isinstance(manifest.get("scale"), int)):
        raise SrDeployError(f"{path} is damaged (its model, scale or files are missing or malformed): copy the bundle "
                            "again, or re-export it")
    again = f"export --model {shown(manifest['model'])} --scale {manifest['scale']} --target jetson"
    fix = f"copy the bundle again, or re-export it ({command(again)})"
    for name, expected in manifest["files"].items():
        if inside(root, name) is None:
            raise SrDeployError(f"{path} names {name[:60]!r}, outside the bundle: refused unread; {fix}")
        if not (root / name).is_file():
            raise SrDeployError(f"bundle file {shown(name)} is missing: {fix}")  # names escaped: found by fuzzing
        if hashlib.sha256((root / name).read_bytes()).hexdigest() != expected:
            raise SrDeployError(f"bundle file {shown(name)} is damaged (its sha256 differs from {MANIFEST}'s): {fix}")
    return manifest


def adopt_engine(root: Path, entry: dict, precision: str, typing: str) -> None:
    """Write the sidecar of an engine ``build.sh`` has just built on this machine."""
    from .sessions.cuda import Cuda
    from .sessions.tensorrt import current_target, require_tensorrt
    from .sessions.tensorrt_sidecar import write_sidecar

    target = current_target(require_tensorrt(), Cuda())
    parts = entry.get("gate_parts", {})
    listed = {"gate_parts": {name: Path(part["engine"]).name for name, part in parts.items()}} if parts else {}
    for item, extra in [*((part, {}) for part in parts.values()), (entry, listed)]:
        write_sidecar(root / item["engine"], target, precision=precision, plan=item["plans"][typing],
                      onnx_sha256=item["onnx_sha256"], metadata=item["metadata"], rebuild=f"bash build.sh {precision}",
                      built_by=f"trtexec via build.sh ({typing}ly typed)", parity=None, **extra)


BUNDLE_BACKENDS = ("tensorrt", "onnxruntime", "openvino")
GRAPH = "onnx"  # the manifest's key, and the bundle's folder, of each precision's ONNX graph


def open_session(root: Path, entry: dict, backend: str, cuda_graphs: bool, precision: str):
    if backend == "onnxruntime":
        from .sessions.onnxruntime import OnnxSession

        return OnnxSession(root / entry[GRAPH], providers=["CPUExecutionProvider"])
    if backend == "openvino":
        from .sessions.openvino import OpenVinoSession

        return OpenVinoSession(root / entry[GRAPH])
    if not (root / entry["engine"]).is_file():
        raise SrDeployError(f"engine {entry['engine']} is not built yet: run `bash build.sh {precision}` in this bundle "
                            "(or use --backend onnxruntime)")
    from .sessions.tensorrt import TrtSession

    return TrtSession(root / entry["engine"], cuda_graphs=cuda_graphs)


def parity(session, cases: dict, tolerance: Tolerance) -> dict:
    """Each golden case through the session; a network whose gate reads the whole image, through its gate parts
    too (``CASE, gate parts``: the decision tiles share must give the same output)."""
    runs = {"": session.infer}
    if session.has_global_gate:
        runs[", gate parts"] = one_decision(session.gate_split())
    results = {}
    for suffix, infer in runs.items():
        for name, (x, reference) in cases.items():
            comparison = compare(infer(x), reference)
            results[name + suffix] = {**comparison.as_dict(), "violations": comparison.violations(tolerance)}
    return results


def latency(session, profile: dict, warmup: int, runs: int) -> list[dict]:
    rng = np.random.default_rng(0)
    timings = []
    for bound in ("min", "opt", "max"):
        x = rng.random(profile[bound], dtype=np.float32)
        timing = measure("x".join(map(str, profile[bound])), session.infer, x, warmup, runs)
        timings.append({"bound": bound, **vars(timing)})
    return timings


def check(root: Path, precision: str, args: argparse.Namespace, manifest: dict) -> dict:
    entry = manifest["precisions"][precision]
    if args.typing:
        adopt_engine(root, entry, precision, args.typing)
    session = open_session(root, entry, args.backend, args.cuda_graphs, precision)
    cases, _ = load_golden(root / manifest["golden"])
    tolerance = Tolerance(**entry["tolerance"])
    results = parity(session, cases, tolerance)
    passed = not any(r["violations"] for r in results.values())
    if args.typing:  # record the measured parity in the sidecar of the engine just built
        from .sessions.tensorrt_sidecar import update_sidecar

        update_sidecar(root / entry["engine"], parity={"passed": passed, "cases": results,
                                                       "reference": manifest["reference"]})
    timings = latency(session, manifest["profile"], args.warmup, args.runs) if args.runs else []
    return {"precision": precision, "backend": args.backend, "passed": passed, "parity": results, "latency": timings}


def report(result: dict, tolerance: dict) -> str:
    rows = [[name, f"{r['psnr']:.1f}", f"{r['max_abs']:.2e}", f"{r['off_by_level_pct']:.3f}",
             "ok" if not r["violations"] else "FAIL: " + "; ".join(r["violations"])] for name, r in result["parity"].items()]
    lines = [f"## {result['precision']} on {result['backend']}: {'PASS' if result['passed'] else 'FAIL'} "
             f"(tolerance: PSNR ≥ {tolerance['min_psnr']} dB, ≤ {tolerance['max_off_by_level']}% off by >1 level)",
             markdown_table(["golden case", "PSNR dB", "max abs", "% >1 level", "status"], rows)]
    if result["latency"]:
        rows = [[t["bound"], t["name"], f"{t['median_ms']:.2f}", f"{t['p90_ms']:.2f}", f"{t['p99_ms']:.2f}", str(t["runs"])]
                for t in result["latency"]]
        lines.append(markdown_table(["profile", "input", "median ms", "p90 ms", "p99 ms", "runs"], rows))
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m runtime.bundle_check", description=__doc__.split("\n")[0])
    parser.add_argument("precisions", nargs="*", help="fp32 fp16 int8 (default: every one in the bundle)")
    parser.add_argument("--backend", choices=BUNDLE_BACKENDS, default="tensorrt",
                        help="tensorrt: the engines build.sh built (default); onnxruntime or openvino: the bundle's "
                             "ONNX files on this CPU")
    parser.add_argument("--typing", choices=("strong", "weak"), help="(build.sh) engines just built here: write their sidecars")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per profile shape (0: parity only)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cuda-graphs", action="store_true", help="tensorrt: replay each shape as a CUDA graph")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest()
        unknown = sorted(set(args.precisions) - set(manifest["precisions"]))
        if unknown:
            raise SrDeployError(f"precision {', '.join(unknown)} is not in this bundle ({', '.join(manifest['precisions'])})")
        results = [check(BUNDLE, p, args, manifest) for p in args.precisions or manifest["precisions"]]
    except SrDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"model": manifest["model"], "scale": manifest["scale"], "results": results}, indent=2))
    else:
        print(f"{manifest['model']} ×{manifest['scale']}: parity against {manifest['reference']} golden outputs")
        for result in results:
            print("\n" + report(result, manifest["precisions"][result["precision"]]["tolerance"]))
    return 0 if all(r["passed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
