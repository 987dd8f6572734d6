"""Benchmark CLIs: bad arguments are one ``error:`` line and exit status 2, in both invocation
styles (``python benchmarks/x.py`` and ``python -m benchmarks.x``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import cost_model, latency, memory_split

ROOT = Path(__file__).resolve().parents[2]
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "main, argv, message",
    [
        (memory_split.main, ["--max-t", "0"], "argument --max-t: must be an integer >= 1, but got 0"),
        (memory_split.main, ["--repeats", "0"], "argument --repeats: must be an integer >= 1, but got 0"),
        (memory_split.main, ["--threads", "0"], "argument --threads: must be an integer >= 1, but got 0"),
        (memory_split.main, ["--threads", "two"], "argument --threads: must be an integer >= 1, but got 'two'"),
        (memory_split.main, ["--resolution", "-1"], "argument --resolution: must be an integer >= 1, but got -1"),
        (memory_split.main, ["--width-mult", "0"], "argument --width-mult: must be a finite number > 0, but got '0'"),
        (memory_split.main, ["--width-mult", "inf"], "argument --width-mult: must be a finite number > 0"),
        (memory_split.main, ["--width-mult", "nan"], "argument --width-mult: must be a finite number > 0"),
        (cost_model.main, ["--n", "0"], "argument --n: must be an integer >= 1, but got 0"),
        (cost_model.main, ["--repeats", "0"], "argument --repeats: must be an integer >= 1, but got 0"),
        (cost_model.main, ["--flop-counter-n", "0"], "argument --flop-counter-n: must be an integer >= 1, but got 0"),
        (latency.main, ["--archs", "0"], "argument --archs: must be an integer >= 1, but got 0"),
        (latency.main, ["--repeats", "0"], "argument --repeats: must be an integer >= 1, but got 0"),
        (latency.main, ["--rounds", "0"], "argument --rounds: must be an integer >= 1, but got 0"),
    ],
)
def test_bad_arguments_are_one_line_usage_errors(main, argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1 and captured.out == ""


def test_cost_model_unknown_space(capsys):
    assert cost_model.main(["--space", "nope", "--n", "5"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: unknown search space 'nope'") and captured.err.count("\n") == 1


def test_latency_warns_below_30_architectures(capsys):
    # the unknown target stops it right after the cheap pixel section
    assert latency.main(["--target", "nowhere", "--archs", "5"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: --archs 5 is below 30") and err[1].startswith("error: unknown latency target")
    assert latency.main(["--target", "nowhere", "--archs", "30"]) == 2
    assert "warning" not in capsys.readouterr().err


def test_latency_default_meets_the_minimum():
    assert latency.MIN_ARCHS == 30
    with pytest.raises(SystemExit):  # parse only: --help shows the default
        latency.main(["--help"])


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "benchmarks/cost_model.py", "--n", "0"],
        [sys.executable, "-m", "benchmarks.latency", "--archs", "0"],
        pytest.param([sys.executable, "-m", "benchmarks.cost_model", "--n", "0"], marks=SLOW),
        pytest.param([sys.executable, "benchmarks/latency.py", "--archs", "0"], marks=SLOW),
        pytest.param([sys.executable, "benchmarks/memory_split.py", "--max-t", "0"], marks=SLOW),
        pytest.param([sys.executable, "-m", "benchmarks.memory_split", "--max-t", "0"], marks=SLOW),
    ],
    ids=lambda a: " ".join(a[1:3]),
)
def test_both_invocation_styles(argv):
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: argument ") and done.stderr.count("\n") == 1, done.stderr


@SLOW
def test_memory_split_runs_without_profiler_noise():
    argv = ["--resolution", "32", "--width-mult", "0.35", "--max-t", "2", "--repeats", "1"]
    done = subprocess.run(
        [sys.executable, "benchmarks/memory_split.py", *argv], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "meas/model" in done.stdout
    assert done.stderr == ""  # no kineto "USDT: ... profiler_start/stop" lines
