"""The Optuna study behind a search: storage, sampler, the trials table, and the worker loop
shared by every process that works on the same storage."""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from search_spaces import ArchSpec, SearchSpace, sample_spec

from .config import STUDY_DEFINING, SearchConfig
from .objectives import METRICS, CostModel, violations
from .run_dir import worker_is_alive_here, worker_is_dead, worker_token
from .storage import GRACE_SECONDS, HEARTBEAT_SECONDS, Heartbeat, ask_lock, connect_storage, shown_url

JOURNAL_FILE = "study.journal"
WORKER_ATTR = "worker"
RETRY_ATTR = "retry_of"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def storage_for(
    config: SearchConfig,
    run_dir: Path | None,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
    grace_seconds: int = GRACE_SECONDS,
) -> optuna.storages.BaseStorage:
    """``--storage`` (a database URL: PostgreSQL, MySQL, SQLite; with heartbeats, so that a dead
    worker's trials are retried from any machine) or, by default, a journal file in the run
    folder, which the workers of that folder share. Errors are one-line ``ValueError``s."""
    if config.storage:
        return connect_storage(config.storage, heartbeat_seconds, grace_seconds, on_stale_trial=retry_once)
    from optuna.storages.journal import JournalFileBackend

    assert run_dir is not None, "the journal storage lives in the run folder"
    return optuna.storages.JournalStorage(JournalFileBackend(str(run_dir / JOURNAL_FILE)))


def make_sampler(config: SearchConfig) -> optuna.samplers.BaseSampler:
    """The sampler; constraints reach it through the values each trial records
    (:func:`record_constraints`)."""
    if config.sampler == "nsga2":
        # Many short generations beat a few long ones here: on the default run (300 trials), a
        # population of 24 dominated all MobileNetV2 baselines for seeds 0-2, one of 50 did not.
        population = max(8, min(24, config.trials // 10))
        return optuna.samplers.NSGAIISampler(population_size=population, seed=config.seed)
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=config.seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=config.seed)


def record_constraints(trial: optuna.trial.Trial, metrics: dict[str, float], constraints: dict[str, float]) -> None:
    """Optuna constraint values (<= 0 means met), one per bound, named by its metric, set before
    the trial is told: NSGA-II and TPE keep infeasible trials off their fronts, and Optuna
    Dashboard shows the values."""
    for (metric, _), value in zip(constraints.items(), violations(metrics, constraints)):
        trial.set_constraint(metric, value)


def spec_of(trial: optuna.trial.FrozenTrial | optuna.trial.Trial, space: SearchSpace) -> ArchSpec | None:
    """The architecture a trial sampled, or None if it died before sampling all of it."""
    names = [name for name, _ in space.dimensions()]
    if not all(name in trial.params for name in names):
        return None
    return space.spec_from_params(trial.params)


def study_identity(config: SearchConfig, space: SearchSpace) -> dict[str, Any]:
    identity = {k: v for k, v in config.to_dict().items() if k in STUDY_DEFINING}
    identity["space"] = space.to_dict()
    return json.loads(json.dumps(identity))  # as the storage gives it back (tuples become lists)


def open_study(
    config: SearchConfig,
    space: SearchSpace,
    run_dir: Path | None,
    storage: optuna.storages.BaseStorage | None = None,
) -> optuna.Study:
    """Create the study or load it to continue; a study made for another space, target,
    objectives or constraints is refused. ``storage`` defaults to :func:`storage_for`."""
    sampler = make_sampler(config)
    directions = ["maximize" if d == "max" else "minimize" for d in config.directions.values()]
    if storage is None:
        storage = storage_for(config, run_dir)
    try:
        study = optuna.create_study(
            study_name=config.study_name, storage=storage, sampler=sampler, directions=directions, load_if_exists=True
        )
    except ValueError as e:  # e.g. the study exists with another number of objectives
        where = shown_url(config.storage) if config.storage else run_dir
        raise ValueError(f"cannot open study {config.study_name!r} in {where}: {e}") from None
    identity = study_identity(config, space)
    stored = study.user_attrs.get("identity")
    if stored is None:
        study.set_user_attr("identity", identity)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(config.objectives))  # axis labels in Optuna Dashboard and plots
    elif stored != identity:
        changed = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        raise ValueError(
            f"study {config.study_name!r} in {shown_url(config.storage) if config.storage else run_dir} was made "
            f"with a different {', '.join(changed)}; use a new --out (or --storage, or --study-name) for a different search"
        )
    return study


def count_states(study: optuna.Study) -> dict[TrialState, int]:
    counts = dict.fromkeys(TrialState, 0)
    for t in study.get_trials(deepcopy=False):
        counts[t.state] += 1
    return counts


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Trials left RUNNING by a process of this machine that died (killed, crashed) are marked
    FAIL and their architecture is queued again, so it is retried once and never counted twice.
    (Trials of other machines are failed by their missing heartbeat: :func:`fail_dead_trials`.)"""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = t.user_attrs.get(WORKER_ATTR)
        if token is None or not worker_is_dead(token):
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # noqa: SLF001 (no public API)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        retry_once(study, t)
    return failed


def retry_once(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial's architecture again, unless the trial was itself a retry."""
    if trial.params and RETRY_ATTR not in trial.user_attrs:
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number}, skip_if_exists=False)


def fail_heartbeatless_trials(study: optuna.Study) -> list[int]:
    """On storages with heartbeats, fail (and retry once) RUNNING trials that never got a
    heartbeat although they started longer than the grace period ago and no live process of this
    machine owns them: their worker died between asking for the trial and its first heartbeat
    (Optuna's stale-trial check skips trials without one, so they would stay RUNNING for ever)."""
    from .storage import rdb_backend

    backend = rdb_backend(study)
    if backend is None or backend.heartbeat_interval is None:
        return []
    from optuna.storages._rdb import models  # no public query for trials without a heartbeat

    grace = backend.grace_period or 2 * backend.heartbeat_interval
    with backend.scoped_session() as session:
        silent = {
            trial_id
            for (trial_id,) in session.query(models.TrialModel.trial_id)
            .filter(models.TrialModel.study_id == study._study_id)  # noqa: SLF001
            .filter(models.TrialModel.state == TrialState.RUNNING)
            .filter(~models.TrialModel.heartbeats.any())
        }
    now = datetime.datetime.now()
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = t.datetime_start
        if t._trial_id not in silent or started is None or (now - started).total_seconds() <= grace:  # noqa: SLF001
            continue
        if worker_is_alive_here(t.user_attrs.get(WORKER_ATTR)):
            continue
        try:
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)  # noqa: SLF001
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        failed.append(t.number)
        retry_once(study, t)
    return failed


def fail_dead_trials(study: optuna.Study) -> None:
    """Fail (and retry once) the trials of dead workers: processes of this machine that are
    gone, and, on storages with heartbeats, trials whose heartbeat stopped for the grace period
    or that never got one."""
    fail_orphaned_trials(study)
    fail_heartbeatless_trials(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # calls retry_once for each (see storage_for)


def _awaited_trials(study: optuna.Study) -> int:
    """RUNNING trials whose worker this process cannot see (another machine, or no token)."""
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return sum(1 for t in running if not worker_is_alive_here(t.user_attrs.get(WORKER_ATTR)))


def claim_trial(study: optuna.Study, heartbeat: Heartbeat) -> optuna.Trial:
    """``study.ask()`` for this worker (call under :func:`~nas.storage.ask_lock`): the trial is
    marked with this worker's token and kept alive by ``heartbeat``, so that others can tell a
    running trial from one whose worker died."""
    trial = study.ask()
    trial.set_user_attr(WORKER_ATTR, worker_token())
    heartbeat.add(trial._trial_id)  # noqa: SLF001
    return trial


@contextlib.contextmanager
def running_trial(study: optuna.Study, trial: optuna.Trial, heartbeat: Heartbeat) -> Iterator[None]:
    """The work of a claimed trial: an exception fails the trial (and propagates); either way its
    heartbeat stops when the work ends, before the caller tells the study the outcome."""
    try:
        yield
    except Exception:
        study.tell(trial, state=TrialState.FAIL)
        raise
    finally:
        heartbeat.discard(trial._trial_id)  # noqa: SLF001


def run_worker(
    study: optuna.Study,
    space: SearchSpace,
    evaluate: Callable[[ArchSpec], dict[str, float]],
    objectives: tuple[str, ...],
    n_trials: int,
    lock_path: Path,
    progress: bool = True,
    on_trial: Callable[[], None] | None = None,
    constraints: dict[str, float] | None = None,
) -> int:
    """Run trials until ``n_trials`` have COMPLETEd in the study (counting every worker's).
    Asking for a trial happens under a lock (:func:`~nas.storage.ask_lock`), so concurrent
    workers never overshoot and trial numbers stay unique. When the only trials left are running
    in workers this process cannot see (other machines) and the storage keeps heartbeats, it
    waits for them: they either finish or, their worker dead, are failed and retried here.
    Returns the number of trials this worker completed."""
    from tqdm.auto import tqdm

    done_here = 0
    heartbeat = Heartbeat(study)
    with ask_lock(study, lock_path):
        start = count_states(study)[TrialState.COMPLETE]
    bar = tqdm(
        total=n_trials, initial=min(start, n_trials), desc="search", unit="trial", disable=None if progress else True
    )
    try:
        while True:
            trial = None
            with ask_lock(study, lock_path):
                fail_dead_trials(study)
                counts = count_states(study)
                complete, running = counts[TrialState.COMPLETE], counts[TrialState.RUNNING]
                if complete >= n_trials:
                    break
                if complete + running >= n_trials:
                    if heartbeat.interval is None or _awaited_trials(study) == 0:
                        break  # the rest runs in live workers of this machine, which finish it
                else:
                    trial = claim_trial(study, heartbeat)
            if trial is None:
                time.sleep(min(heartbeat.interval or 1, 2))
                continue
            started = time.perf_counter()
            with running_trial(study, trial, heartbeat):
                spec = sample_spec(trial, space)
                metrics = evaluate(spec)
            for name in METRICS:
                trial.set_user_attr(name, metrics[name])
            trial.set_user_attr("seconds", time.perf_counter() - started)
            record_constraints(trial, metrics, constraints or {})
            study.tell(trial, [metrics[o] for o in objectives])
            done_here += 1
            bar.n = min(count_states(study)[TrialState.COMPLETE], n_trials)
            bar.set_postfix(acc=f"{metrics['accuracy']:.3f}", lat=f"{metrics['latency_ms']:.2f}ms")
            bar.refresh()
            if on_trial is not None:
                on_trial()
    finally:
        heartbeat.stop()
        bar.close()
    return done_here


def trials_table(
    study: optuna.Study, space: SearchSpace, cost_model: CostModel, constraints: dict[str, float]
) -> pd.DataFrame:
    """One row per trial: number, state, metrics, feasibility, the architecture as a compact
    string, and one ``params_*`` column per searched parameter."""
    dims = [name for name, _ in space.dimensions()]
    rows = []
    for t in study.get_trials(deepcopy=False):
        spec = spec_of(t, space)
        costs = cost_model(spec) if spec is not None else {}
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
        for name in METRICS:
            row[name] = t.user_attrs.get(name, costs.get(name)) if t.state == TrialState.COMPLETE else costs.get(name)
        row["feasible"] = bool(spec is not None and all(v <= 0 for v in violations(costs, constraints)))
        row["arch"] = spec.to_string() if spec is not None else None
        row["seconds"] = t.user_attrs.get("seconds")
        row[RETRY_ATTR] = t.user_attrs.get(RETRY_ATTR)
        for name in dims:
            row[f"params_{name}"] = t.params.get(name)
        rows.append(row)
    columns = ["trial", "state", *METRICS, "arch", "feasible", "seconds", RETRY_ATTR, *(f"params_{n}" for n in dims)]
    return pd.DataFrame(rows, columns=columns)


def quiet_optuna_experimental_warnings() -> None:
    logging.getLogger("optuna").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Our workers ask and tell themselves and beat for their trials (nas.storage.Heartbeat), so
    # Optuna's advice to use Study.optimize with a heartbeat storage does not apply.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
