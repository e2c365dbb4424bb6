"""Coverage-guided fuzzing (atheris: libFuzzer in-process, on srdeploy's own Python code) of what reads untrusted
input: image files, ONNX artifacts, sealed artifact folders, checkpoints, artifact metadata, the command line. The
only outcomes a harness allows are a result or the project's one-line ``SrDeployError``; anything else is a crash,
which libFuzzer saves with its input.

    python -m srdeploy.benchmarks.fuzz HARNESS [--seconds 60 | --runs N] [--record]   # one run
    python -m srdeploy.benchmarks.fuzz --table                 # docs/reliability.md's table, from the recorded runs

A digest is a checksum, not a signature: the harnesses of sealed artifacts seal each mutated input again, as anyone
crafting a file can, so the fuzzer reaches the parsers behind the digest. Seed corpora are real files made here: a
photo's crops in every format Pillow writes, the exported FSRCNN ×2 ONNX graph, an ExecuTorch folder's manifest,
checkpoints in PyTorch's zip and legacy formats. ``--record`` appends the run's executions, coverage and crashes to
``benchmarks/results/fuzz_runs.json``, from which ``--table`` writes the table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import fuzz_cli
from .bench import write_doc_block

RESULTS = Path(__file__).resolve().parent / "results" / "fuzz_runs.json"
DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
MARKS = ("<!-- fuzz-table: python -m srdeploy.benchmarks.fuzz --table -->", "<!-- /fuzz-table -->")
SCRATCH = Path(os.environ.get("SRDEPLOY_FUZZ_SCRATCH", "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()))


def _photo():
    from PIL import Image

    from ..calib.data import source_images
    from ..runtime import images

    return Image.fromarray(images.read_rgb(source_images(None, "validation")[0])[:24, :32])


# ---------------------------------------------------------------------------------------------------- harnesses


def image_seeds(folder: Path) -> None:
    photo = _photo()
    for name, picture, options in (("rgb.png", photo, {}), ("rgba.png", photo.convert("RGBA"), {}),
                                   ("palette.png", photo.convert("P"), {}), ("grey16.png", photo.convert("I;16"), {}),
                                   ("photo.jpg", photo, {"quality": 80}), ("photo.webp", photo, {}),
                                   ("photo.tif", photo, {}), ("photo.bmp", photo, {}), ("cmyk.jpg", photo.convert("CMYK"), {})):
        picture.save(folder / name, **options)


def image_harness() -> Callable[[bytes], None]:
    from ..runtime import images
    from ..runtime.errors import SrDeployError

    path = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.img"

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                picture = images.read_picture(path, max_pixels=1 << 22)
            assert picture.rgb.dtype.name == "uint8" and picture.rgb.ndim == 3 and picture.rgb.shape[2] == 3
        except SrDeployError as exc:
            one_line(exc)

    return one_input


EXPORTED: Path | None = None  # --exported: FSRCNN ×2 already exported, a folder per target (export --out DIR/TARGET)


def exported_fsrcnn(target: str, out: str) -> Path:
    """FSRCNN ×2's artifact for ``target``, exported into ``out`` (a seed), or copied there from ``--exported``."""
    if EXPORTED is not None and (EXPORTED / target).is_dir():
        import shutil

        from ..runtime.targets import target as find_target

        shutil.copytree(EXPORTED / target, out, dirs_exist_ok=True)
        return next(p for p in sorted(Path(out).iterdir()) if p.suffix in find_target(target).suffixes)
    from ..export.main import main_export
    from ..export.options import ExportOptions, Progress
    from ..models.spec import ModelSpec

    return main_export(ModelSpec("fsrcnn", 2), target, ExportOptions(), out, Progress(False)).artifacts[0]


def kept_export(target: str, seed: Path) -> Path:
    """FSRCNN ×2's artifact for ``target``, exported into the folder ``seed`` (made anew): the files a harness reads
    beside the input it mutates."""
    import shutil

    shutil.rmtree(seed, ignore_errors=True)
    return exported_fsrcnn(target, str(seed))


def onnx_seeds(folder: Path) -> None:
    with tempfile.TemporaryDirectory() as out:
        (folder / "fsrcnn_x2_fp32.onnx").write_bytes(exported_fsrcnn("onnx", out).read_bytes())


def resealed(data: bytes) -> bytes:
    """``data`` with its recorded digest recomputed (what anyone can do), where it records one."""
    from ..runtime import digest

    found = digest.recorded(data, digest.KEY)
    if found is None:
        return data
    start = found[0]
    placed = data[:start] + digest.PLACEHOLDER + data[start + 64:]
    return digest.seal(placed) if placed.count(digest.PLACEHOLDER) == 1 else data


def onnx_harness() -> Callable[[bytes], None]:
    import numpy as np

    from ..runtime.errors import SrDeployError
    from ..runtime.sessions.onnxruntime import OnnxSession

    path = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.onnx"

    def one_input(data: bytes) -> None:
        path.write_bytes(resealed(data))
        try:
            session = OnnxSession(path, threads=1)
            low = session.bounds["min"]
            shape = (low[0], low[1], max(low[2], 8), max(low[3], 8))
            if session.accepts(shape):
                session.infer(np.full(shape, 0.5, np.float32))
        except SrDeployError as exc:
            one_line(exc)

    return one_input


def manifest_seeds(folder: Path) -> None:
    from ..runtime.manifest import seal_manifest

    files = {"model.pte": b"\x00" * 64 + b"program bytes"}
    manifest = {"format": "srdeploy-executorch-1", "metadata": {"scale": "2", "colour": "y"}, "files": sorted(files)}
    (folder / "srdeploy.json").write_bytes(seal_manifest(manifest, files))


def manifest_harness() -> Callable[[bytes], None]:
    """A sealed folder's manifest (``runtime.manifest.read_manifest``, as the ncnn and ExecuTorch sessions read it),
    resealed after each mutation; the folder holds the one file the seed names."""
    from ..runtime import digest
    from ..runtime.errors import SrDeployError
    from ..runtime.manifest import MANIFEST, read_manifest

    folder = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.folder"
    folder.mkdir(exist_ok=True)
    program = b"\x00" * 64 + b"program bytes"
    (folder / "model.pte").write_bytes(program)
    mark = b'"sha256": "'

    def one_input(data: bytes) -> None:
        at = data.find(mark)
        if at >= 0:  # reseal over the manifest and the files it names that exist (as a crafter would)
            start = at + len(mark)
            placed = data[:start] + digest.PLACEHOLDER + data[start + 64:]
            try:
                names = sorted(json.loads(placed)["files"])
                extra = b"".join((folder / n).read_bytes() for n in names if isinstance(n, str) and n == "model.pte")
                data = digest.seal(placed, extra) if placed.count(digest.PLACEHOLDER) == 1 else data
            except Exception:  # noqa: BLE001 - not JSON, not a list: sealed as it is, the reader says what is wrong
                pass
        (folder / MANIFEST).write_bytes(data)
        try:
            read_manifest(folder, "srdeploy-executorch-1", "re-export it", "ExecuTorch")
        except SrDeployError as exc:
            one_line(exc)

    return one_input


def checkpoint_seeds(folder: Path) -> None:
    import torch

    state = {"conv.weight": torch.randn(4, 1, 3, 3), "conv.bias": torch.zeros(4)}
    torch.save(state, folder / "zip.pth")
    torch.save({"state_dict": state}, folder / "wrapped.pth")
    torch.save(state, folder / "legacy.pth", _use_new_zipfile_serialization=False)


def checkpoint_harness() -> Callable[[bytes], None]:
    from ..models.checkpoints import read_state_dict
    from ..runtime.errors import SrDeployError

    path = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.pth"

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        try:
            read_state_dict(path)
        except SrDeployError as exc:
            one_line(exc)
            assert len(str(exc)) < 300 + len(str(path)), str(exc)  # the bound, beside the path

    return one_input


METADATA_KEYS = ("model", "scale", "colour", "shape_bounds", "export_config", "global_gate")


def metadata_seeds(folder: Path) -> None:
    good = {"model": "fsrcnn", "scale": "2", "colour": "y",
            "shape_bounds": json.dumps({"min": [1, 1, 8, 8], "max": [64, 1, 8192, 8192]}),
            "export_config": json.dumps({"receptive_radius": 8, "min_size": 8}), "global_gate": "false"}
    (folder / "good.json").write_text(json.dumps(good))


def metadata_harness() -> Callable[[bytes], None]:
    """An artifact's srdeploy metadata (a JSON map of strings as the seed) through ``check_metadata`` and the
    properties every session reads after it."""
    from ..runtime.artifact import ArtifactSession
    from ..runtime.errors import SrDeployError

    class Probe(ArtifactSession):
        runtime_name = "probe"

    def one_input(data: bytes) -> None:
        try:
            entries = json.loads(data.decode("utf-8", "replace"))
        except ValueError:
            return
        if not isinstance(entries, dict):
            return
        probe = Probe()
        probe.path = Path("probe.onnx")
        probe.metadata = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in entries.items()}
        try:
            probe.check_metadata()
            probe.bounds = json.loads(probe.metadata["shape_bounds"])
            assert 1 <= probe.scale <= 16 and probe.colour in ("y", "rgb") and probe.channels >= 1
            assert 0 <= probe.receptive_radius <= 4096
            probe.whole_image, probe.has_global_gate  # noqa: B018 - read as the sessions do
        except SrDeployError as exc:
            one_line(exc)

    return one_input


OPENVINO_SEED = SCRATCH / "srdeploy-fuzz-openvino-seed"


def openvino_seeds(folder: Path) -> None:
    xml = kept_export("openvino", OPENVINO_SEED)
    (folder / xml.name).write_bytes(xml.read_bytes())


def openvino_harness() -> Callable[[bytes], None]:
    """An OpenVINO IR's .xml, resealed with the seed's weights beside it (``OpenVinoSession``: the pair's digest,
    OpenVINO's reader, the metadata), opened for its metadata (compiling each would take most of the time)."""
    from ..runtime.errors import SrDeployError
    from ..runtime.sessions.openvino import _IR_DIGEST, OpenVinoSession, seal_ir
    from ..runtime import digest

    xml = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.xml"
    weights = next(OPENVINO_SEED.glob("*.bin")).read_bytes()
    xml.with_suffix(".bin").write_bytes(weights)

    def one_input(data: bytes) -> None:
        found = list(_IR_DIGEST.finditer(data))
        if len(found) == 1:  # reseal, as anyone can
            placed = data[:found[0].start(1)] + digest.PLACEHOLDER + data[found[0].end(1):]
            if placed.count(digest.PLACEHOLDER) == 1:
                data = seal_ir(placed, weights)
        xml.write_bytes(data)
        try:
            OpenVinoSession(xml, run=False, cache=False)
        except SrDeployError as exc:
            one_line(exc)

    return one_input


COREML_SEED = SCRATCH / "srdeploy-fuzz-coreml-seed"


def coreml_seeds(folder: Path) -> None:
    from ..runtime.sessions.coreml import SPEC_FILE

    (folder / "model.mlmodel").write_bytes((kept_export("coreml", COREML_SEED) / SPEC_FILE).read_bytes())


def coreml_harness() -> Callable[[bytes], None]:
    """A Core ML package whose spec (``model.mlmodel``, protobuf) is mutated and resealed, its weights beside it
    (``CoreMLSession(run=False)``: the seal, the weights' recorded sha256, coremltools' reader, the metadata): what
    any machine reads of a package; running it needs macOS."""
    import shutil

    from ..runtime.errors import SrDeployError
    from ..runtime.sessions.coreml import SPEC_FILE, CoreMLSession

    package = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.mlpackage"
    shutil.rmtree(package, ignore_errors=True)
    shutil.copytree(next(COREML_SEED.glob("*.mlpackage")), package)
    CoreMLSession(package, run=False)  # coremltools' imports (seconds) before the fuzzing, not in its first input

    def one_input(data: bytes) -> None:
        (package / SPEC_FILE).write_bytes(resealed(data))
        try:
            session = CoreMLSession(package, run=False)
            assert session.scale >= 1 and session.input_name is not None
        except SrDeployError as exc:
            one_line(exc)

    return one_input


NCNN_SEED = SCRATCH / "srdeploy-fuzz-ncnn-seed"


def ncnn_seeds(folder: Path) -> None:
    from ..runtime.manifest import MANIFEST

    (folder / MANIFEST).write_bytes((kept_export("ncnn", NCNN_SEED) / MANIFEST).read_bytes())


def ncnn_harness() -> Callable[[bytes], None]:
    """An ncnn artifact folder (``NcnnSession``: the sealed manifest, its graphs, ncnn's loaders, a run on 8×8) whose
    manifest is mutated and sealed again over the files it names, FSRCNN ×2's .param and .bin beside it: a crafter
    can point a graph at any sealed file."""
    import numpy as np

    from ..runtime import digest
    from ..runtime.errors import SrDeployError
    from ..runtime.manifest import MANIFEST
    from ..runtime.sessions.ncnn import NcnnSession

    folder = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.ncnn"
    folder.mkdir(exist_ok=True)
    for path in next(NCNN_SEED.glob("*.ncnn")).iterdir():
        if path.name != MANIFEST:
            (folder / path.name).write_bytes(path.read_bytes())
    mark = b'"sha256": "'

    def one_input(data: bytes) -> None:
        at = data.find(mark)
        if at >= 0:  # reseal over the manifest and the files it names, as a crafter would
            start = at + len(mark)
            placed = data[:start] + digest.PLACEHOLDER + data[start + 64:]
            try:
                names = sorted(json.loads(placed)["files"])
                extra = b"".join((folder / n).read_bytes() for n in names
                                 if isinstance(n, str) and "/" not in n and (folder / n).is_file())
                data = digest.seal(placed, extra) if placed.count(digest.PLACEHOLDER) == 1 else data
            except Exception:  # noqa: BLE001 - not JSON, not a list: written as it is, the reader says what is wrong
                pass
        (folder / MANIFEST).write_bytes(data)
        try:
            session = NcnnSession(folder, threads=1)
            session.infer(np.full((1, session.channels, 8, 8), 0.5, np.float32))
        except SrDeployError as exc:
            one_line(exc)

    return one_input


EXECUTORCH_SEED = SCRATCH / "srdeploy-fuzz-executorch-seed"


def executorch_seeds(folder: Path) -> None:
    from ..runtime.sessions.executorch import PROGRAM

    (folder / PROGRAM).write_bytes((kept_export("executorch", EXECUTORCH_SEED) / PROGRAM).read_bytes())


def executorch_harness() -> Callable[[bytes], None]:
    """An ExecuTorch artifact folder (``ExecuTorchSession``: the seal, ExecuTorch's program loader with its
    flatbuffer verification, the methods the manifest asks for, a run on 8×8) whose ``model.pte`` is mutated and
    sealed again in FSRCNN ×2's manifest: a crafter can seal any program."""
    import numpy as np

    from ..runtime.errors import SrDeployError
    from ..runtime.manifest import MANIFEST, write_manifest
    from ..runtime.sessions.executorch import PROGRAM, ExecuTorchSession

    folder = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.executorch"
    folder.mkdir(exist_ok=True)
    manifest = json.loads((next(EXECUTORCH_SEED.glob("*.executorch")) / MANIFEST).read_text())

    def one_input(data: bytes) -> None:
        write_manifest(folder, manifest, {PROGRAM: data})
        try:
            session = ExecuTorchSession(folder)
            session.infer(np.full((1, session.channels, 8, 8), 0.5, np.float32))
        except SrDeployError as exc:
            one_line(exc)

    return one_input


ENGINE_SHA = b"<the engine's sha256>"


def sidecar_seeds(folder: Path) -> None:
    from ..runtime.sessions.tensorrt_sidecar import FORMAT

    metadata = {"model": "fsrcnn", "scale": "2", "colour": "y", "shape_bounds": json.dumps({"min": [1, 1, 8, 8],
                "max": [1, 1, 1080, 1920]}), "export_config": json.dumps({"receptive_radius": 8})}
    record = {"format": FORMAT, "engine": "model.engine", "engine_sha256": ENGINE_SHA.decode(),
              "target": {"tensorrt_version": "10.8.0", "gpu_name": "NVIDIA H100", "compute_capability": "9.0"},
              "precision": "fp16", "metadata": metadata, "rebuild": "srdeploy export --target trt", "parity": None}
    (folder / "sidecar.json").write_text(json.dumps(record, indent=2))


def sidecar_harness() -> Callable[[bytes], None]:
    """A TensorRT engine's JSON sidecar (``read_sidecar``, ``incompatibility``, the metadata check), as TrtSession
    reads it before TensorRT is touched; the seed's engine hash is filled in, as anyone can."""
    from ..runtime.artifact import ArtifactSession
    from ..runtime.errors import SrDeployError
    from ..runtime.sessions.tensorrt_sidecar import BuildTarget, file_sha256, incompatibility, read_sidecar, sidecar_path

    engine = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.engine"
    engine.write_bytes(b"engine bytes")
    here, sha = BuildTarget("10.8.0", "NVIDIA H100", "9.0"), file_sha256(engine).encode()

    class Probe(ArtifactSession):
        runtime_name = "probe"

    def one_input(data: bytes) -> None:
        sidecar_path(engine).write_bytes(data.replace(ENGINE_SHA, sha))
        try:
            record = read_sidecar(engine)
            reason = incompatibility(record, here)
            assert reason is None or "\n" not in reason
            probe = Probe()
            probe.path, probe.metadata = engine, dict(record["metadata"])
            probe.check_metadata()
        except SrDeployError as exc:
            one_line(exc)

    return one_input


def bundle_seeds(folder: Path) -> None:
    from ..runtime.bundle_check import FORMAT

    manifest = {"format": FORMAT, "model": "fsrcnn", "scale": 2, "reference": "pytorch-fp32",
                "files": {"model.onnx": hashlib.sha256(b"graph bytes").hexdigest()},
                "precisions": {"fp16": {"engine": "engines/fsrcnn_fp16.engine"}}, "golden": "golden", "profile": {}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def bundle_harness() -> Callable[[bytes], None]:
    """A Jetson bundle's manifest (``runtime.bundle_check.load_manifest``: every file it names checked against its
    sha256, inside the bundle), with one file beside it."""
    from ..runtime.bundle_check import MANIFEST, load_manifest
    from ..runtime.errors import SrDeployError

    root = SCRATCH / f"srdeploy-fuzz-{os.getpid()}.bundle"
    root.mkdir(exist_ok=True)
    (root / "model.onnx").write_bytes(b"graph bytes")

    def one_input(data: bytes) -> None:
        (root / MANIFEST).write_bytes(data)
        try:
            load_manifest(root)
        except SrDeployError as exc:
            one_line(exc)

    return one_input


def one_line(exc: Exception) -> None:
    """The project's error: one line, naming what to do."""
    text = str(exc)
    assert text and "\n" not in text, repr(text)


HARNESSES: dict[str, tuple[Callable[[Path], None], Callable[[], Callable[[bytes], None]], str]] = {
    "images": (image_seeds, image_harness, "image files (runtime.images.read_picture, limits)"),
    "onnx": (onnx_seeds, onnx_harness, "ONNX artifacts, resealed (OnnxSession: digest, external data, metadata, infer)"),
    "manifest": (manifest_seeds, manifest_harness, "sealed folder manifests, resealed (runtime.manifest.read_manifest)"),
    "checkpoints": (checkpoint_seeds, checkpoint_harness, "checkpoints, zip and legacy (models.checkpoints.read_state_dict)"),
    "metadata": (metadata_seeds, metadata_harness, "artifact metadata (ArtifactSession.check_metadata and its readers)"),
    "cli": (fuzz_cli.cli_seeds, fuzz_cli.cli_harness, "the command line (argparse and cli.arguments)"),
    "openvino": (openvino_seeds, openvino_harness, "OpenVINO IR .xml, resealed (OpenVinoSession: digest, reader, metadata)"),
    "ncnn": (ncnn_seeds, ncnn_harness, "ncnn artifact folders, manifest resealed (NcnnSession: graphs, loaders, a run)"),
    "executorch": (executorch_seeds, executorch_harness,
                   "ExecuTorch programs, resealed (ExecuTorchSession: seal, program loader, methods, a run)"),
    "coreml": (coreml_seeds, coreml_harness, "Core ML package specs, resealed (CoreMLSession read anywhere: seal, weights, metadata)"),
    "sidecar": (sidecar_seeds, sidecar_harness, "TensorRT engine sidecars (read_sidecar, incompatibility, metadata)"),
    "bundle": (bundle_seeds, bundle_harness, "Jetson bundle manifests (runtime.bundle_check.load_manifest)"),
}


# ---------------------------------------------------------------------------------------------------- running


def fuzz_in_process(name: str, corpus: Path, libfuzzer_args: list[str]) -> None:
    """Seeds into ``corpus`` (when empty), then atheris with srdeploy instrumented; exits as libFuzzer does."""
    import atheris

    seeds, harness, _ = HARNESSES[name]
    corpus.mkdir(parents=True, exist_ok=True)
    with atheris.instrument_imports(include=["srdeploy"]):  # before any srdeploy module the harness reaches loads
        with tempfile.TemporaryDirectory() as fresh:  # every run: seeds also leave the files a harness reads beside
            seeds(Path(fresh))
            if not any(corpus.iterdir()):
                for seed in Path(fresh).iterdir():
                    (corpus / seed.name).write_bytes(seed.read_bytes())
        one_input = harness()
    atheris.Setup([sys.argv[0], *libfuzzer_args, str(corpus)], one_input)
    atheris.Fuzz()


def run(name: str, seconds: int | None, runs: int | None, corpus: Path, crashes: Path,
        exported: Path | None = None) -> dict:
    """One fuzzing run of ``name`` in a child process: executions, coverage, crashes (libFuzzer's numbers). A crash's
    input and the run's whole log (the traceback comes long before libFuzzer's summary) are kept in ``crashes``."""
    limits = [f"-max_total_time={seconds}"] if seconds else []
    limits += [f"-runs={runs}"] if runs else []
    artifacts = crashes / name
    artifacts.mkdir(parents=True, exist_ok=True)
    before = set(artifacts.iterdir())
    command = [sys.executable, "-m", "srdeploy.benchmarks.fuzz", name, "--in-process", "--corpus", str(corpus),
               *(["--exported", str(exported)] if exported else []), "--",
               *limits, f"-artifact_prefix={artifacts}/", "-print_final_stats=1", "-rss_limit_mb=4096",
               "-timeout=60"]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, errors="replace")
    log = done.stdout + done.stderr  # atheris prints an uncaught exception's traceback on stdout
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
    coverage = re.findall(r"cov: (\d+) ft: (\d+)", log)
    found = sorted(p.name for p in set(artifacts.iterdir()) - before)
    if found:
        (artifacts / f"{found[0]}.log").write_text(log)
        print(f"kept in {artifacts}: {', '.join(found)} and the log {found[0]}.log", file=sys.stderr)
    elif not any(artifacts.iterdir()):
        artifacts.rmdir()
    return {"harness": name, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "seconds": round(time.monotonic() - started), "executions": int(stats.get("number_of_executed_units", 0)),
            "coverage": int(coverage[-1][0]) if coverage else None, "features": int(coverage[-1][1]) if coverage else None,
            "exit": done.returncode, "crashes": found, "log_tail": log.strip().splitlines()[-12:]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("harness", nargs="?", choices=sorted(HARNESSES))
    parser.add_argument("--seconds", type=int, help="stop after this long")
    parser.add_argument("--runs", type=int, help="stop after this many executions")
    parser.add_argument("--corpus", type=Path, help="the corpus folder (default: a new temporary one)")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"),
                        help="where a crash's input and the run's log are kept, in a folder per harness (default: %(default)s)")
    parser.add_argument("--exported", type=Path, help="FSRCNN ×2 already exported, a folder per target (export --out "
                        "DIR/TARGET): the seeds are copied from there instead of exported again")
    parser.add_argument("--record", action="store_true", help=f"append the run to {RESULTS.name}")
    parser.add_argument("--table", action="store_true", help=f"write the recorded runs' table into {DOC.name}")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:] if argv is None else argv
    libfuzzer = argv[argv.index("--") + 1:] if "--" in argv else []  # libFuzzer's own flags, after --
    args = parser.parse_args(argv[:len(argv) - len(libfuzzer) - (1 if "--" in argv else 0)])
    if args.table:
        write_doc_block(DOC, MARKS, table(json.loads(RESULTS.read_text()) if RESULTS.is_file() else []))
        return 0
    if args.harness is None:
        parser.error("name a harness, or --table")
    if args.exported and not args.exported.is_dir():
        parser.error(f"--exported {args.exported}: not a folder (export FSRCNN ×2 with --out DIR/TARGET first)")
    if args.in_process:
        global EXPORTED
        EXPORTED = args.exported
        fuzz_in_process(args.harness, args.corpus, libfuzzer)
        return 0
    with tempfile.TemporaryDirectory(prefix="srdeploy-fuzz-") as scratch:
        corpus = args.corpus or Path(scratch) / "corpus"
        result = run(args.harness, args.seconds, args.runs, corpus, args.crashes.resolve(),
                     args.exported and args.exported.resolve())
    print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}))
    if result["exit"] != 0 or result["crashes"]:
        print("\n".join(result["log_tail"]), file=sys.stderr)
    if args.record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        runs = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
        RESULTS.write_text(json.dumps([*runs, result], indent=2) + "\n")
    return 0 if result["exit"] == 0 and not result["crashes"] else 1


def table(runs: list[dict]) -> str:
    from ..runtime.tables import markdown_table

    rows = [[r["harness"], HARNESSES[r["harness"]][2], r["date"], str(r["seconds"]), f"{r['executions']:,}",
             str(r["coverage"]), str(len(r["crashes"])), "none" if r["exit"] == 0 and not r["crashes"] else
             r.get("finding") or ", ".join(r["crashes"]) or f"exit {r['exit']}"] for r in runs]
    total = sum(r["executions"] for r in runs)
    return markdown_table(["harness", "what it feeds", "run", "seconds", "executions", "coverage (edges)", "crashes",
                           "found"], rows) + (f"\n\n{total:,} inputs in {len(runs)} recorded runs of "
                                              f"{len({r['harness'] for r in runs})} harnesses." if runs else "")


if __name__ == "__main__":
    sys.exit(main())
