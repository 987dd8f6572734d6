"""The Ray Tune engine: the same search as Ray Tune trials, for users who outgrow one machine.

Ray Tune's ``OptunaSearch`` drives the same Optuna study (same storage, sampler and constraints)
as the Optuna engine, so the run folder's outputs and columns are identical. Each Ray worker loads
the supernet checkpoint and the data once and evaluates the architectures it is given.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from search_spaces import SearchSpace, sample_spec

from .config import SearchConfig
from .objectives import METRICS
from .run_dir import worker_token
from .storage import Heartbeat
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


# A trial whose code raised reports the error in its result instead of raising: Ray Tune would
# retry it (retries are for workers that died), and the same error would come back every time.
TRIAL_ERROR = "trial_error"
# Retries of a trial whose Ray worker process died (killed, out of memory, node lost).
WORKER_DEATH_RETRIES = 2


def evaluate_trial(config: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Ray Tune trainable: one architecture in, its metrics out (or the error it raised)."""
    try:
        space, evaluator = _worker_evaluator(context)
        params = {name: config[name] for name, _ in space.dimensions()}
        return evaluator(space.spec_from_params(params))
    except Exception as e:
        return {TRIAL_ERROR: f"{type(e).__name__}: {_last_line(e)}"}


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

        def __init__(
            self, *args: Any, constraints: dict[str, float] | None = None, heartbeat: Heartbeat | None = None,
            **kwargs: Any,
        ) -> None:  # fmt: skip
            super().__init__(*args, **kwargs)
            self._constraints = constraints or {}
            self._heartbeat = heartbeat

        def suggest(self, trial_id: str):
            params = super().suggest(trial_id)
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is not None:
                ot_trial.set_user_attr(WORKER_ATTR, worker_token())
                if self._heartbeat is not None:
                    self._heartbeat.add(ot_trial._trial_id)  # noqa: SLF001
            return params

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            ot_trial = self._ot_trials.get(trial_id)
            if ot_trial is None or trial_id in self._completed_trials:
                return super().on_trial_complete(trial_id, result, error)
            if self._heartbeat is not None:
                self._heartbeat.discard(ot_trial._trial_id)  # noqa: SLF001
            if error or not result or any(result.get(m) is None for m in self.metric):
                # its worker died too often, its code raised, or it was stopped before reporting
                from optuna.trial import TrialState

                self._ot_study.tell(ot_trial, state=TrialState.FAIL)
                self._completed_trials.add(trial_id)
                return None
            for name in METRICS:
                if name in result:
                    ot_trial.set_user_attr(name, float(result[name]))
            if "time_this_iter_s" in result:
                ot_trial.set_user_attr("seconds", float(result["time_this_iter_s"]))
            if all(name in result for name in self._constraints):
                record_constraints(ot_trial, result, self._constraints)
            return super().on_trial_complete(trial_id, result, error)

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
            for name in ("_sampler", "_ot_study", "_ot_trials", "_storage", "_heartbeat"):
                state.pop(name, None)
            return state

    return RecordingOptunaSearch


def _stopper_class():
    from ray.tune import Stopper

    class StopOnTrialError(Stopper):
        """The first trial whose code raised ends the experiment (fail fast), while a trial
        whose worker process died is retried (``FailureConfig.max_failures``)."""

        def __init__(self) -> None:
            self.error: str | None = None

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            if result.get(TRIAL_ERROR) and self.error is None:
                self.error = str(result[TRIAL_ERROR])
            return False

        def stop_all(self) -> bool:
            return self.error is not None

    return StopOnTrialError


def _recovery_counter_class():
    from ray.tune import Callback

    class RecoveryCounter(Callback):
        """Counts the trials Tune restarts because their worker process died."""

        def __init__(self) -> None:
            self.recovered = 0

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.recovered += 1

    return RecoveryCounter


def _prepare_environment(config: SearchConfig) -> None:
    """Environment Ray reads when it is imported and started."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if config.ray_address and "RAY_AUTH_MODE" not in os.environ and _ray_token_available():
        # `ray start` clusters use token authentication by default, and Ray sends the token only
        # to clusters it found itself, not to an address it is given.
        os.environ["RAY_AUTH_MODE"] = "token"


@contextlib.contextmanager
def ray_session(config: SearchConfig) -> Iterator[None]:
    """Ray for the search, shut down at the end if started here. Without ``--ray-address`` a
    fresh local instance with ``--ray-workers`` CPUs and bounded memory, whatever Ray's temp
    folder or ``RAY_ADDRESS`` say (``address="local"``); ``auto`` joins this machine's running
    cluster; ``HOST:PORT`` that one. A cluster that cannot be joined is a one-line ValueError."""
    _prepare_environment(config)
    import ray

    if ray.is_initialized():  # the caller's own Ray
        yield
        return
    from .search import status

    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": False}
    if not config.ray_address:
        ray.init(
            address="local", num_cpus=config.ray_workers * config.threads, include_dashboard=False,
            object_store_memory=200 * 1024**2, **quiet,
        )  # fmt: skip
        status(f"ray: a local Ray instance with {config.ray_workers * config.threads} CPUs")
    else:
        status(f"ray: joining the cluster at {config.ray_address}")
        try:
            _check_listening(config.ray_address)
            with _stderr_silenced():  # Ray's C++ client logs every failed connection attempt there
                context = ray.init(address=config.ray_address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as e:
            raise ValueError(
                f"cannot join the Ray cluster at --ray-address {config.ray_address}: {_last_line(e)}; "
                "start one with `ray start --head` (a cluster with token authentication needs its token in "
                "~/.ray/auth_token or RAY_AUTH_TOKEN), or omit --ray-address for a local instance"
            ) from None
        address = context.address_info.get("gcs_address", config.ray_address)
        status(f"ray: the Ray cluster at {address} ({ray.cluster_resources().get('CPU', 0):g} CPUs)")
    try:
        yield
    finally:
        ray.shutdown()


def _check_listening(address: str) -> None:
    """A ConnectionError at once if nothing listens where ``address`` (``auto``: the address
    Ray's temp folder records) points: Ray itself would retry a stopped cluster for minutes."""
    import socket

    from ray._private.services import get_ray_address_from_environment  # how ray.init resolves it

    resolved = get_ray_address_from_environment(address, None)
    if not resolved or ":" not in resolved or "://" in resolved:
        return  # ray.init reports it (no cluster found, or a ray:// client address)
    host, port = resolved.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as e:
        raise ConnectionError(f"nothing answers at {resolved} ({getattr(e, 'strerror', None) or e})") from None


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null (native code writes there, past ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _ray_token_available() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


def run_ray(config: SearchConfig, space: SearchSpace, study: Any, run_dir: Path, data_seed: int) -> None:
    """Run the remaining trials as Ray Tune trials on a local Ray instance (bounded CPUs and
    memory) or on the cluster at ``--ray-address``. A trial whose worker process dies is retried
    (twice); one whose code raises stops the run with its error."""
    _prepare_environment(config)
    from optuna.trial import TrialState
    from ray import tune

    from .search import status
    from .study import fail_dead_trials

    fail_dead_trials(study)
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

    heartbeat = Heartbeat(study)
    searcher = _searcher_class()(
        space=define_by_run,
        metric=list(config.objectives),
        mode=list(config.directions.values()),
        sampler=sampler,
        study_name=study.study_name,
        storage=study._storage,  # noqa: SLF001 (the same study object, so both engines share one storage)
        constraints=config.constraints(),
        heartbeat=heartbeat,
    )
    from ray.tune.search import ConcurrencyLimiter

    stopper = _stopper_class()()
    recoveries = _recovery_counter_class()()
    with ray_session(config):  # a no-op inside nas.search, which started Ray already
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
                    stop=stopper,
                    callbacks=[recoveries],
                    failure_config=tune.FailureConfig(max_failures=WORKER_DEATH_RETRIES),
                ),
            )
            results = tuner.fit()
            if recoveries.recovered:
                status(f"ray: {recoveries.recovered} trial(s) retried after its Ray worker died")
            if stopper.error is not None:
                raise RayTrialError(
                    f"a Ray trial failed: {stopper.error} (Ray logs in {run_dir / 'ray'}); "
                    "finished trials are kept, fix the cause and re-run the same command"
                )
            lost = [r.error for r in results if r.error is not None]
            if lost:
                status(
                    f"ray: {len(lost)} trial(s) failed after {WORKER_DEATH_RETRIES} retries ({_last_line(lost[0])}); "
                    "re-run the same command to complete the study"
                )
        finally:
            heartbeat.stop()
