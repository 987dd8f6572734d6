"""Per-operation latency features and the non-negative linear model every latency target uses.

A network is a sequence of ops, each lowered the way mobile inference engines lower it:

- full and pointwise convolutions (stem, expansion, projection, head) run as a GEMM whose
  reduction depth ``K`` (input channels x kernel taps) and output channels ``N`` are processed in
  SIMD/register tiles, so the work is ``H_out * W_out * ceil_tk(K) * ceil_tn(C_out)`` (the tile
  pair is part of a target); the weights are re-packed on every call, a cost proportional to
  ``K * C_out`` that does not shrink with the image; ``gemm_macs_exact`` is the same work without
  the rounding (``H_out * W_out * K * C_out``): engines run the last, partial tile with narrower
  kernels, so a fit may cost part of the work per tile and part per actual multiply-accumulate;
- depthwise convolutions cost per tap (``H_out * W_out * C * k^2``, or per input element streamed
  through the taps, ``H_in * W_in * C * k^2``); kernel sizes have their own extra cost per tap
  (``dw_macs_k5``: kernels >= 5, ``dw_macs_k7``: kernels >= 7), cumulative so that with
  non-negative coefficients a larger kernel never costs less per tap, let alone per op;
- the classifier is a matrix-vector product bound by reading its weights;
- every op writes its output tensor (``activations``) and costs a fixed dispatch overhead (``layers``).

The ops MobileNetV3-style networks add (:data:`OPS`) have features of their own, which are 0 for a
MobileNetV2-family network, so a target fitted on MobileNetV2 rows predicts those exactly as before:

- squeeze-excitation (MobileNetV3 Section 5.3) is a global average pool over the block's hidden
  tensor, two 1x1 convs with bias on the pooled vector, the gate (hard sigmoid or sigmoid) and the
  channel-wise scale of the hidden tensor. The two convs are matrix-vector products
  (``matvec_weights``: one multiply-accumulate per weight read, ``2 * hidden * squeeze``); the pool
  and the scale are each one pass over the hidden tensor and the gate one over the pooled vector
  (``elementwise``); its 5 small ops (pool, 2 convs, gate, scale) have a fixed cost per module
  (``squeeze_excitations``: runtimes dispatch them differently from a conv + batch norm +
  activation, so not ``layers``), and it writes its two conv outputs (``activations``);
- h-swish (MobileNetV3 eq. (2)) is not fused into its conv as ReLU and ReLU6 are (TF-Lite has a
  separate ``HARD_SWISH`` op): one extra pass over every tensor it activates (``elementwise``);
  ReLU costs what ReLU6 costs;
- the MobileNetV3 head pools before its 1x1 "last" conv, which therefore is a matrix-vector product
  on the pooled vector (``matvec_weights``: ``head_channels * last_channels``), one more op.

Which of these ops a target has a basis for is part of the target (``LatencyTarget.ops``): a
target fitted or profiled without them refuses networks that use them rather than predicting
their cost as 0.

A target's latency is ``scale * sum_f coefficient_f * feature_f(spec)`` with every coefficient
``>= 0``. Every feature grows (weakly) with expansion, width, repeats, kernel size and resolution,
so every such model is monotone in them. Residual additions are not a feature: whether a block
has one flips when a stage's width changes, which would break monotonicity; their (small,
memory-bound) cost is absorbed by ``activations``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import nnls

from search_spaces.arch import (
    ArchSpec,
    BlockPlan,
    block_plan,
    conv_out_size,
    final_size,
)

# The one place the features are defined: their order is the order of every coefficient vector
# (target files store coefficients by name, so appending a feature keeps old files loadable, with 0).
FEATURES: tuple[str, ...] = (
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
)
FEATURE_DOCS: dict[str, str] = {
    "gemm_macs": "sum over stem/pointwise/head convs of H_out*W_out*ceil_tile_k(C_in*k^2)*ceil_tile_n(C_out)",
    "gemm_weights": "sum over the same convs of C_in*k^2*C_out (weights packed per call)",
    "dw_macs": "sum over depthwise convs of H_out*W_out*C*k^2",
    "dw_input": "sum over depthwise convs of H_in*W_in*C*k^2 (input streamed through the taps)",
    "dw_macs_k5": "dw_macs of the depthwise convs with k >= 5 (extra cost per tap of 5x5 and larger kernels)",
    "dw_macs_k7": "dw_macs of the depthwise convs with k >= 7 (extra cost per tap of 7x7 and larger kernels)",
    "fc_weights": "classifier weights C_last*num_classes (matrix-vector product)",
    "activations": "elements written by every conv and the classifier",
    "layers": "number of conv and linear ops (dispatch overhead)",
    "matvec_weights": (
        "weights of the 1x1 convs applied to a pooled vector: squeeze-excitation's two (2*hidden*squeeze) and "
        "the MobileNetV3 head's last conv (head_channels*last_channels); matrix-vector products"
    ),
    "elementwise": (
        "elements of the passes MobileNetV2 does not have: squeeze-excitation's pool and channel-wise scale "
        "(each H*W*hidden) and gate (hidden), and h-swish (every tensor it activates, once)"
    ),
    "squeeze_excitations": (
        "number of squeeze-excitation modules (the fixed cost of their 5 small ops: pool, 2 convs, gate, scale)"
    ),
    "gemm_macs_exact": "sum over the convs of gemm_macs of H_out*W_out*C_in*k^2*C_out (their work without tile rounding)",
}
# Ops beyond MobileNetV2's (ReLU6, no squeeze-excitation, the conv head) with a cost in the model;
# a target lists those it has a basis for. ReLU costs what ReLU6 costs and needs no basis.
OPS: tuple[str, ...] = ("squeeze_excitation", "hswish", "mbv3_head")
OP_NAMES: dict[str, str] = {
    "squeeze_excitation": "squeeze-excitation",
    "hswish": "h-swish",
    "mbv3_head": "the MobileNetV3 head",
}
FORMULA = "latency_ms = scale * sum_f coefficient_f * feature_f(spec), coefficients >= 0"
TILES: tuple[int, ...] = (1, 4, 8, 16, 32)
Tile = tuple[int, int]  # GEMM tiles: (reduction depth K, output channels N)
TILE_PAIRS: tuple[Tile, ...] = tuple((k, n) for k in TILES for n in TILES)
IMAGE_CHANNELS = 3
STEM_KERNEL = 3
_N = len(FEATURES)
# indices into a feature vector, in FEATURES order (tests/hw_models/test_predict.py checks the names)
(
    _GEMM_MACS, _GEMM_WEIGHTS, _DW_MACS, _DW_INPUT, _DW_K5, _DW_K7, _FC, _ACT, _LAYERS, _MATVEC, _ELEMENTWISE, _SE,
    _GEMM_EXACT,
) = range(_N)  # fmt: skip
_NO_V3_OPS = [0.0, 0.0, 0.0]  # matvec_weights, elementwise, squeeze_excitations of a MobileNetV2-family network


def spec_ops(spec: ArchSpec) -> tuple[str, ...]:
    """The ops of :data:`OPS` that ``spec`` uses, in that order."""
    if spec.mobilenet_v2_ops:
        return ()
    used = {
        "squeeze_excitation": any(s.se_ratio > 0 for s in spec.stages),
        "hswish": "hswish" in (spec.stem_activation, spec.head_activation, *(s.activation for s in spec.stages)),
        "mbv3_head": spec.head == "mbv3",
    }
    return tuple(op for op in OPS if used[op])


def as_tile(tile: int | Tile) -> Tile:
    """``(K tile, N tile)``; a single integer tiles the reduction depth only (the format of
    target files before output tiles existed)."""
    if isinstance(tile, tuple):
        return tile
    return (tile, 1)


def _ceil(value: int, tile: int) -> int:
    return -(-value // tile) * tile


def _gemm(acc: list[float], pixels: int, k: int, n: int, tile: Tile, activation: str = "relu6") -> None:
    acc[_GEMM_MACS] += pixels * _ceil(k, tile[0]) * _ceil(n, tile[1])
    acc[_GEMM_EXACT] += pixels * k * n
    acc[_GEMM_WEIGHTS] += k * n
    acc[_ACT] += pixels * n
    acc[_LAYERS] += 1
    if activation == "hswish":
        acc[_ELEMENTWISE] += pixels * n


def _matvec(acc: list[float], k: int, n: int, activation: str = "relu6") -> None:
    """A 1x1 conv on a pooled (1x1) tensor (the MobileNetV3 head's last conv)."""
    acc[_MATVEC] += k * n
    acc[_ACT] += n
    acc[_LAYERS] += 1
    if activation == "hswish":
        acc[_ELEMENTWISE] += n


def _squeeze_excite(acc: list[float], pixels: int, hidden: int, squeeze: int) -> None:
    acc[_MATVEC] += 2 * hidden * squeeze  # reduce (its ReLU fused) and expand
    acc[_ACT] += squeeze + hidden
    acc[_ELEMENTWISE] += 2 * pixels * hidden + hidden  # pool and scale over the hidden tensor, gate
    acc[_SE] += 1


def _depthwise(
    acc: list[float], in_pixels: int, out_pixels: int, channels: int, kernel: int, activation: str = "relu6"
) -> None:
    taps = kernel * kernel
    macs = out_pixels * channels * taps
    acc[_DW_MACS] += macs
    acc[_DW_INPUT] += in_pixels * channels * taps
    if kernel >= 5:
        acc[_DW_K5] += macs
    if kernel >= 7:
        acc[_DW_K7] += macs
    acc[_ACT] += out_pixels * channels
    acc[_LAYERS] += 1
    if activation == "hswish":
        acc[_ELEMENTWISE] += out_pixels * channels


def _block(acc: list[float], p: BlockPlan, tile: Tile) -> None:
    if p.hidden != p.in_channels:
        _gemm(acc, p.in_size * p.in_size, p.in_channels, p.hidden, tile, p.activation)
    out_pixels = p.out_size * p.out_size
    _depthwise(acc, p.in_size * p.in_size, out_pixels, p.hidden, p.kernel_size, p.activation)
    if p.se_channels:
        _squeeze_excite(acc, out_pixels, p.hidden, p.se_channels)
    _gemm(acc, out_pixels, p.hidden, p.out_channels, tile)


def _stem(acc: list[float], resolution: int, channels: int, stride: int, tile: Tile, activation: str) -> None:
    size = conv_out_size(resolution, stride)
    _gemm(acc, size * size, IMAGE_CHANNELS * STEM_KERNEL * STEM_KERNEL, channels, tile, activation)


def _classifier(acc: list[float], last_channels: int, num_classes: int, head_channels: int, activation: str) -> None:
    if head_channels:  # the MobileNetV3 head's last conv, on the pooled vector
        _matvec(acc, head_channels, last_channels, activation)
    acc[_FC] += last_channels * num_classes
    acc[_ACT] += num_classes
    acc[_LAYERS] += 1


def stem_features(
    resolution: int, stem_channels: int, stem_stride: int, tile: int | Tile, activation: str = "relu6"
) -> np.ndarray:
    acc = [0.0] * _N
    _stem(acc, resolution, stem_channels, stem_stride, as_tile(tile), activation)
    return np.array(acc)


def block_features(plan: BlockPlan, tile: int | Tile) -> np.ndarray:
    acc = [0.0] * _N
    _block(acc, plan, as_tile(tile))
    return np.array(acc)


def head_features(
    in_channels: int, channels: int, size: int, tile: int | Tile, activation: str = "relu6"
) -> np.ndarray:
    """The 1x1 conv after the last block, to ``channels`` (``last_channels``, or ``head_channels``
    of the MobileNetV3 head)."""
    acc = [0.0] * _N
    _gemm(acc, size * size, in_channels, channels, as_tile(tile), activation)
    return np.array(acc)


def classifier_features(
    last_channels: int, num_classes: int, head_channels: int = 0, activation: str = "relu6"
) -> np.ndarray:
    """The classifier, after the MobileNetV3 head's last conv (``head_channels`` -> ``last_channels``,
    with ``activation``) when ``head_channels`` is not 0; the pool is not costed (every network
    has one)."""
    acc = [0.0] * _N
    _classifier(acc, last_channels, num_classes, head_channels, activation)
    return np.array(acc)


def network_parts(spec: ArchSpec, tile: int | Tile) -> list[np.ndarray]:
    """The feature vectors of ``spec``'s parts: stem, every block, head, classifier."""
    size = final_size(spec)
    head_channels = spec.head_channels if spec.head == "mbv3" else 0
    parts = [stem_features(spec.resolution, spec.stem_channels, spec.stem_stride, tile, spec.stem_activation)]
    parts += [block_features(p, tile) for p in block_plan(spec)]
    parts.append(
        head_features(spec.stages[-1].channels, head_channels or spec.last_channels, size, tile, spec.head_activation)
    )
    parts.append(classifier_features(spec.last_channels, spec.num_classes, head_channels, spec.head_activation))
    return parts


def spec_features(spec: ArchSpec, tile: int | Tile) -> list[float]:
    """The feature vector (in ``FEATURES`` order) of a whole network: stem + blocks + head +
    classifier, each op as described in the module docstring.

    This runs for every prediction, so it is the per-part functions above inlined and evaluated
    per stage rather than per block: within a stage every block after the first is the same
    (input = output channels, stride 1), so its features are counted once and multiplied by
    ``repeats - 1``. The shapes follow :func:`search_spaces.arch.block_plan` (hidden width
    ``C_in * t``, no expansion conv when ``t = 1``, SAME padding); a test checks both agree.
    Any other network (per-block kernels or expansions, squeeze-excitation, h-swish, the
    MobileNetV3 head) goes block by block, as :func:`network_parts` adds up."""
    if not spec.plain:
        return _spec_features_per_block(spec, tile)
    tk, tn = as_tile(tile)
    size = -(-spec.resolution // spec.stem_stride)
    c_in = spec.stem_channels
    k0 = IMAGE_CHANNELS * STEM_KERNEL * STEM_KERNEL
    px = size * size
    gemm_macs = px * (-(-k0 // tk) * tk) * (-(-c_in // tn) * tn)
    gemm_exact = px * k0 * c_in
    gemm_weights = k0 * c_in
    activations = px * c_in
    layers = 1
    dw_macs = dw_input = dw_k5 = dw_k7 = 0
    for stage in spec.stages:
        t, c_out, kernel = stage.expansion, stage.channels, stage.kernel_size
        taps = kernel * kernel
        out_size = -(-size // stage.stride)
        px_in, px_out = size * size, out_size * out_size
        # first block: c_in -> c_out, the stage's stride
        hidden = c_in * t
        hidden_k, hidden_n = -(-hidden // tk) * tk, -(-hidden // tn) * tn
        out_n = -(-c_out // tn) * tn
        if t != 1:
            gemm_macs += px_in * (-(-c_in // tk) * tk) * hidden_n
            gemm_exact += px_in * c_in * hidden
            gemm_weights += c_in * hidden
            activations += px_in * hidden
            layers += 1
        macs = px_out * hidden * taps
        inp = px_in * hidden * taps
        gemm_macs += px_out * hidden_k * out_n
        gemm_exact += px_out * hidden * c_out
        gemm_weights += hidden * c_out
        activations += px_out * (hidden + c_out)
        layers += 2
        # the other repeats - 1 blocks: c_out -> c_out, stride 1, at out_size
        more = stage.repeats - 1
        if more:
            hidden = c_out * t
            hidden_k, hidden_n = -(-hidden // tk) * tk, -(-hidden // tn) * tn
            block_macs = px_out * hidden * taps
            macs += more * block_macs
            inp += more * block_macs
            if t != 1:
                gemm_macs += more * px_out * (-(-c_out // tk) * tk) * hidden_n
                gemm_exact += more * px_out * c_out * hidden
                gemm_weights += more * c_out * hidden
                activations += more * px_out * hidden
                layers += more
            gemm_macs += more * px_out * hidden_k * out_n
            gemm_exact += more * px_out * hidden * c_out
            gemm_weights += more * hidden * c_out
            activations += more * px_out * (hidden + c_out)
            layers += 2 * more
        dw_macs += macs
        dw_input += inp
        if kernel >= 5:
            dw_k5 += macs
            if kernel >= 7:
                dw_k7 += macs
        c_in, size = c_out, out_size
    n = spec.last_channels
    px = size * size
    gemm_macs += px * (-(-c_in // tk) * tk) * (-(-n // tn) * tn)
    gemm_exact += px * c_in * n
    gemm_weights += c_in * n
    activations += px * n + spec.num_classes
    return [
        float(gemm_macs),
        float(gemm_weights),
        float(dw_macs),
        float(dw_input),
        float(dw_k5),
        float(dw_k7),
        float(n * spec.num_classes),
        float(activations),
        float(layers + 2),
        *_NO_V3_OPS,
        float(gemm_exact),
    ]


def _spec_features_per_block(spec: ArchSpec, tile: int | Tile) -> list[float]:
    """:func:`network_parts` summed, accumulated in one list (this runs per prediction)."""
    tile = as_tile(tile)
    acc = [0.0] * _N
    _stem(acc, spec.resolution, spec.stem_channels, spec.stem_stride, tile, spec.stem_activation)
    for plan in block_plan(spec):
        _block(acc, plan, tile)
    head_channels = spec.head_channels if spec.head == "mbv3" else 0
    size = final_size(spec)
    _gemm(acc, size * size, spec.stages[-1].channels, head_channels or spec.last_channels, tile, spec.head_activation)
    _classifier(acc, spec.last_channels, spec.num_classes, head_channels, spec.head_activation)
    return acc


def feature_matrix(specs: Sequence[ArchSpec], tile: int | Tile) -> np.ndarray:
    return np.array([spec_features(s, tile) for s in specs], dtype=float)


def feature_mask(active: Sequence[str] | None) -> np.ndarray:
    """Boolean mask over ``FEATURES`` of the features a fit may use (``None``: all of them)."""
    if active is None:
        return np.ones(_N, dtype=bool)
    unknown = sorted(set(active) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {list(FEATURES)}")
    return np.array([f in active for f in FEATURES])


# ---- fitting ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class FitData:
    """What a latency model is fitted to: *absolute* rows (features ``x``, latency ``y`` in ms)
    and *ratio* rows, known only relative to a reference network timed in the same setup
    (``latency(ratio_x[j]) / latency(ratio_ref[j]) = ratio[j]``): published latencies from
    another lab's phone and runtime version differ by ~15% in absolute terms, but their ratio to
    a network both labs timed carries over."""

    x: np.ndarray
    y: np.ndarray
    ratio_x: np.ndarray | None = None
    ratio_ref: np.ndarray | None = None
    ratio: np.ndarray | None = None

    @classmethod
    def absolute(cls, x: Any, y: Any) -> FitData:
        return cls(np.asarray(x, dtype=float), np.asarray(y, dtype=float))

    @property
    def num_absolute(self) -> int:
        return len(self.y)

    @property
    def num_ratio(self) -> int:
        return 0 if self.ratio is None else len(self.ratio)

    def __len__(self) -> int:
        return self.num_absolute + self.num_ratio

    def subset(self, keep: np.ndarray) -> FitData:
        """The rows where ``keep`` (over absolute rows, then ratio rows) is true."""
        a, r = keep[: self.num_absolute], keep[self.num_absolute :]
        if not self.num_ratio:
            return FitData(self.x[a], self.y[a])
        return FitData(self.x[a], self.y[a], self.ratio_x[r], self.ratio_ref[r], self.ratio[r])

    def relative_errors(self, coef: np.ndarray) -> np.ndarray:
        """Signed relative error of every row: ``predicted / measured - 1`` for absolute rows,
        ``predicted ratio / published ratio - 1`` for ratio rows."""
        errors = self.x @ coef / self.y - 1
        if self.num_ratio:
            predicted = (self.ratio_x @ coef) / np.maximum(self.ratio_ref @ coef, 1e-300)
            errors = np.concatenate([errors, predicted / self.ratio - 1])
        return errors


def fit_nnls(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative coefficients minimising the sum of squared *relative* errors
    ``sum_i ((x_i . c - y_i) / y_i)^2`` (columns are rescaled for conditioning)."""
    return fit_data(FitData.absolute(x, y))


def fit_data(data: FitData, active: np.ndarray | None = None, balance: bool = False, iterations: int = 3) -> np.ndarray:
    """Non-negative coefficients minimising the squared relative errors of
    :meth:`FitData.relative_errors` (only the ``active`` features; the others are 0).

    A ratio row ``x . c / (ref . c) = r`` is linear once multiplied out: its residual
    ``(x - r ref) . c / (r ref . c)`` is the relative ratio error, with the reference's
    predicted latency in the denominator taken from the previous iteration (starting from the
    mean reference latency implied by the absolute rows). ``balance=True`` weighs the two kinds
    of rows equally in total (each kind is one source of evidence), instead of row by row."""
    x, y = np.asarray(data.x, dtype=float), np.asarray(data.y, dtype=float)
    mask = np.ones(x.shape[1], dtype=bool) if active is None else np.asarray(active, dtype=bool)
    blocks = [x[:, mask]]
    if data.num_ratio:
        blocks += [data.ratio_x[:, mask], data.ratio_ref[:, mask]]
    scale = np.abs(np.vstack(blocks)).max(axis=0)
    scale[scale == 0] = 1.0
    a_abs = (x[:, mask] / scale) / y[:, None]
    w_abs, w_ratio = 1.0, 1.0
    if balance and data.num_ratio and len(y):
        w_abs, w_ratio = 1.0 / np.sqrt(len(y)), 1.0 / np.sqrt(data.num_ratio)
    coef = np.zeros(x.shape[1])
    if not data.num_ratio:
        sub, _ = nnls(a_abs, np.ones(len(y)), maxiter=50 * x.shape[1])
        coef[mask] = sub / scale
        return coef
    rx, ref, r = data.ratio_x[:, mask] / scale, data.ratio_ref[:, mask] / scale, data.ratio
    ref_ms = np.full(len(r), float(np.median(y)) if len(y) else 1.0)
    for _ in range(iterations):
        a_ratio = (rx - r[:, None] * ref) / (r * ref_ms)[:, None]
        a = np.vstack([w_abs * a_abs, w_ratio * a_ratio])
        b = np.concatenate([np.full(len(y), w_abs), np.zeros(len(r))])
        sub, _ = nnls(a, b, maxiter=50 * x.shape[1])
        predicted = ref @ sub
        if not np.all(predicted > 0):
            break
        ref_ms = predicted
    coef[mask] = sub / scale
    return coef


def _folds(n: int, folds: int | None) -> np.ndarray:
    folds = n if folds is None or folds >= n else folds
    return np.arange(n) % folds


def cv_data_errors(
    data: FitData, folds: int | None = None, active: np.ndarray | None = None, balance: bool = False
) -> np.ndarray:
    """Signed relative error of each row (absolute rows, then ratio rows) when the model is
    fitted without it: leave-one-out (``folds=None``), or ``folds`` interleaved folds."""
    n = len(data)
    fold_of = _folds(n, folds)
    errors = np.empty(n)
    for k in np.unique(fold_of):
        out = fold_of == k
        coef = fit_data(data.subset(~out), active, balance)
        errors[out] = data.subset(out).relative_errors(coef)
    return errors


def cv_relative_errors(x: np.ndarray, y: np.ndarray, folds: int | None = None) -> np.ndarray:
    """Signed relative error of each row when the model is fitted without it: leave-one-out
    (``folds=None``), or ``folds`` interleaved folds for large tables."""
    return cv_data_errors(FitData.absolute(x, y), folds)


def loo_relative_errors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed relative error of each row when the model is fitted to all the other rows."""
    return cv_relative_errors(x, y, None)


def cv_score(errors: np.ndarray, num_absolute: int, balance: bool) -> float:
    """Mean absolute error of cross-validated rows; ``balance``: the mean of the two kinds' means."""
    e = np.abs(errors)
    if balance and 0 < num_absolute < len(e):
        return float(0.5 * (e[:num_absolute].mean() + e[num_absolute:].mean()))
    return float(e.mean())


LOO_MAX_ROWS = 60  # above this, 10-fold cross-validation replaces leave-one-out


def fit_matrices(
    mats: dict[Any, np.ndarray] | dict[Any, FitData],
    latencies_ms: Sequence[float] | None = None,
    active: Sequence[str] | None = None,
    balance: bool = False,
) -> tuple[np.ndarray, Tile, dict[str, Any]]:
    """Fit coefficients for the data computed with each candidate GEMM tile (keys of ``mats``:
    ``(K, N)`` pairs or plain K tiles; values: feature matrices whose latencies are
    ``latencies_ms``, or :class:`FitData`), choosing the tile by cross-validated error
    (leave-one-out up to ``LOO_MAX_ROWS`` rows, else 10-fold). ``active`` restricts the
    features the fit may use; ``balance`` weighs absolute and ratio rows equally in the fit and
    in the error that chooses the tile.

    The reported ``cv_mape_pct`` is *nested*: for every held-out row the tile is chosen again on
    the remaining rows only, so the choice of tile does not flatter the figure.
    Returns ``(coefficients, tile, fit_report)``.
    """
    data = {as_tile(t): (m if isinstance(m, FitData) else FitData.absolute(m, latencies_ms)) for t, m in mats.items()}
    mask = feature_mask(active)
    first = next(iter(data.values()))
    n, n_abs = len(first), first.num_absolute
    folds = None if n <= LOO_MAX_ROWS else 10
    tiles = sorted(data)

    def score(t: Tile, rows: np.ndarray) -> float:
        inner_folds = None if folds is None else min(folds, int(rows.sum()))
        sub = data[t].subset(rows)
        return cv_score(cv_data_errors(sub, inner_folds, mask, balance), sub.num_absolute, balance)

    everything = np.ones(n, dtype=bool)
    tile = min(tiles, key=lambda t: (score(t, everything), t))
    coef = fit_data(data[tile], mask, balance)
    nested = np.empty(n)
    fold_of = _folds(n, folds)
    for f in np.unique(fold_of):
        out = fold_of == f
        inner = min(tiles, key=lambda t: (score(t, ~out), t)) if len(tiles) > 1 else tile
        c = fit_data(data[inner].subset(~out), mask, balance)
        nested[out] = data[inner].subset(out).relative_errors(c)
    train = data[tile].relative_errors(coef)
    report: dict[str, Any] = {
        "rows": int(n),
        "cv": "leave-one-out" if folds is None else f"{folds}-fold",
        "cv_mape_pct": round(100 * cv_score(nested, n_abs, False), 3),
        "cv_max_ape_pct": round(float(100 * np.max(np.abs(nested))), 3),
        "train_mape_pct": round(float(100 * np.mean(np.abs(train))), 3),
    }
    if first.num_ratio:
        report["absolute_rows"] = int(n_abs)
        report["ratio_rows"] = int(first.num_ratio)
        report["cv_mape_pct_absolute_rows"] = round(float(100 * np.mean(np.abs(nested[:n_abs]))), 3)
        report["cv_mape_pct_ratio_rows"] = round(float(100 * np.mean(np.abs(nested[n_abs:]))), 3)
        report["cv_max_ape_pct_ratio_rows"] = round(float(100 * np.max(np.abs(nested[n_abs:]))), 3)
        report["cv_errors_pct"] = [round(float(100 * e), 2) for e in nested]
    return coef, tile, report


def fit_features(
    specs: Sequence[ArchSpec], latencies_ms: Sequence[float], tiles: Sequence[int | Tile] = TILE_PAIRS
) -> tuple[np.ndarray, Tile, dict[str, Any]]:
    """:func:`fit_matrices` on whole networks with measured (or published) latencies."""
    return fit_matrices({as_tile(t): feature_matrix(specs, t) for t in tiles}, latencies_ms)


__all__ = [
    "FEATURES",
    "FEATURE_DOCS",
    "FORMULA",
    "OPS",
    "OP_NAMES",
    "TILES",
    "TILE_PAIRS",
    "FitData",
    "Tile",
    "as_tile",
    "block_features",
    "classifier_features",
    "cv_data_errors",
    "cv_relative_errors",
    "feature_mask",
    "feature_matrix",
    "fit_data",
    "fit_features",
    "fit_matrices",
    "fit_nnls",
    "head_features",
    "loo_relative_errors",
    "network_parts",
    "spec_features",
    "spec_ops",
    "stem_features",
]
