"""Verifying the Pareto front by training its members: ``nas.search --verify-top K``.

Inherited accuracy ranks candidates; it is not what a trained network scores. After the search,
``K`` members spread along the front are trained standalone (fine-tuned from their inherited
weights, or from scratch), each as a trial of a second Optuna study in the run's storage. Every
epoch reports the validation accuracy to the trial, so a pruner (``--verify-pruner``) can stop
hopeless members early. ``verify.csv`` holds one row per member: its objectives, inherited
accuracy, trained validation and test accuracy, epochs run and whether it was pruned; the report
adds the rank correlation between inherited and trained accuracy.

Verification resumes like the search: the study records every finished member, a member whose
worker died is retried once, and several processes on one run folder share the work.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from search_spaces import ArchSpec, SearchSpace, sample_spec

from .analysis import VERIFY_FILE

VERIFY_STUDY_PREFIX = "invres-nas-verify"
VERIFY_FROM = ("supernet", "scratch")
PRUNERS = ("none", "median", "asha", "hyperband")
# Peak learning rates: fine-tuning starts from trained weights, so it takes a small step size.
FINE_TUNE_LR = 0.01
SCRATCH_LR = 0.1
COLUMNS = [
    "trial",
    "arch",
    "accuracy",
    "latency_ms",
    "madds",
    "params",
    "peak_memory_bytes",
    "inherited_accuracy",
    "trained_val_accuracy",
    "trained_test_accuracy",
    "epochs_run",
    "pruned",
    "state",
    "verify_trial",
    "seconds",
]
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class VerifySettings:
    """What a verification does; the verify study is named after these and its members."""

    top: int
    epochs: int
    start: str = "supernet"  # "supernet": fine-tune the inherited weights; "scratch": random init
    pruner: str = "none"
    seed: int = 0

    def validate(self) -> None:
        for name, value in (("--verify-top", self.top), ("--verify-epochs", self.epochs)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, but got {value!r}")
        if self.start not in VERIFY_FROM:
            raise ValueError(f"--verify-from must be one of {', '.join(VERIFY_FROM)}, but got {self.start!r}")
        if self.pruner not in PRUNERS:
            raise ValueError(f"--verify-pruner must be one of {', '.join(PRUNERS)}, but got {self.pruner!r}")

    @property
    def lr(self) -> float:
        return FINE_TUNE_LR if self.start == "supernet" else SCRATCH_LR


# ---- which members ---------------------------------------------------------------------------------
def spread_members(front: pd.DataFrame, k: int, objectives: Mapping[str, str]) -> pd.DataFrame:
    """``k`` members spread evenly along the front: the front is ordered by its first objective,
    each objective scaled to [0, 1] over the front, and the members nearest to ``k`` evenly
    spaced points of the path through it (by arc length) are taken. Both ends are always in."""
    if k > len(front):
        raise ValueError(
            f"--verify-top {k} asks for more members than the Pareto front has ({len(front)}); "
            f"use --verify-top {len(front)} or fewer"
        )
    names = list(objectives)
    first, direction = names[0], objectives[names[0]]
    ordered = front.sort_values(first, ascending=direction == "min").reset_index(drop=True)
    values = ordered[names].to_numpy(dtype=float)
    lo, hi = values.min(axis=0), values.max(axis=0)
    scaled = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(scaled, axis=0), axis=1))])
    chosen: list[int] = []
    for position in np.linspace(0.0, arc[-1], k):
        distance = np.abs(arc - position)
        distance[chosen] = np.inf
        chosen.append(int(np.argmin(distance)))
    return ordered.iloc[sorted(chosen)].reset_index(drop=True)


# ---- the verify study ------------------------------------------------------------------------------
def study_name(settings: VerifySettings, members: pd.DataFrame) -> str:
    """One verify study per settings and member list: verifying again with other settings, or
    after the search moved the front, starts a study of its own and never mixes members."""
    key = json.dumps(
        {"epochs": settings.epochs, "from": settings.start, "pruner": settings.pruner, "seed": settings.seed,
         "members": list(members["arch"])},
        sort_keys=True,
    )  # fmt: skip
    digest = hashlib.sha256(key.encode()).hexdigest()[:10]
    return f"{VERIFY_STUDY_PREFIX}-top{settings.top}-{digest}"


def make_pruner(settings: VerifySettings) -> optuna.pruners.BasePruner:
    """Optuna's pruners over per-epoch validation accuracy ("asha" is Optuna's asynchronous
    successive halving)."""
    if settings.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if settings.pruner == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1)
    if settings.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=settings.epochs)
    return optuna.pruners.NopPruner()


def open_verify_study(storage: Any, settings: VerifySettings, members: pd.DataFrame) -> optuna.Study:
    """The verify study for ``members`` in ``storage`` (created the first time)."""
    study = optuna.create_study(
        study_name=study_name(settings, members),
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=settings.seed),
        pruner=make_pruner(settings),
        load_if_exists=True,
    )
    if "settings" not in study.user_attrs:
        study.set_user_attr("settings", {"top": settings.top, "epochs": settings.epochs, "from": settings.start,
                                         "pruner": settings.pruner, "seed": settings.seed})  # fmt: skip
    return study


def queue_unfinished(study: optuna.Study, members: pd.DataFrame, space: SearchSpace) -> int:
    """Queue a trial (fixed parameters: the member's architecture) for every member that has none
    finished, running or queued: new members, and members whose trial failed (its worker died or
    raised). Call under the run's lock. Returns how many were queued."""
    from .study import spec_of

    covered = {
        spec.to_string()
        for t in study.get_trials(deepcopy=False, states=(*_FINISHED, TrialState.RUNNING, TrialState.WAITING))
        if (spec := spec_of(t, space)) is not None or (spec := _queued_spec(t, space)) is not None
    }
    queued = 0
    for arch in members["arch"]:
        if arch not in covered:
            study.enqueue_trial(space.params_from_spec(ArchSpec.from_string(arch)), skip_if_exists=False)
            queued += 1
    return queued


def _queued_spec(trial: optuna.trial.FrozenTrial, space: SearchSpace) -> ArchSpec | None:
    """The architecture a queued trial (or one asked but not yet sampled) will train."""
    fixed = trial.system_attrs.get("fixed_params")
    return space.spec_from_params(fixed) if fixed else None


# ---- training a member -----------------------------------------------------------------------------
@dataclass(frozen=True)
class MemberResult:
    val_accuracy: float
    test_accuracy: float
    epochs_run: int
    pruned: bool
    seconds: float


def train_member(
    spec: ArchSpec,
    data: Any,
    settings: VerifySettings,
    inherited: Any | None,
    report: Any,
    *,
    runtime: Any = None,
    data_workers: int = 0,
    progress: bool = False,
) -> MemberResult:
    """Train ``spec`` standalone for ``settings.epochs`` epochs from ``inherited`` weights (or from
    scratch when None) on ``runtime`` (default CPU). ``report(epoch, val_accuracy) -> bool`` is
    called after every epoch; when it returns True the training stops there (pruned)."""
    from .device import CPU
    from .evaluate import evaluate_model
    from .train import TrainConfig, train_model

    runtime = runtime or CPU
    config = TrainConfig(epochs=settings.epochs, lr=settings.lr)

    def on_epoch(record: dict[str, float]) -> bool:
        return bool(report(int(record["epoch"]), float(record["val_accuracy"])))

    started = time.perf_counter()
    result = train_model(
        spec, data, config, init=inherited, progress=progress, seed=settings.seed, runtime=runtime,
        data_workers=data_workers, on_epoch=on_epoch,
    )  # fmt: skip
    last = result.history[-1]["val_accuracy"]
    if result.stopped_early:
        return MemberResult(last, math.nan, len(result.history), True, time.perf_counter() - started)
    test = evaluate_model(result.model, data, "test", resolution=spec.resolution, runtime=runtime, workers=data_workers)
    return MemberResult(last, test.accuracy, len(result.history), False, time.perf_counter() - started)


def verify_worker(
    study: optuna.Study,
    members: pd.DataFrame,
    space: SearchSpace,
    data: Any,
    inherited_model: Any,
    settings: VerifySettings,
    lock_path: Path,
    progress: bool = True,
    runtime: Any = None,
    data_workers: int = 0,
) -> int:
    """Train members until every one has a finished trial or is being trained by another live
    worker. Returns the number of members this worker trained."""
    from tqdm.auto import tqdm

    from .storage import Heartbeat, ask_lock
    from .study import claim_trial, fail_dead_trials, running_trial

    done_here = 0
    total = settings.top
    heartbeat = Heartbeat(study)  # a member trained on a machine that dies is failed, then re-queued
    bar = tqdm(total=total, desc="verify", unit="member", disable=None if progress else True)
    try:
        while True:
            with ask_lock(study, lock_path):  # a server-side lock on database storages: every machine's workers
                fail_dead_trials(study)
                queue_unfinished(study, members, space)
                trials = study.get_trials(deepcopy=False)
                bar.n = sum(t.state in _FINISHED for t in trials)
                bar.refresh()
                if not any(t.state == TrialState.WAITING for t in trials):
                    break
                trial = claim_trial(study, heartbeat)
            spec = sample_spec(trial, space)
            bar.set_postfix_str(spec.to_string()[:40])

            def report(epoch: int, accuracy: float, trial: optuna.Trial = trial) -> bool:
                trial.report(accuracy, step=epoch)
                return trial.should_prune()

            with running_trial(study, trial, heartbeat):
                inherited = inherited_model(spec) if settings.start == "supernet" else None
                outcome = train_member(
                    spec, data, settings, inherited, report, runtime=runtime, data_workers=data_workers
                )
            trial.set_user_attr("epochs_run", outcome.epochs_run)
            trial.set_user_attr("test_accuracy", outcome.test_accuracy)
            trial.set_user_attr("seconds", outcome.seconds)
            if outcome.pruned:
                study.tell(trial, state=TrialState.PRUNED)
            else:
                study.tell(trial, outcome.val_accuracy)
            done_here += 1
            bar.update(0)
    finally:
        heartbeat.stop()
        bar.close()
    return done_here


# ---- the table -------------------------------------------------------------------------------------
def verify_table(study: optuna.Study, members: pd.DataFrame, space: SearchSpace) -> pd.DataFrame:
    """One row per member: its search-trial figures and what training gave (its latest finished
    verify trial; else its latest trial, RUNNING, WAITING or FAIL; MISSING if it has none)."""
    from .study import spec_of

    latest: dict[str, optuna.trial.FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False):  # in trial-number order
        spec = spec_of(t, space)
        if spec is None:
            continue
        arch = spec.to_string()
        if arch not in latest or t.state in _FINISHED or latest[arch].state not in _FINISHED:
            latest[arch] = t
    rows = []
    for _, member in members.iterrows():
        row = {column: member.get(column) for column in COLUMNS[:7]}
        row.update(inherited_accuracy=member["accuracy"], trained_val_accuracy=math.nan, trained_test_accuracy=math.nan,
                   epochs_run=0, pruned=False, state="MISSING", verify_trial=None, seconds=None)  # fmt: skip
        t = latest.get(member["arch"])
        if t is not None:
            epochs = t.intermediate_values
            row.update(state=t.state.name, verify_trial=t.number, seconds=t.user_attrs.get("seconds"))
            if t.state in _FINISHED:
                row.update(
                    trained_val_accuracy=epochs[max(epochs)] if epochs else math.nan,
                    trained_test_accuracy=t.user_attrs.get("test_accuracy", math.nan),
                    epochs_run=int(t.user_attrs.get("epochs_run", len(epochs))),
                    pruned=t.state == TrialState.PRUNED,
                )
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


@dataclass(frozen=True)
class RankAgreement:
    """How well inherited accuracy ranks the trained members (finished, not pruned)."""

    members: int
    kendall_val: float
    spearman_val: float
    kendall_test: float
    spearman_test: float


def rank_agreement(table: pd.DataFrame) -> RankAgreement:
    from scipy import stats

    done = table[(table["state"] == "COMPLETE") & ~table["pruned"].astype(bool)]

    def correlations(column: str) -> tuple[float, float]:
        rows = done.dropna(subset=[column])
        if len(rows) < 3 or rows["inherited_accuracy"].nunique() < 2 or rows[column].nunique() < 2:
            return math.nan, math.nan
        tau = stats.kendalltau(rows["inherited_accuracy"], rows[column]).statistic
        rho = stats.spearmanr(rows["inherited_accuracy"], rows[column]).statistic
        return float(tau), float(rho)

    (kv, sv), (kt, st) = correlations("trained_val_accuracy"), correlations("trained_test_accuracy")
    return RankAgreement(len(done), kv, sv, kt, st)


@dataclass(frozen=True)
class Verification:
    """A finished verification: the settings and the ``verify.csv`` table."""

    settings: VerifySettings
    table: pd.DataFrame

    def _members_text(self) -> str:
        shown = self.table[["trial", "latency_ms", "inherited_accuracy", "trained_val_accuracy",
                            "trained_test_accuracy", "epochs_run", "pruned"]]  # fmt: skip
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")

    def _agreement_text(self) -> str:
        agreement = rank_agreement(self.table)

        def fmt(value: float) -> str:
            return "n/a" if math.isnan(value) else f"{value:.3f}"

        text = (
            f"rank agreement of inherited with trained accuracy over {agreement.members} finished members: "
            f"Kendall tau {fmt(agreement.kendall_val)} (val) / {fmt(agreement.kendall_test)} (test), "
            f"Spearman {fmt(agreement.spearman_val)} (val) / {fmt(agreement.spearman_test)} (test)"
        )
        if math.isnan(agreement.kendall_val):
            text += " (n/a: fewer than 3 finished members with distinct accuracies)"
        return text

    def _setup_text(self) -> str:
        s = self.settings
        start = "fine-tuned from its supernet weights" if s.start == "supernet" else "trained from scratch"
        return (
            f"{len(self.table)} front members spread along it, each {start} for up to {s.epochs} epochs "
            f"(pruner: {s.pruner})"
        )

    def report_lines(self) -> list[str]:
        """The report's section."""
        return [
            "## Verification: the front after training",
            "",
            self._setup_text() + "; trained accuracy on the validation and test splits (`verify.csv`).",
            "",
            "```",
            self._members_text(),
            "```",
            "",
            self._agreement_text()[:1].upper() + self._agreement_text()[1:] + ".",
            "",
        ]

    def summary_lines(self) -> list[str]:
        """For the console summary."""
        return ["verification: " + self._setup_text() + ":", self._members_text(), self._agreement_text()]


def verify_front(
    front: pd.DataFrame,
    objectives: Mapping[str, str],
    settings: VerifySettings,
    *,
    storage: Any,
    space: SearchSpace,
    data: Any,
    inherited_model: Any,
    run_dir: Path,
    lock_path: Path,
    progress: bool = True,
    runtime: Any = None,
    data_workers: int = 0,
    ray_options: dict[str, Any] | None = None,
) -> Verification:
    """Select the members, train those not trained yet (sharing the work with any other worker on
    the same storage), and write ``verify.csv``."""
    from .run_dir import atomic_write_csv

    settings.validate()
    members = spread_members(front, settings.top, objectives)
    study = open_verify_study(storage, settings, members)
    if ray_options is not None:  # --engine ray: Ray Tune trials (nas.ray_verify)
        from .ray_verify import ray_verify_worker

        ray_verify_worker(study, members, space, settings, lock_path=lock_path, **ray_options)
    else:
        verify_worker(
            study, members, space, data, inherited_model, settings, lock_path, progress=progress,
            runtime=runtime, data_workers=data_workers,
        )  # fmt: skip
    table = verify_table(study, members, space)
    atomic_write_csv(run_dir / VERIFY_FILE, table)
    return Verification(settings, table)


__all__ = [
    "PRUNERS",
    "VERIFY_FROM",
    "RankAgreement",
    "Verification",
    "VerifySettings",
    "verify_front",
    "open_verify_study",
    "queue_unfinished",
    "rank_agreement",
    "spread_members",
    "train_member",
    "verify_table",
    "verify_worker",
]
