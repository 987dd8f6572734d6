from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from nas.analysis import common_reference, hypervolume, load_trials, non_dominated, pareto_front


def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial": range(6),
            "state": ["COMPLETE"] * 5 + ["FAIL"],
            "feasible": [True, True, True, False, True, True],
            "accuracy": [0.90, 0.95, 0.80, 0.99, 0.85, 0.999],
            "latency_ms": [2.0, 3.0, 1.0, 0.5, 2.5, 0.1],
        }
    )


def test_pareto_front_skips_dominated_failed_and_infeasible():
    front = pareto_front(table())
    # trial 4 (0.85 @ 2.5) is dominated by trial 0; 3 is infeasible; 5 failed
    assert front["trial"].tolist() == [1, 0, 2]
    assert pareto_front(table(), only_feasible=False)["trial"].tolist() == [5]


def test_hypervolume_2d_by_hand():
    df = table()
    ref = {"accuracy": 0.7, "latency_ms": 4.0}
    # front (1.0, 0.80) (2.0, 0.90) (3.0, 0.95): staircase area
    expected = (4 - 1) * (0.80 - 0.7) + (4 - 2) * (0.90 - 0.80) + (4 - 3) * (0.95 - 0.90)
    assert hypervolume(df, reference=ref) == pytest.approx(expected)
    # a point outside the reference adds nothing
    assert hypervolume(df, reference={"accuracy": 0.96, "latency_ms": 4.0}) == 0.0


def brute_force_hv(points: np.ndarray, ref: np.ndarray) -> float:
    """Volume of the union of boxes [p, ref] by inclusion-exclusion (small n only)."""
    total = 0.0
    n = len(points)
    for k in range(1, n + 1):
        for subset in itertools.combinations(range(n), k):
            corner = points[list(subset)].max(axis=0)
            total += (-1) ** (k + 1) * np.prod(np.clip(ref - corner, 0, None))
    return total


@pytest.mark.parametrize("dims", [2, 3, 4])
def test_hypervolume_matches_inclusion_exclusion(dims, rng):
    for _ in range(5):
        points = rng.random((7, dims))
        df = pd.DataFrame(points, columns=[f"o{i}" for i in range(dims)])
        objectives = {c: "min" for c in df.columns}
        ref = {c: 1.1 for c in df.columns}
        assert hypervolume(df, objectives, ref) == pytest.approx(brute_force_hv(points, np.full(dims, 1.1)))


def test_non_dominated_keeps_ties():
    pts = np.array([[1.0, 1.0], [1.0, 1.0], [2.0, 0.5], [2.0, 2.0]])
    assert non_dominated(pts).tolist() == [True, True, True, False]


def test_common_reference_is_worse_than_every_point():
    a, b = table(), table().assign(accuracy=lambda d: d.accuracy - 0.1)
    ref = common_reference([a, b], {"accuracy": "max", "latency_ms": "min"})
    assert ref["accuracy"] < min(a.accuracy.min(), b.accuracy.min())
    assert ref["latency_ms"] > max(a.latency_ms.max(), b.latency_ms.max())


def test_load_trials_errors(tmp_path):
    with pytest.raises(ValueError, match="has no trials.csv"):
        load_trials(tmp_path)
    table().to_csv(tmp_path / "trials.csv", index=False)
    assert len(load_trials(tmp_path)) == 6
    with pytest.raises(ValueError, match="objective column"):
        pareto_front(table(), {"nope": "min"})
