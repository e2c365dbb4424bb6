"""Atomic file writes: write to a temporary file in the target folder, then rename over the target."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import SrDeployError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (mode 0666 & ~umask),
    on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def replace_dir(new: Path, target: Path) -> None:
    """Rename the finished folder ``new`` onto ``target``; a previous ``target`` is moved aside first, then
    deleted, so a reader sees the old folder or the new one, never a mix."""
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, old / "previous")
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)


def check_bundle_folder(out: str | Path, marker: str, kind: str) -> Path:
    """``out`` may be new, empty, or a previous bundle of this kind (it holds ``marker``, and is replaced);
    anything else is refused, so an export never deletes a user's folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (not (out / marker).is_file() and any(out.iterdir()))):
        raise SrDeployError(f"{out} exists and is not an {kind}: choose an empty or new --out folder")
    return out


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target`` (``replace_dir``,
    mode 0755), on any error it is removed and ``target`` is left as it was."""
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield work
        os.chmod(work, 0o755)
        replace_dir(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def inside(root: Path, name: str) -> Path | None:
    """``root / name`` if ``name`` is a relative path that stays inside ``root`` once links are followed; else None
    (an artifact's manifest or files naming ``../``, an absolute path, or a link out of its folder: a sealed digest
    is a checksum, not a signature, so a crafted folder is refused before its files are read)."""
    relative = Path(name)
    if not name or relative.is_absolute() or ".." in relative.parts:
        return None
    path = root / relative
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return None
    return path

