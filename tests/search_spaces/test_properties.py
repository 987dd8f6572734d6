"""Property tests: round-trips of every description form."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings

from search_spaces import ArchSpec, build_model, parse_arch
from tests.properties import arch_specs, space_and_code


@given(arch_specs)
def test_arch_dict_json_string_round_trips(spec):
    assert ArchSpec.from_dict(spec.to_dict()) == spec
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert ArchSpec.from_string(spec.to_string()) == spec
    assert parse_arch(spec.to_string()) == spec
    assert hash(ArchSpec.from_string(spec.to_string())) == hash(spec)


@settings(max_examples=200)
@given(space_and_code())
def test_encode_decode_round_trip(space_code):
    space, code = space_code
    spec = space.decode(code)
    assert np.array_equal(space.encode(spec), code)
    assert space.decode(space.encode(spec)) == spec
    assert space.spec_from_params(space.params_from_spec(spec)) == spec


@settings(max_examples=25, deadline=None)
@given(space_and_code())
def test_every_sampled_spec_builds_and_runs_at_its_resolution(space_code):
    space, code = space_code
    spec = space.decode(code)
    model = build_model(spec).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 3, spec.resolution, spec.resolution))
    assert out.shape == (1, spec.num_classes) and torch.isfinite(out).all()
