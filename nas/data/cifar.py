"""CIFAR-10 python batches (``data_batch_1``.., ``test_batch``, optional ``batches.meta``), read
with a restricted unpickler that builds numpy arrays and plain data and nothing else."""

from __future__ import annotations

import importlib
import pickle
import re
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .common import DataError, RawSource, exc_text, int_labels

_CIFAR_BATCH = re.compile(r"data_batch_(\d+)")
_CIFAR_SIDE = 32


class _Refused(DataError):
    pass


def _latin1_encode(text: Any, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, and only that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed on str with latin1, got {encoding!r}")
    return text.encode("latin1")


def _numpy_attr(modules: tuple[str, ...], attr: str) -> Any:
    for module in modules:  # numpy >= 2 first: importing numpy.core there warns
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {attr} in any of {modules}")


def _pickle_allowlist() -> dict[tuple[str, str], Any]:
    """Every global a pickle of numpy arrays and plain data references (numpy 1.x and 2.x
    spellings, protocols 2 to 5), mapped to the installed numpy's object."""
    multiarray = ("numpy._core.multiarray", "numpy.core.multiarray")
    reconstruct = _numpy_attr(multiarray, "_reconstruct")
    scalar = _numpy_attr(multiarray, "scalar")
    frombuffer = _numpy_attr(("numpy._core.numeric", "numpy.core.numeric"), "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain data (dicts, lists, str, bytes, numbers); any other
    global (a function or class to call) is refused before it is looked up."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path
        self._allowed = _pickle_allowlist()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise _Refused(
                f"pickle {self._path} references {module}.{name}, which the restricted unpickler "
                f"refuses to load (only numpy arrays and plain data are allowed)"
            )
        return found


def _load_pickle(path: Path, what: str) -> Any:
    try:
        with open(path, "rb") as file:
            return _RestrictedUnpickler(file, path).load()
    except _Refused:
        raise
    except Exception as exc:
        raise DataError(f"{what} {path} is not a readable pickle ({exc_text(exc)})") from None


def find_cifar(path: Path) -> Path | None:
    """The CIFAR-10 batch folder at ``path`` or in its ``cifar-10-batches-py`` sub-folder."""
    for folder in (path, path / "cifar-10-batches-py"):
        if folder.is_dir() and any(_CIFAR_BATCH.fullmatch(p.name) or p.name == "test_batch" for p in folder.iterdir()):
            return folder
    return None


def _entry(batch: dict, key: str) -> Any:
    return batch.get(key.encode(), batch.get(key))


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    what = f"CIFAR-10 batch {path}"
    batch = _load_pickle(path, "CIFAR-10 batch")
    expected = "expected a dict with b'data' (uint8, N x 3072) and b'labels' (N ints)"
    if not isinstance(batch, dict):
        raise DataError(f"{what} holds a {type(batch).__name__}; {expected}")
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    if data is None or labels is None:
        missing = " and ".join(k for k, v in (("b'data'", data), ("b'labels'", labels)) if v is None)
        raise DataError(f"{what} has no {missing}; {expected}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{what} has data as a {found}; {expected}")
    labels = int_labels(labels, f"the labels of {what}")
    if len(labels) != len(data):
        raise DataError(f"{what} has {len(data)} images but {len(labels)} labels; they must be equal")
    return data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE), labels


def read_cifar(folder: Path, where: str) -> RawSource:
    """Train (every ``data_batch_*``) and test (``test_batch``) as uint8 (N, 3, 32, 32)."""
    layout = "expected data_batch_1..data_batch_5 and test_batch"
    numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CIFAR_BATCH.fullmatch(p.name)) and p.is_file()]
    train_files = [p for _, p in sorted(numbered)]
    test_file = folder / "test_batch"
    if not train_files:
        raise DataError(f"CIFAR-10 folder {folder} has no data_batch_1.. files; {layout}")
    if not test_file.is_file():
        raise DataError(f"CIFAR-10 folder {folder} has no test_batch; {layout}")
    train = [_read_batch(p) for p in train_files]
    x_test, y_test = _read_batch(test_file)
    x_train = np.concatenate([x for x, _ in train]) if len(train) > 1 else train[0][0]
    y_train = np.concatenate([y for _, y in train])
    top = int(max(y_train.max(initial=0), y_test.max(initial=0)))

    meta_file = folder / "batches.meta"
    if meta_file.is_file():
        meta = _load_pickle(meta_file, "CIFAR-10 metadata")
        names = _entry(meta, "label_names") if isinstance(meta, dict) else None
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in names):
            raise DataError(
                f"CIFAR-10 metadata {meta_file} has no b'label_names' list of names; fix or remove the file"
            )
        classes = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)
        if top >= len(classes):
            raise DataError(
                f"CIFAR-10 folder {folder} has label {top} but {meta_file.name} names only {len(classes)} classes; "
                "labels must lie in 0..K-1"
            )
    else:
        classes = tuple(str(i) for i in range(top + 1))
    return RawSource(
        name=where,
        classes=classes,
        splits={
            "train": (torch.from_numpy(np.ascontiguousarray(x_train)), y_train),
            "test": (torch.from_numpy(np.ascontiguousarray(x_test)), y_test),
        },
        source=(
            f"CIFAR-10 python batches ({len(train_files)} data_batch file(s) + test_batch), "
            f"{len(y_train) + len(y_test)} images"
        ),
        kind="small",
    )
