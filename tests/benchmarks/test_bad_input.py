"""Benchmarks given a bad output path or count: one ``error:`` line, exit status 2, no traceback,
before any training or timing, and nothing created on disk."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import ablations, data_parallel, streaming_memory, supernet_speed, train_throughput

from ..cli_errors import one_line_error


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "file.txt").write_text("keep")
    (tmp_path / "full").mkdir()
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "full" / "x.png").write_text("keep")
    return tmp_path


CASES = [
    ("ablations plot under a file", ablations.main, ["--plot", "{t}/file.txt/curves.png"], "{t}/file.txt/curves.png"),
    ("ablations plot in /proc", ablations.main, ["--plot", "/proc/invres/curves.png"], "/proc/invres/curves.png"),
    ("ablations plot is a folder", ablations.main, ["--plot", "{t}/dir.png"], "{t}/dir.png: it is a directory"),
    ("streaming keep is a file", streaming_memory.main, ["--keep", "{t}/file.txt"], "{t}/file.txt: it is a file"),
    ("streaming keep under a file", streaming_memory.main, ["--keep", "{t}/file.txt/images"], "{t}/file.txt/images"),
    ("streaming keep in /proc", streaming_memory.main, ["--keep", "/proc/invres-images"], "/proc/invres-images"),
    ("streaming keep not empty", streaming_memory.main, ["--keep", "{t}/full"], "{t}/full exists and is not empty"),
    (
        "streaming negative loader workers",
        streaming_memory.main,
        ["--data-workers", "-1"],
        "--data-workers: must be an integer >= 0, but got -1",
    ),
    (
        "speed negative loader workers",
        supernet_speed.main,
        ["--data-workers", "-2", "--skip-training"],
        "--data-workers: must be an integer >= 0, but got -2",
    ),
    (
        "throughput loader workers not numbers",
        train_throughput.main,
        ["--data-workers", "0,two"],
        "--data-workers must list integers >= 0 separated by commas, but got '0,two'",
    ),
    (
        "throughput negative loader workers",
        train_throughput.main,
        ["--data-workers", "0,-2"],
        "--data-workers must list integers >= 0 separated by commas, but got '0,-2'",
    ),
    (
        "throughput negative training loader workers",
        train_throughput.main,
        ["--train-data-workers", "-1"],
        "--train-data-workers: must be an integer >= 0, but got -1",
    ),
    (
        "throughput sub-network groups over too few workers",
        train_throughput.main,
        ["--workers", "3", "--subnet-parallel", "2"],
        "--subnet-parallel 2 needs a multiple of 2 training workers, but got 3",
    ),
    (
        "data parallel more sub-network groups than sub-networks",
        data_parallel.main,
        ["--workers", "6", "--subnet-parallel", "6"],
        "--subnet-parallel 6 is more than the 4 sub-networks a step trains; use at most 4",
    ),
]


@pytest.mark.parametrize("name, main, argv, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_before_any_work(name, main, argv, fragment, folder, capsys):
    before = sorted(str(p) for p in folder.rglob("*"))
    argv = [a.replace("{t}", str(folder)) for a in argv]
    extra = ["--data", "digits"] if main is not streaming_memory.main else ["--images", "10"]
    err = one_line_error(main, [*argv, *extra], capsys)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment.replace("{t}", str(folder)) in err, err
    assert sorted(str(p) for p in folder.rglob("*")) == before
    assert [n for n in os.listdir(folder) if n.startswith(".")] == []
