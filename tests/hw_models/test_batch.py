from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hw_models import batch_costs, count_madds, count_params, peak_memory_bytes
from search_spaces import SPACES, SearchSpace, StageChoices, get_space


def with_all_options(space: SearchSpace) -> SearchSpace:
    return replace(space, bottleneck_activations=("linear", "relu6"), shortcuts=("bottleneck", "expansion", "none"))


def tricky_space() -> SearchSpace:
    """Expansion 1 beside wider ones, equal widths across stages, stride-1 stages: every rule of
    residual / wide shortcuts / stem fusion gets exercised."""
    return SearchSpace(
        name="tricky",
        resolutions=(7, 16, 33),
        stem_channels=8,
        stem_stride=1,
        stages=(
            StageChoices(expansions=(1, 2), channels=(8, 16), repeats=(1, 2, 3), kernel_sizes=(3, 5), stride=1),
            StageChoices(expansions=(1, 2), channels=(8, 16), repeats=(1, 2, 3), kernel_sizes=(3,), stride=1),
            StageChoices(expansions=(2, 3), channels=(16, 24), repeats=(1, 3), kernel_sizes=(3,), stride=2),
        ),
        last_channels=32,
        num_classes=5,
        shortcuts=("bottleneck", "expansion", "none"),
    )


def tricky_ofa_space() -> SearchSpace:
    """Per-block stages whose blocks may have expansion 1 (wide shortcuts chain through and out of
    them, the stem fuses into a first block with SE), equal widths across stages, SE on either
    basis (squeeze widths that round), SE on a per-stage stage, the MobileNetV3 head."""
    return SearchSpace(
        name="tricky-ofa",
        resolutions=(7, 16, 33),
        stem_channels=8,
        stem_stride=1,
        stem_activation="hswish",
        stages=(
            StageChoices((1, 2), (8,), (1, 2, 3), (3, 5), 1, per_block=True, se_ratio=0.25, activation="relu"),
            StageChoices((1, 3), (8, 16), (1, 2), (3,), 1, se_ratio=0.5, se_basis="input", se_gate="sigmoid"),
            StageChoices((1, 2, 3), (16, 24), (1, 2, 3), (3, 7), 2, per_block=True, se_ratio=0.3),
            StageChoices((2, 6), (24,), (2, 3), (5,), 1, per_block=True, activation="hswish"),
        ),
        last_channels=32,
        num_classes=5,
        shortcuts=("bottleneck", "expansion", "none"),
        head="mbv3",
        head_channels=40,
        head_activation="hswish",
    )


@pytest.mark.parametrize(
    "space",
    [with_all_options(get_space(n)) for n in sorted(SPACES)] + [tricky_space(), tricky_ofa_space()],
    ids=lambda s: s.name,
)
def test_batch_equals_scalar(space, rng):
    codes = space.sample_codes(rng, 400)
    got = batch_costs(space, codes)
    specs = [space.decode(c) for c in codes]
    assert got["madds"].tolist() == [count_madds(s) for s in specs]
    assert got["params"].tolist() == [count_params(s) for s in specs]
    assert got["peak_memory_bytes"].tolist() == [peak_memory_bytes(s) for s in specs]


def test_bad_codes():
    space = get_space("proxy-digits")
    with pytest.raises(ValueError, match="codes must have shape"):
        batch_costs(space, np.zeros((3, 2), dtype=int))
    bad = np.zeros((1, len(space.dimensions())), dtype=int)
    bad[0, 0] = 99
    with pytest.raises(ValueError, match="outside the space"):
        batch_costs(space, bad)
