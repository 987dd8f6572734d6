"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from search_spaces import SPACES, ArchSpec, SearchSpace, StageSpec, get_space

SHIPPED = [get_space(name) for name in sorted(SPACES)]


@st.composite
def space_and_code(draw, spaces: list[SearchSpace] = SHIPPED) -> tuple[SearchSpace, np.ndarray]:
    space = draw(st.sampled_from(spaces))
    code = [draw(st.integers(0, int(k) - 1)) for k in space.cardinalities]
    return space, space.canonical_codes(np.array([code], dtype=np.int64))[0]


stage_specs = st.builds(
    StageSpec,
    expansion=st.integers(1, 8),
    channels=st.integers(1, 64),
    repeats=st.integers(1, 4),
    stride=st.sampled_from([1, 2]),
    kernel_size=st.sampled_from([1, 3, 5, 7]),
)

arch_specs = st.builds(
    ArchSpec,
    resolution=st.integers(1, 64),
    stem_channels=st.integers(1, 48),
    stages=st.lists(stage_specs, min_size=1, max_size=5).map(tuple),
    last_channels=st.integers(1, 256),
    num_classes=st.integers(1, 1001),
    stem_stride=st.sampled_from([1, 2]),
    bottleneck_activation=st.sampled_from(["linear", "relu6"]),
    shortcut=st.sampled_from(["bottleneck", "expansion", "none"]),
)


@st.composite
def _ofa_stage(draw) -> StageSpec:
    """Stages with per-block kernels and expansions (fractional ones too), squeeze-excitation and
    every activation."""
    repeats = draw(st.integers(1, 3))
    rates = st.sampled_from([1, 2, 3, 4, 6, 2.3, 2.5, 3.67, 4.5])
    expansion = draw(st.one_of(rates, st.lists(rates, min_size=repeats, max_size=repeats)))
    kernels = st.sampled_from([3, 5, 7])
    kernel = draw(st.one_of(kernels, st.lists(kernels, min_size=repeats, max_size=repeats)))
    return StageSpec(
        expansion=expansion,
        channels=draw(st.integers(1, 48)),
        repeats=repeats,
        stride=draw(st.sampled_from([1, 2])),
        kernel_size=kernel,
        se_ratio=draw(st.sampled_from([0.0, 0.25, 0.5])),
        se_gate=draw(st.sampled_from(["hard_sigmoid", "sigmoid"])),
        se_basis=draw(st.sampled_from(["hidden", "input"])),
        activation=draw(st.sampled_from(["relu", "relu6", "hswish"])),
    )


@st.composite
def ofa_arch_specs(draw) -> ArchSpec:
    head = draw(st.sampled_from(["conv", "mbv3"]))
    return ArchSpec(
        resolution=draw(st.integers(8, 48)),
        stem_channels=draw(st.integers(1, 32)),
        stages=tuple(draw(st.lists(_ofa_stage(), min_size=1, max_size=4))),
        last_channels=draw(st.integers(1, 128)),
        num_classes=draw(st.integers(1, 20)),
        stem_stride=draw(st.sampled_from([1, 2])),
        bottleneck_activation=draw(st.sampled_from(["linear", "relu6"])),
        shortcut=draw(st.sampled_from(["bottleneck", "expansion", "none"])),
        stem_activation=draw(st.sampled_from(["relu", "relu6", "hswish"])),
        head=head,
        head_channels=draw(st.integers(1, 96)) if head == "mbv3" else 0,
        head_activation=draw(st.sampled_from(["relu", "relu6", "hswish"])),
    )
