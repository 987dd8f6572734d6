"""What every part of the data package shares: split names, the one-line error type, label checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SPLITS = ("train", "val", "test")
EXPECTED = (
    "expected 'cluttered-digits', 'digits', a CIFAR-10 python folder (data_batch_1.., test_batch), an image folder "
    "(one sub-folder per class) or an .npz file with arrays x and y"
)


class DataError(ValueError):
    """Bad data: always one line. Raised inside a DataLoader worker, torch re-raises it in the main
    process with the worker's traceback as its text; the constructor keeps only the message."""

    def __init__(self, message: str) -> None:
        text = str(message)
        marker = f"{type(self).__name__}: "
        if text.startswith("Caught ") and marker in text:  # torch's ExceptionWrapper.reraise
            text = text.rsplit(marker, 1)[1]
        super().__init__(" ".join(text.split()))


def exc_text(exc: BaseException) -> str:
    """``Type: message`` of an exception, on one line and at most 200 characters of message."""
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:200]}"


def int_labels(values: Any, what: str) -> np.ndarray:
    """Validate labels as a 1-d array of non-negative integers; ``what`` names them in errors."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{what} are not a 1-d list of integer labels ({exc_text(exc)})") from None
    if array.ndim != 1:
        raise DataError(f"{what} must be 1-d integer labels, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise DataError(f"{what} must be integer labels 0..K-1, got dtype {array.dtype}")
    if len(array) and array.min() < 0:
        raise DataError(f"{what} must be integer labels 0..K-1, got a negative label {int(array.min())}")
    return array.astype(np.int64)


SplitItems = tuple[Any, np.ndarray]  # (uint8 tensor (N, C, H, W) or tuple of image paths, int64 labels)


@dataclass(frozen=True)
class RawSource:
    """What a reader returns: per split, the images (a uint8 tensor (N, C, H, W) with C 1 or 3, or
    a tuple of image files) and their int64 labels; 'train' plus whichever splits the source gives.
    ``kind`` picks the augmentation preset: 'digits', 'small' (CIFAR-like arrays) or 'folder'."""

    name: str
    classes: tuple[str, ...]
    splits: dict[str, SplitItems]
    source: str
    kind: str
