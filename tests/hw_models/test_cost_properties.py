"""Property tests: more channels, expansion, repeats or resolution never cost less."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hw_models import count_madds, count_params, peak_memory_bytes
from search_spaces import block_plan
from tests.properties import space_and_code


def grow(space, code, dim_name):
    """The spec, and the same spec with one numeric dimension moved to a larger choice."""
    names = [n for n, _ in space.dimensions()]
    j = names.index(dim_name)
    choices = space.dimensions()[j][1]
    current = choices[code[j]]
    larger = [i for i, v in enumerate(choices) if v > current]
    assume(larger)
    bigger = code.copy()
    bigger[j] = larger[0]
    return space.decode(code), space.decode(bigger)


@settings(max_examples=300)
@given(space_and_code(), st.data())
def test_costs_are_monotone(space_code, data):
    space, code = space_code
    # every numeric dimension: per-stage knobs, or a per-block stage's depth and block choices
    dims = [name for name, _ in space.dimensions() if name not in ("bottleneck_activation", "shortcut")]
    small, big = grow(space, code, data.draw(st.sampled_from(dims)))
    assert count_madds(big) >= count_madds(small)
    assert count_params(big) >= count_params(small)
    assert count_params(big, include_bn=True) >= count_params(small, include_bn=True)
    assert peak_memory_bytes(big) >= peak_memory_bytes(small)
    for t in (1, 2, 4):
        assert peak_memory_bytes(big, "split", t=t) >= peak_memory_bytes(small, "split", t=t)
    # Layer-by-layer inference keeps a shortcut's input alive; widening a stage can remove a
    # shortcut (shapes no longer match) and so lower the naive peak legitimately.
    if [b.residual for b in block_plan(big)] == [b.residual for b in block_plan(small)]:
        assert peak_memory_bytes(big, "naive") >= peak_memory_bytes(small, "naive")


@settings(max_examples=100)
@given(space_and_code())
def test_wider_network_costs_more(space_code):
    space, code = space_code
    spec = space.decode(code)
    wider = replace(spec, stages=tuple(replace(s, channels=s.channels * 2) for s in spec.stages))
    assert count_madds(wider) > count_madds(spec)
    assert count_params(wider) > count_params(spec)
