"""Finding, downloading and reading checkpoint files (never unpickling code).

Where an official checkpoint is looked for, in order:
1. ``$SRDEPLOY_WEIGHTS_DIR/<model>_x<scale>.pth`` (a local directory of checkpoints, e.g. for air-gapped
   machines; the tests point it at ``../shared/weights``);
2. the cache, ``$SRDEPLOY_CACHE_DIR`` or ``~/.cache/srdeploy/checkpoints``;
3. a download from the checkpoint's public URL (or ``$SRDEPLOY_MIRROR/<model>_x<scale>.pth``, an internal
   mirror) into the cache: streamed to a temporary file, verified against the registry's sha256, then renamed into
   place (an interrupted, cut or wrong download leaves nothing in the cache; the next run downloads again).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path

import torch
from tqdm import tqdm

from .registry import Checkpoint
from ..runtime.atomic import atomic_path
from ..runtime.cache import cache_dir
from ..runtime.errors import SrDeployError, shown

WEIGHTS_DIR_ENV = "SRDEPLOY_WEIGHTS_DIR"
MIRROR_ENV = "SRDEPLOY_MIRROR"
_CHUNK = 1 << 20
# checkpoint wrappers, preferred first: BasicSR keeps its EMA weights (the published ones) in params_ema
WRAPPERS = ("params_ema", "params", "state_dict", "model", "net", "generator")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected_sha256: str) -> None:
    found = sha256_of(path)
    if found != expected_sha256:
        raise SrDeployError(
            f"checkpoint {path} has sha256 {found[:16]}…, expected {expected_sha256[:16]}…: "
            "the file is corrupt, truncated or a different checkpoint; delete it and retry"
        )


def download(url: str, destination: Path, expected_sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``destination`` atomically, verifying its sha256 before the rename."""
    with atomic_path(destination) as tmp:
        digest, received = hashlib.sha256(), 0
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {destination.name}",
                      disable=None, leave=False) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total and received < total:  # http.client returns what came before the connection closed, and no error
            raise SrDeployError(f"download of {url} stopped after {received:,} of {total:,} bytes (the connection was "
                                "cut): nothing was kept; retry, or download it by hand and pass --weights PATH")
        if digest.hexdigest() != expected_sha256:
            raise SrDeployError(
                f"download of {url} has sha256 {digest.hexdigest()[:16]}…, expected {expected_sha256[:16]}…: "
                "the server sent a different file; download it by hand and pass --weights PATH"
            )
    return destination


def resolve(checkpoint: Checkpoint) -> Path:
    """A verified local copy of an official checkpoint (local directory → cache → download)."""
    local_dir = os.environ.get(WEIGHTS_DIR_ENV)
    if local_dir:
        candidate = Path(local_dir) / checkpoint.filename
        if candidate.is_file():
            verify(candidate, checkpoint.sha256)
            return candidate
    cached = cache_dir() / checkpoint.filename
    if cached.is_file():
        verify(cached, checkpoint.sha256)
        return cached
    mirror = os.environ.get(MIRROR_ENV)
    url = f"{mirror.rstrip('/')}/{checkpoint.filename}" if mirror else checkpoint.url
    try:
        return download(url, cached, checkpoint.sha256)
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
        reason = shown(str(exc) or type(exc).__name__, 120)  # a cut download: IncompleteRead, an HTTPException
        raise SrDeployError(
            f"cannot download {checkpoint.filename} from {url} ({reason}); put the file at {cached} "
            f"or in ${WEIGHTS_DIR_ENV}/, or pass --weights PATH"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, read with ``weights_only=True`` (no code is unpickled); a file that cannot be
    read is refused in one line in the project's words (``unreadable``)."""
    path = Path(path)
    if not path.is_file():
        raise SrDeployError(f"checkpoint {path} does not exist: check the --weights path")
    _check_zip_integrity(path)
    try:
        with warnings.catch_warnings():  # PyTorch's notes on pickle protocols: the outcome below says what matters
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: the unpickler raises many types (IndexError, …)
        raise unreadable(path, str(exc)) from None
    while isinstance(loaded, dict):  # training frameworks' wrappers, outermost first
        wrapper = next((w for w in WRAPPERS if isinstance(loaded.get(w), dict)), None)
        if wrapper is None:
            break
        loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise SrDeployError(f"checkpoint {path} holds no state_dict of tensors: pass a model checkpoint (.pth)")
    if not all(isinstance(key, str) for key in loaded):  # found by fuzzing: a dict keyed by tuples
        raise SrDeployError(f"checkpoint {path} holds a dict of tensors whose keys are not layer names: pass a model "
                            "checkpoint (.pth, a state_dict)")
    for key, tensor in loaded.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SrDeployError(f"checkpoint {path} holds NaN or Inf in {shown(key)}: the checkpoint is broken; use another")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


# How PyTorch's two formats begin: a zip archive, or (before 1.6) the pickled magic number 0x1950a86a20f9469cfc6c
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
# the weights-only unpickler names a refused global as "GLOBAL module.name" (PyTorch ≥ 2.4)
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def unreadable(path: Path, loader_message: str) -> SrDeployError:
    """Why ``torch.load(weights_only=True)`` could not read ``path``, in one line: it holds Python code or objects
    (refused without running them), it is damaged (a checkpoint's header, cut or corrupt), or it is no checkpoint."""
    refused = _REFUSED_GLOBAL.search(loader_message)
    if refused:
        return SrDeployError(
            f"checkpoint {path} holds Python code or objects ({shown(refused.group(1))}), not only tensors: refused without "
            "running it; save the weights alone (torch.save(model.state_dict(), PATH)) and pass that file"
        )
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_MAGIC))
    if head.startswith(_ZIP_MAGIC) or head == _LEGACY_MAGIC:
        return SrDeployError(f"checkpoint {path} is damaged (truncated or corrupt): download it again or pass "
                             "another --weights")
    what = "is empty" if not head else "is not a PyTorch checkpoint"
    return SrDeployError(f"checkpoint {path} {what}: pass a .pth file saved by torch.save")


def _check_zip_integrity(path: Path) -> None:
    """Checkpoints in PyTorch's zip format carry CRC-32s that ``torch.load`` does not check: check them."""
    try:
        if not zipfile.is_zipfile(path):
            return  # legacy (pre-1.6) serialization: no checksums to check
    except Exception:  # noqa: BLE001 - a crafted end record makes is_zipfile itself raise (BadZipFile, found by fuzzing)
        raise SrDeployError(f"checkpoint {path} is damaged (its zip archive cannot be read): download it again or "
                            "pass another --weights") from None
    try:
        with zipfile.ZipFile(path) as archive:
            member = archive.testzip()
        problem = None if member is None else f"the checksum of {shown(member)} fails"  # a crafted name: one line
    except Exception:  # noqa: BLE001 - zipfile raises BadZipFile, EOFError, zlib.error, RuntimeError, ...
        problem = "its zip archive cannot be read"
    if problem is not None:
        raise SrDeployError(f"checkpoint {path} is damaged ({problem}): download it again or pass another --weights")
