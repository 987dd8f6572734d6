"""The reference architecture: MobileNetV2 (arXiv 1801.04381, Table 2) and its width multipliers."""

from __future__ import annotations

import math
import numbers

from .arch import ArchSpec, StageSpec, make_divisible

# (t, c, n, s) rows of MobileNetV2 Table 2, between the 3x3 stem conv (32) and the 1x1 conv (1280).
MOBILENET_V2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENET_V2_STEM = 32
MOBILENET_V2_LAST = 1280


def mobilenet_v2(
    width_mult: float = 1.0,
    resolution: int = 224,
    num_classes: int = 1001,
    kernel_size: int = 3,
) -> ArchSpec:
    """MobileNetV2 with the TF-slim channel rounding: every width ``c * width_mult`` is rounded to a
    multiple of 8 (see ``make_divisible``); the last 1x1 conv keeps 1280 channels for
    ``width_mult <= 1``."""
    if isinstance(width_mult, bool) or not isinstance(width_mult, numbers.Real) or not 0 < width_mult < math.inf:
        raise ValueError(f"width_mult must be a finite number > 0, but got {width_mult!r}")
    stages = tuple(
        StageSpec(t, make_divisible(c * width_mult), n, s, kernel_size) for t, c, n, s in MOBILENET_V2_STAGES
    )
    return ArchSpec(
        resolution=resolution,
        stem_channels=make_divisible(MOBILENET_V2_STEM * width_mult),
        stages=stages,
        last_channels=make_divisible(MOBILENET_V2_LAST * max(1.0, width_mult)),
        num_classes=num_classes,
    )
