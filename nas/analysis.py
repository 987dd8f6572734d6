"""Results analysis in pandas: load a run's trials, Pareto fronts, hypervolume."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

# Every objective the search knows and its direction.
OBJECTIVE_DIRECTIONS: dict[str, str] = {
    "accuracy": "max",
    "latency_ms": "min",
    "madds": "min",
    "params": "min",
    "peak_memory_bytes": "min",
}
DEFAULT_OBJECTIVES: dict[str, str] = {"accuracy": "max", "latency_ms": "min"}
VERIFY_FILE = "verify.csv"


def load_trials(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The run's ``trials.csv`` as a DataFrame, one row per trial."""
    path = Path(run_dir) / "trials.csv"
    if not path.is_file():
        raise ValueError(f"{run_dir} has no trials.csv; is it a run folder made by `python -m nas.search`?")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable trials table ({e})") from None


def load_verify(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The run's ``verify.csv`` (written by ``nas.search --verify-top K``) as a DataFrame, one row
    per verified front member: its objectives, inherited and trained accuracy, epochs, pruned."""
    path = Path(run_dir) / VERIFY_FILE
    if not path.is_file():
        raise ValueError(
            f"{run_dir} has no {VERIFY_FILE}; verify its front with `python -m nas.search --resume {run_dir} --verify-top K`"
        )
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a readable verify table ({e})") from None


def _check_objectives(df: pd.DataFrame, objectives: Mapping[str, str]) -> dict[str, str]:
    objectives = dict(objectives)
    missing = [name for name in objectives if name not in df.columns]
    if missing:
        raise ValueError(f"objective column(s) {missing} not in the table; columns are {list(df.columns)}")
    for name, direction in objectives.items():
        if direction not in ("min", "max"):
            raise ValueError(f"direction of {name!r} must be 'min' or 'max', but got {direction!r}")
    return objectives


def _as_minimisation(df: pd.DataFrame, objectives: Mapping[str, str]) -> np.ndarray:
    cols = []
    for name, direction in objectives.items():
        values = df[name].to_numpy(dtype=float)
        cols.append(-values if direction == "max" else values)
    return np.column_stack(cols) if cols else np.empty((len(df), 0))


def _usable(df: pd.DataFrame) -> pd.Series:
    """Completed, feasible rows (when the table says so)."""
    mask = pd.Series(True, index=df.index)
    if "state" in df.columns:
        mask &= df["state"] == "COMPLETE"
    if "feasible" in df.columns:
        mask &= df["feasible"].astype(bool)
    return mask


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows of ``points`` (to minimise) that no other row dominates."""
    n = len(points)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        if not keep[i]:
            continue
        dominated_by = np.all(points <= points[i], axis=1) & np.any(points < points[i], axis=1)
        if dominated_by.any():
            keep[i] = False
    return keep


def pareto_front(
    df: pd.DataFrame,
    objectives: Mapping[str, str] | None = None,
    only_feasible: bool = True,
) -> pd.DataFrame:
    """Rows of ``df`` not dominated on ``objectives`` (``{"accuracy": "max", "latency_ms": "min"}``
    by default), sorted by the first objective. Failed and infeasible trials are left out unless
    ``only_feasible=False``. Exact duplicates on the objectives are kept once."""
    objectives = _check_objectives(df, objectives or DEFAULT_OBJECTIVES)
    rows = df[_usable(df)] if only_feasible else df
    rows = rows.dropna(subset=list(objectives))
    if rows.empty:
        return rows.copy()
    points = _as_minimisation(rows, objectives)
    front = rows[non_dominated(points)]
    front = front.drop_duplicates(subset=list(objectives))
    first, direction = next(iter(objectives.items()))
    return front.sort_values(first, ascending=direction == "min").reset_index(drop=True)


def _hv_minimise(points: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume dominated by ``points`` (minimisation) up to ``reference``, by slicing
    along the last axis (fine for the tens of points a Pareto front has)."""
    points = points[np.all(points < reference, axis=1)]
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    points = points[non_dominated(points)]
    order = np.argsort(points[:, -1])
    points = points[order]
    volume = 0.0
    for i in range(len(points)):
        upper = points[i + 1, -1] if i + 1 < len(points) else reference[-1]
        depth = upper - points[i, -1]
        if depth > 0:
            volume += depth * _hv_minimise(points[: i + 1, :-1], reference[:-1])
    return volume


def hypervolume(
    df: pd.DataFrame,
    objectives: Mapping[str, str] | None = None,
    reference: Mapping[str, float] | None = None,
    only_feasible: bool = True,
) -> float:
    """Hypervolume of the rows' Pareto front with respect to ``reference`` (a value per
    objective: the worst acceptable accuracy, latency, ...). Larger is better; use the same
    reference to compare fronts. Default reference: the worst value of each objective in ``df``."""
    objectives = _check_objectives(df, objectives or DEFAULT_OBJECTIVES)
    rows = (df[_usable(df)] if only_feasible else df).dropna(subset=list(objectives))
    if reference is None:
        reference = {name: (rows[name].min() if d == "max" else rows[name].max()) for name, d in objectives.items()}
    missing = [name for name in objectives if name not in reference]
    if missing:
        raise ValueError(f"reference needs a value for {missing}")
    if rows.empty:
        return 0.0
    ref = np.array([-reference[n] if d == "max" else reference[n] for n, d in objectives.items()], dtype=float)
    return _hv_minimise(_as_minimisation(rows, objectives), ref)


def common_reference(
    frames: list[pd.DataFrame], objectives: Mapping[str, str], margin: float = 0.05
) -> dict[str, float]:
    """A reference point every frame shares: the worst value of each objective over all frames,
    pushed out by ``margin`` of its range so extreme points still add volume."""
    both = pd.concat([f[list(objectives)] for f in frames], ignore_index=True).dropna()
    if both.empty:
        raise ValueError("no rows to derive a hypervolume reference from")
    ref = {}
    for name, direction in objectives.items():
        lo, hi = float(both[name].min()), float(both[name].max())
        span = (hi - lo) or abs(hi) or 1.0
        ref[name] = lo - margin * span if direction == "max" else hi + margin * span
    return ref
