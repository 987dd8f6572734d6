"""One split's images as a ``torch.utils.data.Dataset`` that hands out uint8 crops at the
training resolution: :class:`ArrayImages` (in memory, uint8) and :class:`FolderImages` (image
files, decoded per image).

A key is an index (the evaluation crop) or an ``(index, epoch_seed)`` pair (a random training
crop drawn from that image's generator for that epoch). ``split[key]`` gives one
``(uint8 (C, R, R), label)``; ``split.__getitems__(keys)``, which ``DataLoader`` calls for each
batch, gives ``(uint8 (B, C, R, R), int64 (B,))`` in one go (``collate_batch`` passes it on).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .common import DataError, exc_text
from .transforms import Augmentation, centre_crop_batch, crop_batch, crop_image, eval_box, item_rng, train_box

Key = int | tuple[int, int]


class BadImageWarning(UserWarning):
    """An image file that passed the header check could not be decoded; it was skipped."""


def collate_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """``DataLoader``'s ``collate_fn``: ``__getitems__`` already returns a stacked batch."""
    return batch


def _split_keys(keys: Sequence[Key]) -> tuple[list[int], list[int] | None]:
    if not keys:
        return [], None
    if isinstance(keys[0], tuple):
        return [int(k[0]) for k in keys], [int(k[1]) for k in keys]
    return [int(k) for k in keys], None


class SplitImages(torch.utils.data.Dataset):
    """What both kinds share: labels, resolution, augmentation and the key protocol."""

    channels = 3

    def __init__(self, labels: Tensor, resolution: int, augmentation: Augmentation) -> None:
        self.labels = labels
        self.resolution = resolution
        self.augmentation = augmentation

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, key: Key) -> tuple[Tensor, int]:
        images, labels = self.__getitems__([key])
        return images[0], int(labels[0])

    def __getitems__(self, keys: Sequence[Key]) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def subset(self, index: Tensor) -> SplitImages:
        raise NotImplementedError

    @property
    def in_memory(self) -> bool:
        return False


class ArrayImages(SplitImages):
    """Images held as one uint8 tensor (N, C, h, w), C 1 or 3; cropped a batch at a time."""

    def __init__(self, images: Tensor, labels: Tensor, resolution: int, augmentation: Augmentation) -> None:
        super().__init__(labels, resolution, augmentation)
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] in (1, 3)
        self.images = images
        self.channels = int(images.shape[1])

    @property
    def in_memory(self) -> bool:
        return True

    def __getitems__(self, keys: Sequence[Key]) -> tuple[Tensor, Tensor]:
        index, epoch_seeds = _split_keys(keys)
        idx = torch.tensor(index, dtype=torch.int64)
        x = self.images.index_select(0, idx)
        h, w = x.shape[2:]
        aug = self.augmentation
        if epoch_seeds is None:
            return centre_crop_batch(x, eval_box(h, w, aug), self.resolution), self.labels.index_select(0, idx)
        drawn = [train_box(item_rng(s, i), h, w, aug, self.resolution) for i, s in zip(index, epoch_seeds)]
        boxes, flips = [b for b, _ in drawn], [f for _, f in drawn]
        return crop_batch(x, boxes, flips, self.resolution, aug.pad_mode), self.labels.index_select(0, idx)

    def subset(self, index: Tensor) -> ArrayImages:
        return ArrayImages(
            self.images.index_select(0, index), self.labels.index_select(0, index), self.resolution, self.augmentation
        )


class FolderImages(SplitImages):
    """Image files, each decoded, cropped and resized by Pillow when asked for. A file that fails
    to decode (e.g. truncated after a valid header) is skipped with a :class:`BadImageWarning`
    naming it, so one damaged file does not stop a long training run; a batch whose every file
    fails is a one-line error."""

    def __init__(self, paths: tuple[str, ...], labels: Tensor, resolution: int, augmentation: Augmentation) -> None:
        super().__init__(labels, resolution, augmentation)
        self.paths = paths

    def _decode(self, index: int, epoch_seed: int | None) -> np.ndarray | None:
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as image:
                width, height = image.size
                if epoch_seed is None:
                    box, flip = eval_box(height, width, self.augmentation), False
                else:
                    box, flip = train_box(
                        item_rng(epoch_seed, index), height, width, self.augmentation, self.resolution
                    )
                return crop_image(image, box, flip, self.resolution)
        except Exception as exc:
            warnings.warn(
                f"skipped image {path}: it could not be decoded ({exc_text(exc)}); replace or remove it",
                BadImageWarning,
                stacklevel=2,
            )
            return None

    def __getitems__(self, keys: Sequence[Key]) -> tuple[Tensor, Tensor]:
        index, epoch_seeds = _split_keys(keys)
        seeds: list[Any] = epoch_seeds if epoch_seeds is not None else [None] * len(index)
        decoded = [(self._decode(i, s), i) for i, s in zip(index, seeds)]
        kept = [(pixels, i) for pixels, i in decoded if pixels is not None]
        if not kept:
            named = ", ".join(self.paths[i] for i in index[:3])
            raise DataError(f"no image of a batch could be decoded ({named}, ...); the image folder looks damaged")
        x = torch.from_numpy(np.stack([pixels for pixels, _ in kept])).permute(0, 3, 1, 2).contiguous()
        return x, self.labels.index_select(0, torch.tensor([i for _, i in kept], dtype=torch.int64))

    def subset(self, index: Tensor) -> FolderImages:
        return FolderImages(
            tuple(self.paths[i] for i in index.tolist()),
            self.labels.index_select(0, index),
            self.resolution,
            self.augmentation,
        )
