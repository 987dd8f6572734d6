"""Crash safety: killed workers, resumed runs, concurrent workers on one storage."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from optuna.trial import TrialState

from hw_models import count_madds
from nas.config import SearchConfig
from nas.study import RETRY_ATTR, count_states, open_study, run_worker


def fake_evaluate(spec):
    return {
        "accuracy": 1.0 / (1 + count_madds(spec) / 1e5),
        "latency_ms": 1.0,
        "madds": count_madds(spec),
        "params": 1,
        "peak_memory_bytes": 1,
    }


def _study(tiny_space, run_dir: Path):
    config = SearchConfig(space="x", trials=6, out=str(run_dir), progress=False)
    return open_study(config, tiny_space, run_dir), config


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from search_spaces import SearchSpace, sample_spec
    from nas.config import SearchConfig
    from nas.objectives import CostModel
    from nas.run_dir import worker_token
    from nas.study import WORKER_ATTR, open_study
    space = SearchSpace.from_json(sys.argv[1])
    run_dir = Path(sys.argv[2])
    study = open_study(SearchConfig(space="x", trials=6, out=str(run_dir), progress=False), space, run_dir)
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker_token())
    sample_spec(trial, space)
    print("asked", flush=True)
    time.sleep(600)
    """
)


def test_trial_of_a_killed_worker_is_failed_and_retried_once(tiny_space, tmp_path):
    space_file = tmp_path / "space.json"
    tiny_space.to_json(space_file)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(space_file), str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "asked"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    study, _ = _study(tiny_space, run_dir)
    assert count_states(study)[TrialState.RUNNING] == 1
    orphan_params = study.get_trials(states=(TrialState.RUNNING,))[0].params
    run_worker(study, tiny_space, fake_evaluate, ("accuracy", "latency_ms"), 6, run_dir / ".lock", progress=False)

    trials = study.get_trials()
    counts = count_states(study)
    assert counts[TrialState.COMPLETE] == 6 and counts[TrialState.FAIL] == 1 and counts[TrialState.RUNNING] == 0
    retried = [t for t in trials if t.user_attrs.get(RETRY_ATTR) == 0]
    assert len(retried) == 1 and retried[0].params == orphan_params and retried[0].state == TrialState.COMPLETE
    assert sorted(t.number for t in trials) == list(range(7))


def test_live_worker_trials_are_not_touched(tiny_space, tmp_path):
    """A RUNNING trial of a live process (another worker) is neither failed nor counted twice."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    study, _ = _study(tiny_space, run_dir)
    from nas.run_dir import worker_token
    from nas.study import WORKER_ATTR

    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker_token())  # this very process: alive
    run_worker(study, tiny_space, fake_evaluate, ("accuracy", "latency_ms"), 4, run_dir / ".lock", progress=False)
    counts = count_states(study)
    assert counts[TrialState.RUNNING] == 1 and counts[TrialState.COMPLETE] == 3 and counts[TrialState.FAIL] == 0


def _search_cmd(space_file, data, out, trials) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nas.search",
        "--space",
        str(space_file),
        "--data",
        data,
        "--trials",
        str(trials),
        "--supernet-epochs",
        "2",
        "--out",
        str(out),
        "--no-progress",
        "--no-onnx",
    ]


def _complete_trials(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "trials.csv")
    return df[df["state"] == "COMPLETE"]


@pytest.mark.slow
def test_sigkill_at_any_moment_then_rerun_finishes_exactly(tiny_space, digits_npz, tmp_path):
    space_file = tmp_path / "space.json"
    tiny_space.to_json(space_file)
    out = tmp_path / "run"
    cmd = _search_cmd(space_file, digits_npz, out, 10)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Kill at several moments: during start-up / supernet training, and mid-search.
    for delay in (4.0, 7.0, 9.0):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for name in ("config.json", "trials.csv", "best/arch.json"):
            path = out / name
            if path.exists() and name.endswith(".json"):
                import json

                json.loads(path.read_text())  # never torn
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    complete = _complete_trials(out)
    assert len(complete) == 10
    df = pd.read_csv(out / "trials.csv")
    assert df["trial"].is_unique
    # a trial that was running when killed is FAIL, and retried at most once
    assert (df["state"].isin(["COMPLETE", "FAIL"])).all()
    assert df[RETRY_ATTR].dropna().is_unique


@pytest.mark.slow
def test_two_workers_share_one_study(tiny_space, digits_npz, tmp_path):
    space_file = tmp_path / "space.json"
    tiny_space.to_json(space_file)
    out = tmp_path / "run"
    first = subprocess.run(_search_cmd(space_file, digits_npz, out, 1), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    cmd = _search_cmd(space_file, digits_npz, out, 12)
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=600)
        assert w.returncode == 0, err
    df = pd.read_csv(out / "trials.csv")
    assert len(_complete_trials(out)) == 12
    assert df["trial"].is_unique and sorted(df["trial"]) == list(range(len(df)))
