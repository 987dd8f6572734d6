"""The supernet and ablation benchmarks run end to end at tiny size and report what they promise."""

from __future__ import annotations

import pytest

from benchmarks import ablations, data_parallel, supernet_ranking, supernet_speed


@pytest.fixture
def space_file(tiny_space, tmp_path) -> str:
    path = tmp_path / "tiny.json"
    tiny_space.to_json(path)
    return str(path)


@pytest.mark.slow
def test_supernet_speed_reports_training_time_and_forward_ratio(space_file, digits_npz, capsys):
    argv = ["--space", space_file, "--data", digits_npz, "--epochs", "1", "--archs", "2", "--rounds", "3"]
    assert supernet_speed.main(argv) == 0
    out = capsys.readouterr().out
    assert "supernet training:" in out and "goal of 180 s" in out
    assert "ratio: median" in out and "goal of 1.15x" in out


@pytest.mark.slow
def test_data_parallel_reports_speedup_accuracy_and_the_side_by_side_ceiling(space_file, digits_npz, capsys):
    argv = ["--space", space_file, "--data", digits_npz, "--epochs", "2", "--seeds", "2", "--ceiling-epochs", "2"]
    assert data_parallel.main(argv) == 0
    out = capsys.readouterr().out
    assert "epoch time, 1 worker / 2 workers (medians):" in out and "goal of 1.6x" in out
    assert "seed-to-seed std with 1 worker" in out
    ceiling = out.split("ceiling: ")[1]
    assert "2 independent processes side by side" in ceiling and "of it" in ceiling


@pytest.mark.slow
def test_data_parallel_with_sub_network_groups(space_file, digits_npz, capsys):
    argv = ["--space", space_file, "--data", digits_npz, "--epochs", "2", "--seeds", "1", "--subnet-parallel", "2"]
    assert data_parallel.main(argv) == 0
    out = capsys.readouterr().out
    assert "sub-networks split over groups of 2" in out and "goal of 1.6x" in out
    assert "ceiling: " not in out  # the side-by-side ceiling is data parallelism's


@pytest.mark.slow
def test_supernet_ranking_reports_kendall_tau(space_file, digits_npz, capsys):
    argv = ["--space", space_file, "--data", digits_npz, "--archs", "3", "--epochs", "1", "--supernet-epochs", "1"]
    assert supernet_ranking.main(argv) == 0
    out = capsys.readouterr().out
    assert "Kendall tau" in out and "mean gap" in out
    assert out.count(" in12_") + out.count(" in16_") == 3  # one row per architecture


@pytest.mark.slow
def test_ablations_print_both_panels(space_file, digits_npz, tmp_path, capsys):
    plot = tmp_path / "figure6.png"
    argv = ["--space", space_file, "--data", digits_npz, "--seeds", "2", "--epochs", "1", "--plot", str(plot)]
    assert ablations.main(argv) == 0
    out = capsys.readouterr().out
    for label in ("linear bottleneck", "relu6 in bottleneck", "between expansions", "no residual"):
        assert label in out
    assert out.count("+-") == 5 and plot.stat().st_size > 0


def test_spread_architectures_cover_the_range(tiny_space):
    from hw_models import count_madds

    specs = supernet_ranking.spread_architectures(tiny_space, 5, seed=0)
    assert specs[0] == tiny_space.smallest() and specs[-1] == tiny_space.largest()
    madds = [count_madds(s) for s in specs]
    assert madds == sorted(madds)


@pytest.mark.parametrize(
    "module, argv, fragment",
    [
        (supernet_speed, ["--space", "nowhere"], "unknown search space"),
        (supernet_ranking, ["--archs", "0"], "--archs"),
        (ablations, ["--plot", "curves.txt"], "--plot must name a .png file"),
        (ablations, ["--seeds", "-1"], "--seeds"),
    ],
)
def test_bad_arguments_are_one_line(module, argv, fragment, capsys):
    try:
        code = module.main(argv)
    except SystemExit as e:  # argparse usage errors exit from inside main
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
