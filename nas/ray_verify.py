"""Verification as Ray Tune trials (``--engine ray --verify-top K``).

Each front member is one Ray Tune trial that trains the member and reports its validation
accuracy after every epoch, so a Ray Tune scheduler (``--verify-pruner``: median stopping,
ASHA or asynchronous HyperBand) can stop hopeless members early. The driver mirrors every trial
into the verify study (the same Optuna study, in the same storage, as the Optuna engine uses):
per-epoch values as intermediate values, then COMPLETE, PRUNED (stopped by the scheduler) or
FAIL, so ``verify.csv``, resuming and the report are the same for both engines.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from search_spaces import ArchSpec, SearchSpace, sample_spec

from .run_dir import file_lock, worker_token
from .verify import VerifySettings, queue_unfinished

# Keys of the results a verify trainable reports.
EPOCH, VAL, TEST = "epoch", "val_accuracy", "test_accuracy"
_WORKER_CACHE: dict[str, Any] = {}


def _worker_inputs(context: dict[str, Any]) -> tuple[Any, Any]:
    """The data and (when fine-tuning) the scorer of inherited subnets, once per worker process."""
    key = repr(sorted(context.items()))
    if key not in _WORKER_CACHE:
        from .checkpoint import load_supernet
        from .data import load_data
        from .device import Runtime
        from .evaluate import SubnetEvaluator

        space = SearchSpace.from_dict(context["space"])
        runtime = Runtime.create(context["device"], context["precision"])
        data = load_data(context["data"], resolution=max(space.resolutions), seed=context["seed"])
        subnets = None
        if context["start"] == "supernet":
            supernet = load_supernet(context["supernet"], space)
            subnets = SubnetEvaluator(supernet, data, runtime=runtime, workers=context["data_workers"])
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = (data, subnets)
    return _WORKER_CACHE[key]


def verify_trainable(config: dict[str, Any], context: dict[str, Any]) -> None:
    """Ray Tune function trainable: train one member, report ``val_accuracy`` every epoch and
    ``test_accuracy`` with the last one."""
    import torch
    from ray import tune

    from .device import Runtime
    from .verify import train_member

    torch.set_num_threads(context["threads"])
    settings = VerifySettings(**context["settings"])
    spec = ArchSpec.from_string(config["arch"])
    data, subnets = _worker_inputs(context)

    def report(epoch: int, accuracy: float) -> bool:
        if epoch < settings.epochs:  # the last epoch is reported below, with the test accuracy
            tune.report({EPOCH: epoch, VAL: accuracy})
        return False  # the scheduler stops a trial by ending this function, not through us

    inherited = subnets.model(spec) if subnets is not None else None
    runtime = Runtime.create(context["device"], context["precision"])
    outcome = train_member(
        spec, data, settings, inherited, report, runtime=runtime, data_workers=context["data_workers"]
    )
    tune.report({EPOCH: outcome.epochs_run, VAL: outcome.val_accuracy, TEST: outcome.test_accuracy,
                 "seconds": outcome.seconds})  # fmt: skip


def make_scheduler(settings: VerifySettings) -> Any:
    """Ray Tune's counterparts of the Optuna pruners, on per-epoch validation accuracy. HyperBand
    is the asynchronous variant: the synchronous one pauses trials, which would restart
    uncheckpointed training from the first epoch."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, MedianStoppingRule

    if settings.pruner == "median":
        return MedianStoppingRule(time_attr=EPOCH, grace_period=1, min_samples_required=2)
    if settings.pruner == "asha":
        return AsyncHyperBandScheduler(time_attr=EPOCH, max_t=settings.epochs, grace_period=1, brackets=1)
    if settings.pruner == "hyperband":
        return AsyncHyperBandScheduler(time_attr=EPOCH, max_t=settings.epochs, grace_period=1, brackets=3)
    return FIFOScheduler()


def _recorder_class():
    from ray.tune import Callback

    class StudyRecorder(Callback):
        """Mirrors the Ray Tune trials (one per member) into the Optuna verify study."""

        def __init__(self, study: optuna.Study, trials: dict[str, optuna.Trial], settings: VerifySettings) -> None:
            self.study, self.trials, self.settings = study, trials, settings
            self.final: dict[str, dict[str, Any]] = {}
            self.last_epoch: dict[str, int] = {}
            self.failed: list[str] = []

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            arch = trial.config["arch"]
            epoch = int(result[EPOCH])
            if epoch > self.last_epoch.get(arch, 0):  # a retried trial reports its epochs again
                self.trials[arch].report(float(result[VAL]), step=epoch)
                self.last_epoch[arch] = epoch
            if TEST in result:
                self.final[arch] = dict(result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            arch = trial.config["arch"]
            optuna_trial = self.trials.pop(arch, None)
            if optuna_trial is None:
                return
            final = self.final.get(arch)
            if final is None:  # stopped by the scheduler before its last epoch
                optuna_trial.set_user_attr("epochs_run", self.last_epoch.get(arch, 0))
                optuna_trial.set_user_attr("test_accuracy", float("nan"))
                self.study.tell(optuna_trial, state=TrialState.PRUNED)
                return
            optuna_trial.set_user_attr("epochs_run", int(final[EPOCH]))
            optuna_trial.set_user_attr("test_accuracy", float(final[TEST]))
            optuna_trial.set_user_attr("seconds", float(final["seconds"]))
            self.study.tell(optuna_trial, float(final[VAL]))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            arch = trial.config["arch"]
            optuna_trial = self.trials.pop(arch, None)
            if optuna_trial is not None:
                self.study.tell(optuna_trial, state=TrialState.FAIL)
                self.failed.append(arch)

        # Tune may pickle its callbacks into the experiment folder; the study holds locks.
        def __getstate__(self) -> dict[str, Any]:
            return {}

    return StudyRecorder


def _ask_members(study: optuna.Study, members: pd.DataFrame, space: SearchSpace, lock_path: Path) -> dict[str, Any]:
    """Queue the members without a finished or live trial and ask a trial for each, under the
    run's lock (another worker on the same storage takes the others)."""
    from .study import WORKER_ATTR, fail_orphaned_trials

    asked: dict[str, optuna.Trial] = {}
    with file_lock(lock_path):
        fail_orphaned_trials(study)
        queue_unfinished(study, members, space)
        while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
            trial = study.ask()
            trial.set_user_attr(WORKER_ATTR, worker_token())
            asked[sample_spec(trial, space).to_string()] = trial
    return asked


def ray_verify_worker(
    study: optuna.Study,
    members: pd.DataFrame,
    space: SearchSpace,
    settings: VerifySettings,
    context: dict[str, Any],
    run_dir: Path,
    lock_path: Path,
    ray_workers: int,
    gpus_per_trial: float = 0.0,
) -> int:
    """Train the members not trained yet as Ray Tune trials (on the Ray instance the caller
    started). ``context`` tells the workers where the data and supernet are (absolute paths).
    Returns the number of members trained here; a member whose training raised is marked FAIL
    (retried by the next run) and reported as a one-line error."""
    from ray import tune

    from .ray_engine import RayTrialError, _last_line

    asked = _ask_members(study, members, space, lock_path)
    if not asked:
        return 0
    recorder = _recorder_class()(study, dict(asked), settings)
    context = {**context, "settings": dataclasses.asdict(settings)}
    resources = {"cpu": context["threads"], "gpu": gpus_per_trial}
    trainable = tune.with_resources(tune.with_parameters(verify_trainable, context=context), resources)
    tuner = tune.Tuner(
        trainable,
        param_space={"arch": tune.grid_search(sorted(asked))},
        tune_config=tune.TuneConfig(
            metric=VAL, mode="max", scheduler=make_scheduler(settings), max_concurrent_trials=ray_workers
        ),
        run_config=tune.RunConfig(
            name="verify",
            storage_path=str((run_dir / "ray").resolve()),
            verbose=0,
            log_to_file=True,
            callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=2),  # a worker that died: train again
        ),
    )
    try:
        results = tuner.fit()
    finally:
        for optuna_trial in recorder.trials.values():  # not reported back: train again next run
            study.tell(optuna_trial, state=TrialState.FAIL)
    errors = [r.error for r in results if r.error is not None]
    if errors:
        raise RayTrialError(
            f"a Ray verify trial failed: {_last_line(errors[0])} (Ray logs in {run_dir / 'ray'}); "
            "trained members are kept, fix the cause and re-run the same command"
        )
    return len(asked)


def ray_context(config: Any, space: SearchSpace, run_dir: Path, data_seed: int) -> dict[str, Any]:
    """What a verify worker needs, with absolute paths (Ray runs trials in folders of its own)."""
    from .ray_engine import _absolute_if_path

    supernet = Path(config.supernet) if config.supernet else run_dir / "supernet.pt"
    return {
        "space": space.to_dict(),
        "data": _absolute_if_path(config.data),
        "seed": data_seed,
        "supernet": str(supernet.resolve()),
        "start": config.verify_from,
        "device": config.device,
        "precision": config.precision,
        "data_workers": config.data_workers,
        "threads": config.threads,
    }


def verify_on_ray(config: Any, run_dir: Path, data_seed: int, **verify_args: Any) -> Any:
    """``verify_front`` with the members trained as Ray Tune trials, on the Ray instance of the
    search (:func:`nas.ray_engine.ray_session`: local, or the cluster at ``--ray-address``)."""
    from .ray_engine import ray_session
    from .verify import verify_front

    gpus = 1.0 if str(verify_args["runtime"].device).startswith("cuda") else 0.0
    ray_options = {
        "context": ray_context(config, verify_args["space"], run_dir, data_seed),
        "run_dir": run_dir,
        "ray_workers": config.ray_workers,
        "gpus_per_trial": gpus,
    }
    with ray_session(config):  # a no-op inside nas.search, which started Ray already
        return verify_front(**verify_args, run_dir=run_dir, ray_options=ray_options)
