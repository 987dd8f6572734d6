from __future__ import annotations

import json
import math

import numpy as np
import pytest

from search_spaces import SPACES, SearchSpace, get_space, mobilenet_v2, sample_spec


@pytest.fixture(params=sorted(SPACES))
def space(request) -> SearchSpace:
    return get_space(request.param)


def test_shipped_spaces_validate_and_count(space):
    space.validate()
    encodings = math.prod(len(c) for _, c in space.dimensions())
    if any(st.per_block for st in space.stages):  # unused blocks' choices are encoded but not counted
        assert 1000 < space.num_architectures() < encodings
    else:
        assert space.num_architectures() == encodings > 1000


def test_encode_decode_round_trip(space, rng):
    codes = space.sample_codes(rng, 50)
    for code in codes:
        spec = space.decode(code)
        assert np.array_equal(space.encode(spec), code)
        assert space.contains(spec)


def test_sampling_is_reproducible_with_explicit_rng(space):
    a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    b = [space.sample(np.random.default_rng(7)) for _ in range(3)]
    assert a == b


def test_largest_and_smallest_are_in_space(space):
    assert space.contains(space.largest()) and space.contains(space.smallest())
    assert space.largest().num_blocks >= space.smallest().num_blocks


def test_mobilenet_v2_is_in_the_imagenet_space():
    space = get_space("mobilenetv2-imagenet")
    for res in (128, 160, 192, 224):
        assert space.contains(mobilenet_v2(1.0, res))
    assert not space.contains(mobilenet_v2(1.0, 96))
    with pytest.raises(ValueError, match="resolution=96 is not one of"):
        space.encode(mobilenet_v2(1.0, 96))


def test_mobilenet_v2_cifar_is_in_the_cifar_space():
    """The common MobileNetV2-on-CIFAR network: stem and the 24-channel stage at stride 1."""
    import dataclasses

    reference = mobilenet_v2(1.0, 32, num_classes=10)
    stages = list(reference.stages)
    stages[1] = dataclasses.replace(stages[1], stride=1)
    cifar = dataclasses.replace(reference, stem_stride=1, stages=tuple(stages))
    space = get_space("mobilenetv2-cifar")
    assert space.contains(cifar) and not space.contains(reference)
    assert [s.stride for s in space.stages] == [1, 1, 2, 2, 1, 2, 1] and space.stem_stride == 1


def test_json_round_trip(space, tmp_path):
    path = tmp_path / "space.json"
    space.to_json(path)
    assert SearchSpace.from_json(path) == space
    assert get_space(str(path)) == space


def _broken(space: SearchSpace, **stage_changes) -> dict:
    data = space.to_dict()
    data["stages"][1].update(stage_changes)
    return data


@pytest.mark.parametrize(
    "change, message",
    [
        ({"channels": [0, 16]}, r"stages\[1\].channels must hold integers >= 1, but got 0"),
        ({"stride": 3}, r"stages\[1\].stride must be one of \(1, 2\), but got 3"),
        ({"expansions": []}, r"stages\[1\].expansions must be a non-empty list"),
        ({"repeats": [-1, 2]}, r"stages\[1\].repeats must hold integers >= 1, but got -1"),
        ({"kernel_sizes": [4]}, r"odd kernel sizes, but got 4"),
        ({"bogus": 1}, r"unknown field"),
    ],
)
def test_impossible_choices_are_rejected(change, message, tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(_broken(get_space("proxy-digits"), **change)))
    with pytest.raises(ValueError, match=message):
        SearchSpace.from_json(path)


def test_invalid_json_file(tmp_path):
    path = tmp_path / "space.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        SearchSpace.from_json(path)
    with pytest.raises(ValueError, match="unknown search space 'nope'"):
        get_space("nope")


class _FakeTrial:
    def __init__(self, rng):
        self.rng = rng
        self.params = {}

    def suggest_categorical(self, name, choices):
        self.params[name] = choices[self.rng.integers(len(choices))]
        return self.params[name]


def test_sample_spec_names_every_dimension(space, rng):
    trial = _FakeTrial(rng)
    spec = sample_spec(trial, space)
    assert set(trial.params) == {name for name, _ in space.dimensions()}
    params = space.params_from_spec(spec)
    assert space.spec_from_params(params) == spec
    used = {k: v for k, v in trial.params.items() if not _beyond_depth(space, k, trial.params)}
    assert {k: params[k] for k in used} == used


def _beyond_depth(space, name, params):
    """A per-block parameter (``s2_b3_kernel``) of a block past its stage's sampled depth."""
    stage, _, rest = name.partition("_b")
    if not rest or not stage.startswith("s"):
        return False
    return int(rest.split("_")[0]) >= params[f"{stage}_repeats"]


def test_ofa_mbv3_counts_and_holds_mobilenet_v3_large_shapes():
    """Once-for-All's space: (sum over depths 2-4 of 9**d) per stage, 4 resolutions."""
    space = get_space("ofa-mbv3")
    per_stage = sum(9**d for d in (2, 3, 4))
    assert space.num_architectures() == 4 * per_stage**5
    largest = space.largest()
    assert [s.repeats for s in largest.stages] == [1, 4, 4, 4, 4, 4]
    assert largest.stages[2].se_ratio == 0.25 and largest.stages[3].activation == "hswish"
    assert largest.head == "mbv3" and largest.head_channels == 960 and largest.stem_activation == "hswish"


def test_per_block_encoding_is_canonical(rng):
    """Blocks past the sampled depth encode as the first choice, whatever the code said."""
    space = get_space("ofa-mbv3")
    codes = (rng.random((200, len(space.cardinalities))) * space.cardinalities).astype(np.int64)
    for raw, canonical in zip(codes, space.canonical_codes(codes)):
        assert space.decode(raw) == space.decode(canonical)
        assert np.array_equal(space.encode(space.decode(raw)), canonical)


def test_space_dict_of_mobilenet_v2_spaces_is_unchanged():
    """Fields added for per-block / SE / h-swish spaces are written only when used, so run
    fingerprints of earlier runs still match."""
    d = get_space("proxy-digits").to_dict()
    assert "head" not in d and "per_block" not in d["stages"][0]
    v3 = get_space("proxy-ofa-digits")
    assert SearchSpace.from_dict(json.loads(v3.to_json())) == v3
