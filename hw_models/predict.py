"""Predicted latency: ``predict_latency_ms(spec, target="pixel")``, and the fit of the ``pixel`` target.

The ``pixel`` target is float TF-Lite on the big core of a Pixel 1, the device of the MobileNetV2
tables. Its op-model coefficients (see :mod:`hw_models.opmodel`) are fitted to the 16 rows of
``hw_models/reference/mobilenet_v2_pixel1.csv`` and nothing else.
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import sys
from collections.abc import Sequence
from importlib import resources

import numpy as np

from invres_utils.cli import OneLineParser
from search_spaces.arch import ArchSpec, parse_arch
from search_spaces.mobilenet import mobilenet_v2

from .opmodel import TILES, fit_features
from .targets import LatencyTarget, known_targets, load_target

PIXEL_REFERENCE = "mobilenet_v2_pixel1.csv"
PIXEL_HELDOUT = "mobilenet_v2_pixel1_heldout.csv"


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


def pixel_heldout_data() -> tuple[list[ArchSpec], list[float]]:
    """The held-out published rows (``hw_models/reference/mobilenet_v2_pixel1_heldout.csv``): the
    same table as the fitting data, never fitted; the out-of-sample check of the ``pixel`` target."""
    return _pixel_rows(PIXEL_HELDOUT)


def mape_pct(predicted: Sequence[float], measured: Sequence[float]) -> float:
    """Mean absolute percentage error: ``100 * mean(|predicted - measured| / measured)``."""
    p, y = np.asarray(predicted, dtype=float), np.asarray(measured, dtype=float)
    if p.shape != y.shape or not y.size:
        raise ValueError(f"need as many predictions as measurements (at least one), but got {p.size} and {y.size}")
    return float(100 * np.mean(np.abs(p - y) / y))


def heldout_mape_pct(target: str | os.PathLike[str] | LatencyTarget = "pixel") -> float:
    """MAPE of ``target`` on the held-out published Pixel 1 rows (:func:`pixel_heldout_data`)."""
    loaded = load_target(target)
    specs, latencies = pixel_heldout_data()
    return mape_pct([loaded.predict(s) for s in specs], latencies)


def fit_pixel_target(date: str | None = None) -> LatencyTarget:
    """Fit the ``pixel`` target from the in-repo reference table (deterministic but for ``date``)."""
    specs, latencies = pixel_reference_data()
    coef, tile, report = fit_features(specs, latencies, TILES)
    return LatencyTarget(
        name="pixel",
        description=(
            "Float TF-Lite on the big core of a Google Pixel 1, the device of the MobileNetV2 tables. "
            "Per-op model fitted to the published MobileNetV2 width/resolution latencies."
        ),
        coefficients=tuple(float(c) for c in coef),
        tile=tile,
        provenance={
            "device": "Google Pixel 1, big core (Snapdragon 821)",
            "runtime": "TF-Lite float32, 1 thread",
            "measured_by": "tensorflow/models research/slim/nets/mobilenet README (2018)",
            "fitted_on": f"hw_models/reference/{PIXEL_REFERENCE} ({len(specs)} rows, MobileNetV2 width x resolution)",
            "date": date or _dt.date.today().isoformat(),
            "method": "non-negative least squares on relative error; GEMM tile chosen by leave-one-out among "
            + str(list(TILES)),
        },
        fit={**report, "metric": "leave-one-out absolute percentage error, nested over the tile choice"},
    )


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
    "heldout_mape_pct",
    "mape_pct",
    "pixel_heldout_data",
    "pixel_reference_data",
    "predict_latency_ms",
    "reference_rows",
]


if __name__ == "__main__":
    sys.exit(main())
