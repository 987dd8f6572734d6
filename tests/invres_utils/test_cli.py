"""Every command line tool reports a usage error in one line with exit status 2."""

from __future__ import annotations

import importlib

import pytest

COMMANDS = [
    "nas.search",
    "nas.train",
    "nas.export",
    "nas.experiments.manifold",
    "hw_models.report",
    "hw_models.predict",
    "hw_models.profile",
    "hw_models.calibrate",
]


@pytest.mark.parametrize("module", COMMANDS)
def test_unknown_option_is_a_one_line_usage_error(module, capsys):
    main = importlib.import_module(module).main
    try:
        code = main(["--no-such-option"])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("error: ") and f"python -m {module} --help" in err
    assert "--no-such-option" in err or "required" in err
