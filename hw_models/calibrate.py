"""``python -m hw_models.calibrate measurements.csv --name myphone``: a latency target for your device.

Reads a CSV of architectures you measured on your device and their latencies, one per row:
``arch,latency_ms`` (a header row naming the columns ``arch`` and ``latency_ms`` is optional;
``arch`` is a compact architecture string or a path to an ``arch.json``, relative paths are
resolved next to the CSV; extra columns are ignored; lines starting with ``#`` are comments).
Bad rows are reported with their line numbers and skipped. Then it fits the target model
(``--mode``: ``scale`` = one factor on the ``--base`` target's prediction; ``refit`` = all per-op
coefficients, non-negative; ``auto`` = the one with the lower leave-one-out error, refit only from
8 rows up), reports the leave-one-out error and saves the target where ``--target NAME`` finds it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from invres_utils.atomic_files import check_writable_file
from invres_utils.cli import OneLineParser
from search_spaces.arch import ArchSpec, parse_arch

from .opmodel import FEATURES, fit_features
from .targets import SHIPPED, LatencyTarget, check_target_name, load_target, user_target_dir

MODES: tuple[str, ...] = ("auto", "scale", "refit")
MIN_ROWS = 3
MIN_REFIT_ROWS = 8
ARCH_COLUMNS = ("arch", "architecture", "spec", "config")
LATENCY_COLUMNS = ("latency_ms", "latency", "ms", "time_ms")


@dataclass(frozen=True)
class Measurements:
    specs: tuple[ArchSpec, ...]
    latencies_ms: tuple[float, ...]
    lines: tuple[int, ...]  # CSV line number of each valid row
    problems: tuple[str, ...]  # "line N: what is wrong" for every skipped row


def read_measurements(path: str | os.PathLike[str]) -> Measurements:
    """Parse a measurements CSV; rows that cannot be used are listed in ``problems``, not raised."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot read measurements file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"measurements file {path} is not UTF-8 text; save it as CSV") from None
    rows = [
        (i, row)
        for i, row in enumerate(csv.reader(text.splitlines()), start=1)
        if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")
    ]
    if not rows:
        raise ValueError(f"measurements file {path} has no rows; expected 'arch,latency_ms' lines")
    arch_col, lat_col = 0, 1
    header = [c.strip().lower() for c in rows[0][1]]
    if any(h in ARCH_COLUMNS for h in header) or any(h in LATENCY_COLUMNS for h in header):
        try:
            arch_col = next(header.index(h) for h in ARCH_COLUMNS if h in header)
            lat_col = next(header.index(h) for h in LATENCY_COLUMNS if h in header)
        except StopIteration:
            raise ValueError(
                f"measurements file {path}: the header {rows[0][1]} must name an architecture column "
                f"{ARCH_COLUMNS} and a latency column {LATENCY_COLUMNS}"
            ) from None
        rows = rows[1:]
    specs, latencies, lines, problems = [], [], [], []
    for line, row in rows:
        if len(row) <= max(arch_col, lat_col):
            problems.append(f"line {line}: expected at least {max(arch_col, lat_col) + 1} columns, got {len(row)}")
            continue
        arch_text, lat_text = row[arch_col].strip(), row[lat_col].strip()
        try:
            latency = float(lat_text)
        except ValueError:
            problems.append(f"line {line}: latency {lat_text!r} is not a number")
            continue
        if not math.isfinite(latency) or latency <= 0:
            problems.append(f"line {line}: latency must be a positive number of milliseconds, got {lat_text!r}")
            continue
        candidate = arch_text
        if arch_text.endswith(".json") and not os.path.isabs(arch_text):
            beside = path.parent / arch_text
            candidate = str(beside) if beside.exists() or not os.path.exists(arch_text) else arch_text
        try:
            spec = parse_arch(candidate)
        except ValueError as e:
            problems.append(f"line {line}: cannot parse architecture {arch_text!r}: {e}")
            continue
        specs.append(spec)
        latencies.append(latency)
        lines.append(line)
    return Measurements(tuple(specs), tuple(latencies), tuple(lines), tuple(problems))


def _scale_fit(base: np.ndarray, y: np.ndarray) -> float:
    """The factor minimising the squared relative error of ``s * base`` against ``y``."""
    r = base / y
    return float(r.sum() / (r * r).sum())


def _scale_loo(base: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = len(y)
    errors = np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        s = _scale_fit(base[keep], y[keep])
        errors[i] = (s * base[i] - y[i]) / y[i]
    return errors


def calibrate_target(
    specs: Sequence[ArchSpec],
    latencies_ms: Sequence[float],
    name: str,
    base: str | os.PathLike[str] | LatencyTarget = "pixel",
    mode: str = "auto",
    provenance: dict[str, Any] | None = None,
) -> LatencyTarget:
    """Fit a target to measured ``(spec, latency)`` pairs; see the module docstring for ``mode``."""
    check_target_name(name)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, but got {mode!r}")
    n = len(specs)
    if n != len(latencies_ms):
        raise ValueError(f"got {n} architectures but {len(latencies_ms)} latencies")
    if n < MIN_ROWS:
        raise ValueError(f"need at least {MIN_ROWS} valid measurements to calibrate, but got {n}")
    if mode == "refit" and n < MIN_REFIT_ROWS:
        raise ValueError(
            f"mode 'refit' fits {len(FEATURES)} non-negative coefficients and needs at least {MIN_REFIT_ROWS} "
            f"valid measurements, but got {n}; use mode 'scale'"
        )
    base_target = load_target(base)
    y = np.asarray(latencies_ms, dtype=float)
    base_pred = np.array([base_target.predict(s) for s in specs])
    scale = _scale_fit(base_pred, y)
    scale_loo = _scale_loo(base_pred, y)
    candidates: dict[str, tuple[float, LatencyTarget]] = {}
    if mode in ("auto", "scale"):
        fit = {
            "mode": "scale",
            "rows": n,
            "cv": "leave-one-out",
            "cv_mape_pct": round(float(100 * np.mean(np.abs(scale_loo))), 3),
            "cv_max_ape_pct": round(float(100 * np.max(np.abs(scale_loo))), 3),
            "train_mape_pct": round(float(100 * np.mean(np.abs(scale * base_pred - y) / y)), 3),
            "scale_on_base": scale,
        }
        target = base_target.renamed(name, scale=base_target.scale * scale, fit=fit)
        candidates["scale"] = (fit["cv_mape_pct"], target)
    if mode == "refit" or (mode == "auto" and n >= MIN_REFIT_ROWS):
        coef, tile, report = fit_features(specs, y)
        fit = {"mode": "refit", **report}
        target = LatencyTarget(
            name=name, coefficients=tuple(float(c) for c in coef), tile=tile[0], tile_n=tile[1], provenance={}, fit=fit
        )
        candidates["refit"] = (report["cv_mape_pct"], target)
    chosen = min(candidates, key=lambda k: candidates[k][0])
    target = candidates[chosen][1]
    fit = {
        **target.fit,
        "metric": "leave-one-out absolute percentage error over the measurements (refit: nested over the tile)",
        "alternatives_cv_mape_pct": {k: v[0] for k, v in candidates.items()},
        "base_target": base_target.name,
        "base_mape_pct_before_calibration": round(float(100 * np.mean(np.abs(base_pred - y) / y)), 3),
    }
    return target.renamed(
        name,
        fit=fit,
        description=f"Calibrated from {n} measurements ({chosen}) on top of the {base_target.name!r} target.",
        provenance={
            "device": f"user device {name!r}",
            "runtime": "as measured by the user",
            "date": _dt.datetime.now().isoformat(timespec="seconds"),
            "method": f"hw_models.calibrate, mode {chosen}",
            **(provenance or {}),
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m hw_models.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument("measurements", help="CSV of arch,latency_ms rows measured on your device")
    parser.add_argument("--name", required=True, help="name to save the target under (then use --target NAME)")
    parser.add_argument("--base", default="pixel", help="target whose model is calibrated (name or path)")
    parser.add_argument("--mode", default="auto", choices=MODES)
    parser.add_argument("--device", default=None, help="device description for the provenance")
    parser.add_argument("--runtime", default=None, help="runtime description for the provenance (e.g. TFLite 2.16)")
    parser.add_argument("--out", default=None, help="output path (default: <user target dir>/<name>.json)")
    parser.add_argument(
        "--force", action="store_true", help=f"allow a --name of a shipped target ({', '.join(SHIPPED)}), shadowing it"
    )
    args = parser.parse_args(argv)
    try:
        check_target_name(args.name)
        if args.name in SHIPPED and not args.force:
            raise ValueError(
                f"--name {args.name} is a shipped target and saving under it would shadow it; "
                "choose another name or pass --force"
            )
        out = Path(args.out) if args.out else user_target_dir() / f"{args.name}.json"
        check_writable_file(out)
        data = read_measurements(args.measurements)
        for problem in data.problems:
            print(f"warning: skipped {problem}", file=sys.stderr)
        if len(data.specs) < MIN_ROWS:
            raise ValueError(
                f"{args.measurements} has {len(data.specs)} usable rows ({len(data.problems)} skipped); "
                f"calibration needs at least {MIN_ROWS}"
            )
        provenance: dict[str, Any] = {"measurements": os.path.abspath(args.measurements), "rows": len(data.specs)}
        if args.device:
            provenance["device"] = args.device
        if args.runtime:
            provenance["runtime"] = args.runtime
        target = calibrate_target(data.specs, data.latencies_ms, args.name, args.base, args.mode, provenance)
        path = target.save(out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    fit = target.fit
    others = ", ".join(f"{k} {v:.1f}%" for k, v in fit["alternatives_cv_mape_pct"].items())
    print(
        f"calibrated {args.name!r} from {len(data.specs)} rows ({len(data.problems)} skipped): mode {fit['mode']}, "
        f"leave-one-out MAPE {fit['cv_mape_pct']:.1f}% (max {fit['cv_max_ape_pct']:.1f}%; candidates: {others}; "
        f"{fit['base_target']!r} before calibration: {fit['base_mape_pct_before_calibration']:.1f}%)"
    )
    print(f"saved to {path}; use it with --target {args.name}" + ("" if args.out is None else f" or --target {path}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
