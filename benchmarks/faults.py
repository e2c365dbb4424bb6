"""Faults injected and repeated, each trial in fresh processes of the real command: ``kill -9`` at a random moment
during an export (ONNX, OpenVINO IR), a folder upscale, a video upscale and a checkpoint download; a full disk (a
file size limit at a random size) and a read-only output folder; four processes exporting one artifact at once; a
checkpoint download cut off at a random byte or answered with wrong bytes (a loopback HTTP server, named to the
command as ``$SRDEPLOY_MIRROR``).

After each fault, what a user would rely on is checked: every file under a finished name opens and verifies (an
artifact) or equals an undisturbed run's output byte for byte (an image, a video's frame count); a refusal is one
line (``error: …``, no traceback) with exit 2; the cache holds nothing partial; then the same command runs again
(a folder upscale with ``--skip-existing``, which must not redo a finished file) and must succeed, leaving no
temporary file behind. A trial that breaks any of this is not survived; ``lost`` counts finished files found
damaged or missing.

    python -m srdeploy.benchmarks.faults [--repeats 20] [--only kill-export,...] [--record]
    python -m srdeploy.benchmarks.faults --table      # docs/reliability.md's table, from the recorded runs
"""
from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from .bench import write_doc_block

RESULTS = Path(__file__).resolve().parent / "results" / "fault_runs.json"
DOC = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
MARKS = ("<!-- fault-table: python -m srdeploy.benchmarks.faults --table -->", "<!-- /fault-table -->")
COMMAND = [sys.executable, "-m", "srdeploy.cli"]
# root writes into a read-only folder: the child runs without the capabilities that override permissions
UNPRIVILEGED = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"] if os.geteuid() == 0 else []


@dataclass
class Trial:
    """One injected fault: whether everything held, finished files lost, and what was seen."""

    survived: bool = True
    lost: int = 0
    killed: bool = False  # for a kill: it landed before the command finished by itself
    notes: list[str] = field(default_factory=list)

    def fail(self, note: str, lost: int = 0) -> None:
        self.survived, self.lost = False, self.lost + lost
        self.notes.append(note)


@dataclass
class Bench:
    """What the trials share: a scratch folder, the FSRCNN ×2 ONNX artifact, input photos, a video, and the
    outputs and durations of undisturbed runs."""

    root: Path
    artifact: Path = None
    photos: Path = None
    video: Path = None
    reference: dict[str, bytes] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    video_frames: int = 0


def srdeploy(arguments: list[str], env: dict | None = None, limit_bytes: int | None = None,
             unprivileged: bool = False) -> subprocess.Popen:
    """The command in a new process (``limit_bytes``: RLIMIT_FSIZE, which Python meets as EFBIG, a full disk)."""
    def limits() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    prefix = UNPRIVILEGED if unprivileged else []
    return subprocess.Popen([*prefix, *COMMAND, *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})}, preexec_fn=limits)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    _, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def killed_at(process: subprocess.Popen, seconds: float) -> bool:
    """``kill -9`` after ``seconds``; whether it landed before the command ended by itself."""
    try:
        process.wait(seconds)
        landed = False
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        landed = True
    process.communicate()
    return landed


def one_line_refusal(trial: Trial, code: int, stderr: str) -> None:
    """A refusal: exit 2, its last line ``error: …``, no traceback."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if code != 2 or not last.startswith("error: ") or "Traceback" in stderr:
        trial.fail(f"exit {code}, not one line: {stderr.strip()[-300:]!r}")


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or folders of srdeploy's atomic writes in ``folder``."""
    return sorted(p.name for p in folder.glob(".*")) if folder.is_dir() else []


def finished(folder: Path, pattern: str) -> list[Path]:
    """Files under finished names (pathlib's glob also matches the hidden temporary ones)."""
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith(".")) if folder.is_dir() else []


def opens(path: Path) -> str | None:
    """None when the artifact opens and verifies, else why not."""
    from ..runtime.errors import SrDeployError
    from ..runtime.opener import open_artifact

    try:
        open_artifact(path, run=False)
    except SrDeployError as exc:
        return str(exc)
    return None


def artifacts_in(folder: Path, target: str) -> list[Path]:
    suffix = {"onnx": ".onnx", "openvino": ".xml"}[target]
    return finished(folder, f"*{suffix}")


def check_export(trial: Trial, out: Path, target: str) -> None:
    """Every finished artifact in ``out`` opens and verifies."""
    for path in artifacts_in(out, target):
        problem = opens(path)
        if problem:
            trial.fail(f"{path.name} is under its finished name but does not open: {problem}", lost=1)


def rerun_export(trial: Trial, out: Path, target: str, env: dict | None = None) -> None:
    """The same export again: it succeeds, its artifact opens, nothing temporary is left."""
    code, stderr = finish(srdeploy(["export", "--model", "fsrcnn", "--target", target, "--out", str(out)], env))
    if code != 0:
        trial.fail(f"the next export failed (exit {code}): {stderr.strip()[-300:]}")
        return
    if not artifacts_in(out, target):
        trial.fail("the next export wrote no artifact")
    check_export(trial, out, target)
    if leftovers(out):
        trial.fail(f"temporary files left after the next run: {leftovers(out)}")


# ---------------------------------------------------------------------------------------------------- the faults


def kill_export(bench: Bench, rng: random.Random, work: Path) -> Trial:
    """``kill -9`` at a random moment of an export (ONNX or OpenVINO IR, alternately), into a folder holding the
    previous export of the same artifact."""
    trial, target = Trial(), rng.choice(["onnx", "openvino"])
    out = work / "out"
    shutil.copytree(bench.root / f"export-{target}", out)  # the previous, finished export
    process = srdeploy(["export", "--model", "fsrcnn", "--target", target, "--out", str(out)])
    trial.killed = killed_at(process, rng.uniform(0.2, bench.seconds[f"export-{target}"]))
    if not artifacts_in(out, target):
        trial.fail("the previous artifact is gone", lost=1)
    check_export(trial, out, target)
    rerun_export(trial, out, target)
    return trial


def kill_upscale_folder(bench: Bench, rng: random.Random, work: Path) -> Trial:
    """``kill -9`` at a random moment of a folder upscale; then the same command with ``--skip-existing``."""
    trial, out = Trial(), work / "out"
    arguments = ["upscale", str(bench.photos), str(out), "--artifact", str(bench.artifact), "--tile", "64"]
    trial.killed = killed_at(srdeploy(arguments), rng.uniform(0.2, bench.seconds["upscale"]))
    done = {p.name: p.stat().st_mtime_ns for p in finished(out, "*.png")}
    compare_images(trial, bench, out)
    code, stderr = finish(srdeploy([*arguments, "--skip-existing"]))
    if code != 0:
        trial.fail(f"the continued upscale failed (exit {code}): {stderr.strip()[-300:]}")
    redone = [name for name, mtime in done.items() if (out / name).stat().st_mtime_ns != mtime]
    if redone:
        trial.fail(f"--skip-existing redid {len(redone)} finished files")
    compare_images(trial, bench, out, every=True)
    if leftovers(out):
        trial.fail(f"temporary files left after the next run: {leftovers(out)}")
    return trial


def compare_images(trial: Trial, bench: Bench, out: Path, every: bool = False) -> None:
    """Every PNG under a finished name equals the undisturbed run's (``every``: and none is missing)."""
    present = {p.name for p in finished(out, "*.png")}
    for name in sorted(present):
        if (out / name).read_bytes() != bench.reference.get(name):
            trial.fail(f"{name} differs from the undisturbed run's output", lost=1)
    missing = sorted(set(bench.reference) - present)
    if every and missing:
        trial.fail(f"outputs missing: {missing}", lost=len(missing))


def kill_upscale_video(bench: Bench, rng: random.Random, work: Path) -> Trial:
    """``kill -9`` at a random moment of a video upscale: the output is absent or whole; the next run succeeds."""
    trial, out = Trial(), work / "out"
    arguments = ["upscale", str(bench.video), str(out), "--artifact", str(bench.artifact)]
    trial.killed = killed_at(srdeploy(arguments), rng.uniform(0.2, bench.seconds["video"]))
    for path in finished(out, "*.mp4"):
        frames = video_frames(path)
        if frames != bench.video_frames:
            trial.fail(f"{path.name} is under its finished name with {frames} of {bench.video_frames} frames", lost=1)
    code, stderr = finish(srdeploy(arguments))
    written = finished(out, "*.mp4")
    if code != 0 or len(written) != 1 or video_frames(written[0]) != bench.video_frames:
        trial.fail(f"the next video upscale failed (exit {code}): {stderr.strip()[-300:]}")
    if leftovers(out):
        trial.fail(f"temporary files left after the next run: {leftovers(out)}")
    return trial


def video_frames(path: Path) -> int:
    import av

    try:
        with av.open(str(path)) as clip:
            return sum(1 for _ in clip.decode(video=0))
    except av.FFmpegError:
        return -1


def full_disk_export(bench: Bench, rng: random.Random, work: Path) -> Trial:
    """An export whose files may grow to a random size below the artifact's (RLIMIT_FSIZE: a full disk)."""
    trial, out = Trial(), work / "out"
    target = rng.choice(["onnx", "openvino"])
    largest = max(p.stat().st_size for p in (bench.root / f"export-{target}").iterdir())
    process = srdeploy(["export", "--model", "fsrcnn", "--target", target, "--out", str(out)],
                       limit_bytes=rng.randrange(1, largest))
    one_line_refusal(trial, *finish(process))
    if out.is_dir() and [p for p in out.iterdir() if not p.name.startswith(".")]:
        trial.fail(f"written despite the refusal: {sorted(p.name for p in out.iterdir())}", lost=1)
    rerun_export(trial, out, target)
    return trial


def full_disk_upscale(bench: Bench, rng: random.Random, work: Path) -> Trial:
    """A folder upscale whose files may grow to a random size below the largest output: each image that does not
    fit is named on one line, the others are written whole."""
    trial, out = Trial(), work / "out"
    largest = max(len(data) for data in bench.reference.values())
    arguments = ["upscale", str(bench.photos), str(out), "--artifact", str(bench.artifact), "--tile", "64"]
    code, stderr = finish(srdeploy(arguments, limit_bytes=rng.randrange(1, largest)))
    lines = stderr.strip().splitlines()
    if code not in (1, 2) or "Traceback" in stderr or not any(line.startswith("skipped ") for line in lines):
        trial.fail(f"exit {code}: {stderr.strip()[-300:]!r}")
    compare_images(trial, bench, out)
    code, stderr = finish(srdeploy([*arguments, "--skip-existing"]))
    if code != 0:
        trial.fail(f"the continued upscale failed (exit {code}): {stderr.strip()[-300:]}")
    compare_images(trial, bench, out, every=True)
    if leftovers(out):
        trial.fail(f"temporary files left: {leftovers(out)}")
    return trial


def read_only_output(bench: Bench, rng: random.Random, work: Path) -> Trial:
    """An export or an upscale into a read-only folder: one line, nothing written; then writable, it succeeds."""
    trial, out = Trial(), work / "out"
    out.mkdir()
    out.chmod(0o555)
    export = rng.random() < 0.5
    arguments = (["export", "--model", "fsrcnn", "--out", str(out)] if export else
                 ["upscale", str(bench.photos), str(out), "--artifact", str(bench.artifact), "--tile", "64"])
    code, stderr = finish(srdeploy(arguments, unprivileged=True))
    if export:
        one_line_refusal(trial, code, stderr)
    elif code != 2 or "Traceback" in stderr or not stderr.strip().splitlines()[-1].startswith("error: "):
        trial.fail(f"exit {code}: {stderr.strip()[-300:]!r}")
    if any(out.iterdir()):
        trial.fail(f"written into a read-only folder: {sorted(p.name for p in out.iterdir())}")
    out.chmod(0o755)
    if export:
        rerun_export(trial, out, "onnx")
    else:
        code, stderr = finish(srdeploy(arguments))
        if code != 0:
            trial.fail(f"the next upscale failed (exit {code}): {stderr.strip()[-300:]}")
        compare_images(trial, bench, out, every=True)
    return trial


def concurrent_export(bench: Bench, rng: random.Random, work: Path) -> Trial:
    """Four processes export the same artifact into the same folder at once (started a random few ms apart)."""
    trial, out = Trial(), work / "out"
    target = rng.choice(["onnx", "openvino"])
    processes = []
    for _ in range(4):
        processes.append(srdeploy(["export", "--model", "fsrcnn", "--target", target, "--out", str(out)]))
        time.sleep(rng.uniform(0, 0.05))
    for process in processes:
        code, stderr = finish(process)
        if code != 0:
            trial.fail(f"one of four failed (exit {code}): {stderr.strip()[-300:]}")
    expected = {p.name for p in (bench.root / f"export-{target}").iterdir()}
    found = {p.name for p in out.iterdir() if not p.name.startswith(".")} if out.is_dir() else set()
    if found != expected:
        trial.fail(f"the folder holds {sorted(found)}, not {sorted(expected)}", lost=len(expected - found))
    check_export(trial, out, target)
    if leftovers(out):
        trial.fail(f"temporary files left: {leftovers(out)}")
    return trial


def download(bench: Bench, rng: random.Random, work: Path) -> Trial:
    """A checkpoint download from a loopback mirror that cuts the connection at a random byte, sends wrong bytes,
    or is killed (``kill -9``) at a random moment; the cache must hold nothing partial, the next download succeeds."""
    from ..models.registry import default_checkpoint

    trial, cache = Trial(), work / "cache"
    good = Path(os.environ["SRDEPLOY_WEIGHTS_DIR"], "fsrcnn_x2.pth").read_bytes()
    expected = default_checkpoint("fsrcnn", 2).sha256
    fault = rng.choice(["cut", "wrong", "kill"])
    data = bytearray(good)
    if fault == "wrong":
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    env = {"SRDEPLOY_WEIGHTS_DIR": "", "SRDEPLOY_CACHE_DIR": str(cache)}
    arguments = ["export", "--model", "fsrcnn", "--out", str(work / "out")]
    with mirror(bytes(data), cut_at=rng.randrange(len(good)) if fault == "cut" else None,
                slow=fault == "kill") as url:
        process = srdeploy(arguments, {**env, "SRDEPLOY_MIRROR": url})
        if fault == "kill":  # the command starts (imports) for a few seconds, then downloads for about 1.4 s
            trial.killed = killed_at(process, rng.uniform(0.2, bench.seconds["export-onnx"] + 1.4))
        else:
            one_line_refusal(trial, *finish(process))
    cached = cache / "fsrcnn_x2.pth"
    if cached.exists() and hashlib.sha256(cached.read_bytes()).hexdigest() != expected:
        trial.fail(f"the cache holds a partial or wrong checkpoint after a {fault} download", lost=1)
    with mirror(good) as url:
        code, stderr = finish(srdeploy(arguments, {**env, "SRDEPLOY_MIRROR": url}))
    if code != 0 or not cached.is_file() or hashlib.sha256(cached.read_bytes()).hexdigest() != expected:
        trial.fail(f"the next download failed (exit {code}): {stderr.strip()[-300:]}")
    if leftovers(cache):
        trial.fail(f"temporary files left in the cache: {leftovers(cache)}")
    return trial


@contextmanager
def mirror(data: bytes, cut_at: int | None = None, slow: bool = False) -> Iterator[str]:
    """A loopback HTTP server answering any path with ``data`` (announcing its full length): cut after ``cut_at``
    bytes, or ``slow`` (4 KiB every 100 ms: FSRCNN's 55 KB in about 1.4 s, so a kill lands mid-way)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            body, step = data if cut_at is None else data[:cut_at], 4096 if slow else 1 << 16
            for start in range(0, len(body), step):
                self.wfile.write(body[start:start + step])
                if slow:
                    time.sleep(0.1)
            self.close_connection = True

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/weights"
    finally:
        server.shutdown()
        server.server_close()


FAULTS: dict[str, tuple[Callable[[Bench, random.Random, Path], Trial], str]] = {
    "kill-export": (kill_export, "`kill -9` during an export (ONNX or OpenVINO IR) over a finished one"),
    "kill-upscale-folder": (kill_upscale_folder, "`kill -9` during a folder upscale, then `--skip-existing`"),
    "kill-upscale-video": (kill_upscale_video, "`kill -9` during a video upscale"),
    "kill-cut-wrong-download": (download, "a checkpoint download cut at a random byte, wrong bytes, or `kill -9`"),
    "full-disk-export": (full_disk_export, "an export meeting a full disk at a random size (RLIMIT_FSIZE)"),
    "full-disk-upscale": (full_disk_upscale, "a folder upscale meeting a full disk at a random size"),
    "read-only-output": (read_only_output, "an export or upscale into a read-only folder"),
    "concurrent-export": (concurrent_export, "four processes exporting the same artifact at once"),
}


# ---------------------------------------------------------------------------------------------------- running


def prepare(root: Path) -> Bench:
    """The artifact, the inputs (held-out photos, never the test sets) and undisturbed runs, timed."""
    import av
    import numpy as np
    from PIL import Image

    from ..calib.data import source_images
    from ..runtime import images

    bench = Bench(root)
    for target in ("onnx", "openvino"):
        started = time.monotonic()
        code, stderr = finish(srdeploy(["export", "--model", "fsrcnn", "--target", target, "--out",
                                        str(root / f"export-{target}")]))
        if code != 0:
            raise SystemExit(f"error: the undisturbed {target} export failed: {stderr.strip()[-500:]}")
        bench.seconds[f"export-{target}"] = time.monotonic() - started
    bench.artifact = artifacts_in(root / "export-onnx", "onnx")[0]
    bench.photos = root / "photos"
    bench.photos.mkdir()
    for i, path in enumerate(source_images(None, "validation")[:6]):
        rgb = images.read_rgb(path)
        Image.fromarray(rgb[:160, :200]).save(bench.photos / f"photo{i}.png")
    started = time.monotonic()
    code, stderr = finish(srdeploy(["upscale", str(bench.photos), str(root / "upscaled"), "--artifact",
                                    str(bench.artifact), "--tile", "64"]))
    if code != 0:
        raise SystemExit(f"error: the undisturbed upscale failed: {stderr.strip()[-500:]}")
    bench.seconds["upscale"] = time.monotonic() - started
    bench.reference = {p.name: p.read_bytes() for p in finished(root / "upscaled", "*.png")}
    bench.video = root / "clip.mp4"
    with av.open(str(bench.video), "w") as clip:
        stream = clip.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        rgb = images.read_rgb(source_images(None, "validation")[0])
        for frame in range(48):
            picture = np.ascontiguousarray(rgb[frame:frame + 96, frame:frame + 128])
            clip.mux(stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
        clip.mux(stream.encode(None))
    started = time.monotonic()
    code, stderr = finish(srdeploy(["upscale", str(bench.video), str(root / "video"), "--artifact", str(bench.artifact)]))
    if code != 0:
        raise SystemExit(f"error: the undisturbed video upscale failed: {stderr.strip()[-500:]}")
    bench.seconds["video"] = time.monotonic() - started
    bench.video_frames = video_frames(finished(root / "video", "*.mp4")[0])
    return bench


def run(names: list[str], repeats: int, seed: int = 0, progress: bool = True) -> list[dict]:
    """``repeats`` trials of each fault; a row per fault: tried, survived, files lost, kills that landed, notes."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="srdeploy-faults-") as scratch:
        if progress:
            print("preparing: exports, photos, a video and their undisturbed runs", file=sys.stderr, flush=True)
        bench = prepare(Path(scratch))
        for name in names:
            function, _ = FAULTS[name]
            rng, trials, started = random.Random(f"{seed}:{name}"), [], time.monotonic()
            for repeat in range(repeats):
                work = Path(scratch) / f"{name}-{repeat}"
                work.mkdir()
                trials.append(function(bench, rng, work))
                shutil.rmtree(work, ignore_errors=True)
                if progress:
                    print(f"{name} {repeat + 1}/{repeats}: {'held' if trials[-1].survived else trials[-1].notes}",
                          file=sys.stderr, flush=True)
            rows.append({"fault": name, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                         "tried": len(trials), "survived": sum(t.survived for t in trials),
                         "lost": sum(t.lost for t in trials), "killed": sum(t.killed for t in trials),
                         "seconds": round(time.monotonic() - started),
                         "notes": sorted({note for t in trials for note in t.notes})[:10]})
    return rows


def table(rows: list[dict]) -> str:
    from ..runtime.tables import markdown_table

    text = markdown_table(["fault", "what", "run", "tried", "kills that landed", "survived", "files lost", "found"],
                          [[r["fault"], FAULTS[r["fault"]][1], r["date"], str(r["tried"]),
                            str(r["killed"]) if r["fault"].startswith("kill") else "–", str(r["survived"]),
                            str(r["lost"]), "; ".join(r["notes"]) or "nothing"] for r in rows])
    tried, survived, lost = (sum(r[k] for r in rows) for k in ("tried", "survived", "lost"))
    return text + (f"\n\n{tried} faults injected, {survived} survived, {lost} finished files lost." if rows else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="trials of each fault (default 20)")
    parser.add_argument("--only", help=f"comma-separated, from: {', '.join(FAULTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--record", action="store_true", help=f"replace these faults' rows in {RESULTS.name}")
    parser.add_argument("--table", action="store_true", help=f"write the recorded rows' table into {DOC.name}")
    args = parser.parse_args(argv)
    if args.table:
        write_doc_block(DOC, MARKS, table(json.loads(RESULTS.read_text()) if RESULTS.is_file() else []))
        return 0
    names = args.only.split(",") if args.only else list(FAULTS)
    unknown = [name for name in names if name not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}: choose from {', '.join(FAULTS)}")
    rows = run(names, args.repeats, args.seed)
    print(table(rows))
    if args.record:
        kept = [r for r in (json.loads(RESULTS.read_text()) if RESULTS.is_file() else []) if r["fault"] not in names]
        RESULTS.write_text(json.dumps(sorted(kept + rows, key=lambda r: list(FAULTS).index(r["fault"])), indent=2) + "\n")
    return 0 if all(r["survived"] == r["tried"] and r["lost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
