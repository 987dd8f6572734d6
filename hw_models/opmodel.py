"""Per-operation latency features and the non-negative linear model every latency target uses.

A network is a sequence of ops, each lowered the way mobile inference engines lower it:

- full and pointwise convolutions (stem, expansion, projection, head) run as a GEMM whose
  reduction depth ``K`` (input channels x kernel taps) is processed in SIMD tiles of ``tile``
  values, so the work is ``H_out * W_out * ceil_tile(K) * C_out``; the weights are re-packed on
  every call, a cost proportional to ``K * C_out`` that does not shrink with the image;
- depthwise convolutions are memory bound: their cost follows the input tensor streamed through
  the ``k x k`` taps (``H_in * W_in * C * k^2``) and their multiply-adds;
- the classifier is a matrix-vector product bound by reading its weights;
- every op writes its output tensor (``activations``) and costs a fixed dispatch overhead (``layers``).

A target's latency is ``scale * sum_f coefficient_f * feature_f(spec)`` with every coefficient
``>= 0``. Every feature grows (weakly) with expansion, width, repeats, kernel size and resolution,
so every such model is monotone in them. Residual additions are not a feature: whether a block
has one flips when a stage's width changes, which would break monotonicity; their (small,
memory-bound) cost is absorbed by ``activations``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import nnls

from search_spaces.arch import ArchSpec, BlockPlan, block_plan, conv_out_size, final_size

FEATURES: tuple[str, ...] = (
    "gemm_macs",
    "gemm_weights",
    "dw_macs",
    "dw_input",
    "fc_weights",
    "activations",
    "layers",
)
FEATURE_DOCS: dict[str, str] = {
    "gemm_macs": "sum over stem/pointwise/head convs of H_out*W_out*ceil_tile(C_in*k^2)*C_out",
    "gemm_weights": "sum over the same convs of C_in*k^2*C_out (weights packed per call)",
    "dw_macs": "sum over depthwise convs of H_out*W_out*C*k^2",
    "dw_input": "sum over depthwise convs of H_in*W_in*C*k^2 (input streamed through the taps)",
    "fc_weights": "classifier weights C_last*num_classes (matrix-vector product)",
    "activations": "elements written by every conv and the classifier",
    "layers": "number of conv and linear ops (dispatch overhead)",
}
FORMULA = "latency_ms = scale * sum_f coefficient_f * feature_f(spec), coefficients >= 0"
TILES: tuple[int, ...] = (1, 4, 8, 16, 32)
IMAGE_CHANNELS = 3
STEM_KERNEL = 3
_N = len(FEATURES)


def _ceil(value: int, tile: int) -> int:
    return -(-value // tile) * tile


def _gemm(acc: list[float], pixels: int, k: int, n: int, tile: int) -> None:
    acc[0] += pixels * _ceil(k, tile) * n
    acc[1] += k * n
    acc[5] += pixels * n
    acc[6] += 1


def _block(acc: list[float], p: BlockPlan, tile: int) -> None:
    if p.hidden != p.in_channels:
        _gemm(acc, p.in_size * p.in_size, p.in_channels, p.hidden, tile)
    taps = p.kernel_size * p.kernel_size
    out_pixels = p.out_size * p.out_size
    acc[2] += out_pixels * p.hidden * taps
    acc[3] += p.in_size * p.in_size * p.hidden * taps
    acc[5] += out_pixels * p.hidden
    acc[6] += 1
    _gemm(acc, out_pixels, p.hidden, p.out_channels, tile)


def stem_features(resolution: int, stem_channels: int, stem_stride: int, tile: int) -> np.ndarray:
    acc = [0.0] * _N
    size = conv_out_size(resolution, stem_stride)
    _gemm(acc, size * size, IMAGE_CHANNELS * STEM_KERNEL * STEM_KERNEL, stem_channels, tile)
    return np.array(acc)


def block_features(plan: BlockPlan, tile: int) -> np.ndarray:
    acc = [0.0] * _N
    _block(acc, plan, tile)
    return np.array(acc)


def head_features(in_channels: int, last_channels: int, size: int, tile: int) -> np.ndarray:
    acc = [0.0] * _N
    _gemm(acc, size * size, in_channels, last_channels, tile)
    return np.array(acc)


def classifier_features(last_channels: int, num_classes: int) -> np.ndarray:
    acc = [0.0] * _N
    acc[4] += last_channels * num_classes
    acc[5] += num_classes
    acc[6] += 1
    return np.array(acc)


def spec_features(spec: ArchSpec, tile: int) -> list[float]:
    """The feature vector (in ``FEATURES`` order) of a whole network: stem + blocks + head +
    classifier, each op as described in the module docstring. (The per-part functions above,
    inlined: this runs for every prediction.)"""
    size = conv_out_size(spec.resolution, spec.stem_stride)
    k = IMAGE_CHANNELS * STEM_KERNEL * STEM_KERNEL
    px = size * size
    n = spec.stem_channels
    gemm_macs = px * (-(-k // tile) * tile) * n
    gemm_weights = k * n
    dw_macs = dw_input = 0
    activations = px * n
    layers = 1
    for p in block_plan(spec):
        c_in, hidden, c_out = p.in_channels, p.hidden, p.out_channels
        px_in = p.in_size * p.in_size
        px_out = p.out_size * p.out_size
        taps = p.kernel_size * p.kernel_size
        if hidden != c_in:
            gemm_macs += px_in * (-(-c_in // tile) * tile) * hidden
            gemm_weights += c_in * hidden
            activations += px_in * hidden
            layers += 1
        dw_macs += px_out * hidden * taps
        dw_input += px_in * hidden * taps
        gemm_macs += px_out * (-(-hidden // tile) * tile) * c_out
        gemm_weights += hidden * c_out
        activations += px_out * (hidden + c_out)
        layers += 2
    size = final_size(spec)
    c_in, n = spec.stages[-1].channels, spec.last_channels
    gemm_macs += size * size * (-(-c_in // tile) * tile) * n
    gemm_weights += c_in * n
    activations += size * size * n + spec.num_classes
    return [
        float(gemm_macs),
        float(gemm_weights),
        float(dw_macs),
        float(dw_input),
        float(n * spec.num_classes),
        float(activations),
        float(layers + 2),
    ]


def feature_matrix(specs: Sequence[ArchSpec], tile: int) -> np.ndarray:
    return np.array([spec_features(s, tile) for s in specs], dtype=float)


# ---- fitting ---------------------------------------------------------------------------------
def fit_nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the sum of squared *relative* errors
    ``sum_i ((x_i . c - y_i) / y_i)^2`` (columns are rescaled for conditioning)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls((x / scale) / y[:, None], np.ones(len(y)), maxiter=50 * x.shape[1])
    return coef / scale


def cv_relative_errors(x: np.ndarray, y: np.ndarray, folds: int | None = None) -> np.ndarray:
    """Signed relative error of each row when the model is fitted without it: leave-one-out
    (``folds=None``), or ``folds`` interleaved folds for large tables."""
    n = len(y)
    folds = n if folds is None or folds >= n else folds
    errors = np.empty(n)
    fold_of = np.arange(n) % folds
    for k in range(folds):
        out = fold_of == k
        coef = fit_nnls(x[~out], y[~out])
        errors[out] = (x[out] @ coef - y[out]) / y[out]
    return errors


def loo_relative_errors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed relative error of each row when the model is fitted to all the other rows."""
    return cv_relative_errors(x, y, None)


LOO_MAX_ROWS = 60  # above this, 10-fold cross-validation replaces leave-one-out


def fit_matrices(mats: dict[int, np.ndarray], latencies_ms: Sequence[float]) -> tuple[np.ndarray, int, dict[str, Any]]:
    """Fit coefficients for feature matrices computed with each candidate GEMM tile, choosing the
    tile by cross-validated error (leave-one-out up to ``LOO_MAX_ROWS`` rows, else 10-fold).

    The reported ``cv_mape_pct`` is *nested*: for every held-out row the tile is chosen again on
    the remaining rows only, so the choice of tile does not flatter the figure.
    Returns ``(coefficients, tile, fit_report)``.
    """
    y = np.asarray(latencies_ms, dtype=float)
    n = len(y)
    folds = None if n <= LOO_MAX_ROWS else 10
    tiles = sorted(mats)

    def cv_mape(t: int, rows: np.ndarray) -> float:
        inner_folds = None if folds is None else min(folds, int(rows.sum()))
        return float(np.mean(np.abs(cv_relative_errors(mats[t][rows], y[rows], inner_folds))))

    everything = np.ones(n, dtype=bool)
    tile = min(tiles, key=lambda t: (cv_mape(t, everything), t))
    coef = fit_nnls(mats[tile], y)
    nested = np.empty(n)
    k = n if folds is None else folds
    fold_of = np.arange(n) % k
    for f in range(k):
        out = fold_of == f
        inner = min(tiles, key=lambda t: (cv_mape(t, ~out), t)) if len(tiles) > 1 else tile
        c = fit_nnls(mats[inner][~out], y[~out])
        nested[out] = (mats[inner][out] @ c - y[out]) / y[out]
    train = (mats[tile] @ coef - y) / y
    report = {
        "rows": int(n),
        "cv": "leave-one-out" if folds is None else f"{folds}-fold",
        "cv_mape_pct": round(float(100 * np.mean(np.abs(nested))), 3),
        "cv_max_ape_pct": round(float(100 * np.max(np.abs(nested))), 3),
        "train_mape_pct": round(float(100 * np.mean(np.abs(train))), 3),
    }
    return coef, tile, report


def fit_features(
    specs: Sequence[ArchSpec], latencies_ms: Sequence[float], tiles: Sequence[int] = TILES
) -> tuple[np.ndarray, int, dict[str, Any]]:
    """:func:`fit_matrices` on whole networks with measured (or published) latencies."""
    return fit_matrices({t: feature_matrix(specs, t) for t in tiles}, latencies_ms)


__all__ = [
    "FEATURES",
    "FEATURE_DOCS",
    "FORMULA",
    "TILES",
    "block_features",
    "classifier_features",
    "feature_matrix",
    "cv_relative_errors",
    "fit_features",
    "fit_matrices",
    "fit_nnls",
    "head_features",
    "loo_relative_errors",
    "spec_features",
    "stem_features",
]
