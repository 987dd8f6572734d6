"""Verifying the front by training its members: selection, the verify study, resume, the outputs."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import nas
from nas.config import SearchConfig
from nas.run_dir import worker_token
from nas.search import main as search_main
from nas.search import run_search
from nas.study import WORKER_ATTR
from nas.verify import (
    VerifySettings,
    open_verify_study,
    queue_unfinished,
    rank_agreement,
    spread_members,
    train_member,
    verify_table,
    verify_worker,
)
from search_spaces import sample_spec

OBJECTIVES = {"accuracy": "max", "latency_ms": "min"}


def front_of(points: list[tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [{"trial": i, "accuracy": a, "latency_ms": lat, "arch": f"a{i}"} for i, (a, lat) in enumerate(points)]
    )


def test_members_spread_along_the_front_both_ends_included():
    # a dense cluster of accurate, slow members and a few fast ones: an even spread is not the
    # K most accurate
    points = [(0.90 - 0.001 * i, 1.0 - 0.001 * i) for i in range(10)] + [(0.7, 0.3), (0.6, 0.2), (0.5, 0.1)]
    chosen = spread_members(front_of(points), 4, OBJECTIVES)
    assert len(chosen) == 4 and chosen["trial"].is_unique
    assert chosen["accuracy"].max() == 0.90 and chosen["accuracy"].min() == 0.5
    assert (chosen["accuracy"] < 0.85).sum() >= 2


def test_spread_of_the_whole_front_and_too_many():
    front = front_of([(0.9, 1.0), (0.8, 0.5), (0.7, 0.2)])
    assert sorted(spread_members(front, 3, OBJECTIVES)["trial"]) == [0, 1, 2]
    with pytest.raises(ValueError, match="more members than the Pareto front has \\(3\\)"):
        spread_members(front, 4, OBJECTIVES)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"epochs": 0}, "--verify-epochs must be an integer >= 1"),
        ({"top": 0}, "--verify-top must be an integer >= 1"),
        ({"pruner": "magic"}, "--verify-pruner must be one of none, median, asha, hyperband"),
        ({"start": "imagenet"}, "--verify-from must be one of supernet, scratch"),
    ],
)
def test_bad_settings(change, message):
    with pytest.raises(ValueError, match=message):
        VerifySettings(**{"top": 2, "epochs": 1, **change}).validate()


@pytest.fixture(scope="module")
def data(digits_npz):
    from nas.data import load_data

    return load_data(digits_npz, resolution=16, seed=0)


def test_train_member_stops_when_pruned(tiny_space, data):
    spec = tiny_space.smallest()
    calls = []

    def report(epoch, accuracy):
        calls.append((epoch, accuracy))
        return True  # prune at the first report

    result = train_member(spec, data, VerifySettings(top=1, epochs=3, start="scratch"), None, report)
    assert result.pruned and result.epochs_run == 1 and len(calls) == 1 and math.isnan(result.test_accuracy)
    assert result.val_accuracy == calls[0][1]


def _members(tiny_space, n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    specs = list(dict.fromkeys(tiny_space.sample(rng) for _ in range(20)))[:n]
    return pd.DataFrame(
        [
            {"trial": i, "arch": s.to_string(), "accuracy": 0.5 + 0.1 * i, "latency_ms": 1.0 + i}
            for i, s in enumerate(specs)
        ]
    )


@pytest.mark.parametrize("sampled", [True, False])
def test_a_member_of_a_killed_worker_is_retried_and_the_table_has_one_row_per_member(
    tiny_space, data, tmp_path, sampled
):
    members = _members(tiny_space, 3)
    settings = VerifySettings(top=3, epochs=1, start="scratch")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.journal")))
    study = open_verify_study(storage, settings, members)
    queue_unfinished(study, members, tiny_space)
    # a worker took the first member, then died (before or after sampling its parameters)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = study.ask()
    orphan.set_user_attr(WORKER_ATTR, worker_token(dead.pid))

    if sampled:
        sample_spec(orphan, tiny_space)
    trained = verify_worker(study, members, tiny_space, data, None, settings, tmp_path / ".lock", progress=False)
    assert trained == 3  # the two still queued, and the orphan's member once more
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.FAIL) == 1 and states.count(TrialState.COMPLETE) == 3

    table = verify_table(study, members, tiny_space)
    assert list(table["arch"]) == list(members["arch"]) and (table["state"] == "COMPLETE").all()
    assert table["trained_val_accuracy"].between(0, 1).all() and table["trained_test_accuracy"].between(0, 1).all()
    assert (table["epochs_run"] == 1).all() and not table["pruned"].any()
    assert list(table["inherited_accuracy"]) == list(members["accuracy"])

    # opening it again (a resumed run) trains nothing more
    again = open_verify_study(storage, settings, members)
    assert verify_worker(again, members, tiny_space, data, None, settings, tmp_path / ".lock", progress=False) == 0


def test_rank_agreement():
    table = pd.DataFrame(
        {
            "inherited_accuracy": [0.5, 0.6, 0.7, 0.8],
            "trained_val_accuracy": [0.55, 0.65, 0.75, 0.70],
            "trained_test_accuracy": [0.5, 0.6, 0.7, 0.8],
            "state": ["COMPLETE"] * 4,
            "pruned": [False] * 4,
        }
    )
    agreement = rank_agreement(table)
    assert agreement.members == 4 and agreement.kendall_test == pytest.approx(1.0)
    assert agreement.kendall_val == pytest.approx(2 / 3) and agreement.spearman_val == pytest.approx(0.8)
    assert math.isnan(rank_agreement(table.iloc[:2]).kendall_val)


@pytest.fixture(scope="module")
def searched_run(tiny_space, digits_npz, tmp_path_factory):
    space_file = tmp_path_factory.mktemp("space") / "tiny.json"
    tiny_space.to_json(space_file)
    out = tmp_path_factory.mktemp("runs") / "run"
    config = SearchConfig(
        space=str(space_file), data=digits_npz, trials=12, supernet_epochs=1, out=str(out), progress=False,
        export_onnx=False,
    )  # fmt: skip
    result = run_search(config)
    return result, config


def test_resume_verifies_a_finished_run(searched_run, capsys):
    result, _ = searched_run
    front_size = len(result.front)
    assert front_size >= 2
    code = search_main(["--resume", str(result.run_dir), "--verify-top", "2", "--verify-epochs", "1", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "verification: 2 front members" in out and "Kendall tau" in out

    table = nas.load_verify(result.run_dir)
    assert len(table) == 2 and (table["state"] == "COMPLETE").all() and (table["epochs_run"] == 1).all()
    assert table["trained_test_accuracy"].between(0, 1).all()
    front = pd.read_csv(result.run_dir / "pareto.csv")
    assert set(table["trial"]) <= set(front["trial"])
    assert table["accuracy"].max() == front["accuracy"].max()  # the most accurate end is always in
    report = (result.run_dir / "report.md").read_text()
    assert "## Verification: the front after training" in report and "Kendall tau" in report
    # the search itself did not run again
    assert (nas.load_trials(result.run_dir)["state"] == "COMPLETE").sum() == 12

    # verifying again with the same settings trains nothing (the verify study is complete)
    code = search_main(["--resume", str(result.run_dir), "--verify-top", "2", "--verify-epochs", "1", "--no-progress"])
    assert code == 0
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(result.run_dir / "study.journal"))
    )
    verify_studies = [
        s for s in optuna.get_all_study_summaries(storage) if s.study_name.startswith("invres-nas-verify")
    ]
    assert len(verify_studies) == 1 and verify_studies[0].n_trials == 2


def test_more_members_than_the_front_is_a_one_line_error(searched_run, capsys):
    result, _ = searched_run
    trials_before = (result.run_dir / "trials.csv").read_bytes()
    code = search_main(["--resume", str(result.run_dir), "--verify-top", "99", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --verify-top 99 asks for more members than the Pareto front has")
    assert (result.run_dir / "trials.csv").read_bytes() == trials_before


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--verify-top", "2", "--verify-epochs", "0"], "--verify-epochs must be an integer >= 1, but got 0"),
        (["--verify-top", "-1"], "--verify-top must be an integer >= 0"),
        (["--verify-top", "2", "--verify-pruner", "magic"], "argument --verify-pruner: invalid choice: 'magic'"),
    ],
)
def test_bad_verify_arguments(argv, message, tmp_path, capsys):
    code = search_main([*argv, "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ray_engine_verifies_as_ray_tune_trials(searched_run, tiny_space, digits_npz, tmp_path):
    """--engine ray: each member is a Ray Tune trial under an ASHA scheduler, mirrored into the
    verify study, so verify.csv reads the same as with the Optuna engine."""
    result, config = searched_run
    ray_config = SearchConfig(
        space=config.space, data=digits_npz, trials=4, out=str(tmp_path / "ray"), progress=False,
        engine="ray", ray_workers=2, supernet=str(result.run_dir / "supernet.pt"), export_onnx=False,
        verify_top=2, verify_epochs=2, verify_pruner="asha",
    )  # fmt: skip
    ray_result = run_search(ray_config)
    table = nas.load_verify(ray_result.run_dir)
    assert len(table) == 2 and set(table["state"]) <= {"COMPLETE", "PRUNED"}
    complete = table[table["state"] == "COMPLETE"]
    assert len(complete) >= 1  # ASHA keeps the best member of a rung
    assert (complete["epochs_run"] == 2).all() and complete["trained_test_accuracy"].between(0, 1).all()
    pruned = table[table["state"] == "PRUNED"]
    assert (pruned["epochs_run"] < 2).all() and pruned["trained_test_accuracy"].isna().all()
    assert table["trained_val_accuracy"].between(0, 1).all()
    assert "## Verification" in (ray_result.run_dir / "report.md").read_text()
    assert (ray_result.run_dir / "ray" / "verify").is_dir()  # trained as Ray Tune trials
