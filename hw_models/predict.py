"""Predicted latency: ``predict_latency_ms(spec, target="pixel")``, and the fit of the ``pixel`` target.

The ``pixel`` target is float TF-Lite on the big core of a Pixel 1, the device of the MobileNetV2
tables. Its op-model coefficients (see :mod:`hw_models.opmodel`) are fitted to the 16 rows of
``hw_models/reference/mobilenet_v2_pixel1.csv`` (MobileNetV2 width x resolution, absolute ms) and
the 4 networks of ``hw_models/reference/nas_networks_pixel1.csv`` (ProxylessNAS: per-block 3/5/7
kernels, expansion 3 and 6), the latter as ratios to the MobileNetV2 1.0@224 latency their own
source measured, and nothing else. Other published phone latencies are kept aside to check that
the model generalises: none of them is in this repository, so nothing is fitted, tuned or tested on
them (``mobilenet_v2_pixel1_heldout.csv`` holds the other TF-slim rows' MAdds and parameters only).

No published phone latency of a network with squeeze-excitation, h-swish or the MobileNetV3 head
may be fitted on, so the coefficients of their features (``matvec_weights``, ``elementwise``) are
*derived* from fitted ones, not fitted, and not validated on a phone (:data:`PIXEL_DERIVED`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import sys
from collections.abc import Sequence
from importlib import resources

import numpy as np

from invres_utils.atomic_files import check_writable_file
from invres_utils.cli import OneLineParser
from search_spaces.arch import ArchSpec, parse_arch
from search_spaces.mobilenet import mobilenet_v2

from .analytic import count_madds
from .opmodel import FEATURES, OPS, TILE_PAIRS, FitData, cv_data_errors, feature_matrix, fit_matrices
from .targets import LatencyTarget, known_targets, load_target

PIXEL_REFERENCE = "mobilenet_v2_pixel1.csv"
PIXEL_NETWORKS = "nas_networks_pixel1.csv"
# The features the published rows can identify. Depth is fixed within the TF-slim family and the
# other networks are too few to separate a per-layer overhead or output traffic from the GEMM and
# depthwise terms, so those coefficients stay 0.
PIXEL_FEATURES: tuple[str, ...] = (
    "gemm_macs",
    "gemm_macs_exact",
    "gemm_weights",
    "dw_macs",
    "dw_input",
    "dw_macs_k5",
    "dw_macs_k7",
    "fc_weights",
)
# Features of ops no fitting row has: each coefficient is the sum of the fitted coefficients of the
# work the runtime does for it, and why.
PIXEL_DERIVED: dict[str, tuple[dict[str, int], str]] = {
    "matvec_weights": (
        {"gemm_macs": 1, "gemm_macs_exact": 1, "gemm_weights": 1},
        "a 1x1 conv on a pooled vector (squeeze-excitation's two, the MobileNetV3 head's last conv) is a CONV_2D op "
        "with one output pixel in the TF-Lite graph, so each weight costs what the fit gives a 1x1 conv's weight "
        "at one pixel: one multiply-accumulate (gemm_macs and gemm_macs_exact) plus its packing (gemm_weights), "
        "tile rounding aside. "
        "Not the classifier's fc_weights coefficient: the classifier (a FULLY_CONNECTED op) has the same size in "
        "almost every fitting row, so the fit cannot identify its cost (it comes out small or 0)",
    ),
    "elementwise": (
        {"dw_macs": 1, "dw_input": 1},
        "squeeze-excitation's channel-wise scale is a 1x1 depthwise conv whose weights are the gate, and its global "
        "pool a depthwise conv whose kernel covers the whole map (one tap per input element); an h-swish pass "
        "(TF-Lite's HARD_SWISH op: add, clamp, two multiplies per element) is taken to cost the same one-tap pass. "
        "So each element costs one depthwise tap (dw_macs + dw_input). The fitted depthwise cost per tap is small "
        "(depthwise work is nearly proportional to pointwise work in the fitting rows, which absorb part of it), "
        "so these passes are probably under-costed",
    ),
    "squeeze_excitations": (
        {"layers": 5},
        "a squeeze-excitation module runs 5 small ops (MEAN, two CONV_2D, the gate, MUL), each at the fit's fixed "
        "cost per op (layers); the fit cannot identify a per-op overhead and leaves it at 0, so this is 0 too",
    ),
}


def predict_latency_ms(
    spec: ArchSpec | str | os.PathLike[str], target: str | os.PathLike[str] | LatencyTarget = "pixel"
) -> float:
    """Predicted latency (ms, batch 1) of ``spec`` on ``target``: a shipped name (``"pixel"``,
    ``"host"``), a name saved by ``hw_models.profile``/``hw_models.calibrate``, a path to a target
    JSON, or a loaded :class:`LatencyTarget`. Parsed targets and results are cached."""
    if not isinstance(spec, ArchSpec):
        spec = parse_arch(spec)
    return load_target(target).predict(spec)


def reference_rows(name: str = PIXEL_REFERENCE) -> list[dict[str, str]]:
    """Rows of a CSV shipped in ``hw_models/reference``."""
    with (resources.files("hw_models") / "reference" / name).open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _pixel_rows(name: str) -> tuple[list[ArchSpec], list[float]]:
    rows = reference_rows(name)
    specs = [mobilenet_v2(float(r["width_mult"]), int(r["resolution"])) for r in rows]
    return specs, [float(r["pixel1_ms"]) for r in rows]


def pixel_reference_data() -> tuple[list[ArchSpec], list[float]]:
    """The fitting data of the ``pixel`` target: MobileNetV2 (width, resolution) and Pixel 1 ms."""
    return _pixel_rows(PIXEL_REFERENCE)


def pixel_network_data() -> tuple[list[str], list[ArchSpec], list[float], list[ArchSpec]]:
    """The searched networks with published Pixel 1 latency (:data:`PIXEL_NETWORKS`): names, specs,
    latency ratios to MobileNetV2 1.0@224 as measured by the same source, and that reference
    network (1000 classes, as the searched networks)."""
    rows = reference_rows(PIXEL_NETWORKS)
    names = [r["name"] for r in rows]
    specs = [parse_arch(r["arch"]) for r in rows]
    ratios = [float(r["pixel1_ms"]) / float(r["mobilenet_v2_ms_same_source"]) for r in rows]
    refs = [mobilenet_v2(1.0, 224, num_classes=s.num_classes) for s in specs]
    return names, specs, ratios, refs


def pixel_fit_data(tile, columns=None) -> FitData:
    """Absolute rows (TF-slim table) and ratio rows (searched networks) of the ``pixel`` fit, with
    the op-model features for ``tile`` (or ``columns(specs)`` for another feature matrix)."""
    specs, latencies = pixel_reference_data()
    _, net_specs, ratios, refs = pixel_network_data()
    features = columns or (lambda ss: feature_matrix(ss, tile))
    return FitData(features(specs), np.array(latencies), features(net_specs), features(refs), np.array(ratios))


def madds_rule_errors() -> np.ndarray:
    """Leave-one-out signed errors of "latency proportional to MAdds" on the ``pixel`` fitting
    rows (absolute rows: one factor fitted to the others; ratio rows: the MAdds ratio)."""
    data = pixel_fit_data(None, lambda ss: np.array([[float(count_madds(s))] for s in ss]))
    return cv_data_errors(data, None, None, balance=True)


def mape_pct(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error: ``100 * mean(|predicted - measured| / measured)``."""
    p, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != y.shape or not y.size:
        raise ValueError(f"need as many predictions as measurements (at least one), but got {p.size} and {y.size}")
    return float(100 * np.mean(np.abs(p - y) / y))


def fit_pixel_target(date: str | None = None) -> LatencyTarget:
    """Fit the ``pixel`` target from the in-repo reference tables (deterministic but for ``date``)."""
    specs = pixel_reference_data()[0]
    names, net_specs, _, _ = pixel_network_data()
    coef, tile, report = fit_matrices({t: pixel_fit_data(t) for t in TILE_PAIRS}, active=PIXEL_FEATURES, balance=True)
    n_abs = report["absolute_rows"]
    madds = madds_rule_errors()
    for feature, (units, _) in PIXEL_DERIVED.items():
        coef[FEATURES.index(feature)] = sum(n * coef[FEATURES.index(u)] for u, n in units.items())
    draft = LatencyTarget.from_fit("pixel", coef, tile, OPS)
    fit = {
        **report,
        "metric": (
            "leave-one-out absolute percentage error (ratio rows: error of the predicted ratio to MobileNetV2 "
            "1.0@224), nested over the tile choice"
        ),
        "cv_rows": _row_labels(),
        "madds_rule": {
            "what": "latency proportional to MAdds, on the same rows (leave-one-out; ratio rows: the MAdds ratio)",
            "cv_mape_pct_absolute_rows": round(float(100 * np.mean(np.abs(madds[:n_abs]))), 3),
            "cv_mape_pct_ratio_rows": round(float(100 * np.mean(np.abs(madds[n_abs:]))), 3),
            "cv_errors_pct": [round(float(100 * e), 2) for e in madds],
        },
    }
    return draft.renamed(
        "pixel",
        description=(
            "Float TF-Lite on the big core of a Google Pixel 1, the device of the MobileNetV2 tables. "
            "Per-op model fitted to the published MobileNetV2 width/resolution latencies and to searched "
            "networks with 3x3/5x5/7x7 kernels and expansion 3/6 (as ratios to MobileNetV2 of their own source). "
            "The costs of squeeze-excitation, h-swish and the MobileNetV3 head are derived from the fitted "
            "coefficients (provenance.derived_features), not fitted, and not validated on a phone."
        ),
        provenance={
            "device": "Google Pixel 1, big core (Snapdragon 821)",
            "runtime": "TF-Lite float32, 1 thread",
            "measured_by": (
                "tensorflow/models research/slim/nets/mobilenet README (2018); ProxylessNAS (Cai et al., ICLR 2019) "
                "paper and README"
            ),
            "fitted_on": (
                f"hw_models/reference/{PIXEL_REFERENCE} ({len(specs)} rows, MobileNetV2 width x resolution, ms) and "
                f"hw_models/reference/{PIXEL_NETWORKS} ({len(net_specs)} networks: {', '.join(names)}; "
                "latency ratio to MobileNetV2 1.0@224 of the same source)"
            ),
            "features": list(PIXEL_FEATURES),
            "derived_features": {
                feature: f"{_weighted_sum(units)} (not fitted, not validated on a phone): {why}"
                for feature, (units, why) in PIXEL_DERIVED.items()
            },
            "date": date or _dt.date.today().isoformat(),
            "method": (
                "non-negative least squares on relative error (ratio rows on the relative error of the ratio), "
                "the two sources weighted equally; features limited to the ones listed; GEMM tiles (K, N) chosen "
                f"by leave-one-out among {len(TILE_PAIRS)} pairs of {sorted({t for t, _ in TILE_PAIRS})}"
            ),
        },
        fit=fit,
    )


def _weighted_sum(units: dict[str, int]) -> str:
    return " + ".join(f"{n} x {u}" if n != 1 else u for u, n in units.items()) + " coefficient(s)"


def _row_labels() -> list[str]:
    labels = [f"mobilenet_v2 {r['width_mult']}@{r['resolution']}" for r in reference_rows(PIXEL_REFERENCE)]
    return labels + [f"{name} (ratio)" for name in pixel_network_data()[0]]


def describe_target(target: LatencyTarget) -> str:
    """One line: name, device, runtime, date, kind of model and its error."""
    prov, fit = target.provenance, target.fit
    if target.lookup is None:
        kind = "per-op model"
        error = fit.get("cv_mape_pct")
        error_text = f"; cross-validated MAPE {error:.1f}%" if isinstance(error, int | float) else ""
    else:
        kind = "lookup table + per-op fallback"
        e2e = fit.get("overhead", {}).get("end_to_end_mape_pct_on_those_networks")
        error_text = f"; end-to-end MAPE {e2e:.1f}% on the profiling networks" if isinstance(e2e, int | float) else ""
    return (
        f"{target.name}: {prov.get('device', '?')}; {prov.get('runtime', '?')}; {prov.get('date', '?')}; {kind}"
        + error_text
        + (f" [{target.source}]" if target.source else "")
    )


def main(argv: list[str] | None = None) -> int:
    from .report import resolve_arch  # the report CLI's --arch conventions

    parser = OneLineParser(
        prog="python -m hw_models.predict", description="Predicted latency of an architecture on a target."
    )
    parser.add_argument("--arch", default=None, help="'mobilenet_v2', an arch.json path or a compact string")
    parser.add_argument("--width-mult", type=float, default=1.0, help="width multiplier for --arch mobilenet_v2")
    parser.add_argument("--resolution", type=int, default=None, help="override the input resolution")
    parser.add_argument("--target", default="pixel", help="target name (see --list) or path to a target .json")
    parser.add_argument("--breakdown", action="store_true", help="per-part latencies and where each comes from")
    parser.add_argument("--list", action="store_true", help="list the known targets and their provenance")
    parser.add_argument(
        "--write-pixel-target",
        metavar="PATH",
        default=None,
        help="refit the pixel target from hw_models/reference and write it (maintainers: hw_models/targets/pixel.json)",
    )
    args = parser.parse_args(argv)
    try:
        if args.write_pixel_target:
            check_writable_file(args.write_pixel_target)  # before the fit
            target = fit_pixel_target()
            target.save(args.write_pixel_target)
            print(f"wrote {args.write_pixel_target}: {describe_target(target)}")
            return 0
        if args.list:
            for name in known_targets():
                print(describe_target(load_target(name)))
            return 0
        if args.arch is None:
            raise ValueError("pass --arch (or --list)")
        spec = resolve_arch(args.arch, args.width_mult, args.resolution)
        target = load_target(args.target)
        if args.breakdown:
            for part, ms, source in target.breakdown(spec):
                print(f"{part:>12s} {ms:10.4f} ms  ({source})")
        print(f"{target.predict(spec):.4f} ms on {target.name} for {spec}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "describe_target",
    "fit_pixel_target",
    "mape_pct",
    "pixel_reference_data",
    "predict_latency_ms",
    "reference_rows",
]


if __name__ == "__main__":
    sys.exit(main())
