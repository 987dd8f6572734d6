"""The benchmarks' argument helpers: the project's shared ones (``search_spaces.cli``)."""

from invres_utils.cli import OneLineParser as Parser
from invres_utils.cli import positive_float, positive_int

__all__ = ["Parser", "positive_float", "positive_int"]
