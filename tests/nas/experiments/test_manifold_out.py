"""``--out`` of ``python -m nas.experiments.manifold``: a .png path or a directory, nothing else."""

from __future__ import annotations

import json
import os

import pytest

from nas.experiments.manifold import main, output_paths

SMALL = ["--dims", "2", "5", "--points", "50", "--trials", "2"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "out, figure",
    [
        ("fig.png", "fig.png"),
        ("FIG.PNG", "FIG.PNG"),
        ("existing", os.path.join("existing", "figure1.png")),
        ("new" + os.sep, os.path.join("new", "figure1.png")),
        (os.path.join("a", "b", "f.png"), os.path.join("a", "b", "f.png")),
    ],
)
def test_out_writes_figure_and_numbers_where_it_says(tmp_path, capsys, out, figure):
    (tmp_path / "existing").mkdir()
    out, figure = str(tmp_path / out) + (os.sep if out.endswith(os.sep) else ""), str(tmp_path / figure)
    numbers = os.path.splitext(figure)[0] + ".json"
    assert output_paths(out) == (figure, numbers)
    assert main([*SMALL, "--out", out]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"figure: {figure}" in lines and f"numbers: {numbers}" in lines
    with open(figure, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with open(numbers, encoding="utf-8") as f:
        assert [r["n"] for r in json.load(f)["errors"]] == [2, 5]
    assert not os.path.exists(str(tmp_path / "existing") + ".png")  # not next to the directory
    assert [n for _, _, files in os.walk(tmp_path) for n in files if ".tmp" in n] == []


@pytest.mark.parametrize(
    "out, message",
    [
        ("fig.txt", "--out must be a .png file or a directory, but got "),
        ("fig", "--out must be a .png file or a directory, but got "),
        ("fig.json", "--out must be a .png file or a directory, but got "),
        (os.path.join("file.txt", "fig.png"), "cannot write "),
        ("/proc/invres-fig.png", "cannot write /proc/invres-fig.png: /proc is not a writable directory"),
    ],
)
def test_bad_out_is_a_one_line_error_before_any_work(tmp_path, capsys, out, message):
    (tmp_path / "file.txt").write_text("keep")
    before = sorted(os.listdir(tmp_path))
    assert main([*SMALL, "--out", str(tmp_path / out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1 and captured.out == ""
    assert sorted(os.listdir(tmp_path)) == before and (tmp_path / "file.txt").read_text() == "keep"
