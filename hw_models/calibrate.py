"""``python -m hw_models.calibrate measurements.csv --name myphone``: a latency target for your device.

The measurements are a calibration kit folder (``python -m hw_models.calibration_kit``: its
``manifest.csv`` and the TFLite ``benchmark_model`` logs in its ``logs/``; each log's
"Inference timings in us: ... Inference (avg): N" line is the network's latency, matched to the
manifest by the log's ``Graph: [...]`` file name or the log's own name), a ``benchmark_model`` log
file with ``--manifest``, or a CSV of architectures you measured and their latencies, one per row:
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
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from invres_utils.atomic_files import check_writable_file
from invres_utils.cli import OneLineParser
from search_spaces.arch import ArchSpec, parse_arch

from .opmodel import FEATURES, fit_features, spec_ops
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


# TFLite's benchmark_model (tensorflow/lite/tools/benchmark/benchmark_model.cc) ends a run with
#   Inference timings in us: Init: 5579, First inference: 1357602, Warmup (avg): 1.3576e+06, Inference (avg): 1.24027e+06
# (doubles streamed with C++ defaults, so large figures come in exponent form; recent versions
# prefix "INFO: ", logcat "I tflite  : "), and names the model early on as "Graph: [path]".
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
TIMING_LINE = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
    rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}"
)
GRAPH_LINE = re.compile(r"Graph: \[([^\]]*)\]")
LOG_SUFFIXES = (".log", ".txt")


@dataclass(frozen=True)
class BenchmarkRun:
    """One run of ``benchmark_model``: the model it timed (``None`` if the log does not say) and its figures (us)."""

    graph: str | None
    init_us: float
    first_us: float
    warmup_avg_us: float
    inference_avg_us: float

    @property
    def latency_ms(self) -> float:
        return self.inference_avg_us / 1000.0


def parse_benchmark_log(text: str) -> list[BenchmarkRun]:
    """Every run in a ``benchmark_model`` log (several logs may be concatenated): each
    "Inference timings in us" line, with the ``Graph: [...]`` named before it."""
    runs, graph = [], None
    for line in text.splitlines():
        g = GRAPH_LINE.search(line)
        if g:
            graph = g.group(1).strip() or None
            continue
        m = TIMING_LINE.search(line)
        if m:
            runs.append(BenchmarkRun(graph, *(float(v) for v in m.groups())))
            graph = None
    return runs


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise ValueError(f"cannot read {what} {path}: {e.strerror}") from None


def read_kit(source: str | os.PathLike[str], manifest: str | os.PathLike[str] | None = None) -> Measurements:
    """Measurements from benchmark_model logs: ``source`` is a kit folder (``manifest.csv`` plus
    ``logs/*.log``, or logs in the folder itself) or one log file (``manifest`` needed). A network
    timed several times gets the median of its runs; networks without a timing and logs of files
    not in the manifest are listed in ``problems``."""
    from .calibration_kit import LOGS, MANIFEST

    source = Path(source)
    if source.is_dir():
        manifest_path = Path(manifest) if manifest else source / MANIFEST
        log_dir = source / LOGS if (source / LOGS).is_dir() else source
        logs = sorted(p for p in log_dir.iterdir() if p.suffix in LOG_SUFFIXES and p.is_file())
    else:
        if manifest is None:
            raise ValueError(f"{source} is a benchmark_model log: pass --manifest (the kit's {MANIFEST})")
        manifest_path, logs = Path(manifest), [source]
    if manifest is not None and manifest_path.is_dir():
        raise ValueError(f"--manifest {manifest_path} is a folder; pass the kit's {MANIFEST} file")
    if not manifest_path.is_file():
        raise ValueError(
            f"{manifest_path} does not exist; a kit folder holds the {MANIFEST} of hw_models.calibration_kit"
        )
    rows = list(csv.DictReader(_read_text(manifest_path, "manifest").splitlines()))
    if not rows or not {"file", "arch"} <= set(rows[0]):
        raise ValueError(f"{manifest_path} must be a CSV with 'file' and 'arch' columns (a calibration kit manifest)")
    by_name = {Path(r["file"]).name: (i, r) for i, r in enumerate(rows, start=2)}
    if not logs:
        raise ValueError(f"no benchmark_model logs (*.log, *.txt) in {source}; run the kit's run_on_phone.sh first")
    timings: dict[str, list[float]] = {}
    problems: list[str] = []
    for log in logs:
        runs = parse_benchmark_log(_read_text(log, "log"))
        if not runs:
            problems.append(f"{log.name}: no 'Inference timings in us' line (did benchmark_model fail?)")
        for run in runs:
            name = Path(run.graph).name if run.graph else f"{log.stem}.tflite"
            if name not in by_name:
                problems.append(f"{log.name}: {name} is not in {manifest_path.name}")
            elif not run.inference_avg_us > 0:
                problems.append(f"{log.name}: non-positive inference time {run.inference_avg_us} us")
            else:
                timings.setdefault(name, []).append(run.latency_ms)
    specs, latencies, lines = [], [], []
    for name, (line, row) in by_name.items():
        if name not in timings:
            problems.append(f"manifest line {line}: no timing for {name}")
            continue
        try:
            spec = parse_arch(row["arch"])
        except ValueError as e:
            problems.append(f"manifest line {line}: cannot parse architecture {row['arch']!r}: {e}")
            continue
        specs.append(spec)
        latencies.append(float(np.median(timings[name])))
        lines.append(line)
    return Measurements(tuple(specs), tuple(latencies), tuple(lines), tuple(problems))


def read_any(source: str | os.PathLike[str], manifest: str | os.PathLike[str] | None = None) -> Measurements:
    """A kit folder or a benchmark_model log (:func:`read_kit`), else a measurements CSV."""
    path = Path(source)
    if path.is_dir() or path.suffix in LOG_SUFFIXES:
        return read_kit(path, manifest)
    return read_measurements(path)


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
        used = {op for s in specs for op in spec_ops(s)}  # a refit has a basis for the ops it was fitted on
        target = LatencyTarget.from_fit(name, coef, tile, used, fit=fit)
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


def _skipped(problems: Sequence[str], shown: int = 3) -> str:
    """``"N skipped: first; second; third; and K more"`` for a one-line error."""
    if not problems:
        return "none skipped"
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{len(problems)} skipped: " + "; ".join(problems[:shown]) + more


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m hw_models.calibrate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "measurements",
        help="a calibration kit folder (manifest.csv + benchmark_model logs), a benchmark_model log, or a CSV of arch,latency_ms rows",
    )
    parser.add_argument("--manifest", default=None, help="the kit's manifest.csv, when MEASUREMENTS is a log file")
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
        data = read_any(args.measurements, args.manifest)
        if len(data.specs) < MIN_ROWS:
            raise ValueError(
                f"{args.measurements} has {len(data.specs)} usable rows ({_skipped(data.problems)}); "
                f"calibration needs at least {MIN_ROWS}"
            )
        for problem in data.problems:
            print(f"warning: skipped {problem}", file=sys.stderr)
        provenance: dict[str, Any] = {"measurements": os.path.abspath(args.measurements), "rows": len(data.specs)}
        if Path(args.measurements).is_dir() or Path(args.measurements).suffix in LOG_SUFFIXES:
            provenance["runtime"] = "TFLite benchmark_model on the device (Inference (avg) of each log)"
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
