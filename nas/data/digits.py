"""The embedded datasets, built from scikit-learn's bundled ``load_digits`` (works offline):
plain 8x8 digits, and cluttered digits on 24x24 canvases (the default)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .common import RawSource

CLUTTER_CANVAS = 24  # side of a cluttered-digits image
CLUTTER_VARIANTS = 3  # cluttered images made from each of the 1797 digits
CLUTTER_FRAGMENTS = 6  # distractor fragments per image
CLUTTER_FRAGMENT_SIDE = 4  # side of a fragment, canvas pixels
CLUTTER_DIGIT_SIDES = (12, 18)  # range of a digit's side on the canvas
CLUTTER_NOISE = 0.05  # std of the additive Gaussian pixel noise
CLUTTER_SEED = 0  # the images are one fixed dataset; only the split depends on load_data's seed


def read_digits() -> RawSource:
    """scikit-learn's 1797 8x8 digits, grey levels 0..16 scaled to uint8 0..255."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255 / 16)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    return RawSource(
        name="digits",
        classes=tuple(str(c) for c in bunch.target_names),
        splits={"train": (torch.from_numpy(images), labels)},
        source=f"sklearn load_digits, {len(labels)} images",
        kind="digits",
    )


def _warp(
    sources: torch.Tensor, scale: torch.Tensor, angle: torch.Tensor, centre: torch.Tensor, side: int
) -> torch.Tensor:
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


def read_cluttered_digits(seed: int, val_fraction: float, test_fraction: float) -> RawSource:
    """The splits keep all cluttered versions of one digit together, so no digit is seen in
    training and again in validation or test."""
    from .splits import split_indices

    images, labels, origin = cluttered_digits()
    digit_labels = labels[::CLUTTER_VARIANTS]
    n_digits = len(digit_labels)
    rest, test = split_indices(digit_labels, max(1, round(test_fraction * n_digits)), seed)
    keep, val = split_indices(digit_labels[rest], max(1, round(val_fraction * n_digits)), seed)
    groups = {"train": rest[keep], "val": rest[val], "test": test}
    splits = {}
    for split, digits in groups.items():
        chosen = np.isin(origin, digits)
        splits[split] = (torch.from_numpy(np.ascontiguousarray(images[chosen])), labels[chosen])
    return RawSource(
        name="cluttered-digits",
        classes=tuple(str(c) for c in range(10)),
        splits=splits,
        source=(
            f"cluttered digits from sklearn load_digits, {len(labels)} images ({CLUTTER_VARIANTS} per digit, "
            f"split by digit, seed {seed})"
        ),
        kind="digits",
    )
