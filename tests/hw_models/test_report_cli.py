"""``python -m hw_models.report`` / ``hw_models.predict``: --arch/--width-mult/--resolution handling."""

from __future__ import annotations

import pytest

from hw_models import predict, report
from hw_models.report import resolve_arch
from search_spaces import mobilenet_v2


@pytest.mark.parametrize("main", [report.main, predict.main], ids=["report", "predict"])
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--resolution", "0"], "--resolution must be an integer >= 1, but got 0"),
        (["--resolution", "-3"], "--resolution must be an integer >= 1, but got -3"),
        (["--width-mult", "inf"], "width_mult must be a finite number > 0, but got inf"),
        (["--width-mult=-inf"], "width_mult must be a finite number > 0, but got -inf"),
        (["--width-mult", "nan"], "width_mult must be a finite number > 0, but got nan"),
        (["--width-mult", "-1"], "width_mult must be a finite number > 0, but got -1.0"),
        (["--width-mult", "0"], "width_mult must be a finite number > 0, but got 0.0"),
        (["--arch", str(mobilenet_v2()), "--resolution", "0"], "--resolution must be an integer >= 1, but got 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(main, argv, message, capsys):
    argv = argv if "--arch" in argv else ["--arch", "mobilenet_v2", *argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"error: {message}\n" and captured.out == ""


@pytest.mark.parametrize(
    "arch, resolution, expected",
    [
        ("mobilenet_v2", None, mobilenet_v2(1.0, 224)),
        ("mobilenet_v2", 160, mobilenet_v2(1.0, 160)),
        (str(mobilenet_v2(0.5, 96)), None, mobilenet_v2(0.5, 96)),
        (str(mobilenet_v2(0.5, 96)), 128, mobilenet_v2(0.5, 128)),
    ],
)
def test_resolution_overrides_only_when_given(arch, resolution, expected):
    width = 1.0 if arch == "mobilenet_v2" else 0.5
    assert resolve_arch(arch, width, resolution) == expected


def test_report_prints_the_requested_resolution(capsys):
    assert report.main(["--resolution", "96"]) == 0
    assert capsys.readouterr().out.startswith("architecture: in96_")


def test_report_takes_reference_zoo_names(capsys):
    from hw_models.report import main

    assert main(["--arch", "mobilenet_v3_large"]) == 0
    out = capsys.readouterr().out
    assert "MAdds:      216,589,760" in out and "5,483,032 with BN" in out
    assert "s5.b2.se_reduce" in out and "last_conv" in out
    assert "peak memory (naive, 2 B/element): " in out and "peak memory (split t=4, 2 B/element): " in out
    assert main(["--arch", "mnasnet_a1", "--width-mult", "1.4"]) == 2
    assert "width_mult applies to mobilenet_v2 only" in capsys.readouterr().err
