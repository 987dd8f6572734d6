from __future__ import annotations

import numpy as np
import pytest

from hw_models import calibrate_target, load_target, predict_latency_ms, read_measurements
from hw_models.calibrate import main
from search_spaces import get_space


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "targets"
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(folder))
    return folder


def device_latency(spec) -> float:
    """A made-up device 30% slower than the pixel target."""
    return 1.3 * predict_latency_ms(spec, "pixel")


def write_csv(tmp_path, n, rng, header=True, bad=True):
    space = get_space("mobilenetv2-imagenet")
    lines = ["arch,latency_ms,notes"] if header else []
    specs = [space.sample(rng) for _ in range(n)]
    noise = rng.normal(0, 0.01, n)
    for s, e in zip(specs, noise):
        lines.append(f"{s},{device_latency(s) * (1 + e):.4f},ok")
    if bad:
        lines.insert(2, "in224_garbage,12.0,bad arch")  # line 3
        lines.insert(4, f"{specs[0]},-3,negative")  # line 5
        lines.insert(5, f"{specs[0]},fast,not a number")  # line 6
        lines.insert(6, "# a comment line")
    path = tmp_path / "measurements.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, specs


def test_read_measurements_reports_bad_rows_with_line_numbers(tmp_path, rng):
    path, specs = write_csv(tmp_path, 6, rng)
    data = read_measurements(path)
    assert len(data.specs) == 6 and list(data.specs) == specs
    assert [p.split(":")[0] for p in data.problems] == ["line 3", "line 5", "line 6"]
    assert "cannot parse architecture 'in224_garbage'" in data.problems[0]
    assert "positive" in data.problems[1] and "not a number" in data.problems[2]
    assert 3 not in data.lines and all(line >= 2 for line in data.lines)


def test_headerless_csv_and_arch_files_next_to_it(tmp_path, rng):
    space = get_space("proxy-digits")
    specs = [space.sample(rng) for _ in range(3)]
    (tmp_path / "archs").mkdir()
    specs[0].to_json(tmp_path / "archs" / "a.json")
    rows = [f"archs/a.json,{device_latency(specs[0])}"] + [f"{s},{device_latency(s)}" for s in specs[1:]]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    data = read_measurements(path)
    assert list(data.specs) == specs and not data.problems


def test_scale_calibration_recovers_the_factor(tmp_path, rng):
    path, specs = write_csv(tmp_path, 5, rng, bad=False)
    data = read_measurements(path)
    target = calibrate_target(data.specs, data.latencies_ms, "slowphone", base="pixel", mode="scale")
    assert target.fit["mode"] == "scale" and target.scale == pytest.approx(1.3, rel=0.02)
    assert target.fit["cv_mape_pct"] < 3 and target.fit["base_mape_pct_before_calibration"] > 20
    assert target.coefficients == load_target("pixel").coefficients


def test_refit_and_auto_modes(rng, tmp_path):
    path, _ = write_csv(tmp_path, 12, rng, bad=False)
    data = read_measurements(path)
    refit = calibrate_target(data.specs, data.latencies_ms, "refitphone", mode="refit")
    assert refit.fit["mode"] == "refit" and all(c >= 0 for c in refit.coefficients)
    assert refit.fit["rows"] == 12 and refit.fit["cv"] == "leave-one-out"
    auto = calibrate_target(data.specs, data.latencies_ms, "autophone", mode="auto")
    assert set(auto.fit["alternatives_cv_mape_pct"]) == {"scale", "refit"}
    assert auto.fit["cv_mape_pct"] == min(auto.fit["alternatives_cv_mape_pct"].values())
    few = calibrate_target(data.specs[:4], data.latencies_ms[:4], "fewphone", mode="auto")
    assert set(few.fit["alternatives_cv_mape_pct"]) == {"scale"}
    with pytest.raises(ValueError, match="at least 8"):
        calibrate_target(data.specs[:4], data.latencies_ms[:4], "x", mode="refit")
    with pytest.raises(ValueError, match="at least 3"):
        calibrate_target(data.specs[:2], data.latencies_ms[:2], "x")


def test_cli_saves_a_target_usable_by_name(tmp_path, rng, capsys, user_dir):
    path, specs = write_csv(tmp_path, 10, rng)
    assert main([str(path), "--name", "myphone", "--device", "Pixel 7, big core"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: skipped line") == 3 and "line 5" in captured.err
    assert "leave-one-out MAPE" in captured.out and "--target myphone" in captured.out
    assert (user_dir / "myphone.json").is_file()
    target = load_target("myphone")
    assert target.provenance["device"] == "Pixel 7, big core" and target.provenance["rows"] == 10
    errors = [abs(predict_latency_ms(s, "myphone") - device_latency(s)) / device_latency(s) for s in specs]
    assert np.mean(errors) < 0.05


def test_cli_errors(tmp_path, rng, capsys):
    assert main([str(tmp_path / "missing.csv"), "--name", "x"]) == 2
    assert "cannot read measurements file" in capsys.readouterr().err
    path = tmp_path / "few.csv"
    path.write_text("arch,latency_ms\nnonsense,1\nin32_c16_s2-ir_r1_k3_s1_e1_c8-head_c32_n10,0\n")
    assert main([str(path), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "line 3" in err and "error: " in err and "needs at least 3" in err
    path.write_text("model,seconds\na,1\n")
    assert main([str(path), "--name", "x"]) == 2
    path.write_text("arch,latency_ms\n" + "\n".join(f"{get_space('proxy-digits').sample(rng)},1.0" for _ in range(3)))
    assert main([str(path), "--name", "x", "--base", "nowhere"]) == 2
    assert "unknown latency target 'nowhere'" in capsys.readouterr().err
