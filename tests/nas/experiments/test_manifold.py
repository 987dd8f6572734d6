from __future__ import annotations

import json

import numpy as np
import pytest

from nas.experiments.manifold import main, manifold_collapse, reconstruction_errors, relu_roundtrip, spiral


def test_error_falls_as_n_grows():
    result = manifold_collapse((2, 3, 5, 15, 30), num_points=500, trials=60, seed=0)
    assert list(result.error) == sorted(result.error, reverse=True)
    assert len(set(result.error)) == len(result.error)
    assert list(result.raw_error_median) == sorted(result.raw_error_median, reverse=True)
    assert result.error[0] > 0.4 > 0.2 > result.error[-1]  # collapse at n=2, mostly preserved at n=30


def test_no_loss_when_relu_keeps_every_coordinate():
    rng = np.random.default_rng(0)
    points = rng.uniform(0.1, 1.0, (200, 2))
    transform = rng.uniform(0.1, 1.0, (5, 2))  # T x > 0 for every point: ReLU is the identity
    assert np.allclose(relu_roundtrip(points, transform), points)
    assert reconstruction_errors(points, relu_roundtrip(points, transform)) == pytest.approx((0.0, 0.0), abs=1e-12)
    # a half-size reconstruction costs nothing after rescaling, a quarter of the variance-ish raw
    scaled, raw = reconstruction_errors(points, points / 2)
    assert scaled == pytest.approx(0.0, abs=1e-12) and raw > 0


def test_seeded_and_reproducible():
    a = manifold_collapse((2, 30), num_points=100, trials=5, seed=3)
    b = manifold_collapse((2, 30), num_points=100, trials=5, seed=3)
    c = manifold_collapse((2, 30), num_points=100, trials=5, seed=4)
    assert a.error == b.error and np.array_equal(a.points, b.points)
    assert a.error != c.error
    points, theta = spiral(100, np.random.default_rng(0))
    assert points.shape == (100, 2) and np.all(np.diff(theta) >= 0)


def test_cli_writes_figure_and_numbers(tmp_path, capsys):
    out = tmp_path / "fig.png"
    assert main(["--dims", "2", "15", "--points", "200", "--trials", "5", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    record = json.loads((tmp_path / "fig.json").read_text())
    assert [r["n"] for r in record["errors"]] == [2, 15]
    assert "15" in capsys.readouterr().out


def test_cli_rejects_bad_input(tmp_path, capsys):
    assert main(["--dims", "0", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.startswith("error: dims must be")
