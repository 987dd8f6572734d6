"""The benchmarks' argument helpers: the project's shared ones (``invres_utils.cli``)."""

from invres_utils.cli import OneLineParser as Parser
from invres_utils.cli import non_negative_int, positive_float, positive_int

__all__ = ["Parser", "non_negative_int", "positive_float", "positive_int"]
