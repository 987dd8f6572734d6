"""Regression guard on the published-figure accuracy of the ``pixel`` target (README, benchmarks/latency.py)."""

from __future__ import annotations

import pytest

from hw_models import count_madds, fit_pixel_target, load_target
from hw_models.predict import (
    PIXEL_NETWORKS,
    madds_rule_errors,
    mape_pct,
    pixel_network_data,
    reference_rows,
)

MAX_MAPE_PCT = 5.0


def test_pixel_leave_one_out_mape_is_at_most_5_percent():
    fresh = fit_pixel_target()  # nested leave-one-out over the 16 + 4 fitting rows (hw_models.opmodel.fit_matrices)
    assert fresh.fit["cv"] == "leave-one-out" and fresh.fit["rows"] == 20
    assert fresh.fit["absolute_rows"] == 16 and fresh.fit["ratio_rows"] == 4
    assert fresh.fit["cv_mape_pct"] <= MAX_MAPE_PCT
    assert load_target("pixel").fit["cv_mape_pct"] == pytest.approx(fresh.fit["cv_mape_pct"])


def test_pixel_is_never_worse_than_madds_proportional_on_the_leave_one_out_rows():
    # published ProxylessNAS ratios (3/5/7 kernels, expansion 3/6) and TF-slim rows, each left out in turn
    fit = load_target("pixel").fit
    assert fit["cv_mape_pct_ratio_rows"] <= fit["madds_rule"]["cv_mape_pct_ratio_rows"]
    assert fit["cv_mape_pct_absolute_rows"] <= fit["madds_rule"]["cv_mape_pct_absolute_rows"]
    assert fit["cv_mape_pct_ratio_rows"] <= MAX_MAPE_PCT


def test_pixel_ranks_the_searched_networks_like_the_published_ratios():
    names, specs, ratios, refs = pixel_network_data()
    target = load_target("pixel")
    predicted = [target.predict(s) / target.predict(r) for s, r in zip(specs, refs)]
    assert sorted(range(len(names)), key=lambda i: predicted[i]) == sorted(range(len(names)), key=lambda i: ratios[i])
    # the slim-only model of the earlier release was 28% high on proxyless_mobile (5x5/7x7, expansion 3)
    assert max(abs(p / r - 1) for p, r in zip(predicted, ratios)) <= 0.06


def test_madds_rule_ratio_errors_are_the_published_madds_ratios():
    errors = madds_rule_errors()[16:]
    names, specs, ratios, refs = pixel_network_data()
    rows = {r["name"]: r for r in reference_rows(PIXEL_NETWORKS)}
    for name, ref, ratio, e in zip(names, refs, ratios, errors):
        published = float(rows[name]["madds_m"]) * 1e6 / count_madds(ref)
        assert e == pytest.approx(published / ratio - 1, abs=2e-3)


@pytest.mark.parametrize(
    "predicted, measured, expected",
    [([1.0], [1.0], 0.0), ([110.0, 90.0], [100.0, 100.0], 10.0), ([1.5, 2.0], [1.0, 4.0], 50.0)],
)
def test_mape_pct(predicted, measured, expected):
    assert mape_pct(predicted, measured) == pytest.approx(expected)


@pytest.mark.parametrize("predicted, measured", [([], []), ([1.0], [1.0, 2.0])])
def test_mape_pct_needs_matching_non_empty_inputs(predicted, measured):
    with pytest.raises(ValueError, match="as many predictions as measurements"):
        mape_pct(predicted, measured)
