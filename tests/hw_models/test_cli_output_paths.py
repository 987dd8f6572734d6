"""The CLIs that save a latency target: unwritable --out and shipped names are one-line errors."""

from __future__ import annotations

import os

import pytest

from hw_models import calibrate, predict, profile
from hw_models.targets import load_target
from search_spaces import mobilenet_v2


@pytest.fixture
def measurements(tmp_path):
    rows = [f"{mobilenet_v2(w)},{10 * w:.2f}" for w in (0.35, 0.5, 0.75, 1.0)]
    path = tmp_path / "m.csv"
    path.write_text("arch,latency_ms\n" + "\n".join(rows) + "\n")
    return path


def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir(exist_ok=True)
    return folder


def under_file(tmp_path):
    (tmp_path / "file.txt").write_text("keep")
    return tmp_path / "file.txt" / "t.json"


CASES = [
    ("calibrate-dir", lambda m, p: (calibrate.main, [str(m), "--name", "x", "--out", str(out_dir(p))])),
    ("calibrate-under-file", lambda m, p: (calibrate.main, [str(m), "--name", "x", "--out", str(under_file(p))])),
    ("profile-dir", lambda m, p: (profile.main, ["--target-name", "x", "--out", str(out_dir(p))])),
    ("profile-under-file", lambda m, p: (profile.main, ["--target-name", "x", "--out", str(under_file(p))])),
    ("predict-dir", lambda m, p: (predict.main, ["--write-pixel-target", str(out_dir(p))])),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_unwritable_out_is_a_one_line_error_and_leaves_nothing(case, measurements, tmp_path, capsys):
    main, argv = case[1](measurements, tmp_path)
    before = sorted(os.listdir(tmp_path))
    assert main(argv) == 2  # profile fails before measuring anything
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write ") and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == before
    if (tmp_path / "out").exists():
        assert os.listdir(tmp_path / "out") == []


@pytest.mark.parametrize("name", ["pixel", "host"])
def test_calibrate_refuses_shipped_names_without_force(name, measurements, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(tmp_path / "targets"))
    shipped = load_target(name).coefficients
    assert calibrate.main([str(measurements), "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --name {name} is a shipped target") and "--force" in err and err.count("\n") == 1
    assert not (tmp_path / "targets").exists() and load_target(name).coefficients == shipped
    assert calibrate.main([str(measurements), "--name", name, "--force", "--mode", "scale"]) == 0
    assert (tmp_path / "targets" / f"{name}.json").is_file()
    assert load_target(name).source == str(tmp_path / "targets" / f"{name}.json")


def test_profile_repeats_help_names_the_statistic(capsys):
    with pytest.raises(SystemExit):
        profile.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the median is kept" not in out and "--statistic says which figure" in out
