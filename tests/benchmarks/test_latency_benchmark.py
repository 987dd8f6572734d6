from __future__ import annotations

import pytest

from benchmarks import latency


@pytest.mark.slow
def test_benchmark_runs_end_to_end_at_small_size(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(tmp_path))
    assert latency.main(["--archs", "30", "--repeats", "5", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    for line in ("leave-one-out MAPE", "each left out in turn", "within +-10%", "run to run", "new spec"):
        assert line in out


def test_benchmark_reports_bad_targets(capsys):
    assert latency.main(["--target", "nowhere", "--archs", "30"]) == 2
    assert "unknown latency target" in capsys.readouterr().err
