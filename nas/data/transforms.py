"""Augmentation and evaluation crops, as boxes: one sampler, two ways to apply it.

A training crop is a random-resized crop (a box of random area and aspect ratio, allowed to
reach ``pad`` of the side beyond the image) and an optional horizontal flip; an evaluation crop
is the centre square of ``eval_crop`` of the shorter side ("resize, then centre-crop"). Either
box is resized to the training resolution. Boxes are drawn from a ``numpy.random.Generator``
seeded per image and epoch, so an image's crop does not depend on the batch or worker it lands in.

In-memory images (uint8 tensors) are cropped a batch at a time (:func:`crop_batch`, one
``grid_sample``; :func:`centre_crop_batch` for evaluation); image files one at a time with Pillow (:func:`crop_image`), at full resolution
and, for JPEG, decoded at the smallest scale that still covers the crop. Both return uint8;
:class:`Normaliser` turns a batch into the network's float input on the device.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

Box = tuple[float, float, float, float]  # top, left, height, width, in pixels of the stored image
PAD_MODES = ("zeros", "border")
_ATTEMPTS = 10


@dataclass(frozen=True)
class Augmentation:
    """How training images are cropped and evaluation images centred (see the module docstring)."""

    scale: tuple[float, float] = (0.08, 1.0)  # range of the crop's area, as a fraction of the image's
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # range of the crop's width / height
    pad: float = 0.0  # how far the crop may reach beyond the image, as a fraction of its shorter side
    pad_mode: str = "zeros"  # what lies beyond: black ('zeros') or the edge pixels repeated ('border')
    flip: bool = True  # random horizontal flips (off for digits: a mirrored 2 is no 2)
    eval_crop: float = 0.875  # evaluation: the centre square of this fraction of the shorter side

    def __post_init__(self) -> None:
        for name in ("scale", "ratio"):
            value = tuple(getattr(self, name))
            object.__setattr__(self, name, value)
            if len(value) != 2 or not 0 < value[0] <= value[1] or (name == "scale" and value[1] > 1):
                bound = "0 < low <= high <= 1" if name == "scale" else "0 < low <= high"
                raise ValueError(f"augmentation {name} must be (low, high) with {bound}, but got {value!r}")
        if not 0 <= self.pad <= 0.5:
            raise ValueError(f"augmentation pad must be in [0, 0.5], but got {self.pad!r}")
        if self.pad_mode not in PAD_MODES:
            raise ValueError(f"augmentation pad_mode must be one of {PAD_MODES}, but got {self.pad_mode!r}")
        if not 0 < self.eval_crop <= 1:
            raise ValueError(f"augmentation eval_crop must be in (0, 1], but got {self.eval_crop!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


# The presets ``load_data`` picks by source; pass ``augmentation=`` to use another.
PRESETS = {
    # ImageNet-style training: random-resized crop of 8-100% of the area, flip; 87.5% centre crop.
    "folder": Augmentation(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip=True, eval_crop=0.875),
    # CIFAR-style: the whole image shifted by up to 1/8 of its side (black beyond), flip; no crop.
    "small": Augmentation(scale=(1.0, 1.0), ratio=(1.0, 1.0), pad=1 / 8, flip=True, eval_crop=1.0),
    # Digits: shifted by up to 1/12 of the side (2 px at 24), edges repeated, never flipped.
    "digits": Augmentation(
        scale=(1.0, 1.0), ratio=(1.0, 1.0), pad=1 / 12, pad_mode="border", flip=False, eval_crop=1.0
    ),
}


# ---- boxes -------------------------------------------------------------------------------------
def item_rng(epoch_seed: int, index: int) -> np.random.Generator:
    """The generator of one image's crop in one epoch."""
    return np.random.default_rng([int(epoch_seed), int(index)])


def train_box(
    rng: np.random.Generator, height: int, width: int, aug: Augmentation, size: int | None = None
) -> tuple[Box, bool]:
    """A random-resized crop box of an ``height`` x ``width`` image and whether to flip it: area a
    uniform fraction ``aug.scale`` of the image's, log-uniform aspect ratio in ``aug.ratio``,
    position uniform among those within ``aug.pad`` of the image; after 10 misses, the whole
    image with its ratio clamped into the range. Positions are whole pixels of the image, or,
    for an image smaller than the output ``size``, whole pixels of the output (a fractional box)."""
    zoom = max(1.0, size / min(height, width)) if size else 1.0
    height, width = (round(height * zoom), round(width * zoom)) if zoom > 1 else (height, width)
    pad = round(aug.pad * min(height, width))
    area = height * width
    log_low, log_high = math.log(aug.ratio[0]), math.log(aug.ratio[1])
    box = None
    for _ in range(_ATTEMPTS):
        target = area * rng.uniform(*aug.scale)
        ratio = math.exp(rng.uniform(log_low, log_high))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width + 2 * pad and 0 < h <= height + 2 * pad:
            top = int(rng.integers(-pad, height + pad - h + 1))
            left = int(rng.integers(-pad, width + pad - w + 1))
            box = (top, left, h, w)
            break
    if box is None:
        ratio = min(max(width / height, aug.ratio[0]), aug.ratio[1])
        h, w = (
            (height, min(width, round(height * ratio)))
            if width / height >= ratio
            else (min(height, round(width / ratio)), width)
        )
        box = ((height - h) // 2, (width - w) // 2, h, w)
    flip = bool(aug.flip and rng.random() < 0.5)
    if zoom > 1:
        box = tuple(v / zoom for v in box)
    return box, flip


def eval_box(height: int, width: int, aug: Augmentation) -> Box:
    """The centre square of ``aug.eval_crop`` of the shorter side."""
    side = max(1, round(min(height, width) * aug.eval_crop))
    return ((height - side) // 2, (width - side) // 2, side, side)


# ---- applying boxes ------------------------------------------------------------------------------
def crop_batch(x: Tensor, boxes: list[Box], flips: list[bool], size: int, pad_mode: str = "zeros") -> Tensor:
    """uint8 (B, C, h, w) -> uint8 (B, C, size, size): each image's box resized (bilinear) to
    ``size``, mirrored where ``flips`` says, as one ``grid_sample`` (boxes may reach beyond the
    image: ``pad_mode`` fills there). Integer shifts at scale 1 come out as exact pixel copies."""
    b, _, h, w = x.shape
    if not any(flips) and all(box == (0, 0, h, w) for box in boxes) and h == w == size:
        return x
    box = torch.tensor(boxes, dtype=torch.float64)
    top, left, bh, bw = box.unbind(1)
    sign = 1.0 - 2.0 * torch.tensor(flips, dtype=torch.float64)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = bw / w * sign  # output x in [-1, 1] -> input x, mirrored where flipped
    theta[:, 0, 2] = (2 * left + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    grid = F.affine_grid(theta.float(), [b, 1, size, size], align_corners=False)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=pad_mode, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def centre_crop_batch(x: Tensor, box: Box, size: int) -> Tensor:
    """uint8 (B, C, h, w) -> uint8 (B, C, size, size): the same ``box`` (inside the image) of every
    image, resized with antialiasing (the evaluation crop; free when it is the whole image)."""
    top, left, bh, bw = box
    if box == (0, 0, *x.shape[2:]) and (bh, bw) == (size, size):
        return x
    part = x[:, :, top : top + bh, left : left + bw]
    if (bh, bw) == (size, size):
        return part.contiguous()
    out = F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def crop_image(image: Any, box: Box, flip: bool, size: int) -> np.ndarray:
    """A Pillow image's ``box`` (in its full-size pixels) as uint8 (size, size, 3), mirrored if
    ``flip``. A JPEG is decoded at the smallest power-of-two scale that keeps the box at least
    ``size`` pixels wide; Pillow's resize then antialiases."""
    from PIL import Image

    width, height = image.size
    top, left, bh, bw = box
    image.draft("RGB", (math.ceil(size * width / bw), math.ceil(size * height / bh)))  # JPEG only; else a no-op
    fx, fy = image.size[0] / width, image.size[1] / height
    area = (left * fx, top * fy, (left + bw) * fx, (top + bh) * fy)
    rgb = image.convert("RGB")
    if area[0] >= 0 and area[1] >= 0 and area[2] <= rgb.size[0] and area[3] <= rgb.size[1]:
        out = rgb.resize((size, size), Image.Resampling.BILINEAR, box=area)
    else:
        out = rgb.transform((size, size), Image.Transform.EXTENT, area, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    if flip:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(out, dtype=np.uint8)


# ---- network input -------------------------------------------------------------------------------
class Normaliser:
    """uint8 (B, 1 or 3, R, R) on any device -> float32 (B, 3, R, R), per-channel
    ``(x / 255 - mean) / std`` (grey images broadcast to three channels), in ``memory_format``."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.scale = torch.tensor([1 / (255 * s) for s in std], dtype=torch.float32).view(1, 3, 1, 1)
        self.shift = torch.tensor([m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, 3, 1, 1)
        self._on: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def __call__(self, x: Tensor, memory_format: torch.memory_format = torch.contiguous_format) -> Tensor:
        if x.device not in self._on:
            self._on[x.device] = (self.scale.to(x.device), self.shift.to(x.device))
        scale, shift = self._on[x.device]
        b, _, h, w = x.shape
        # One float copy, already in the layout asked for, scaled in place: a batch at a time this
        # is the largest buffer of an evaluation pass, and x.float() * scale - shift made three.
        out = x.expand(b, 3, h, w).to(torch.float32, memory_format=memory_format, copy=True)
        return out.mul_(scale).sub_(shift)
