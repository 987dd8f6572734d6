from __future__ import annotations

import pytest

from search_spaces import ArchSpec, mobilenet_v2

BASE = "in32_c16_s2-ir_r1_k3_s1_e1_c16-head_c64_n10"


@pytest.mark.parametrize(
    "text, match",
    [
        ("in32_c16_s2-ir_r1_r2_k3_s1_e1_c16-head_c64_n10", r"token 'ir_r1_r2_k3_s1_e1_c16' gives 'r' twice"),
        ("in32_c16_s2-ir_r1_k3_s1_e1_c16_c24-head_c64_n10", r"gives 'c' twice"),
        ("in32_in64_c16_s2-ir_r1_k3_s1_e1_c16-head_c64_n10", r"gives 'in' twice"),
        ("in32_c16_s2_s1-ir_r1_k3_s1_e1_c16-head_c64_n10", r"gives 's' twice"),
        ("in32_c16_s2-ir_r1_k3_s1_e1_c16-head_c64_n10_n20", r"gives 'n' twice"),
        (BASE + "-head_c128_n10", r"more than one head token \(second: 'head_c128_n10'\)"),
        (BASE + "-act_relu6-act_linear", r"more than one 'act' token \(second: 'act_linear'\)"),
        (BASE + "-sc_none-sc_expansion", r"more than one 'sc' token \(second: 'sc_expansion'\)"),
    ],
)
def test_duplicates_are_one_line_errors(text, match):
    with pytest.raises(ValueError, match=match) as info:
        ArchSpec.from_string(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("spec", [mobilenet_v2(), mobilenet_v2(0.5, 96).replace(shortcut="none")])
def test_round_trip_still_parses(spec):
    assert ArchSpec.from_string(spec.to_string()) == spec
    assert ArchSpec.from_string(BASE + "-act_relu6-sc_expansion").shortcut == "expansion"
