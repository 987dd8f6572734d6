"""Per-block kernels and expansions, squeeze-excitation, activations and the MobileNetV3 head in
``ArchSpec``: every description form, old configs, and the built network matching the counts."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from hypothesis import given, settings

from hw_models.analytic import count_madds, count_params
from hw_models.table import layer_table
from search_spaces import ArchSpec, StageSpec, block_plan, build_model, mobilenet_v2, parse_arch
from tests.properties import ofa_arch_specs

V3_STRING = (
    "in64_c16_s2_nhs-ir_r1_k3_s1_e1_c16_nre-ir_r2_k3:5_s2_e4:3_c24_nre-ir_r3_k5_s2_e3_c40_se0.25_nre"
    "-ir_r2_k3_s1_e2.5:2.3_c80_se0.25_sei_gsig_nhs-head_c128_n10_h96_nhs"
)


@settings(max_examples=150)
@given(ofa_arch_specs())
def test_new_fields_round_trip_through_dict_json_string(spec):
    assert ArchSpec.from_dict(spec.to_dict()) == spec
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert ArchSpec.from_string(spec.to_string()) == spec
    assert hash(ArchSpec.from_string(spec.to_string())) == hash(spec)


@settings(max_examples=25, deadline=None)
@given(ofa_arch_specs())
def test_built_network_runs_and_its_parameters_are_the_analytic_count(spec):
    model = build_model(spec).eval()
    assert sum(p.numel() for p in model.parameters()) == count_params(spec, include_bn=True)
    table = layer_table(spec)
    assert table.madds.sum() == count_madds(spec) and table.params.sum() == count_params(spec)
    with torch.inference_mode():
        out = model(torch.randn(1, 3, spec.resolution, spec.resolution))
    assert out.shape == (1, spec.num_classes) and torch.isfinite(out).all()


def test_timm_style_tokens_read_as_written():
    spec = ArchSpec.from_string(V3_STRING)
    assert spec.to_string() == V3_STRING
    assert spec.stem_activation == "hswish" and spec.head == "mbv3" and spec.head_channels == 96
    s1, s2, s3 = spec.stages[1], spec.stages[2], spec.stages[3]
    assert s1.kernel_size == (3, 5) and s1.expansion == (4, 3) and s1.activation == "relu" and s1.se_ratio == 0
    assert s2.se_ratio == 0.25 and s2.se_gate == "hard_sigmoid" and s2.se_basis == "hidden"
    assert s3.expansion == (2.5, 2.3) and s3.se_gate == "sigmoid" and s3.se_basis == "input"
    assert s3.activation == "hswish"
    plans = block_plan(spec)
    assert [p.kernel_size for p in plans[1:3]] == [3, 5] and [p.hidden for p in plans[1:3]] == [64, 72]
    # SE squeeze widths: MobileNetV3 rounds hidden/4 to a multiple of 8; MnasNet takes int(input/4)
    assert [p.se_channels for p in plans[3:6]] == [24, 32, 32]
    assert [p.hidden for p in plans[6:8]] == [
        104,
        184,
    ]  # 40 * 2.5 = 100 rounds to 104 and [p.se_channels for p in plans[6:8]] == [10, 20]


def test_old_description_forms_still_read():
    old = mobilenet_v2(0.75, 160)
    old_dict = json.loads(old.to_json())  # the form written before the new fields existed
    assert "se_ratio" not in old_dict["stages"][0] and "head" not in old_dict
    assert ArchSpec.from_dict(old_dict) == old
    assert ArchSpec.from_string(old.to_string()) == old
    assert old.to_string() == (
        "in160_c24_s2-ir_r1_k3_s1_e1_c16-ir_r2_k3_s2_e6_c24-ir_r3_k3_s2_e6_c24-ir_r4_k3_s2_e6_c48"
        "-ir_r3_k3_s1_e6_c72-ir_r3_k3_s2_e6_c120-ir_r1_k3_s1_e6_c240-head_c1280_n1001"
    )


def test_one_stage_per_block_form_builds_the_same_network_as_per_block_values():
    per_block = ArchSpec.from_string("in32_c16_s2-ir_r2_k3:5_s2_e6:3_c24-head_c64_n10")
    single = ArchSpec.from_string("in32_c16_s2-ir_r1_k3_s2_e6_c24-ir_r1_k5_s1_e3_c24-head_c64_n10")
    strip = [p._replace(stage=0, index=0) for p in block_plan(per_block)]
    assert strip == [p._replace(stage=0, index=0) for p in block_plan(single)]
    assert count_madds(per_block) == count_madds(single) and count_params(per_block) == count_params(single)


def test_equal_per_block_values_collapse_so_equal_stages_compare_equal():
    assert StageSpec([6, 6], 24, 2, 2, [5, 5]) == StageSpec(6, 24, 2, 2, 5)
    assert StageSpec(6.0, 24, 2).expansion == 6 and isinstance(StageSpec(6.0, 24, 2).expansion, int)
    assert StageSpec(6, 24, 2, se_ratio=0, se_gate="sigmoid") == StageSpec(6, 24, 2)


def test_yaml_round_trip(tmp_path):
    spec = ArchSpec.from_string(V3_STRING)
    path = tmp_path / "arch.yaml"
    path.write_text(yaml.safe_dump(spec.to_dict()))
    assert parse_arch(str(path)) == spec


@pytest.mark.parametrize(
    "text, match",
    [
        ("in32_c16_s2-ir_r2_k3:5:7_s2_e6_c24-head_c64_n10", r"kernel_size lists one value per block, so it must have"),
        ("in32_c16_s2-ir_r1_k3_s2_e6_c24_sei-head_c64_n10", r"without a ratio; add '_se<ratio>'"),
        ("in32_c16_s2-ir_r1_k3_s2_e6_c24_nre_nhs-head_c64_n10", r"gives 'nhs' twice"),
        ("in32_c16_s2-ir_r1_k3.5_s2_e6_c24-head_c64_n10", r"'k' in token .* must be integers \(per block: joined"),
        ("in32_c16_s2-ir_r1_k3_s2_e6_c24_se2-head_c64_n10", r"se_ratio must be a number in \[0, 1\]"),
        ("in32_c16_s2-ir_r1_k3_s2_e0.5_c24-head_c64_n10", r"expansion must be a number >= 1, but got 0.5"),
        ("in32_c16_s2_gsig-ir_r1_k3_s2_e6_c24-head_c64_n10", r"cannot take \['gsig'\]"),
        ("in32_c16_s2-ir_r1_k3_s2_e6_c24-head_c64_n10_h0", r"head_channels .* must be an integer >= 1"),
    ],
)
def test_bad_new_tokens_are_one_line_errors(text, match):
    with pytest.raises(ValueError, match=match) as info:
        ArchSpec.from_string(text)
    assert "\n" not in str(info.value)


def test_head_channels_only_with_the_mbv3_head():
    with pytest.raises(ValueError, match="with head='conv' it must be 0"):
        mobilenet_v2().replace(head_channels=960)


def test_executors_and_their_memory_models_take_the_mobilenet_v3_ops():
    # exactness and measured == modelled peaks: tests/hw_models/test_executor.py
    from hw_models.analytic import peak_memory_bytes
    from hw_models.executor import NaiveExecutor, SplitExecutor

    spec = ArchSpec.from_string(V3_STRING)
    model = build_model(spec).eval()
    x = torch.randn(1, 3, spec.resolution, spec.resolution)
    with torch.no_grad():
        for executor in (NaiveExecutor(model), SplitExecutor(model, 2)):
            assert (executor(x) - model(x)).abs().max().item() <= 1e-5
    assert peak_memory_bytes(spec, "naive") > peak_memory_bytes(spec, "split", t=2) > 0


def test_squeeze_excitation_materialises_the_depthwise_output_in_the_bottleneck_memory_model():
    from hw_models.analytic import peak_memory_bytes

    plain = ArchSpec.from_string("in32_c8_s1-ir_r1_k3_s1_e6_c8-head_c16_n10")
    with_se = ArchSpec.from_string("in32_c8_s1-ir_r1_k3_s1_e6_c8_se0.25-head_c16_n10")
    assert peak_memory_bytes(plain, bytes_per_element=1) == 32 * 32 * 16
    assert peak_memory_bytes(with_se, bytes_per_element=1) == 32 * 32 * 48


def test_per_block_stages_take_the_per_block_cost_paths():
    from hw_models.opmodel import spec_features

    per_block = ArchSpec.from_string("in32_c16_s2-ir_r3_k3:5:7_s2_e6:3:4_c24-ir_r2_k3_s1_e6_c32-head_c64_n10")
    single = ArchSpec.from_string(
        "in32_c16_s2-ir_r1_k3_s2_e6_c24-ir_r1_k5_s1_e3_c24-ir_r1_k7_s1_e4_c24-ir_r2_k3_s1_e6_c32-head_c64_n10"
    )
    assert spec_features(per_block, (4, 8)) == spec_features(single, (4, 8))


def test_mobilenet_v2_family_specs_write_the_json_they_always_did():
    d = mobilenet_v2(0.5, 96).to_dict()
    assert list(d) == [
        "resolution",
        "stem_channels",
        "stages",
        "last_channels",
        "num_classes",
        "stem_stride",
        "bottleneck_activation",
        "shortcut",
    ]
    assert all(list(s) == ["expansion", "channels", "repeats", "stride", "kernel_size"] for s in d["stages"])
    v3 = ArchSpec.from_string(V3_STRING).to_dict()
    assert v3["head"] == "mbv3" and v3["stages"][2]["se_ratio"] == 0.25 and "se_gate" not in v3["stages"][2]


def test_a_fractional_expansion_takes_the_per_block_paths():
    spec = ArchSpec.from_string("in8_c1_s1-ir_r1_k3_s1_e2.3_c1-head_c1_n1")
    assert not spec.plain
    assert count_params(spec, include_bn=True) == sum(p.numel() for p in build_model(spec).parameters())
