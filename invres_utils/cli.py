"""Argument handling shared by every command line tool (``python -m nas.search``, ``hw_models.*``,
the benchmarks): a usage error is one ``error: ...`` line and exit status 2, never usage + error."""

from __future__ import annotations

import argparse
import math


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (then exit status 2), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse ``type=``: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, but got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse ``type=``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, but got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, but got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse ``type=``: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, but got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, but got {value}")
    return value
