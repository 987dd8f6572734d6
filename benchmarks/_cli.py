"""The benchmarks' argument helpers: the project's shared ones (``search_spaces.cli``)."""

from search_spaces.cli import OneLineParser as Parser
from search_spaces.cli import positive_float, positive_int

__all__ = ["Parser", "positive_float", "positive_int"]
