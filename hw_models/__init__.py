"""What an architecture costs: analytic counts, activation memory, latency."""

from __future__ import annotations

import importlib
from typing import Any

from .analytic import (
    MEMORY_POLICIES,
    Costs,
    analytic_costs,
    count_madds,
    count_params,
    peak_memory_bytes,
)
from .batch import batch_costs
from .measure import RUNTIMES, LatencyMeasurement, measure_latency_ms, measure_many
from .table import layer_table
from .targets import LatencyTarget, known_targets, load_target, save_target, user_target_dir

# Names from modules that are also CLIs (``python -m hw_models.<module>``) are imported on first
# use, so that running those modules does not import them twice.
_LAZY = {
    "calibrate_target": "calibrate",
    "read_measurements": "calibrate",
    "fit_pixel_target": "predict",
    "predict_latency_ms": "predict",
    "profile_target": "profile",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "MEMORY_POLICIES",
    "RUNTIMES",
    "Costs",
    "LatencyMeasurement",
    "LatencyTarget",
    "analytic_costs",
    "batch_costs",
    "calibrate_target",
    "count_madds",
    "count_params",
    "fit_pixel_target",
    "known_targets",
    "layer_table",
    "load_target",
    "measure_latency_ms",
    "measure_many",
    "peak_memory_bytes",
    "predict_latency_ms",
    "profile_target",
    "read_measurements",
    "save_target",
    "user_target_dir",
]
