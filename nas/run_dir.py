"""Run folders: atomic writes, provenance, locks, and the resume-compatibility check."""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import importlib.metadata
import io
import json
import os
import platform
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from invres_utils.atomic_files import atomic_write_text

CONFIG_FILE = "config.json"
PACKAGES = ("invres-nas", "torch", "numpy", "pandas", "optuna", "ray", "onnx", "onnxruntime", "scikit-learn")


def atomic_write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def atomic_write_csv(path: str | os.PathLike[str], df: pd.DataFrame) -> None:
    buffer = io.StringIO()
    df.to_csv(buffer, index=False)
    atomic_write_text(path, buffer.getvalue())


def read_json(path: str | os.PathLike[str], what: str) -> Any:
    """Load JSON written by us; a corrupt file is a one-line ValueError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is corrupt ({e}); restore it or start a new run with another --out") from None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive advisory lock shared by every process on this machine (workers of one run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit() -> str | None:
    """The commit of the code that made the run (None outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("-dirty" if dirty else "")


def now_iso() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


# ---- worker identity (for recognising trials left RUNNING by a killed process) ------------------
def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_token(pid: int | None = None) -> str:
    """``host:pid:start`` of a process; the start time guards against a reused pid."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def worker_is_dead(token: str) -> bool:
    """True only if ``token`` names a process on this host that no longer runs. A process on
    another host is never declared dead from here."""
    try:
        host, pid_text, start = token.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return start != "?" and _start_time(pid) != start


def worker_is_alive_here(token: str | None) -> bool:
    """True only if ``token`` names a process of this host that still runs."""
    if not token:
        return False
    return token.rsplit(":", 2)[0] == socket.gethostname() and not worker_is_dead(token)
