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
    return space, np.array(code, dtype=np.int64)


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
