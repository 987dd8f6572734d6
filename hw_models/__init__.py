"""What an architecture costs: analytic counts, activation memory, latency."""

from .analytic import (
    MEMORY_POLICIES,
    Costs,
    analytic_costs,
    count_madds,
    count_params,
    peak_memory_bytes,
)
from .batch import batch_costs
from .table import layer_table

__all__ = [
    "MEMORY_POLICIES",
    "Costs",
    "analytic_costs",
    "batch_costs",
    "count_madds",
    "count_params",
    "layer_table",
    "peak_memory_bytes",
]
