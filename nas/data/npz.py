"""``.npz`` files with arrays ``x`` and ``y`` (optional ``x_val``/``y_val``, ``x_test``/``y_test``,
``classes``), read with ``allow_pickle=False``. Images are kept as uint8: float images in [0, 1]
are quantised to 8 bits (255 levels), as an image file would store them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .common import DataError, RawSource, exc_text, int_labels


def _npz_images(array: np.ndarray, what: str) -> torch.Tensor:
    """(N, H, W), (N, H, W, C) or (N, C, H, W), C in {1, 3} -> uint8 (N, C, H, W)."""
    layouts = "expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3"
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    elif not (array.ndim == 4 and array.shape[1] in (1, 3)):
        raise DataError(f"{what} has shape {array.shape}; {layouts}")
    if 0 in array.shape:
        raise DataError(f"{what} has shape {array.shape} with no images or no pixels; {layouts}")
    if array.dtype.kind == "f":
        lo, hi = float(array.min()), float(array.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
            raise DataError(
                f"{what} is float with values in [{lo:g}, {hi:g}]; float images must lie in [0, 1] (or store uint8 0..255)"
            )
        array = np.rint(np.clip(array, 0, 1) * 255)
    elif array.dtype != np.uint8 and not (array.dtype.kind in "iu" and array.min() >= 0 and array.max() <= 255):
        raise DataError(f"{what} has dtype {array.dtype}; images must be uint8 (0..255) or float (0..1)")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint8))


def read_npz(path: Path, where: str) -> RawSource:
    what = f"npz file {where}"
    if not zipfile.is_zipfile(path):
        raise DataError(
            f"{what} is not a valid .npz archive (not a zip file: truncated or not written by numpy.savez); "
            "write it with numpy.savez(path, x=images, y=labels)"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(
            f"{what} could not be read ({exc_text(exc)}); write it with numpy.savez(path, x=..., y=...)"
        ) from None
    with archive:
        names = list(archive.files)
        for key in ("x", "y"):
            if key not in names:
                raise DataError(
                    f"{what} has no array {key!r} (found {names}); expected arrays x (images) and y (labels)"
                )
        for split in ("val", "test"):
            if (f"x_{split}" in names) != (f"y_{split}" in names):
                raise DataError(f"{what} has only one of x_{split} and y_{split}; give both or neither")
        wanted = [k for k in ("x", "y", "x_val", "y_val", "x_test", "y_test", "classes") if k in names]
        arrays = {}
        for key in wanted:
            try:
                arrays[key] = archive[key]
            except Exception as exc:
                raise DataError(f"array {key!r} in {what} could not be read ({exc_text(exc)})") from None
            if not isinstance(arrays[key], np.ndarray):  # a member that is not .npy data comes back as bytes
                raise DataError(f"array {key!r} in {what} could not be read (not numpy .npy data)")

    splits = {}
    for split, suffix in (("train", ""), ("val", "_val"), ("test", "_test")):
        if f"x{suffix}" not in arrays:
            continue
        images = _npz_images(arrays[f"x{suffix}"], f"array x{suffix} in {what}")
        labels = int_labels(arrays[f"y{suffix}"], f"array y{suffix} in {what}")
        if len(labels) != len(images):
            raise DataError(
                f"{what} has {len(images)} images in x{suffix} but {len(labels)} labels in y{suffix}; they must be equal"
            )
        splits[split] = (images, labels)
    top = max(int(y.max()) for _, y in splits.values())
    if "classes" in arrays:
        names_array = arrays["classes"]
        if names_array.ndim != 1 or names_array.dtype.kind not in "US":
            raise DataError(
                f"array classes in {what} must be a 1-d array of strings, got {names_array.dtype} {names_array.shape}"
            )
        classes = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names_array.tolist())
        if top >= len(classes):
            raise DataError(f"{what} has label {top} but classes names only {len(classes)}; labels must lie in 0..K-1")
    else:
        classes = tuple(str(i) for i in range(top + 1))
    n_images = sum(len(y) for _, y in splits.values())
    return RawSource(
        name=where,
        classes=classes,
        splits=splits,
        source=f"npz arrays {', '.join(k for k in wanted if k.startswith('x'))} from {path.name}, {n_images} images",
        kind="small",
    )
