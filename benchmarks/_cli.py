"""The benchmarks' argument helpers: the project's shared ones (``search_spaces.cli``)."""

from search_spaces.cli import OneLineParser, Parser, positive_float, positive_int

__all__ = ["OneLineParser", "Parser", "positive_float", "positive_int"]
