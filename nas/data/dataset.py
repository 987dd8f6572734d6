"""``load_data(source, resolution, seed)``: any source as one :class:`Dataset` of split images.

Splits the source does not give are carved from its training data (seeded, stratified); images
stay uint8 (in memory for the embedded digits, CIFAR-10 and ``.npz``; on disk for image folders)
and are cropped to ``resolution`` batch by batch. The per-channel mean and std that normalise the
network's input are measured on a seeded sample of at most ``STATS_IMAGES`` training images.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .cifar import find_cifar, read_cifar
from .common import EXPECTED, SPLITS, DataError, RawSource, exc_text
from .digits import read_cluttered_digits, read_digits
from .folder import image_files, read_image_folder, subdirs
from .images import ArrayImages, FolderImages, SplitImages
from .npz import read_npz
from .splits import carve_splits
from .transforms import PRESETS, Augmentation, Normaliser

DIGITS_SOURCES = ("digits", "sklearn-digits")
CLUTTERED_DIGITS = "cluttered-digits"
STATS_IMAGES = 2000  # training images the mean and std are measured on
_CHUNK = 256  # images resized at a time on loading, to bound peak memory
_STATS_CHUNK = 64  # images decoded and summed at a time for the statistics


@dataclass(frozen=True, eq=False)
class Dataset:
    """The splits of one source as ``torch.utils.data.Dataset`` objects handing out uint8 crops
    at ``resolution``, plus what it takes to turn them into network input (``normalise``)."""

    name: str  # "cluttered-digits", "digits" or the path it came from
    classes: tuple[str, ...]  # class names, index = label
    resolution: int  # side of the square crops the splits hand out
    splits: dict[str, SplitImages]  # split -> its images (see nas.data.images)
    mean: tuple[float, float, float]  # per-channel mean of training pixels ([0, 1] scale), from a sample
    std: tuple[float, float, float]
    augmentation: Augmentation = field(default_factory=Augmentation)
    source: str = ""  # one-line description of where the data came from

    def __post_init__(self) -> None:
        splits = set(self.splits)
        if "train" not in splits or not splits <= set(SPLITS):
            raise ValueError(f"splits must hold 'train' plus any of {SPLITS[1:]}, got {sorted(splits)}")
        if len(self.classes) < 2:
            raise ValueError(f"a dataset needs at least 2 classes, got {len(self.classes)}: {self.classes}")
        for split, images in self.splits.items():
            if images.resolution != self.resolution:
                raise ValueError(
                    f"split {split!r} crops to {images.resolution} px, not the dataset's {self.resolution}"
                )
            y = images.labels
            if y.dtype != torch.int64 or y.ndim != 1:
                raise ValueError(f"labels of split {split!r} must be int64 (N,), got {y.dtype} {tuple(y.shape)}")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                raise ValueError(
                    f"labels of split {split!r} must lie in [0, {len(self.classes)}), got range [{int(y.min())}, {int(y.max())}]"
                )
        object.__setattr__(self, "normalise", Normaliser(self.mean, self.std))

    def __repr__(self) -> str:
        return f"Dataset({self.describe()})"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def allow_flip(self) -> bool:
        return self.augmentation.flip

    @property
    def in_memory(self) -> bool:
        """Whether every split is held in memory (else some are decoded from files as needed)."""
        return all(images.in_memory for images in self.splits.values())

    def size(self, split: str) -> int:
        return len(self._split(split))

    def labels(self, split: str) -> torch.Tensor:
        return self._split(split).labels

    def _split(self, split: str) -> SplitImages:
        if split not in self.splits:
            raise ValueError(f"split must be one of {tuple(s for s in SPLITS if s in self.splits)}, got {split!r}")
        return self.splits[split]

    def crop_bytes(self, split: str) -> int:
        """Bytes of ``split``'s evaluation crops as uint8 (what caching them would take)."""
        images = self._split(split)
        return len(images) * images.channels * self.resolution**2

    def describe(self) -> str:
        """One line: name, classes, split sizes, resolution."""
        names = ", ".join(self.classes[:10]) + (", ..." if len(self.classes) > 10 else "")
        sizes = " / ".join(f"{s} {self.size(s)}" for s in SPLITS if s in self.splits)
        return f"{self.name}: {self.num_classes} classes ({names}), {sizes}, {self.resolution}x{self.resolution}"

    def subset(self, split: str, n: int, generator: torch.Generator) -> Dataset:
        """The same dataset with ``split`` reduced to ``n`` random examples (kept in their order);
        mean and std stay those measured on the full train split."""
        size = self.size(split)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        if n >= size:
            return self
        idx = torch.randperm(size, generator=generator)[:n].sort().values
        splits = {**self.splits, split: self.splits[split].subset(idx)}
        return Dataset(
            self.name, self.classes, self.resolution, splits, self.mean, self.std, self.augmentation, self.source
        )


def load_data(
    source: str | os.PathLike[str] = "cluttered-digits",
    resolution: int = 24,
    seed: int = 0,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    max_train: int | None = None,
    augmentation: Augmentation | None = None,
) -> Dataset:
    """Load ``source`` ('cluttered-digits', 'digits', a CIFAR-10 python folder, an image folder or
    an .npz file) as split images cropped to ``resolution`` x ``resolution``.

    Splits the source lacks are carved from its training data, stratified by class and seeded by
    ``seed``: each takes its fraction of that data. ``max_train`` keeps a seeded subset of the
    train split (for quick runs). ``augmentation`` replaces the source's preset
    (``nas.data.transforms.PRESETS``). Bad input raises a one-line ``ValueError``."""
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
    if augmentation is not None and not isinstance(augmentation, Augmentation):
        raise ValueError(f"augmentation must be a nas.data.Augmentation, got {type(augmentation).__name__}")

    if isinstance(source, str) and source.strip().lower() in DIGITS_SOURCES:
        raw = read_digits()
    elif isinstance(source, str) and source.strip().lower() == CLUTTERED_DIGITS:
        raw = read_cluttered_digits(int(seed), val_fraction, test_fraction)
    else:
        where = os.fspath(source)
        if not str(where).strip():
            raise DataError(f"data source is empty; {EXPECTED}")
        raw = _read_path(Path(where).expanduser(), str(where))
    if len(raw.classes) < 2:
        raise DataError(f"data {raw.name} has {len(raw.classes)} class; need at least 2 classes to train a classifier")
    return _assemble(
        raw, resolution, int(seed), val_fraction, test_fraction, max_train, augmentation or PRESETS[raw.kind]
    )


def _read_path(path: Path, where: str) -> RawSource:
    try:
        if not path.exists():
            raise DataError(f"data path {where} does not exist; {EXPECTED}")
        if path.is_file():
            if path.suffix.lower() == ".npz":
                return read_npz(path, where)
            raise DataError(f"data file {where} is not an .npz file; {EXPECTED}")
        if not path.is_dir():
            raise DataError(f"data path {where} is neither a file nor a folder; {EXPECTED}")
        cifar = find_cifar(path)
        if cifar is not None:
            return read_cifar(cifar, where)
        if subdirs(path):
            return read_image_folder(path, where)
        if image_files(path):
            raise DataError(
                f"data folder {where} holds images but no class sub-folders; "
                f"put each class's images in its own sub-folder ({where}/<class>/...)"
            )
        raise DataError(f"data folder {where} matches no known layout; {EXPECTED}")
    except OSError as exc:
        raise DataError(f"data path {where} could not be read ({exc_text(exc)}); {EXPECTED}") from None


def _assemble(
    raw: RawSource,
    resolution: int,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    max_train: int | None,
    augmentation: Augmentation,
) -> Dataset:
    splits, notes = carve_splits(
        raw, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, max_train=max_train
    )
    images: dict[str, SplitImages] = {}
    if raw.kind == "folder":
        for split, (paths, labels) in splits.items():
            images[split] = FolderImages(paths, torch.from_numpy(labels), resolution, augmentation)
        size_note = f"cropped to {resolution}x{resolution} per image"
    else:
        h, w = raw.splits["train"][0].shape[2:]
        # Stored no larger than the evaluation crop needs: crops then only ever upsample.
        keep_side = math.ceil(resolution / augmentation.eval_crop)
        shrink = min(h, w) > keep_side
        for split, (x, labels) in splits.items():
            stored = _shrink(x, keep_side) if shrink else x
            images[split] = ArrayImages(stored, torch.from_numpy(labels), resolution, augmentation)
        sh, sw = images["train"].images.shape[2:]
        verb = "upsampled" if resolution > max(sh, sw) else "downsampled" if resolution < min(sh, sw) else "resized"
        crop = "" if (sh, sw) == (resolution, resolution) else f", {verb} to {resolution}x{resolution} per batch"
        size_note = f"{h}x{w}" + (f" stored at {sh}x{sw}" if shrink else "") + crop + ", uint8 in memory"
    mean, std = _channel_stats(images["train"], seed)
    return Dataset(
        name=raw.name,
        classes=raw.classes,
        resolution=resolution,
        splits={s: images[s] for s in SPLITS},
        mean=mean,
        std=std,
        augmentation=augmentation,
        source="; ".join([f"{raw.source}, {size_note}", *notes]),
    )


def _shrink(x: torch.Tensor, short_side: int) -> torch.Tensor:
    """uint8 (N, C, h, w) resized (antialiased bilinear) so that the shorter side is ``short_side``."""
    h, w = x.shape[2:]
    size = (round(h * short_side / min(h, w)), round(w * short_side / min(h, w)))
    out = torch.empty((x.shape[0], x.shape[1], *size), dtype=torch.uint8)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = F.interpolate(
            x[start : start + _CHUNK].float(), size=size, mode="bilinear", antialias=True, align_corners=False
        )
        out[start : start + _CHUNK] = chunk.round_().clamp_(0, 255).to(torch.uint8)
    return out


def _channel_stats(train: SplitImages, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std of the evaluation crops of at most ``STATS_IMAGES``
    seeded training images (exact integer sums, a few images at a time); a constant channel gets
    std 1 (zeros, not NaN)."""
    from tqdm.auto import tqdm

    n = len(train)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: min(n, STATS_IMAGES)].sort().values.tolist()
    total = torch.zeros(3, dtype=torch.int64)
    squares = torch.zeros(3, dtype=torch.int64)
    count = 0
    chunks = range(0, len(order), _STATS_CHUNK)
    for start in tqdm(chunks, desc="image statistics", unit="chunk", leave=False, disable=None if not train.in_memory else True):
        x, _ = train.__getitems__(order[start : start + _STATS_CHUNK])
        pixels = x.long()
        total += pixels.sum(dim=(0, 2, 3)).expand(3)
        squares += pixels.square_().sum(dim=(0, 2, 3)).expand(3)
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total.double() / (255 * count)
    std = (squares.double() / (255**2 * count) - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return tuple(float(v) for v in mean.float()), tuple(float(v) for v in std.float())
