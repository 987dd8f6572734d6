"""Vectorised analytic costs for whole populations, straight from a search space's encodings.

Samplers and predictors hold architectures as integer encodings (``SearchSpace.encode``). A stage
is evaluated as groups of identical blocks, one numpy expression per group over the whole
population: a stage that chooses one expansion and kernel for all its blocks is its first block
and ``repeats - 1`` copies of the second (``c -> c``, stride 1); a stage that chooses them per
block (``per_block=True``) is each of its ``max(repeats)`` blocks, counted where the sampled depth
reaches it. The rules are those of :func:`search_spaces.arch.block_plan` and
:mod:`hw_models.analytic`, re-expressed over arrays; tests assert both agree on random
populations of every shipped space and block option.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from search_spaces.space import SearchSpace, StageChoices

from .analytic import IMAGE_CHANNELS, STEM_KERNEL


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)


def _where(mask: np.ndarray | None, value, otherwise=0):
    """``value`` where ``mask`` holds (``mask`` None: everywhere), else ``otherwise``."""
    return value if mask is None else np.where(mask, value, otherwise)


def _make_divisible(value: np.ndarray, divisor: int = 8) -> np.ndarray:
    """:func:`search_spaces.arch.make_divisible` over a float array (the same float64 arithmetic)."""
    rounded = np.maximum(divisor, (value + divisor / 2).astype(np.int64) // divisor * divisor)
    return rounded + np.where(rounded < 0.9 * value, divisor, 0)


def _se_channels(stage: StageChoices, in_channels: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """:func:`search_spaces.arch.se_channels` over arrays (the stage has squeeze-excitation)."""
    ratio = float(stage.se_ratio)
    if stage.se_basis == "hidden":
        return _make_divisible(hidden * ratio)
    return np.maximum(1, (in_channels * ratio).astype(np.int64))


class _Group(NamedTuple):
    """``count`` identical blocks (per architecture; 0: none)."""

    count: np.ndarray | int
    in_channels: np.ndarray
    out_channels: np.ndarray
    expansion: np.ndarray
    kernel: np.ndarray
    stride: int
    in_size: np.ndarray
    out_size: np.ndarray


def _stage_groups(i: int, stage: StageChoices, num: dict[str, np.ndarray], c_in, size) -> list[_Group]:
    c, reps = num[f"s{i}_channels"], num[f"s{i}_repeats"]
    out = _ceil_div(size, stage.stride)
    if not stage.per_block:
        t, k = num[f"s{i}_expansion"], num[f"s{i}_kernel"]
        return [_Group(1, c_in, c, t, k, stage.stride, size, out), _Group(reps - 1, c, c, t, k, 1, out, out)]
    groups = []
    for b in range(max(stage.repeats)):
        t, k = num[f"s{i}_b{b}_expansion"], num[f"s{i}_b{b}_kernel"]
        if b == 0:
            groups.append(_Group(1, c_in, c, t, k, stage.stride, size, out))
        else:
            groups.append(_Group((reps > b).astype(np.int64), c, c, t, k, 1, out, out))
    return groups


def batch_costs(space: SearchSpace, codes: np.ndarray, bytes_per_element: int = 2) -> dict[str, np.ndarray]:
    """MAdds, parameters (BN folded) and bottleneck-policy peak memory (bytes) for every row of
    ``codes`` (shape ``(n, len(space.dimensions()))``, as from ``SearchSpace.encode``)."""
    codes = np.asarray(codes, dtype=np.int64)
    dims = space.dimensions()
    if codes.ndim != 2 or codes.shape[1] != len(dims):
        raise ValueError(f"codes must have shape (n, {len(dims)}) for space {space.name!r}, but got {codes.shape}")
    if codes.size and ((codes < 0).any() or (codes >= space.cardinalities).any()):
        raise ValueError(f"codes hold choice indices outside the space {space.name!r}")
    text = ("bottleneck_activation", "shortcut")
    num = {
        name: np.asarray(choices, dtype=np.int64)[codes[:, j]]
        for j, (name, choices) in enumerate(dims)
        if name not in text
    }
    n = codes.shape[0]
    j_shortcut = [name for name, _ in dims].index("shortcut")
    shortcut_choices = list(dims[j_shortcut][1])

    def is_shortcut(kind: str) -> np.ndarray | None:
        """Rows with that shortcut; None if the space has none (its rules then never apply)."""
        return codes[:, j_shortcut] == shortcut_choices.index(kind) if kind in shortcut_choices else None

    bottleneck, wide_mode = is_shortcut("bottleneck"), is_shortcut("expansion")

    res = num["resolution"]
    stem_size = _ceil_div(res, space.stem_stride)
    stem = space.stem_channels
    madds = stem_size * stem_size * IMAGE_CHANNELS * stem * STEM_KERNEL * STEM_KERNEL
    params = np.full(n, IMAGE_CHANNELS * stem * STEM_KERNEL * STEM_KERNEL, dtype=np.int64)
    peak = IMAGE_CHANNELS * res * res  # the largest tensor that must be materialised

    # Wide (expansion) shortcuts: block j receives one when block j-1 has stride 1 and the same
    # expanded width; both expanded tensors then exist whole, and are of the same size.
    last_stride = np.zeros(n, dtype=np.int64)  # of the previous block (0: none yet)
    last_hidden = np.zeros(n, dtype=np.int64)
    blocks_before = np.zeros(n, dtype=np.int64)
    second_wide = np.zeros(n, dtype=bool)  # the network's second block receives a wide shortcut
    first = None
    c_in, size = np.full(n, stem, dtype=np.int64), stem_size
    for i, stage in enumerate(space.stages):
        for g in _stage_groups(i, stage, num, c_in, size):
            single = isinstance(g.count, int)  # one block, in every architecture
            present = None if single else g.count > 0
            expands = g.expansion != 1
            hidden = g.in_channels * g.expansion
            area_in, area_out = g.in_size * g.in_size, g.out_size * g.out_size
            taps_and_projection = g.kernel * g.kernel + g.out_channels
            block_madds = (
                np.where(expands, area_in * g.in_channels * hidden, 0) + area_out * hidden * taps_and_projection
            )
            block_params = np.where(expands, g.in_channels * hidden, 0) + hidden * taps_and_projection
            if stage.se_ratio:  # its two 1x1 convs; the whole depthwise output is materialised
                squeeze = _se_channels(stage, g.in_channels, hidden)
                block_madds = block_madds + 2 * hidden * squeeze
                block_params = block_params + (2 * hidden + 1) * squeeze + hidden
                peak = np.maximum(peak, _where(present, hidden * area_out))
            madds += g.count * block_madds
            params += g.count * block_params
            peak = np.maximum(peak, _where(present, g.out_channels * area_out))
            if first is None:
                first = (expands, g.in_channels == g.out_channels)
            if wide_mode is not None:
                # the group's first block, and (a stage's repeated blocks: c -> c, stride 1) the others
                wide_in = wide_mode & (last_stride == 1) & (last_hidden == hidden)
                if present is not None:
                    wide_in &= present
                    wide_in_rest = wide_mode & (g.count >= 2)
                    peak = np.maximum(peak, np.where(wide_in_rest, hidden * area_out, 0))
                peak = np.maximum(peak, np.where(wide_in, hidden * area_in, 0))
                second_wide |= wide_in & (blocks_before == 1)
                last_stride = _where(present, g.stride, last_stride)  # repeated blocks have stride 1
                last_hidden = _where(present, hidden, last_hidden)
                blocks_before = blocks_before + g.count
        c_in, size = num[f"s{i}_channels"], _ceil_div(size, stage.stride)

    # The stem is fused into a first block without expansion conv (MobileNetV2 Section 5) unless
    # that block has a residual or passes its input on as a wide shortcut.
    first_expands, first_same_width = first
    unfused = first_expands
    if bottleneck is not None:
        unfused = unfused | (bottleneck & (space.stages[0].stride == 1) & first_same_width)
    if wide_mode is not None:
        unfused = unfused | second_wide
    peak = np.maximum(peak, np.where(unfused, stem * stem_size * stem_size, 0))

    last_in = num[f"s{len(space.stages) - 1}_channels"]
    width = space.head_channels if space.head == "mbv3" else space.last_channels
    madds += size * size * last_in * width + space.last_channels * space.num_classes
    params += last_in * width + space.last_channels * space.num_classes + space.num_classes
    if space.head == "mbv3":  # the post-pooling 1x1 conv, with a bias and no batch norm
        madds += width * space.last_channels
        params += width * space.last_channels + space.last_channels
    peak = np.maximum(peak, size * size * width)
    peak = np.maximum(peak, max(width, space.last_channels, space.num_classes))
    return {"madds": madds, "params": params, "peak_memory_bytes": peak * bytes_per_element}
