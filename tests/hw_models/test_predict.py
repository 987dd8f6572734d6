from __future__ import annotations

import csv
import json
from dataclasses import replace
from importlib import resources

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw_models import count_madds, count_params, fit_pixel_target, load_target, predict_latency_ms
from hw_models.opmodel import (
    FEATURES,
    FitData,
    block_features,
    classifier_features,
    feature_mask,
    fit_data,
    fit_nnls,
    head_features,
    loo_relative_errors,
    network_parts,
    spec_features,
    stem_features,
)
from hw_models.predict import main, pixel_reference_data
from hw_models.targets import LatencyTarget
from search_spaces import SPACES, block_plan, final_size, get_space, mobilenet_v2, reference_arch
from tests.properties import arch_specs, ofa_arch_specs


def heldout_rows() -> list[dict[str, str]]:
    path = resources.files("hw_models") / "reference" / "mobilenet_v2_pixel1_heldout.csv"
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("row", heldout_rows(), ids=lambda r: f"{r['width_mult']}@{r['resolution']}")
def test_heldout_published_rows_madds_and_params(row):
    # held-out rows of the TF-slim table (never fitted): golden values for the analytic counts
    spec = mobilenet_v2(float(row["width_mult"]), int(row["resolution"]))
    assert count_madds(spec) // 10**6 == int(row["madds_m"])
    assert round(count_params(spec) / 1e6, 2) == float(row["params_m"])


def test_heldout_rows_are_not_in_the_fitting_data():
    specs, _ = pixel_reference_data()
    held = {mobilenet_v2(float(r["width_mult"]), int(r["resolution"])) for r in heldout_rows()}
    assert len(specs) == 16 and not held & set(specs)


def sum_of_parts(s, tile) -> np.ndarray:
    """Stem + blocks + head + classifier, each costed by its own part function."""
    mbv3 = s.head == "mbv3"
    parts = stem_features(s.resolution, s.stem_channels, s.stem_stride, tile, s.stem_activation)
    parts = parts + sum(block_features(p, tile) for p in block_plan(s))
    width = s.head_channels if mbv3 else s.last_channels
    parts = parts + head_features(s.stages[-1].channels, width, final_size(s), tile, s.head_activation)
    parts = parts + classifier_features(s.last_channels, s.num_classes, s.head_channels, s.head_activation)
    np.testing.assert_array_equal(parts, sum(network_parts(s, tile)))
    return parts


@pytest.mark.parametrize("name", sorted(SPACES))
@pytest.mark.parametrize("tile", [1, 16, (16, 32), (4, 8)])
def test_network_features_are_the_sum_of_its_parts(name, tile, rng):
    for _ in range(5):
        for shortcut in ("bottleneck", "expansion"):
            s = get_space(name).sample(rng).replace(shortcut=shortcut)
            np.testing.assert_array_equal(sum_of_parts(s, tile), spec_features(s, tile))


def test_gemm_macs_equal_conv_madds_without_tiling():
    spec = mobilenet_v2()
    f = dict(zip(FEATURES, spec_features(spec, 1)))
    assert f["gemm_macs"] + f["dw_macs"] + f["fc_weights"] == count_madds(spec)


@pytest.mark.parametrize("tile", [(16, 32), (4, 8)])
def test_gemm_macs_exact_are_the_gemm_macs_without_tile_rounding(tile):
    spec = mobilenet_v2(0.35, 96)  # narrow layers: tiles round up a lot
    exact = dict(zip(FEATURES, spec_features(spec, tile)))["gemm_macs_exact"]
    assert exact == dict(zip(FEATURES, spec_features(spec, 1)))["gemm_macs"]
    assert exact < dict(zip(FEATURES, spec_features(spec, tile)))["gemm_macs"]


def test_old_target_files_without_output_tiles_or_kernel_features_still_load():
    data = load_target("pixel").to_dict()
    for feature in ("dw_macs_k5", "dw_macs_k7"):
        del data["model"]["coefficients"][feature]
    del data["model"]["tile_n"]
    old = LatencyTarget.from_dict(data)
    assert old.tile_n == 1 and old.coefficients[FEATURES.index("dw_macs_k5")] == 0.0


def test_ratio_rows_fit_a_model_known_only_up_to_scale(rng):
    x = rng.uniform(1, 10, size=(12, 3))
    truth = np.array([0.5, 0.0, 2.0])
    ref = rng.uniform(1, 10, size=(4, 3))
    other = rng.uniform(1, 10, size=(4, 3))
    data = FitData(x, x @ truth, other, ref, (other @ truth) / (ref @ truth))
    coef = fit_data(data, balance=True)
    np.testing.assert_allclose(coef, truth, atol=1e-6)
    assert np.max(np.abs(data.relative_errors(coef))) < 1e-6
    # the ratio rows alone pin the relative coefficients down: 2x the true latencies fit them too
    scaled = FitData(x, 2 * (x @ truth), other, ref, data.ratio)
    np.testing.assert_allclose(fit_data(scaled, balance=True), 2 * truth, atol=1e-6)


def test_a_fit_restricted_to_some_features_leaves_the_others_at_zero(rng):
    x = rng.uniform(1, 10, size=(20, len(FEATURES)))
    coef = fit_data(FitData.absolute(x, x.sum(axis=1)), feature_mask(["gemm_macs", "layers"]))
    assert set(np.flatnonzero(coef)) <= {FEATURES.index("gemm_macs"), FEATURES.index("layers")}
    with pytest.raises(ValueError, match="unknown feature"):
        feature_mask(["gemm_flops"])


def test_nnls_recovers_non_negative_coefficients(rng):
    x = rng.uniform(1, 10, size=(30, 3))
    y = x @ np.array([0.5, 0.0, 2.0])
    np.testing.assert_allclose(fit_nnls(x, y), [0.5, 0.0, 2.0], atol=1e-9)
    assert np.max(np.abs(loo_relative_errors(x, y))) < 1e-9
    assert np.all(fit_nnls(x, x @ np.array([1.0, -1.0, 1.0]) + 20) >= 0)


def test_shipped_pixel_target_is_the_fit_of_the_reference_table():
    shipped = load_target("pixel")
    fresh = fit_pixel_target(date=shipped.provenance["date"])
    assert shipped.gemm_tile == fresh.gemm_tile
    np.testing.assert_allclose(shipped.coefficients, fresh.coefficients, rtol=1e-9, atol=0)
    assert shipped.fit == json.loads(json.dumps(fresh.fit))
    assert shipped.lookup is None and shipped.fit["rows"] == 20
    assert all(c >= 0 for c in shipped.coefficients)


def test_pixel_fits_its_own_table_closely():
    specs, latencies = pixel_reference_data()
    errors = [abs(predict_latency_ms(s) - y) / y for s, y in zip(specs, latencies)]
    assert np.mean(errors) < 0.05


def test_predict_accepts_names_paths_strings_and_targets(tmp_path):
    spec = mobilenet_v2(0.5, 160)
    value = predict_latency_ms(spec)
    target = load_target("pixel")
    path = target.save(tmp_path / "copy.json")
    assert predict_latency_ms(spec, target) == value
    assert predict_latency_ms(spec, str(path)) == pytest.approx(value)
    assert predict_latency_ms(spec, path) == pytest.approx(value)
    assert predict_latency_ms(str(spec), "pixel") == value
    assert value > 0


# ---- monotonicity: more expansion, width, repeats, kernel or resolution never predicts faster -----
MONOTONE_PREFIXES = ("resolution", "_expansion", "_channels", "_repeats", "_kernel")


def assert_monotone(space, code, predict) -> None:
    dims = space.dimensions()
    base = space.decode(code)
    before = predict(base)
    for d, (name, choices) in enumerate(dims):
        if not name.endswith(MONOTONE_PREFIXES) and name != "resolution":
            continue
        order = np.argsort(choices)
        rank = list(order).index(code[d])
        if rank + 1 < len(choices):
            bigger = np.array(code)
            bigger[d] = order[rank + 1]
            after = predict(space.decode(bigger))
            assert after >= before * (1 - 1e-12), (name, choices[code[d]], choices[bigger[d]], before, after)


def refit_target() -> LatencyTarget:
    """A target whose every coefficient is positive (the pixel fit zeroes some)."""
    pixel = load_target("pixel")
    return pixel.renamed("all-positive", coefficients=tuple(c + 1e-9 for c in pixel.coefficients), tile=8)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), space_name=st.sampled_from(sorted(SPACES)))
def test_predictions_are_monotone(seed, space_name):
    space = get_space(space_name)
    code = space.sample_codes(np.random.default_rng(seed), 1)[0]
    assert_monotone(space, code, lambda s: predict_latency_ms(s, "pixel"))
    other = refit_target()
    assert_monotone(space, code, other.op_model_ms)


def test_cli_predicts_and_lists(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(tmp_path))
    assert main(["--arch", "mobilenet_v2", "--width-mult", "0.5", "--resolution", "128", "--breakdown"]) == 0
    out = capsys.readouterr().out
    assert "ms on pixel" in out and "network" in out
    assert main(["--list"]) == 0
    assert "pixel: Google Pixel 1" in capsys.readouterr().out
    assert main(["--arch", "mobilenet_v2", "--target", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown latency target 'nope'") and err.count("\n") == 1
    assert main(["--write-pixel-target", str(tmp_path / "p.json")]) == 0
    # refitted from the same rows; the solver may differ from the shipped file in the last bit
    assert load_target(tmp_path / "p.json").coefficients == pytest.approx(load_target("pixel").coefficients, rel=1e-9)


@pytest.mark.parametrize("tile", [1, (16, 32)])
def test_features_of_networks_with_7x7_kernels_are_the_sum_of_their_parts(tile):
    from hw_models.predict import pixel_network_data

    sevens = 0
    for s in pixel_network_data()[1]:
        parts = sum_of_parts(s, tile)
        np.testing.assert_array_equal(parts, spec_features(s, tile))
        sevens += parts[FEATURES.index("dw_macs_k7")] > 0
    assert sevens == 3  # all but proxyless_cpu have 7x7 kernels


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), stage=st.integers(0, 6))
def test_a_larger_kernel_never_predicts_faster(seed, stage):
    space = get_space("mobilenetv2-imagenet")
    spec = space.sample(np.random.default_rng(seed))
    targets = [load_target("pixel"), refit_target()]
    for target in targets:
        before = target.op_model_ms(spec)
        for k in (3, 5, 7, 9):
            stages = list(spec.stages)
            stages[stage] = stages[stage].__class__(**{**stages[stage].__dict__, "kernel_size": k})
            after = target.op_model_ms(spec.replace(stages=tuple(stages)))
            if k >= spec.stages[stage].kernel_size:
                assert after >= before * (1 - 1e-12)
                before = after


@settings(max_examples=200, deadline=None)
@given(spec=arch_specs, tile=st.sampled_from([1, (4, 8), (16, 32)]))
def test_per_stage_features_equal_the_sum_over_the_block_plan(spec, tile):
    np.testing.assert_array_equal(sum_of_parts(spec, tile), spec_features(spec, tile))


def test_feature_indices_follow_the_feature_names():
    from hw_models import opmodel

    names = [
        "gemm_macs",
        "gemm_weights",
        "dw_macs",
        "dw_input",
        "dw_macs_k5",
        "dw_macs_k7",
        "fc_weights",
        "activations",
        "layers",
        "matvec_weights",
        "elementwise",
        "squeeze_excitations",
        "gemm_macs_exact",
    ]
    indices = [opmodel._GEMM_MACS, opmodel._GEMM_WEIGHTS, opmodel._DW_MACS, opmodel._DW_INPUT, opmodel._DW_K5,
               opmodel._DW_K7, opmodel._FC, opmodel._ACT, opmodel._LAYERS, opmodel._MATVEC, opmodel._ELEMENTWISE,
               opmodel._SE, opmodel._GEMM_EXACT]  # fmt: skip
    assert [opmodel.FEATURES[i] for i in indices] == names


# ---- squeeze-excitation, h-swish, the MobileNetV3 head ----------------------------------------
@settings(max_examples=200, deadline=None)
@given(spec=ofa_arch_specs(), tile=st.sampled_from([1, (4, 8), (16, 32)]))
def test_features_of_mobilenet_v3_style_networks_are_the_sum_of_their_parts(spec, tile):
    np.testing.assert_array_equal(sum_of_parts(spec, tile), spec_features(spec, tile))


@settings(max_examples=100, deadline=None)
@given(spec=ofa_arch_specs())
def test_untiled_macs_and_matvec_weights_are_the_analytic_madds(spec):
    # the SE convs and the MobileNetV3 head's last conv are counted as MobileNetV3 counts them
    f = dict(zip(FEATURES, spec_features(spec, 1)))
    assert f["gemm_macs"] + f["dw_macs"] + f["fc_weights"] + f["matvec_weights"] == count_madds(spec)


def test_mobilenet_v2_networks_have_no_features_of_the_new_ops(rng):
    for name in ("mobilenetv2-imagenet", "proxy-digits"):
        for _ in range(20):
            f = dict(zip(FEATURES, spec_features(get_space(name).sample(rng), (16, 32))))
            assert f["matvec_weights"] == f["elementwise"] == f["squeeze_excitations"] == 0


def _with(spec, **stage_changes):
    return spec.replace(stages=tuple(replace(s, **stage_changes) for s in spec.stages))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), space_name=st.sampled_from(["ofa-mbv3", "proxy-ofa-digits", "proxy-digits"]))
def test_squeeze_excitation_and_hswish_never_predict_faster(seed, space_name):
    spec = get_space(space_name).sample(np.random.default_rng(seed))
    for target in (load_target("pixel"), refit_target()):
        base = target.op_model_ms(spec)
        assert target.op_model_ms(_with(spec, se_ratio=0.25)) >= base * (1 - 1e-12)
        assert target.op_model_ms(_with(spec, activation="hswish")) >= target.op_model_ms(
            _with(spec, activation="relu6")
        )
        assert target.op_model_ms(_with(spec, activation="relu")) == target.op_model_ms(_with(spec, activation="relu6"))
        assert target.op_model_ms(spec.replace(stem_activation="hswish", head_activation="hswish")) >= base


def test_pixel_costs_of_the_new_ops_are_derived_from_fitted_coefficients():
    from hw_models.predict import PIXEL_DERIVED, PIXEL_FEATURES

    pixel = load_target("pixel")
    coef = dict(zip(FEATURES, pixel.coefficients))
    assert coef["matvec_weights"] == coef["gemm_macs"] + coef["gemm_macs_exact"] + coef["gemm_weights"] > 0
    assert coef["elementwise"] == coef["dw_macs"] + coef["dw_input"] > 0
    assert coef["squeeze_excitations"] == 5 * coef["layers"]
    assert not set(PIXEL_DERIVED) & set(PIXEL_FEATURES)  # derived, never fitted
    assert set(pixel.provenance["derived_features"]) == set(PIXEL_DERIVED)
    assert "not validated on a phone" in pixel.description
    assert set(pixel.ops) == {"squeeze_excitation", "hswish", "mbv3_head"}
    assert predict_latency_ms(reference_arch("mobilenet_v3_large")) > 0


def test_a_target_without_a_basis_for_an_op_refuses_it_in_one_line():
    spec = reference_arch("mobilenet_v3_large")
    old = load_target("pixel").renamed("old", ops=())
    with pytest.raises(ValueError, match="no basis for the cost of squeeze-excitation, h-swish") as e:
        old.predict(spec)
    assert "\n" not in str(e.value) and "calibrate" in str(e.value)
    assert old.predict(mobilenet_v2()) == load_target("pixel").predict(mobilenet_v2())
    mnasnet = reference_arch("mnasnet_a1")  # SE and ReLU: ReLU needs no basis
    with pytest.raises(ValueError, match=r"no basis for the cost of squeeze-excitation in"):
        old.predict(mnasnet)
    assert old.renamed("se", ops=("squeeze_excitation",)).predict(mnasnet) > 0
