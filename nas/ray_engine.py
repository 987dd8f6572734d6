"""The Ray Tune engine: the same search as Ray Tune trials, for users who outgrow one machine.

Ray Tune's ``OptunaSearch`` drives the same Optuna study (same storage, sampler and constraints)
as the Optuna engine, so the run folder's outputs and columns are identical. Each Ray worker loads
the supernet checkpoint and the data once and evaluates the architectures it is given.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from search_spaces import SearchSpace, sample_spec

from .config import SearchConfig
from .objectives import METRICS
from .run_dir import worker_token
from .study import WORKER_ATTR, count_states, make_sampler, record_constraints

_WORKER_CACHE: dict[str, Any] = {}


def _worker_evaluator(context: dict[str, Any]) -> Any:
    """Build (once per worker process) what it takes to score a candidate."""
    key = repr(sorted(context.items()))
    if key not in _WORKER_CACHE:
        import torch

        from .checkpoint import load_supernet
        from .data import load_data
        from .objectives import CandidateEvaluator, CostModel

        torch.set_num_threads(1)
        space = SearchSpace.from_dict(context["space"])
        data = load_data(context["data"], resolution=max(space.resolutions), seed=context["seed"])
        supernet = load_supernet(context["supernet"], space)
        cost_model = CostModel.create(context["target"], context["memory_policy"], context["split_t"])
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = (space, CandidateEvaluator(supernet, data, cost_model))
    return _WORKER_CACHE[key]


def evaluate_trial(config: dict[str, Any], context: dict[str, Any]) -> dict[str, float]:
    """Ray Tune trainable: one architecture in, its metrics out."""
    space, evaluator = _worker_evaluator(context)
    params = {name: config[name] for name, _ in space.dimensions()}
    return evaluator(space.spec_from_params(params))


class RayTrialError(RuntimeError):
    """A trial failed inside Ray: reported by ``nas.search`` in one line (exit 1)."""


def _absolute_if_path(value: str) -> str:
    """``value`` made absolute if it names an existing file or folder (a data or target path),
    unchanged if it is a name such as ``cluttered-digits`` or ``pixel``."""
    return str(Path(value).resolve()) if Path(value).exists() else value


def _last_line(error: BaseException) -> str:
    """The root cause of an error Ray re-raises with the worker's whole traceback in its text."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    class RecordingOptunaSearch(OptunaSearch):
        """OptunaSearch that also stores every metric (not just the objectives) and the driver's
        identity on the Optuna trial, so trials.csv and crash recovery work as with Optuna, and
        records the constraint values before the trial is told, as the Optuna engine does."""

        def __init__(self, *args: Any, constraints: dict[str, float] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._constraints = constraints or {}

        def suggest(self, trial_id: str):
            params = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None:
                ot_trial.set_user_attr(WORKER_ATTR, worker_token())
            return params

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None and result:
                for name in METRICS:
                    if name in result:
                        ot_trial.set_user_attr(name, float(result[name]))
                if "time_this_iter_s" in result:
                    ot_trial.set_user_attr("seconds", float(result["time_this_iter_s"]))
                if not error and all(name in result for name in self._constraints):
                    record_constraints(ot_trial, result, self._constraints)
            super().on_trial_complete(trial_id, result, error)

        # The search state lives in the Optuna storage (that is how runs resume), so Tune's own
        # searcher checkpoint, which would pickle the sampler and storage, is not needed.
        def save(self, checkpoint_path: str) -> None:
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

        # Tune pickles its configuration (search algorithm included) into the experiment folder;
        # the sampler and study hold thread locks (Optuna >= 5.1's NSGA-II sampler) and are not
        # needed there for the same reason.
        def __getstate__(self) -> dict[str, Any]:
            state = self.__dict__.copy()
            for name in ("_sampler", "_ot_study", "_ot_trials", "_storage"):
                state.pop(name, None)
            return state

    return RecordingOptunaSearch


def run_ray(config: SearchConfig, space: SearchSpace, study: Any, run_dir: Path, data_seed: int) -> None:
    """Run the remaining trials as Ray Tune trials on a local runtime (bounded CPUs/memory) or on
    the cluster at ``--ray-address``."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    import ray
    from optuna.trial import TrialState
    from ray import tune

    from .study import fail_orphaned_trials

    fail_orphaned_trials(study)
    counts = count_states(study)
    remaining = config.trials - counts[TrialState.COMPLETE] - counts[TrialState.RUNNING]
    if remaining <= 0:
        return
    # Ray runs each trial in its own working directory: every path must be absolute.
    supernet_path = (
        str(Path(config.supernet).resolve()) if config.supernet else str((run_dir / "supernet.pt").resolve())
    )
    context = {
        "space": space.to_dict(),
        "data": _absolute_if_path(config.data),
        "seed": data_seed,  # the data split the supernet was trained with
        "supernet": supernet_path,
        "target": _absolute_if_path(config.target),
        "memory_policy": config.memory_policy,
        "split_t": config.split_t,
    }
    sampler = make_sampler(config)

    def define_by_run(trial: Any) -> None:
        sample_spec(trial, space)

    searcher = _searcher_class()(
        space=define_by_run,
        metric=list(config.objectives),
        mode=list(config.directions.values()),
        sampler=sampler,
        study_name=study.study_name,
        storage=study._storage,  # noqa: SLF001 (the same study object, so both engines share one storage)
        constraints=config.constraints(),
    )
    from ray.tune.search import ConcurrencyLimiter

    started_here = False
    if not ray.is_initialized():
        if config.ray_address:
            ray.init(address=config.ray_address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                num_cpus=config.ray_workers,
                include_dashboard=False,
                object_store_memory=200 * 1024**2,
                logging_level=logging.WARNING,
                log_to_driver=False,
                configure_logging=False,
            )
        started_here = True
    try:
        trainable = tune.with_resources(tune.with_parameters(evaluate_trial, context=context), {"cpu": 1})
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=ConcurrencyLimiter(searcher, max_concurrent=config.ray_workers),
                num_samples=remaining,
            ),
            run_config=tune.RunConfig(
                name="tune",
                storage_path=str((run_dir / "ray").resolve()),
                verbose=0,
                log_to_file=True,
                failure_config=tune.FailureConfig(fail_fast=True),
            ),
        )
        results = tuner.fit()
        errors = [r.error for r in results if r.error is not None]
        if errors:
            raise RayTrialError(
                f"a Ray trial failed: {_last_line(errors[0])} (Ray logs in {run_dir / 'ray'}); "
                "finished trials are kept, fix the cause and re-run the same command"
            )
    finally:
        if started_here:
            ray.shutdown()
