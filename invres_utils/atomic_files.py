"""Files written whole or not at all: write to a temporary file in the same folder, then rename.

Readers (and a run resumed after a kill) never see a torn file; a path that cannot be written is a
one-line ``ValueError`` naming it. The lowest layer: imports nothing from the project.
"""

from __future__ import annotations

import contextlib
import os


def _check_not_directory(path: str) -> None:
    if not os.path.basename(path) or os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a directory; choose a file path")


def check_writable_file(path: str | os.PathLike[str]) -> None:
    """Fail early, with the one-line ``ValueError`` :func:`atomic_write_text` would raise later,
    if ``path`` is a directory or its folder cannot be created or written (nothing is created)."""
    path = os.fspath(path)
    _check_not_directory(path)
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {path}: {folder} is not a writable directory; choose a writable file path")


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


__all__ = ["atomic_write_bytes", "atomic_write_text", "check_writable_file"]
