"""Atomic file writes: write to a temporary file in the target folder, then rename over the target. A temporary
name carries its writer's process id and host, so the next process writing into the same folder removes what a
killed writer (``kill -9``, a power cut) left behind there, and never a live writer's file."""
from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import SrDeployError


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]


def scratch_prefix(name: str) -> str:
    """The prefix of this process's temporary files for target ``name``: ``.NAME.PID@HOST.``."""
    return f".{name}.{os.getpid()}@{_HOST}."


_SWEPT: set[Path] = set()
_ORPHAN = re.compile(rf"\..+\.(\d+)@{re.escape(_HOST)}\.")


def remove_orphans(folder: Path) -> None:
    """The temporary files and folders in ``folder`` whose writer on this host no longer runs; once per folder and
    process (a folder of 100,000 outputs is listed once, not once per output)."""
    key = folder.resolve()
    if key in _SWEPT or not folder.is_dir():
        return
    _SWEPT.add(key)
    for path in folder.iterdir():
        found = _ORPHAN.match(path.name)
        if found and not _running(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() and not path.is_symlink() else path.unlink(missing_ok=True)


def scratch_dir(folder: Path, name: str) -> Path:
    """A new hidden temporary folder in ``folder`` for work on target ``name`` (dead writers' removed first)."""
    remove_orphans(folder)
    return Path(tempfile.mkdtemp(prefix=scratch_prefix(name), dir=folder))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (mode 0666 & ~umask),
    on any error it is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent)
    fd, name = tempfile.mkstemp(prefix=scratch_prefix(path.stem), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise _naming(exc, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc`` naming the file being written where it names none (a write that hit a full disk names no file)."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return type(exc)(exc.errno, exc.strerror, str(path))


def replace_dir(new: Path, target: Path) -> None:
    """Rename the finished folder ``new`` onto ``target``; a previous ``target`` is moved aside first, then
    deleted, so a reader sees the old folder or the new one, never a mix. Writers racing for ``target`` (four exports
    of one artifact at once) each move aside what is there until their own rename lands; the last one wins."""
    old = Path(tempfile.mkdtemp(prefix=scratch_prefix(target.name) + "old.", dir=target.parent))
    try:
        for attempt in range(1000):
            try:
                os.replace(new, target)  # onto nothing, or an empty folder
                return
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            try:
                os.replace(target, old / f"previous{attempt}")
            except FileNotFoundError:  # another writer moved it first
                pass
        raise OSError(errno.EBUSY, "other writers kept replacing it", str(target))
    finally:
        shutil.rmtree(old, ignore_errors=True)


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
    work = scratch_dir(target.parent, target.name)
    try:
        yield work
        os.chmod(work, 0o755)
        replace_dir(work, target)
    except OSError as exc:
        raise _naming(exc, target) from None
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

