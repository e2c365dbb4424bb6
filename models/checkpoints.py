"""Finding, downloading and reading checkpoint files (never unpickling code).

Where an official checkpoint is looked for, in order:
1. ``$SRDEPLOY_WEIGHTS_DIR/<model>_x<scale>.pth`` (a local directory of checkpoints, e.g. for air-gapped
   machines; the tests point it at ``../shared/weights``);
2. the cache, ``$SRDEPLOY_CACHE_DIR`` or ``~/.cache/srdeploy/checkpoints``;
3. a download from the checkpoint's public URL into the cache: streamed to a temporary file, verified
   against the registry's sha256, then renamed into place (an interrupted download leaves nothing).
"""
from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import torch
from tqdm import tqdm

from .registry import Checkpoint
from ..runtime.atomic import atomic_path
from ..runtime.cache import cache_dir
from ..runtime.errors import SrDeployError

WEIGHTS_DIR_ENV = "SRDEPLOY_WEIGHTS_DIR"
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
        digest = hashlib.sha256()
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {destination.name}",
                      disable=None, leave=False) as bar:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
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
    try:
        return download(checkpoint.url, cached, checkpoint.sha256)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise SrDeployError(
            f"cannot download {checkpoint.filename} from {checkpoint.url} ({exc}); put the file at {cached} "
            f"or in ${WEIGHTS_DIR_ENV}/, or pass --weights PATH"
        ) from None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, read with ``weights_only=True`` (no code is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise SrDeployError(f"checkpoint {path} does not exist: check the --weights path")
    _check_zip_integrity(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - untrusted bytes: the unpickler raises many types (IndexError, …)
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise SrDeployError(
            f"checkpoint {path} cannot be read as a PyTorch state_dict ({reason}): the file is truncated, "
            "corrupt or not a checkpoint; re-download it or pass the right --weights"
        ) from None
    while isinstance(loaded, dict):  # training frameworks' wrappers, outermost first
        wrapper = next((w for w in WRAPPERS if isinstance(loaded.get(w), dict)), None)
        if wrapper is None:
            break
        loaded = loaded[wrapper]
    if not isinstance(loaded, dict) or not loaded or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise SrDeployError(f"checkpoint {path} holds no state_dict of tensors: pass a model checkpoint (.pth)")
    for key, tensor in loaded.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SrDeployError(f"checkpoint {path} holds NaN or Inf in {key}: the checkpoint is broken; use another")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _check_zip_integrity(path: Path) -> None:
    """Checkpoints in PyTorch's zip format carry CRC-32s that ``torch.load`` does not check: check them."""
    if not zipfile.is_zipfile(path):
        return  # legacy (pre-1.6) serialization: no checksums to check
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
        problem = None if damaged is None else f"CRC mismatch in {damaged}"
    except Exception as exc:  # noqa: BLE001 - zipfile raises BadZipFile, EOFError, zlib.error, RuntimeError, ...
        problem = f"unreadable archive, {type(exc).__name__}" + (f": {exc}" if str(exc) else "")
    if problem is not None:
        raise SrDeployError(
            f"checkpoint {path} cannot be read as a PyTorch state_dict ({problem}): "
            "the file is truncated, corrupt or not a checkpoint; re-download it or pass the right --weights"
        )
