"""Regression guard on the published-figure accuracy of the ``pixel`` target (README, benchmarks/latency.py)."""

from __future__ import annotations

import pytest

from hw_models import fit_pixel_target, load_target
from hw_models.predict import heldout_mape_pct, mape_pct, pixel_heldout_data, pixel_reference_data

MAX_MAPE_PCT = 5.0


def test_pixel_heldout_mape_is_at_most_5_percent():
    specs, latencies = pixel_heldout_data()
    assert len(specs) == 6 and not set(specs) & set(pixel_reference_data()[0])  # never fitted
    assert heldout_mape_pct("pixel") <= MAX_MAPE_PCT


def test_pixel_leave_one_out_mape_is_at_most_5_percent():
    fresh = fit_pixel_target()  # nested leave-one-out over the 16 fitting rows (hw_models.opmodel.fit_features)
    assert fresh.fit["cv"] == "leave-one-out" and fresh.fit["rows"] == 16
    assert fresh.fit["cv_mape_pct"] <= MAX_MAPE_PCT
    assert load_target("pixel").fit["cv_mape_pct"] == pytest.approx(fresh.fit["cv_mape_pct"])


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
