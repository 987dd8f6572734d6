"""Files and folders written whole or not at all: write to a temporary one in the same folder, then rename.

Readers (and a run resumed after a kill) never see a torn file; a path that cannot be written is a
one-line ``ValueError`` naming it. The lowest layer: imports nothing from the project.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _check_not_directory(path: str) -> None:
    if not os.path.basename(path) or os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a directory; choose a file path")


def _nearest_existing(folder: str) -> str:
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return folder


def _can_create_in(folder: str) -> bool:
    """A file can be made in ``folder``: tried, since permission bits say nothing for root and
    nothing about ``/proc``, ``/sys`` or a read-only mount."""
    if not os.path.isdir(folder):
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".invres-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


def check_writable_file(path: str | os.PathLike[str]) -> None:
    """Fail early, with the one-line ``ValueError`` :func:`atomic_write_text` would raise later,
    if ``path`` is a directory or its folder cannot be created or written (nothing is created)."""
    path = os.fspath(path)
    _check_not_directory(path)
    folder = _nearest_existing(os.path.dirname(os.path.abspath(path)))
    if not _can_create_in(folder):
        raise ValueError(f"cannot write {path}: {folder} is not a writable directory; choose a writable file path")


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A folder written whole or not at all: yields a temporary folder beside ``path`` to fill,
    renamed to ``path`` when the block ends and removed (with the folders made for it) if it
    raises. ``path`` must not exist or be an empty folder; otherwise, or if it cannot be created,
    a one-line ``ValueError`` naming it, before anything is written."""
    shown = os.fspath(path)
    path = os.path.abspath(shown)
    if os.path.isfile(path):
        raise ValueError(f"cannot create folder {shown}: it is a file; choose a new folder path")
    if os.path.isdir(path) and os.listdir(path):
        raise ValueError(f"cannot create folder {shown}: it exists and is not empty; choose a new folder path")
    parent = _nearest_existing(os.path.dirname(path))
    if not _can_create_in(parent):
        raise ValueError(
            f"cannot create folder {shown}: {parent} is not a writable directory; choose a writable folder path"
        )
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(path)}.tmp")
    try:
        yield Path(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty_folders(os.path.dirname(path), parent)
        raise ValueError(f"cannot create folder {shown}: {e.strerror or e}; choose a writable folder path") from None


def _remove_empty_folders(folder: str, stop: str) -> None:
    """Remove ``folder`` and its parents below ``stop`` (an ancestor) while they are empty."""
    while folder != stop and os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)
        folder = os.path.dirname(folder)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write via a temporary file in the same folder and rename, so readers never see a torn file.

    A path that cannot be written (a directory, a read-only folder, ...) is a one-line
    ``ValueError`` naming it; the temporary file is removed whatever goes wrong."""
    _atomic_write(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """:func:`atomic_write_text` for binary data (images, archives)."""
    _atomic_write(path, bytes(data))


def _atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    path = os.fspath(path)
    _check_not_directory(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise ValueError(f"cannot write {path}: {e.strerror or e}; choose a writable file path") from None
        raise


__all__ = ["atomic_folder", "atomic_write_bytes", "atomic_write_text", "check_writable_file"]
