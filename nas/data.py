"""The datasets a search trains and evaluates on, held in memory as torch tensors.

``load_data(source)`` reads one of five sources and always returns the same ``Dataset``:

- ``"cluttered-digits"`` (the embedded default): scikit-learn's digits rescaled, rotated and
  placed on 24x24 canvases among fragments of other digits (see :func:`cluttered_digits`); plain
  digits are too easy to tell architectures apart (every proxy network scores 97-99%);
- ``"digits"``: scikit-learn's bundled 8x8 digits (ships inside scikit-learn, works offline);
- a CIFAR-10 python folder (``data_batch_1``.., ``test_batch``, optional ``batches.meta``), read
  with a restricted unpickler that builds numpy arrays and plain data and nothing else;
- an image folder, one sub-folder per class, optionally pre-split into ``train/ val/ test/``;
- an ``.npz`` file with arrays ``x`` and ``y`` (optional ``x_val``/``y_val``, ``x_test``/``y_test``,
  ``classes``).

Splits that the source does not give are carved from the training data, seeded and stratified.
Images are float32 (N, 3, R, R) normalised with the train split's per-channel mean and std.
Batches come from a plain generator (``Dataset.batches``): no DataLoader workers, no network,
and randomness only from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SPLITS", "Dataset", "load_data"]

SPLITS = ("train", "val", "test")
DIGITS_SOURCES = ("digits", "sklearn-digits")
CLUTTERED_DIGITS = "cluttered-digits"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
EXPECTED = (
    "expected 'cluttered-digits', 'digits', a CIFAR-10 python folder (data_batch_1.., test_batch), an image folder "
    "(one sub-folder per class) or an .npz file with arrays x and y"
)
AUGMENT_PAD = 2  # pixels of random translation in Dataset.batches(augment=True)
_CIFAR_BATCH = re.compile(r"data_batch_(\d+)")
_CIFAR_SIDE = 32
_CHUNK = 2048  # images converted / resized / summed at a time, to bound peak memory
_PROGRESS_MIN_FILES = 1000
_VAL_FOLDERS = ("val", "validation", "valid")


def _bad(message: str) -> ValueError:
    """A user-input error: always one line."""
    return ValueError(" ".join(message.splitlines()))


def _exc_text(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text[:200]}"


# ---- the dataset ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Dataset:
    """Images and labels per split, in memory. Treat the tensors as read-only."""

    name: str  # "cluttered-digits", "digits" or the path it came from
    classes: tuple[str, ...]  # class names, index = label
    resolution: int  # side of the stored square images
    images: dict[str, torch.Tensor]  # split -> float32 (N, 3, R, R), normalised with mean/std
    labels: dict[str, torch.Tensor]  # split -> int64 (N,)
    mean: tuple[float, float, float]  # per-channel mean of the train split before normalisation ([0, 1] scale)
    std: tuple[float, float, float]
    allow_flip: bool = True  # horizontal flips are a valid augmentation (False for digits)
    source: str = ""  # one-line description of where the data came from

    def __post_init__(self) -> None:
        splits = set(self.images)
        if "train" not in splits or splits != set(self.labels) or not splits <= set(SPLITS):
            raise ValueError(
                f"images and labels must hold the same splits, 'train' plus any of {SPLITS[1:]}; "
                f"got images {sorted(self.images)} and labels {sorted(self.labels)}"
            )
        if len(self.classes) < 2:
            raise ValueError(f"a dataset needs at least 2 classes, got {len(self.classes)}: {self.classes}")
        r = self.resolution
        for split in splits:
            x, y = self.images[split], self.labels[split]
            if x.dtype != torch.float32 or x.ndim != 4 or tuple(x.shape[1:]) != (3, r, r):
                raise ValueError(f"images[{split!r}] must be float32 (N, 3, {r}, {r}), got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
                raise ValueError(f"labels[{split!r}] must be int64 ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(
                    f"labels[{split!r}] must lie in [0, {len(self.classes)}), "
                    f"got range [{int(y.min())}, {int(y.max())}]"
                )

    def __repr__(self) -> str:
        return f"Dataset({self.describe()})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def size(self, split: str) -> int:
        if split not in self.images:
            raise ValueError(f"split must be one of {tuple(s for s in SPLITS if s in self.images)}, got {split!r}")
        return int(self.labels[split].shape[0])

    def describe(self) -> str:
        """One line: name, classes, split sizes, resolution."""
        names = ", ".join(self.classes[:10]) + (", ..." if len(self.classes) > 10 else "")
        sizes = " / ".join(f"{s} {self.size(s)}" for s in SPLITS if s in self.images)
        return f"{self.name}: {self.num_classes} classes ({names}), {sizes}, {self.resolution}x{self.resolution}"

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
        drop_last: bool = False,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(images, labels) batches covering ``split`` once. ``shuffle`` permutes the order and
        ``augment`` applies a random translation by up to ``AUGMENT_PAD`` pixels (replicate
        padding, then a random crop) and, if ``allow_flip``, a random horizontal flip; both draw
        only from ``generator``. Batches are copies: changing them leaves the dataset intact."""
        n = self.size(split)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if (shuffle or augment) and generator is None:
            raise ValueError(
                f"a torch.Generator must be passed when shuffle or augment is True, "
                f"got generator=None with shuffle={shuffle}, augment={augment}"
            )
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        stop = n - n % batch_size if drop_last else n
        return self._iter_batches(split, order[:stop], batch_size, generator if augment else None)

    def _iter_batches(
        self, split: str, order: torch.Tensor, batch_size: int, augment_with: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images, labels = self.images[split], self.labels[split]
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            x = images.index_select(0, idx)
            if augment_with is not None:
                x = _augment(x, augment_with, flip=self.allow_flip)
            yield x, labels.index_select(0, idx)

    def subset(self, split: str, n: int, generator: torch.Generator) -> Dataset:
        """The same dataset with ``split`` reduced to ``n`` random examples (kept in their order);
        mean and std stay those of the full train split."""
        size = self.size(split)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if n >= size:
            return self
        idx = torch.randperm(size, generator=generator)[:n].sort().values
        return replace(
            self,
            images={**self.images, split: self.images[split][idx]},
            labels={**self.labels, split: self.labels[split][idx]},
        )


def _augment(x: torch.Tensor, generator: torch.Generator, *, flip: bool) -> torch.Tensor:
    """Random translation (replicate pad, random crop) and optional horizontal flip, per image,
    as one gather over the whole batch."""
    b, c, h, w = x.shape
    p = AUGMENT_PAD
    padded = F.pad(x, (p, p, p, p), mode="replicate")
    dy = torch.randint(0, 2 * p + 1, (b,), generator=generator)
    dx = torch.randint(0, 2 * p + 1, (b,), generator=generator)
    rows = dy[:, None] + torch.arange(h)
    cols = dx[:, None] + torch.arange(w)
    if flip:
        flipped = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    return padded[
        torch.arange(b)[:, None, None, None],
        torch.arange(c)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


# ---- loading -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Raw:
    """What a reader returns: numpy (N, C, H, W) images, C in {1, 3}, uint8 or float32 in [0, 1],
    and int64 labels, for 'train' and whichever other splits the source gives."""

    name: str
    classes: tuple[str, ...]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]
    source: str
    allow_flip: bool = True


def load_data(
    source: str | os.PathLike[str] = "cluttered-digits",
    resolution: int = 24,
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_train: int | None = None,
) -> Dataset:
    """Load ``source`` ('cluttered-digits', 'digits', a CIFAR-10 python folder, an image folder or
    an .npz file) as
    (N, 3, resolution, resolution) images per split, normalised with the train split's statistics.

    Splits the source lacks are carved from its training data, stratified by class and seeded by
    ``seed``: each takes its fraction of that data. ``max_train`` keeps a seeded subset of the
    train split (for quick runs). Bad input raises a one-line ``ValueError``."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"resolution must be an integer >= 1, got {resolution!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    for label, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"{label} must be a number in (0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(
            f"val_fraction + test_fraction must be < 1 to leave data for training, "
            f"got {val_fraction} + {test_fraction} = {val_fraction + test_fraction:g}"
        )
    if max_train is not None and (isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 1):
        raise ValueError(f"max_train must be None or an integer >= 1, got {max_train!r}")

    if isinstance(source, str) and source.strip().lower() in DIGITS_SOURCES:
        raw = _read_digits()
    elif isinstance(source, str) and source.strip().lower() == CLUTTERED_DIGITS:
        raw = _read_cluttered_digits(int(seed), val_fraction, test_fraction)
    else:
        where = os.fspath(source)
        if not str(where).strip():
            raise _bad(f"data source is empty; {EXPECTED}")
        raw = _read_path(Path(where).expanduser(), str(where), resolution)
    return _assemble(
        raw,
        resolution=resolution,
        seed=int(seed),
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        max_train=max_train,
    )


def _read_path(path: Path, where: str, resolution: int) -> _Raw:
    try:
        if not path.exists():
            raise _bad(f"data path {where} does not exist; {EXPECTED}")
        if path.is_file():
            if path.suffix.lower() == ".npz":
                return _read_npz(path, where)
            raise _bad(f"data file {where} is not an .npz file; {EXPECTED}")
        if not path.is_dir():
            raise _bad(f"data path {where} is neither a file nor a folder; {EXPECTED}")
        cifar = _find_cifar(path)
        if cifar is not None:
            return _read_cifar(cifar, where)
        if _subdirs(path):
            return _read_image_folder(path, where, resolution)
        if _image_files(path):
            raise _bad(
                f"data folder {where} holds images but no class sub-folders; "
                f"put each class's images in its own sub-folder ({where}/<class>/...)"
            )
        raise _bad(f"data folder {where} matches no known layout; {EXPECTED}")
    except OSError as exc:
        raise _bad(f"data path {where} could not be read ({_exc_text(exc)}); {EXPECTED}") from None


def _assemble(
    raw: _Raw,
    *,
    resolution: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    max_train: int | None,
) -> Dataset:
    """Carve missing splits, cap train, convert to (N, 3, R, R) float32 and normalise."""
    if len(raw.classes) < 2:
        raise _bad(f"data {raw.name} has {len(raw.classes)} class; need at least 2 classes to train a classifier")
    splits = dict(raw.splits)
    x_train, y_train = splits["train"]
    n = len(y_train)
    notes = []
    carve = [s for s in ("test", "val") if s not in splits]
    if carve:
        fraction = {"test": test_fraction, "val": val_fraction}
        counts = {s: max(1, round(fraction[s] * n)) for s in carve}
        if n - sum(counts.values()) < 1:
            raise _bad(
                f"data {raw.name} has {n} training examples, too few to carve {' and '.join(carve)} from; "
                f"give more data or the {' and '.join(carve)} split(s) explicitly"
            )
        for s in carve:
            keep, take = _split_indices(y_train, counts[s], seed)
            splits[s] = (x_train[take], y_train[take])
            x_train, y_train = x_train[keep], y_train[keep]
        notes.append(f"{' and '.join(sorted(carve, key=SPLITS.index))} carved from train (seed {seed})")
    if max_train is not None and max_train < len(y_train):
        _, take = _split_indices(y_train, max_train, seed)
        x_train, y_train = x_train[take], y_train[take]
        notes.append(f"train capped at {max_train}")
    splits["train"] = (x_train, y_train)

    h, w = raw.splits["train"][0].shape[2:]
    if (h, w) != (resolution, resolution):
        verb = "upsampled" if resolution >= max(h, w) else "downsampled" if resolution <= min(h, w) else "resized"
        size_note = f"{h}x{w} {verb} to {resolution}x{resolution}"
    else:
        size_note = f"{h}x{w}"

    images = {s: _to_tensor(splits[s][0], resolution) for s in SPLITS}
    labels = {s: torch.from_numpy(np.ascontiguousarray(splits[s][1], dtype=np.int64)) for s in SPLITS}
    mean, std = _channel_stats(images["train"])
    for x in images.values():
        x.sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))
    return Dataset(
        name=raw.name,
        classes=raw.classes,
        resolution=resolution,
        images=images,
        labels=labels,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        allow_flip=raw.allow_flip,
        source="; ".join([f"{raw.source}, {size_note}", *notes]),
    )


def _split_indices(labels: np.ndarray, n_take: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, taken) sorted indices, ``n_take`` taken; stratified by label when every class can
    be (at least 2 examples each and room for every class on both sides), else plain random."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    try:
        keep, take = train_test_split(index, test_size=n_take, stratify=labels, random_state=seed)
    except ValueError:
        keep, take = train_test_split(index, test_size=n_take, random_state=seed)
    return np.sort(keep), np.sort(take)


def _to_tensor(x: np.ndarray, resolution: int) -> torch.Tensor:
    """(N, C, H, W) uint8 or float32 [0, 1] -> new float32 (N, 3, R, R) tensor, in chunks."""
    src = torch.from_numpy(np.ascontiguousarray(x))
    out = torch.empty((src.shape[0], 3, resolution, resolution), dtype=torch.float32)
    as_is = tuple(src.shape[1:]) == (3, resolution, resolution)
    for start in range(0, src.shape[0], _CHUNK):
        chunk, dest = src[start : start + _CHUNK], out[start : start + _CHUNK]
        if as_is and chunk.dtype == torch.uint8:
            torch.div(chunk, 255.0, out=dest)
            continue
        chunk = chunk.float().div_(255.0) if chunk.dtype == torch.uint8 else chunk.float()
        if tuple(chunk.shape[2:]) != (resolution, resolution):
            chunk = F.interpolate(
                chunk, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
            )
        dest.copy_(chunk)  # broadcasts 1 channel to 3
    return out


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std in float64, accumulated in chunks; a constant channel
    gets std 1 so that normalising it gives zeros rather than NaN."""
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK].flatten(2)  # (n, 3, H*W): sum each image in float32, then in float64
        total += chunk.sum(dim=2).double().sum(dim=0)
        squares += chunk.square().sum(dim=2).double().sum(dim=0)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float()


def _int_labels(values: Any, what: str) -> np.ndarray:
    """Validate labels as a 1-d array of non-negative integers; ``what`` names them in errors."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise _bad(f"{what} are not a 1-d list of integer labels ({_exc_text(exc)})") from None
    if array.ndim != 1:
        raise _bad(f"{what} must be 1-d integer labels, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise _bad(f"{what} must be integer labels 0..K-1, got dtype {array.dtype}")
    if len(array) and array.min() < 0:
        raise _bad(f"{what} must be integer labels 0..K-1, got a negative label {int(array.min())}")
    return array.astype(np.int64)


# ---- digits --------------------------------------------------------------------------------------
def _read_digits() -> _Raw:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8), grey 0..16 -> [0, 1]
    labels = bunch.target.astype(np.int64)
    return _Raw(
        name="digits",
        classes=tuple(str(c) for c in bunch.target_names),
        splits={"train": (images, labels)},
        source=f"sklearn load_digits, {len(labels)} images",
        allow_flip=False,
    )


# ---- cluttered digits (the embedded default) -------------------------------------------------------
CLUTTER_CANVAS = 24  # side of a cluttered-digits image
CLUTTER_VARIANTS = 3  # cluttered images made from each of the 1797 digits
CLUTTER_FRAGMENTS = 6  # distractor fragments per image
CLUTTER_FRAGMENT_SIDE = 4  # side of a fragment, canvas pixels
CLUTTER_DIGIT_SIDES = (12, 18)  # range of a digit's side on the canvas
CLUTTER_NOISE = 0.05  # std of the additive Gaussian pixel noise
CLUTTER_SEED = 0  # the images are one fixed dataset; only the split depends on load_data's seed


def _warp(sources: torch.Tensor, scale: torch.Tensor, angle: torch.Tensor, centre: torch.Tensor, side: int) -> torch.Tensor:
    """Place each (1, 8, 8) source on a ``side`` x ``side`` canvas: scaled to ``scale`` canvas
    pixels, rotated by ``angle`` (radians), centred at ``centre`` (pixels); zero elsewhere."""
    n = sources.shape[0]
    zoom = side / scale  # canvas extent over the digit's extent, in normalised coordinates
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    offset = (2 * centre / side - 1) * zoom[:, None]  # canvas centre -> digit coordinates
    theta = torch.stack(
        [
            torch.stack([cos, -sin, -(cos * offset[:, 0] - sin * offset[:, 1])], 1),
            torch.stack([sin, cos, -(sin * offset[:, 0] + cos * offset[:, 1])], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, [n, 1, side, side], align_corners=False)
    return F.grid_sample(sources, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cluttered_digits(seed: int = CLUTTER_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluttered digits, in the manner of cluttered MNIST (Jaderberg et al. 2015): each of
    scikit-learn's 8x8 digits, scaled to 12-18 px, rotated by up to 20 degrees and placed at a
    random spot of a 24x24 canvas, among six 4x4 fragments of other digits, with pixel noise.
    Returns ``(images uint8 (N, 1, 24, 24), labels (N,), source digit index (N,))``."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    digits = torch.tensor(bunch.images / 16.0, dtype=torch.float32)[:, None]
    n_digits, side, k = len(digits), CLUTTER_CANVAS, CLUTTER_FRAGMENTS
    n = n_digits * CLUTTER_VARIANTS
    g = torch.Generator().manual_seed(seed)
    origin = torch.arange(n_digits).repeat_interleave(CLUTTER_VARIANTS)

    low, high = CLUTTER_DIGIT_SIDES
    scale = low + (high - low) * torch.rand(n, generator=g)
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(20)
    centre = scale[:, None] / 2 + torch.rand(n, 2, generator=g) * (side - scale[:, None])
    canvas = _warp(digits[origin], scale, angle, centre, side)

    # Fragments: another digit at twice its size, seen through a small square window.
    others = torch.randint(0, n_digits, (n * k,), generator=g)
    piece = CLUTTER_FRAGMENT_SIDE
    window_at = torch.randint(0, side - piece + 1, (n * k, 2), generator=g)
    digit_at = window_at + piece / 2 + (torch.rand(n * k, 2, generator=g) - 0.5) * 6
    fragments = _warp(digits[others], torch.full((n * k,), 16.0), torch.zeros(n * k), digit_at, side)
    rows = torch.arange(side)
    inside_y = (rows >= window_at[:, :1]) & (rows < window_at[:, :1] + piece)
    inside_x = (rows >= window_at[:, 1:]) & (rows < window_at[:, 1:] + piece)
    fragments = fragments * (inside_y[:, None, :, None] & inside_x[:, None, None, :])
    clutter = fragments.view(n, k, side, side).amax(1, keepdim=True)

    images = torch.maximum(canvas, clutter) + CLUTTER_NOISE * torch.randn(n, 1, side, side, generator=g)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return images, bunch.target[origin.numpy()].astype(np.int64), origin.numpy()


def _read_cluttered_digits(seed: int, val_fraction: float, test_fraction: float) -> _Raw:
    """The splits keep all cluttered versions of one digit together, so no digit is seen in
    training and again in validation or test."""
    images, labels, origin = cluttered_digits()
    digit_labels = labels[:: CLUTTER_VARIANTS]
    n_digits = len(digit_labels)
    rest, test = _split_indices(digit_labels, max(1, round(test_fraction * n_digits)), seed)
    keep, val = _split_indices(digit_labels[rest], max(1, round(val_fraction * n_digits)), seed)
    groups = {"train": rest[keep], "val": rest[val], "test": test}
    splits = {}
    for split, digits in groups.items():
        chosen = np.isin(origin, digits)
        splits[split] = (images[chosen], labels[chosen])
    return _Raw(
        name="cluttered-digits",
        classes=tuple(str(c) for c in range(10)),
        splits=splits,
        source=(
            f"cluttered digits from sklearn load_digits, {len(labels)} images ({CLUTTER_VARIANTS} per digit, "
            f"split by digit, seed {seed})"
        ),
        allow_flip=False,
    )


# ---- CIFAR-10 python batches ---------------------------------------------------------------------
class _Refused(ValueError):
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
        raise _bad(f"{what} {path} is not a readable pickle ({_exc_text(exc)})") from None


def _find_cifar(path: Path) -> Path | None:
    for folder in (path, path / "cifar-10-batches-py"):
        if folder.is_dir() and any(_CIFAR_BATCH.fullmatch(p.name) or p.name == "test_batch" for p in folder.iterdir()):
            return folder
    return None


def _entry(batch: dict, key: str) -> Any:
    return batch.get(key.encode(), batch.get(key))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    what = f"CIFAR-10 batch {path}"
    batch = _load_pickle(path, "CIFAR-10 batch")
    expected = "expected a dict with b'data' (uint8, N x 3072) and b'labels' (N ints)"
    if not isinstance(batch, dict):
        raise _bad(f"{what} holds a {type(batch).__name__}; {expected}")
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    if data is None or labels is None:
        missing = " and ".join(k for k, v in (("b'data'", data), ("b'labels'", labels)) if v is None)
        raise _bad(f"{what} has no {missing}; {expected}")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise _bad(f"{what} has data as a {found}; {expected}")
    labels = _int_labels(labels, f"the labels of {what}")
    if len(labels) != len(data):
        raise _bad(f"{what} has {len(data)} images but {len(labels)} labels; they must be equal")
    return data.reshape(-1, 3, _CIFAR_SIDE, _CIFAR_SIDE), labels


def _read_cifar(folder: Path, where: str) -> _Raw:
    layout = "expected data_batch_1..data_batch_5 and test_batch"
    numbered = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CIFAR_BATCH.fullmatch(p.name)) and p.is_file()]
    train_files = [p for _, p in sorted(numbered)]
    test_file = folder / "test_batch"
    if not train_files:
        raise _bad(f"CIFAR-10 folder {folder} has no data_batch_1.. files; {layout}")
    if not test_file.is_file():
        raise _bad(f"CIFAR-10 folder {folder} has no test_batch; {layout}")
    train = [_read_cifar_batch(p) for p in train_files]
    x_test, y_test = _read_cifar_batch(test_file)
    x_train = np.concatenate([x for x, _ in train]) if len(train) > 1 else train[0][0]
    y_train = np.concatenate([y for _, y in train])
    top = int(max(y_train.max(initial=0), y_test.max(initial=0)))

    meta_file = folder / "batches.meta"
    if meta_file.is_file():
        meta = _load_pickle(meta_file, "CIFAR-10 metadata")
        names = _entry(meta, "label_names") if isinstance(meta, dict) else None
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, (bytes, str)) for n in names):
            raise _bad(f"CIFAR-10 metadata {meta_file} has no b'label_names' list of names; fix or remove the file")
        classes = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names)
        if top >= len(classes):
            raise _bad(
                f"CIFAR-10 folder {folder} has label {top} but {meta_file.name} names only {len(classes)} classes; "
                "labels must lie in 0..K-1"
            )
    else:
        classes = tuple(str(i) for i in range(top + 1))
    return _Raw(
        name=where,
        classes=classes,
        splits={"train": (x_train, y_train), "test": (x_test, y_test)},
        source=(
            f"CIFAR-10 python batches ({len(train_files)} data_batch file(s) + test_batch), "
            f"{len(y_train) + len(y_test)} images"
        ),
    )


# ---- image folders -------------------------------------------------------------------------------
def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def _read_image_folder(root: Path, where: str, resolution: int) -> _Raw:
    train_dir = root / "train"
    presplit = train_dir.is_dir() and bool(_subdirs(train_dir))
    split_dirs = {"train": train_dir if presplit else root}
    if presplit:
        for split, names in (("val", _VAL_FOLDERS), ("test", ("test",))):
            found = next((root / n for n in names if (root / n).is_dir()), None)
            if found is not None:
                split_dirs[split] = found
    classes = tuple(d.name for d in _subdirs(split_dirs["train"]))
    if len(classes) < 2:
        raise _bad(
            f"image folder {split_dirs['train']} has {len(classes)} class sub-folder(s) {list(classes)}; "
            "need at least 2 (one sub-folder per class)"
        )
    suffixes = ", ".join(IMAGE_SUFFIXES)
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in split_dirs.items():
        class_dirs = _subdirs(folder)
        if not class_dirs:
            raise _bad(
                f"{split} folder {folder} has no class sub-folders; expected the same class folders as {train_dir}"
            )
        files[split] = []
        for class_dir in class_dirs:
            if class_dir.name not in classes:
                raise _bad(
                    f"class folder {class_dir} has no counterpart in {train_dir}; "
                    f"{split} classes must be among the train classes {list(classes)}"
                )
            images = _image_files(class_dir)
            if not images:
                raise _bad(f"class folder {class_dir} has no images ({suffixes}); add images or remove the folder")
            files[split] += [(p, classes.index(class_dir.name)) for p in images]

    total = sum(len(f) for f in files.values())
    splits = {
        split: (_load_images([p for p, _ in entries], resolution), np.array([y for _, y in entries], dtype=np.int64))
        for split, entries in files.items()
    }
    given = f"{', '.join(split_dirs)} folders" if presplit else "no split folders"
    return _Raw(
        name=where,
        classes=classes,
        splits=splits,
        source=f"image folder, {total} images in {len(classes)} classes ({given}), each file resized on load",
    )


def _load_images(paths: list[Path], resolution: int) -> np.ndarray:
    """(N, 3, R, R) uint8: each file converted to RGB and resized (bilinear) by Pillow."""
    try:
        from PIL import Image
    except ImportError:
        raise _bad("reading an image folder needs Pillow; install it with pip install pillow") from None
    from tqdm.auto import tqdm

    out = np.empty((len(paths), resolution, resolution, 3), dtype=np.uint8)
    progress = tqdm(
        paths,
        desc="loading images",
        unit="img",
        leave=False,
        disable=None if len(paths) > _PROGRESS_MIN_FILES else True,
    )
    for i, path in enumerate(progress):
        try:
            with Image.open(path) as image:
                image.draft("RGB", (resolution, resolution))  # JPEG: decode at a reduced scale if possible
                rgb = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BILINEAR)
                out[i] = np.asarray(rgb)
        except Exception as exc:
            raise _bad(f"image file {path} could not be read ({_exc_text(exc)}); replace or remove it") from None
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


# ---- .npz arrays ---------------------------------------------------------------------------------
def _npz_images(array: np.ndarray, what: str) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W), C in {1, 3} -> (N, C, H, W) uint8 or float32."""
    layouts = "expected (N, H, W), (N, H, W, C) or (N, C, H, W) with C 1 or 3"
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4 and array.shape[-1] in (1, 3):
        array = array.transpose(0, 3, 1, 2)
    elif not (array.ndim == 4 and array.shape[1] in (1, 3)):
        raise _bad(f"{what} has shape {array.shape}; {layouts}")
    if 0 in array.shape:
        raise _bad(f"{what} has shape {array.shape} with no images or no pixels; {layouts}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        lo, hi = float(array.min()), float(array.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < -1e-3 or hi > 1 + 1e-3:
            raise _bad(
                f"{what} is float with values in [{lo:g}, {hi:g}]; float images must lie in [0, 1] (or store uint8 0..255)"
            )
        return np.ascontiguousarray(np.clip(array, 0, 1), dtype=np.float32)
    if array.dtype.kind in "iu" and array.min() >= 0 and array.max() <= 255:
        return np.ascontiguousarray(array, dtype=np.uint8)
    raise _bad(f"{what} has dtype {array.dtype}; images must be uint8 (0..255) or float (0..1)")


def _read_npz(path: Path, where: str) -> _Raw:
    what = f"npz file {where}"
    if not zipfile.is_zipfile(path):
        raise _bad(
            f"{what} is not a valid .npz archive (not a zip file: truncated or not written by numpy.savez); "
            "write it with numpy.savez(path, x=images, y=labels)"
        )
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _bad(
            f"{what} could not be read ({_exc_text(exc)}); write it with numpy.savez(path, x=..., y=...)"
        ) from None
    with archive:
        names = list(archive.files)
        for key in ("x", "y"):
            if key not in names:
                raise _bad(f"{what} has no array {key!r} (found {names}); expected arrays x (images) and y (labels)")
        for split in ("val", "test"):
            if (f"x_{split}" in names) != (f"y_{split}" in names):
                raise _bad(f"{what} has only one of x_{split} and y_{split}; give both or neither")
        wanted = [k for k in ("x", "y", "x_val", "y_val", "x_test", "y_test", "classes") if k in names]
        arrays = {}
        for key in wanted:
            try:
                arrays[key] = archive[key]
            except Exception as exc:
                raise _bad(f"array {key!r} in {what} could not be read ({_exc_text(exc)})") from None
            if not isinstance(arrays[key], np.ndarray):  # a member that is not .npy data comes back as bytes
                raise _bad(f"array {key!r} in {what} could not be read (not numpy .npy data)")

    splits = {}
    for split, suffix in (("train", ""), ("val", "_val"), ("test", "_test")):
        if f"x{suffix}" not in arrays:
            continue
        images = _npz_images(arrays[f"x{suffix}"], f"array x{suffix} in {what}")
        labels = _int_labels(arrays[f"y{suffix}"], f"array y{suffix} in {what}")
        if len(labels) != len(images):
            raise _bad(
                f"{what} has {len(images)} images in x{suffix} but {len(labels)} labels in y{suffix}; they must be equal"
            )
        splits[split] = (images, labels)
    top = max(int(y.max()) for _, y in splits.values())
    if "classes" in arrays:
        names_array = arrays["classes"]
        if names_array.ndim != 1 or names_array.dtype.kind not in "US":
            raise _bad(
                f"array classes in {what} must be a 1-d array of strings, got {names_array.dtype} {names_array.shape}"
            )
        classes = tuple(n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names_array.tolist())
        if top >= len(classes):
            raise _bad(f"{what} has label {top} but classes names only {len(classes)}; labels must lie in 0..K-1")
    else:
        classes = tuple(str(i) for i in range(top + 1))
    n_images = sum(len(y) for _, y in splits.values())
    return _Raw(
        name=where,
        classes=classes,
        splits=splits,
        source=f"npz arrays {', '.join(k for k in wanted if k.startswith('x'))} from {path.name}, {n_images} images",
    )
