"""What every bad-input test of a ``main(argv) -> int`` entry point checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def one_line_error(main: Callable[[list[str]], int], argv: list[str], capsys: Any) -> str:
    """Run ``main(argv)``; assert it exits 2 (returned, or argparse's ``SystemExit``) with one
    stderr line and no traceback, and return that stderr."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse usage errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err
