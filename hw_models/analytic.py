"""Exact analytic costs of an ``ArchSpec``: multiply-adds, parameters, peak activation memory.

Conventions (those of the MobileNetV2 tables): MAdds count every conv and the classifier
(one multiply-accumulate each, bias and BN not counted); SAME padding; batch size 1.
Parameters count conv weights and the classifier's weight + bias; ``include_bn=True`` adds the
two affine parameters of every batch norm, which is PyTorch's ``sum(p.numel())``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, NamedTuple

from search_spaces.arch import (
    ArchSpec,
    BlockPlan,
    block_plan,
    conv_out_size,
    final_size,
)

MemoryPolicy = Literal["bottleneck", "split", "naive"]
MEMORY_POLICIES: tuple[str, ...] = ("bottleneck", "split", "naive")
IMAGE_CHANNELS = 3
STEM_KERNEL = 3


# ---- primitives (work on ints and on numpy integer arrays alike) -----------------------------
def conv_madds(out_size, in_channels, out_channels, kernel_size=1, groups=1):
    """Conv MACs: H_out * W_out * (C_in / groups) * C_out * k^2."""
    return out_size * out_size * (in_channels // groups) * out_channels * kernel_size * kernel_size


def conv_params(in_channels, out_channels, kernel_size=1, groups=1):
    """Conv weights (no bias: every conv is followed by batch norm)."""
    return (in_channels // groups) * out_channels * kernel_size * kernel_size


def se_madds(p: BlockPlan) -> int:
    """Squeeze-excitation MACs as MobileNetV3 counts them: its two 1x1 convs on the pooled
    vector, ``2 * hidden * squeeze`` (pooling and the channel-wise scale are not MACs of a conv)."""
    return 2 * p.hidden * p.se_channels


def se_params(p: BlockPlan) -> int:
    """Squeeze-excitation weights and biases: ``hidden * squeeze + squeeze`` (reduce) +
    ``squeeze * hidden + hidden`` (expand)."""
    return (2 * p.hidden + 1) * p.se_channels + p.hidden if p.se_channels else 0


def block_madds(p: BlockPlan) -> int:
    """MobileNetV2 eq. (1): h*w*d'*t*(d' + k^2 + d''), the stride applied after the expansion;
    no expansion conv when t = 1; plus :func:`se_madds` for a block with squeeze-excitation."""
    c_in, c_out, hidden, k, s_in, s_out = p.in_channels, p.out_channels, p.hidden, p.kernel_size, p.in_size, p.out_size
    expand = s_in * s_in * c_in * hidden if hidden != c_in else 0
    return expand + s_out * s_out * hidden * (k * k + c_out) + (se_madds(p) if p.se_channels else 0)


def block_params(p: BlockPlan, include_bn: bool = False) -> int:
    """Expansion, depthwise and projection weights (+ their BN affine parameters), plus
    :func:`se_params` for a block with squeeze-excitation."""
    c_in, c_out, hidden, k = p.in_channels, p.out_channels, p.hidden, p.kernel_size
    has_expand = hidden != c_in
    n = (c_in * hidden if has_expand else 0) + hidden * (k * k + c_out) + se_params(p)
    if include_bn:
        n += 2 * ((hidden if has_expand else 0) + hidden + c_out)
    return n


def head_width(spec: ArchSpec) -> int:
    """Channels of the 1x1 conv after the last block (before pooling)."""
    return spec.head_channels if spec.head == "mbv3" else spec.last_channels


# ---- totals ----------------------------------------------------------------------------------
def count_madds(spec: ArchSpec) -> int:
    """Multiply-accumulates of one forward pass (batch 1); per block MobileNetV2 eq. (1),
    h*w*d'*t*(d' + k^2 + d''), with the stride applied after the expansion (+ the SE convs,
    :func:`se_madds`); the MobileNetV3 head adds its post-pooling 1x1 conv
    ``head_channels * last_channels``.

    A plain spec (``ArchSpec.plain``) is evaluated per stage (every block after a stage's first
    is the same: ``c -> c``, stride 1), with :func:`search_spaces.arch.block_plan`'s shapes; a
    test checks it against :func:`block_madds` summed over the plan. Others go block by block."""
    if not spec.plain:
        return _count_madds_per_block(spec)
    size = -(-spec.resolution // spec.stem_stride)
    c_in = spec.stem_channels
    total = size * size * IMAGE_CHANNELS * c_in * STEM_KERNEL * STEM_KERNEL
    for stage in spec.stages:
        t, c, taps = stage.expansion, stage.channels, stage.kernel_size * stage.kernel_size
        out = -(-size // stage.stride)
        hidden, area = c_in * t, out * out
        total += area * hidden * (taps + c) + (size * size * c_in * hidden if t != 1 else 0)
        if stage.repeats > 1:
            hidden = c * t
            total += (stage.repeats - 1) * area * hidden * (taps + c + (c if t != 1 else 0))
        c_in, size = c, out
    total += size * size * c_in * spec.last_channels
    return total + spec.last_channels * spec.num_classes


def _count_madds_per_block(spec: ArchSpec) -> int:
    stem_size = conv_out_size(spec.resolution, spec.stem_stride)
    total = stem_size * stem_size * IMAGE_CHANNELS * spec.stem_channels * STEM_KERNEL * STEM_KERNEL
    for p in block_plan(spec):
        total += block_madds(p)
    size = final_size(spec)
    width = head_width(spec)
    total += size * size * spec.stages[-1].channels * width
    if spec.head == "mbv3":
        total += width * spec.last_channels
    return total + spec.last_channels * spec.num_classes


def count_params(spec: ArchSpec, include_bn: bool = False) -> int:
    """Parameters; ``include_bn=False`` is the TF-slim table convention (BN folded). Per block:
    expansion ``d' * t d'`` (none when t = 1) + depthwise ``t d' * k^2`` + projection
    ``t d' * d''`` (+ :func:`se_params`); the MobileNetV3 head's post-pooling conv has a bias and
    no batch norm. Plain specs are evaluated per stage as :func:`count_madds` is."""
    width = head_width(spec)
    total = conv_params(IMAGE_CHANNELS, spec.stem_channels, STEM_KERNEL)
    total += conv_params(spec.stages[-1].channels, width)
    if spec.head == "mbv3":
        total += width * spec.last_channels + spec.last_channels
    total += spec.last_channels * spec.num_classes + spec.num_classes
    if include_bn:
        total += 2 * (spec.stem_channels + width)
    if not spec.plain:
        return total + sum(block_params(p, include_bn) for p in block_plan(spec))
    c_in = spec.stem_channels
    for stage in spec.stages:
        t, c, taps = stage.expansion, stage.channels, stage.kernel_size * stage.kernel_size
        expands = t != 1
        for block_in, count in ((c_in, 1), (c, stage.repeats - 1)):
            if count:
                hidden = block_in * t
                n = (block_in * hidden if expands else 0) + hidden * (taps + c)
                if include_bn:
                    n += 2 * ((hidden if expands else 0) + hidden + c)
                total += count * n
        c_in = c
    return total


# ---- activation memory -----------------------------------------------------------------------
def _stem_fused(plans: tuple[BlockPlan, ...]) -> bool:
    """Section 5 trick: the stem conv serves as the first block's expansion layer (computed in
    chunks) when that block has no expansion conv and nothing needs the stem output whole."""
    first = plans[0]
    feeds_wide = len(plans) > 1 and plans[1].wide_shortcut
    return first.hidden == first.in_channels and not first.residual and not feeds_wide


def _head_live_sets(spec: ArchSpec) -> list[int]:
    size = final_size(spec)
    width = head_width(spec)
    last_in = spec.stages[-1].channels * size * size
    head_out = width * size * size
    sets = [last_in + head_out, head_out + width]
    if spec.head == "mbv3":
        sets.append(width + spec.last_channels)
    return sets + [spec.last_channels + spec.num_classes]


def _materialised_tensors(spec: ArchSpec) -> Iterator[int]:
    """Sizes (elements) of every tensor that exists whole when each block runs as one operation."""
    plans = block_plan(spec)
    stem_size = conv_out_size(spec.resolution, spec.stem_stride)
    yield IMAGE_CHANNELS * spec.resolution * spec.resolution
    if not _stem_fused(plans):
        yield spec.stem_channels * stem_size * stem_size
    for i, p in enumerate(plans):
        yield p.out_channels * p.out_size * p.out_size
        if p.se_channels:  # the SE scale needs the global mean of the whole depthwise output
            yield p.hidden * p.out_size * p.out_size
        feeds_wide = i + 1 < len(plans) and plans[i + 1].wide_shortcut
        if p.wide_shortcut or feeds_wide:
            yield p.hidden * p.in_size * p.in_size
    size = final_size(spec)
    yield head_width(spec) * size * size
    yield head_width(spec)
    yield spec.last_channels
    yield spec.num_classes


def _largest_tensor(spec: ArchSpec) -> int:
    """``max(_materialised_tensors(spec))`` without wide shortcuts, per stage: every block of a
    stage writes an output of the same size, and the stem is fused into a first block without
    expansion conv unless that block has a residual."""
    size = -(-spec.resolution // spec.stem_stride)
    largest = IMAGE_CHANNELS * spec.resolution * spec.resolution
    first = spec.stages[0]
    residual = spec.shortcut == "bottleneck" and first.stride == 1 and spec.stem_channels == first.channels
    if first.expansion != 1 or residual:
        largest = max(largest, spec.stem_channels * size * size)
    for stage in spec.stages:
        size = -(-size // stage.stride)
        largest = max(largest, stage.channels * size * size)
    return max(largest, spec.last_channels * size * size, spec.last_channels, spec.num_classes)


def chunk_width(hidden: int, t: int) -> int:
    """Channels per slice when ``hidden`` expanded channels are computed in ``t`` chunks:
    ceil(hidden / t); slices are taken in order, so the last one may be narrower."""
    return -(-hidden // t)


def _live_sets_split(spec: ArchSpec, chunks: int) -> Iterator[int]:
    """Live elements per step of the Section 5 executor (:class:`hw_models.executor.SplitExecutor`).

    Each block allocates its output, then for each slice of ``chunk_width(hidden, chunks)``
    expanded channels computes the expansion slice and its depthwise output (a depthwise conv
    cannot run in place) and sums the slice's projection into the output: input + output + one
    expansion slice + one depthwise slice. A block without expansion conv (t = 1) slices its
    input instead; the stem runs as the chunked expansion of a first t = 1 block
    (:func:`_stem_fused`), whose step then holds the image instead of the stem output. With
    shortcut="expansion", a block that receives or passes on the wide shortcut holds its whole
    expanded tensor: an incoming one is updated in place (expansion slices summed into it), an
    outgoing one is computed whole (or is the block input when t = 1); depthwise slices read it.
    A block with squeeze-excitation: :func:`_se_block_live_sets_split`.
    """
    plans = block_plan(spec)
    image = IMAGE_CHANNELS * spec.resolution * spec.resolution
    fused = _stem_fused(plans)
    if not fused:
        stem_size = conv_out_size(spec.resolution, spec.stem_stride)
        yield image + spec.stem_channels * stem_size * stem_size
    for i, p in enumerate(plans):
        width = chunk_width(p.hidden, chunks)
        x = image if i == 0 and fused else p.in_channels * p.in_size * p.in_size
        y = p.out_channels * p.out_size * p.out_size
        e_slice = width * p.in_size * p.in_size
        d_slice = width * p.out_size * p.out_size
        has_expand = p.hidden != p.in_channels
        feeds_wide = i + 1 < len(plans) and plans[i + 1].wide_shortcut
        if p.se_channels:
            yield from _se_block_live_sets_split(p, chunks, x, i == 0 and fused, feeds_wide)
        elif i == 0 and fused:
            yield x + y + e_slice + d_slice
        elif p.wide_shortcut or feeds_wide:
            whole = p.hidden * p.in_size * p.in_size if p.wide_shortcut or has_expand else 0
            if p.wide_shortcut and has_expand:
                yield x + y + whole + e_slice
            yield x + y + whole + d_slice
        else:
            yield x + y + (e_slice if has_expand else 0) + d_slice
    yield from _head_live_sets(spec)


def _se_block_live_sets_split(p: BlockPlan, chunks: int, x: int, fused: bool, feeds_wide: bool) -> Iterator[int]:
    """Live elements per step of a block with squeeze-excitation in the split executor.

    The gate needs the mean of the whole depthwise output ``d``, so no slice can be projected
    before every slice is computed (recomputing the slices in a second pass would run the convs
    twice; see :mod:`hw_models.executor`). The depthwise slices are copied into a whole ``d``
    (with one slice, the slice is ``d``); wide tensors are handled as without SE. Then the block
    input is freed unless a residual addition (or the next block, as its wide shortcut) needs it,
    ``d`` is pooled (pooled vector + squeezed vector alive, then squeezed + gate), scaled in
    place and projected into the newly allocated output.
    """
    width = chunk_width(p.hidden, chunks)
    whole_d = p.hidden * p.out_size * p.out_size
    copy_target = whole_d if width < p.hidden else 0
    e_slice = width * p.in_size * p.in_size
    d_slice = width * p.out_size * p.out_size
    has_expand = p.hidden != p.in_channels
    if p.wide_shortcut or feeds_wide:  # never with a residual: shortcut="expansion"
        whole = p.hidden * p.in_size * p.in_size if p.wide_shortcut or has_expand else 0
        if p.wide_shortcut and has_expand:
            yield x + whole + e_slice
        yield x + whole + copy_target + d_slice
        keep = (whole or x) if feeds_wide else 0  # whole = 0: the wide tensor is the input
    else:
        yield x + copy_target + (e_slice if has_expand or fused else 0) + d_slice
        keep = x if p.residual else 0
    yield keep + whole_d + p.hidden + p.se_channels
    yield keep + whole_d + p.out_channels * p.out_size * p.out_size


def _live_sets_naive(spec: ArchSpec) -> Iterator[int]:
    """Live elements per op of plain layer-by-layer inference
    (:class:`hw_models.executor.NaiveExecutor`, which measures the same figure).

    Every conv (batch norm folded), every shortcut addition and the squeeze-excitation scale
    allocate their output (so do SE's pooling and its two 1x1 convs on the pooled vector);
    activations and the SE gate run in place; a tensor is freed after its last consumer. An op's live set is its inputs and output,
    the block input while a residual addition still needs it, the expanded tensor a block passes
    on as the wide shortcut (shortcut="expansion") until the next block has added it, and the
    input image, which the caller holds for the whole run.
    """
    plans = block_plan(spec)
    image = IMAGE_CHANNELS * spec.resolution**2
    stem_size = conv_out_size(spec.resolution, spec.stem_stride)
    yield image + spec.stem_channels * stem_size**2
    for i, p in enumerate(plans):
        feeds_wide = i + 1 < len(plans) and plans[i + 1].wide_shortcut
        sizes = {
            "x": p.in_channels * p.in_size**2,
            "e": p.hidden * p.in_size**2,
            "w": p.hidden * p.in_size**2,
            "h": p.hidden * p.in_size**2,
            "d": p.hidden * p.out_size**2,
            "m": p.hidden,  # SE: pooled vector, squeezed vector, gate, scaled depthwise output
            "q": p.se_channels,
            "g": p.hidden,
            "s": p.hidden * p.out_size**2,
            "p": p.out_channels * p.out_size**2,
            "y": p.out_channels * p.out_size**2,
        }
        held = {"x"} if p.residual else set()
        ops: list[set[str]] = []
        dw_in = "x"
        if p.hidden != p.in_channels:
            ops.append({"x", "e"} | ({"w"} if p.wide_shortcut else set()))
            dw_in = "e"
        if p.wide_shortcut:
            ops.append({dw_in, "w", "h"})
            dw_in = "h"
        keep_wide = {dw_in} if feeds_wide else set()
        ops.append({dw_in, "d"})
        project_in = "d"
        if p.se_channels:  # pool, reduce, expand + gate, scale: each allocates its output
            ops += [live | keep_wide for live in ({"d", "m"}, {"d", "m", "q"}, {"d", "q", "g"}, {"d", "g", "s"})]
            project_in = "s"
        ops.append({project_in, "p"} | keep_wide)
        if p.residual:
            ops.append({"x", "p", "y"} | keep_wide)
        for live in ops:
            yield image + sum(sizes[t] for t in live | held)
    for live in _head_live_sets(spec):
        yield image + live


def peak_memory_bytes(
    spec: ArchSpec,
    policy: MemoryPolicy = "bottleneck",
    bytes_per_element: int = 2,
    t: int = 1,
) -> int:
    """Peak activation memory of one inference (batch 1), in bytes.

    - ``"bottleneck"``: MobileNetV2 Section 5 / Table 3 accounting: each block runs as a single
      operation whose expanded tensor is never materialised, and the stem output is fused into a
      first block without expansion; the figure is the largest tensor that must exist whole
      (MobileNetV2 1.0@224: 112x112x16 = 401,408 bytes at fp16). A block with squeeze-excitation
      materialises its depthwise output: the gate needs its global mean before any of it can be
      projected.
    - ``"split"``: the executor of Section 5 with the expanded tensor computed in ``t`` chunks
      (``hw_models.executor.SplitExecutor``, which measures the same figure): max over steps of
      block input + output + one chunk of the expanded tensor + its depthwise output (stem fused
      into a first t = 1 block; whole expanded tensors where shortcut="expansion" needs them;
      a block with squeeze-excitation holds its whole depthwise output, as for "bottleneck").
    - ``"naive"``: plain layer-by-layer inference (``hw_models.executor.NaiveExecutor``, which
      measures the same figure): max over ops of the op's inputs and output (BN folded into the
      convs, activations in place, shortcut additions and the SE scale out of place) + the tensors held for a later
      shortcut + the input image, held by the caller for the whole run.
    """
    if isinstance(bytes_per_element, bool) or not isinstance(bytes_per_element, int) or bytes_per_element < 1:
        raise ValueError(f"bytes_per_element must be an integer >= 1, but got {bytes_per_element!r}")
    if policy == "bottleneck":
        fast = spec.shortcut != "expansion" and spec.plain
        elements = _largest_tensor(spec) if fast else max(_materialised_tensors(spec))
    elif policy == "split":
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"t (number of chunks) must be an integer >= 1, but got {t!r}")
        elements = max(_live_sets_split(spec, t))
    elif policy == "naive":
        elements = max(_live_sets_naive(spec))
    else:
        raise ValueError(f"policy must be one of {MEMORY_POLICIES}, but got {policy!r}")
    return elements * bytes_per_element


class Costs(NamedTuple):
    madds: int
    params: int
    peak_memory_bytes: int


def analytic_costs(spec: ArchSpec, bytes_per_element: int = 2) -> Costs:
    """MAdds, parameters (BN folded) and bottleneck-policy peak memory in one call."""
    return Costs(count_madds(spec), count_params(spec), peak_memory_bytes(spec, "bottleneck", bytes_per_element))
