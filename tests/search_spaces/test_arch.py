from __future__ import annotations

import json
import re

import pytest

from search_spaces import ArchSpec, StageSpec, block_plan, make_divisible, mobilenet_v2, parse_arch


def test_mobilenet_v2_matches_table_2():
    spec = mobilenet_v2()
    assert spec.stem_channels == 32 and spec.last_channels == 1280 and spec.num_classes == 1001
    rows = [(s.expansion, s.channels, s.repeats, s.stride) for s in spec.stages]
    assert rows == [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    assert spec.num_blocks == 17


@pytest.mark.parametrize(
    "width, stem, channels, last",
    [
        (1.4, 48, [24, 32, 48, 88, 136, 224, 448], 1792),
        (0.75, 24, [16, 24, 24, 48, 72, 120, 240], 1280),
        (0.35, 16, [8, 8, 16, 24, 32, 56, 112], 1280),
    ],
)
def test_width_multiplier_rounding(width, stem, channels, last):
    spec = mobilenet_v2(width)
    assert spec.stem_channels == stem
    assert [s.channels for s in spec.stages] == channels
    assert spec.last_channels == last


def test_make_divisible_never_drops_more_than_ten_percent():
    for v in range(1, 2000):
        r = make_divisible(v * 0.37)
        assert r % 8 == 0 and r >= 8 and r >= 0.9 * v * 0.37


def test_dict_json_and_string_round_trip(tmp_path):
    spec = mobilenet_v2(0.75, 160).replace(bottleneck_activation="relu6", shortcut="expansion")
    assert ArchSpec.from_dict(spec.to_dict()) == spec
    path = tmp_path / "arch.json"
    spec.to_json(path)
    assert ArchSpec.from_json(path) == spec
    assert json.loads(path.read_text())["resolution"] == 160
    assert ArchSpec.from_string(spec.to_string()) == spec
    assert parse_arch(str(path)) == spec and parse_arch(spec.to_string()) == spec


def test_string_form_is_compact_and_readable():
    s = mobilenet_v2().to_string()
    assert s.startswith("in224_c32_s2-ir_r1_k3_s1_e1_c16-ir_r2_k3_s2_e6_c24")
    assert s.endswith("head_c1280_n1001")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"expansion": 0}, "expansion must be a number >= 1, but got 0"),
        ({"expansion": [6, 3, 3]}, "so it must have repeats=2 entries, but got [6, 3, 3]"),
        ({"kernel_size": (3, 4)}, "kernel_size[1] must be odd, but got 4"),
        ({"se_ratio": 1.5}, "se_ratio must be a number in [0, 1]"),
        ({"se_ratio": 0.25, "se_gate": "relu"}, "se_gate must be one of ('hard_sigmoid', 'sigmoid')"),
        ({"activation": "swish"}, "activation must be one of ('relu', 'relu6', 'hswish')"),
        ({"channels": 0}, "channels must be an integer >= 1, but got 0"),
        ({"repeats": -1}, "repeats must be an integer >= 1, but got -1"),
        ({"stride": 3}, "stride must be one of (1, 2), but got 3"),
        ({"kernel_size": 4}, "kernel_size must be odd, but got 4"),
        ({"channels": 2.5}, "channels must be an integer >= 1, but got 2.5"),
    ],
)
def test_stage_validation_says_what_must_hold(kwargs, message):
    args = {"expansion": 6, "channels": 24, "repeats": 2, "stride": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=re.escape(message)):
        StageSpec(**args)


def test_arch_validation():
    stage = StageSpec(6, 24, 2, 2)
    with pytest.raises(ValueError, match="resolution must be an integer >= 1"):
        ArchSpec(0, 32, (stage,), 1280, 10)
    with pytest.raises(ValueError, match="stages must be a non-empty tuple"):
        ArchSpec(224, 32, (), 1280, 10)
    with pytest.raises(ValueError, match="shortcut must be one of"):
        ArchSpec(224, 32, (stage,), 1280, 10, shortcut="dense")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "foo",
        "in224_c32_s2-ir_r1_k3-head_c10_n10",
        "in224_c32_s2-ir_r1_k3_s1_e1_c16",
        "in224_c32_s2-xx-head_c10_n10",
    ],
)
def test_bad_strings_raise_value_error(text):
    with pytest.raises(ValueError):
        ArchSpec.from_string(text)


def test_corrupt_json_is_a_value_error(tmp_path):
    path = tmp_path / "arch.json"
    path.write_text(mobilenet_v2().to_json()[:50])
    with pytest.raises(ValueError, match="not valid JSON"):
        ArchSpec.from_json(path)
    path.write_text('{"resolution": 224}')
    with pytest.raises(ValueError, match="missing field"):
        ArchSpec.from_json(path)


def test_block_plan_shortcuts_follow_the_paper():
    plans = block_plan(mobilenet_v2())
    # shortcut only for stride 1 and equal channels: 10 of MobileNetV2's 17 blocks
    assert sum(p.residual for p in plans) == 10
    assert not plans[0].residual and plans[0].hidden == 32  # t=1: no expansion conv
    assert [p.out_size for p in plans][-1] == 7
    none = block_plan(mobilenet_v2().replace(shortcut="none"))
    assert not any(p.residual or p.wide_shortcut for p in none)
    wide = block_plan(mobilenet_v2().replace(shortcut="expansion"))
    assert not any(p.residual for p in wide) and any(p.wide_shortcut for p in wide)
    for prev, p in zip(wide, wide[1:]):
        assert p.wide_shortcut == (prev.stride == 1 and prev.hidden == p.hidden)
