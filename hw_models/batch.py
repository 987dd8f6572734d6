"""Vectorised analytic costs for whole populations, straight from a search space's encodings.

Samplers and predictors hold architectures as integer encodings (``SearchSpace.encode``). Within a
stage every block after the first is identical, so each stage's cost has a closed form: one
numpy expression per stage evaluates a whole population at once. The rules are those of
:func:`search_spaces.arch.block_plan` and :mod:`hw_models.analytic`, re-expressed over arrays;
tests assert both agree on random populations of every shipped space and block option.
"""

from __future__ import annotations

import numpy as np

from search_spaces.space import SearchSpace

from .analytic import IMAGE_CHANNELS, STEM_KERNEL


def _ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)


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
    j_shortcut = [name for name, _ in dims].index("shortcut")
    shortcut_choices = list(dims[j_shortcut][1])
    shortcut_code = codes[:, j_shortcut]

    def is_shortcut(kind: str) -> np.ndarray:
        return shortcut_code == shortcut_choices.index(kind) if kind in shortcut_choices else np.zeros(len(codes), bool)

    bottleneck = is_shortcut("bottleneck")
    wide_mode = is_shortcut("expansion")

    n = codes.shape[0]
    res = num["resolution"]
    stem_size = _ceil_div(res, space.stem_stride)
    stem = space.stem_channels
    madds = stem_size * stem_size * IMAGE_CHANNELS * stem * STEM_KERNEL * STEM_KERNEL
    params = np.full(n, IMAGE_CHANNELS * stem * STEM_KERNEL * STEM_KERNEL, dtype=np.int64)

    # Pass 1: per stage, shapes and whether its first block receives a wide (expansion) shortcut.
    stages = []
    c_prev = np.full(n, stem, dtype=np.int64)
    size = stem_size
    last_stride = np.zeros(n, dtype=np.int64)  # stride of the previous block (0: none yet)
    last_hidden = np.zeros(n, dtype=np.int64)
    for i, choice in enumerate(space.stages):
        t, c, reps, k = (num[f"s{i}_{key}"] for key in ("expansion", "channels", "repeats", "kernel"))
        out = _ceil_div(size, choice.stride)
        hidden0 = c_prev * t
        wide_in0 = wide_mode & (last_stride == 1) & (last_hidden == hidden0)
        stages.append((t, c, reps, k, choice.stride, c_prev, size, out, hidden0, wide_in0))
        last_stride = np.where(reps == 1, choice.stride, 1)
        last_hidden = np.where(reps == 1, hidden0, c * t)
        c_prev, size = c, out

    # Pass 2: costs, and the largest tensor that must be materialised.
    peak = IMAGE_CHANNELS * res * res
    no_next = np.zeros(n, dtype=bool)
    fused = np.zeros(n, dtype=bool)
    for i, (t, c, reps, k, stride, c_in, s_in, s_out, hidden0, wide_in0) in enumerate(stages):
        expands = t != 1
        hidden_r = c * t
        madds += np.where(expands, s_in * s_in * c_in * hidden0, 0) + s_out * s_out * hidden0 * (k * k + c)
        madds += (reps - 1) * (
            np.where(expands, s_out * s_out * c * hidden_r, 0) + s_out * s_out * hidden_r * (k * k + c)
        )
        params += np.where(expands, c_in * hidden0, 0) + hidden0 * (k * k + c)
        params += (reps - 1) * (np.where(expands, c * hidden_r, 0) + hidden_r * (k * k + c))

        next_wide_in0 = stages[i + 1][9] if i + 1 < len(stages) else no_next
        wide_in1 = wide_mode & (stride == 1) & (c_in == c)  # second block vs first block's expanded width
        src0 = np.where(reps >= 2, wide_in1, next_wide_in0)
        src1 = np.where(reps >= 3, wide_mode, next_wide_in0)
        rest_wide = ((reps >= 2) & (wide_in1 | src1)) | ((reps >= 3) & wide_mode)
        peak = np.maximum(peak, s_out * s_out * c)
        peak = np.maximum(peak, np.where(wide_in0 | src0, hidden0 * s_in * s_in, 0))
        peak = np.maximum(peak, np.where(rest_wide, hidden_r * s_out * s_out, 0))
        if i == 0:
            residual0 = bottleneck & (stride == 1) & (c_in == c)
            fused = (~expands) & (~residual0) & (~src0)
    peak = np.maximum(peak, np.where(fused, 0, stem * stem_size * stem_size))

    size = stages[-1][7]
    c_last_in = stages[-1][1]
    madds += size * size * c_last_in * space.last_channels + space.last_channels * space.num_classes
    params += c_last_in * space.last_channels + space.last_channels * space.num_classes + space.num_classes
    peak = np.maximum(peak, size * size * space.last_channels)
    peak = np.maximum(peak, max(space.last_channels, space.num_classes))
    return {"madds": madds, "params": params, "peak_memory_bytes": peak * bytes_per_element}
