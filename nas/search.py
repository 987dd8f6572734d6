"""``python -m nas.search --target pixel``: multi-objective architecture search, end to end.

Trains (or reuses) a weight-sharing supernet on the data, searches the space with Optuna (or Ray
Tune) for architectures that are accurate and cheap on the target, and writes a run folder:
config.json, trials.csv, pareto.csv, best/ (arch.json, model.pt, model.onnx, and model.tflite with
the [litert] extra), report.md, pareto.png.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from hw_models.litert import litert_available
from hw_models.measure import torch_threads
from invres_utils.atomic_files import atomic_write_bytes
from invres_utils.cli import OneLineParser
from search_spaces import SearchSpace, get_space

from .analysis import pareto_front
from .baselines import mobilenet_v2_family
from .config import CONSTRAINTS, ENGINES, SAMPLERS, SELECTIONS, SearchConfig
from .distributed import WorkerError
from .objectives import METRICS, CandidateEvaluator, CostModel, check_feasible
from .ray_engine import RayTrialError, ray_session
from .report import compare_with_baselines, format_front, plot_pareto, select_best, write_report
from .run_dir import (
    CONFIG_FILE,
    atomic_write_csv,
    atomic_write_json,
    file_lock,
    git_commit,
    now_iso,
    package_versions,
    read_json,
    timestamp,
)
from .storage import shown_url
from .study import open_study, quiet_optuna_experimental_warnings, run_worker, trials_table
from .verify import PRUNERS, VERIFY_FROM, verify_front

DEFAULT_RUNS_ROOT = Path("runs")
# How to run the exported network so that it needs the peak memory the search optimised for.
EXECUTORS: dict[str, dict[str, str]] = {
    "split": {
        "executor": "hw_models.executor.SplitExecutor",
        "executor_note": "each block's expanded tensor computed in t chunks (paper Section 5)",
    },
    "naive": {
        "executor": "hw_models.executor.NaiveExecutor",
        "executor_note": "plain layer-by-layer inference, batch norm folded",
    },
    "bottleneck": {
        "executor": "fused-blocks",
        "executor_note": (
            "each inverted-residual block run as one fused operation, expanded tensor never materialised "
            "(paper Section 5, t -> expanded width); hw_models.executor.SplitExecutor approaches it as t grows"
        ),
    },
}
LOCK_FILE = ".lock"
# Where the study lives: continuing a run folder with another one would mix two studies.
STUDY_PLACE = ("storage", "study_name")


class UsageError(ValueError):
    """Bad arguments or inputs: reported in one line, exit code 2."""


@dataclass
class SearchResult:
    run_dir: Path
    trials: pd.DataFrame
    front: pd.DataFrame
    best: pd.Series | None
    summary: str


# ---- run folder ------------------------------------------------------------------------------
def default_run_dir(config: SearchConfig) -> Path:
    target = Path(config.target).stem if config.target.endswith(".json") else config.target
    return DEFAULT_RUNS_ROOT / f"{target}-{timestamp()}"


def prepare_run_dir(config: SearchConfig, space: SearchSpace, argv: list[str] | None) -> Path:
    """Create the run folder, or check that an existing one holds the same search and can be
    continued. Nothing in an existing folder is touched before the check passes; a folder that
    cannot be created or written is a one-line error, and what was created for it is removed."""
    run_dir = Path(config.out) if config.out else default_run_dir(config)
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--out {run_dir} is a file, not a folder; choose a folder path")
    config_path = run_dir / CONFIG_FILE
    if config_path.exists():
        saved = read_json(config_path, "run config")
        if not isinstance(saved, dict) or "args" not in saved or "space" not in saved:
            raise UsageError(f"{config_path} is not an invres-nas run config; use another --out")
        previous = saved["args"]
        current = saved_args(config)
        defaults = SearchConfig().to_dict()  # for keys that older run folders do not have
        mismatched = [
            key
            for key in ("target", "data", "seed", "objectives", "memory_policy", "split_t", *CONSTRAINTS, *STUDY_PLACE)
            if previous.get(key, defaults[key]) != current.get(key)
        ]
        if not _same_space(saved["space"], space):
            mismatched.insert(0, "space")
        if mismatched:
            details = ", ".join(
                f"{k}: {previous.get(k, defaults[k])!r} -> {current.get(k)!r}" for k in mismatched if k != "space"
            )
            raise UsageError(
                f"{run_dir} holds a search with a different {', '.join(mismatched)}"
                + (f" ({details})" if details else "")
                + "; resume it with the same arguments or use a new --out"
            )
        saved.setdefault("resumed", []).append({"at": now_iso(), "argv": saved_argv(argv), "trials": config.trials})
        saved["args"] = current
        atomic_write_json(config_path, saved)
        return run_dir
    if run_dir.is_dir() and any(p for p in run_dir.iterdir() if not p.name.startswith(".")):
        raise UsageError(
            f"--out {run_dir} exists and is not a run folder (no {CONFIG_FILE}); choose an empty or new folder"
        )
    created = _first_missing(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            config_path,
            {
                "args": saved_args(config),
                "argv": saved_argv(argv),
                "space": space.to_dict(),
                "seed": config.seed,
                "created": now_iso(),
                "versions": package_versions(),
                "git_commit": git_commit(),
            },
        )
    except (OSError, ValueError) as e:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(e, ValueError):  # atomic_write_json: names the file and why
            raise UsageError(str(e)) from None
        raise UsageError(
            f"--out {run_dir}: cannot create the run folder ({e.strerror or e}); choose a writable folder"
        ) from None
    return run_dir


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what creating it would add)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def saved_args(config: SearchConfig) -> dict[str, Any]:
    """The arguments as config.json records them: a storage URL's password is masked."""
    args = config.to_dict()
    if config.storage:
        args["storage"] = shown_url(config.storage)
    return args


def saved_argv(argv: list[str] | None) -> list[str] | None:
    return None if argv is None else [shown_url(a) if "://" in a else a for a in argv]


def _same_space(saved: Any, space: SearchSpace) -> bool:
    try:
        return SearchSpace.from_dict(saved) == space
    except (ValueError, TypeError):
        return False


# ---- supernet ----------------------------------------------------------------------------------
def given_supernet(config: SearchConfig, space: SearchSpace, runtime: Any = None) -> tuple[Any, int]:
    """``(supernet, data split seed)``: the ``--supernet`` checkpoint (None if not given) and the
    seed its training data was split with, which the search must reuse: with another split it
    would score candidates on images the supernet trained on."""
    from .checkpoint import load_supernet_with_identity

    if not config.supernet:
        return None, config.seed
    supernet, identity = load_supernet_with_identity(config.supernet, space)
    if runtime is not None:
        runtime.module(supernet)
    trained_on = identity.get("data")
    if trained_on is not None and not _same_data(trained_on, config.data):
        raise UsageError(
            f"supernet checkpoint {config.supernet} was trained on data {trained_on!r}, not {config.data!r}; "
            f"search with --data {trained_on} or train a supernet on this data (omit --supernet)"
        )
    return supernet, int(identity.get("seed", config.seed))


def _same_data(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return a.strip().lower() == b.strip().lower()


def supernet_train_config(config: SearchConfig) -> Any:
    """The supernet training settings of a search: ``nas.train --space`` uses the same defaults."""
    from .train import SupernetTrainConfig

    train_config = SupernetTrainConfig()
    if config.supernet_epochs is not None:
        train_config = dataclasses.replace(train_config, epochs=config.supernet_epochs)
    return train_config


def obtain_supernet(config: SearchConfig, space: SearchSpace, data: Any, run_dir: Path, runtime: Any) -> Any:
    """A trained supernet: the run folder's own checkpoint, trained (or its training resumed)
    under a lock so that concurrent workers train it once, through the same code path as
    ``python -m nas.train --space`` (``--device``, ``--precision``, ``--data-workers``,
    ``--train-workers``). A run folder beside this one that finished training a supernet with
    exactly these settings on the embedded data lends a copy instead (training is deterministic,
    so it would come out the same)."""
    from .train import run_supernet_training, supernet_identity

    train_config = supernet_train_config(config)
    checkpoint = run_dir / "supernet.pt"
    with file_lock(run_dir / ".supernet.lock"):
        if not checkpoint.exists() and not os.path.exists(config.data):
            twin = trained_twin(run_dir, supernet_identity(space, data, train_config, config.seed, runtime.precision))
            if twin is not None:
                status(f"supernet: reusing {twin} (same space, data, seed and training settings)")
                atomic_write_bytes(checkpoint, twin.read_bytes())
        if not checkpoint.exists():
            workers = f", {config.train_workers} training workers" if config.train_workers > 1 else ""
            if config.subnet_parallel > 1:
                workers += f" (sub-networks split {config.subnet_parallel} ways)"
            status(
                f"supernet: training {train_config.epochs} epochs into {checkpoint} on {runtime.describe()}{workers}"
            )
        else:
            status(f"supernet: continuing from {checkpoint}")
        return run_supernet_training(
            space, data, train_config, checkpoint, seed=config.seed, runtime=runtime, train_workers=config.train_workers,
            subnet_parallel=config.subnet_parallel, data_workers=config.data_workers, progress=config.progress,
        ).supernet  # fmt: skip


def trained_twin(run_dir: Path, identity: dict[str, Any], newest: int = 20) -> Path | None:
    """The finished ``supernet.pt`` of a sibling run folder (one of the ``newest``) trained with
    ``identity``, if any. Unreadable checkpoints are passed over."""
    from .checkpoint import SUPERNET_FORMAT, load_checkpoint

    candidates = [p for p in run_dir.parent.glob("*/supernet.pt") if p.parent != run_dir]
    candidates.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates[:newest]:
        try:
            payload = load_checkpoint(path, SUPERNET_FORMAT, "supernet checkpoint")
        except ValueError:
            continue
        if payload.get("complete") and payload.get("identity") == identity:
            return path
    return None


# ---- outputs -----------------------------------------------------------------------------------
def baseline_table(space: SearchSpace, evaluate: Any) -> pd.DataFrame:
    rows = []
    for label, spec in mobilenet_v2_family(space):
        metrics = evaluate(spec)
        mult = float(label.split(" x")[1].split(" ")[0])
        rows.append({"label": label, "width_mult": mult, **metrics, "arch": spec.to_string()})
    return pd.DataFrame(rows, columns=["label", "width_mult", *METRICS, "arch"])


def export_best(run_dir: Path, best: pd.Series, evaluator: CandidateEvaluator, config: SearchConfig) -> list[str]:
    """best/arch.json, best/deployment.json, best/model.pt (inherited weights, BN recalibrated),
    best/model.onnx (checked against torch)."""
    from search_spaces import ArchSpec

    from .export import export_onnx_checked, save_model

    spec = ArchSpec.from_string(best["arch"])
    folder = run_dir / "best"
    folder.mkdir(exist_ok=True)
    spec.to_json(folder / "arch.json")
    deployment = {
        "target": config.target,
        "predicted_latency_ms": float(best["latency_ms"]),
        "memory_policy": config.memory_policy,
        **EXECUTORS[config.memory_policy],
        "t": config.split_t if config.memory_policy == "split" else 1,
        "bytes_per_element": 2,
        "peak_memory_bytes": int(best["peak_memory_bytes"]),
        "madds": int(best["madds"]),
        "params": int(best["params"]),
        "accuracy": float(best["accuracy"]),
        "trial": int(best["trial"]),
    }
    atomic_write_json(folder / "deployment.json", deployment)
    model = evaluator.subnets.model(spec).cpu()
    save_model(model, spec, folder / "model.pt")
    written = ["best/arch.json", "best/deployment.json", "best/model.pt"]
    if config.export_onnx:
        export_onnx_checked(model, spec, folder / "model.onnx")
        written.append("best/model.onnx")
    if config.export_tflite or (config.export_tflite is None and litert_available()):
        from .export import export_tflite_checked

        check = export_tflite_checked(model, spec, folder / "model.tflite")
        status(f"best/model.tflite: LiteRT output vs torch max abs diff {check.max_abs_diff:.1e} ({check.seconds:.0f} s)")
        written.append("best/model.tflite")
    return written


@dataclass
class SearchOutputs:
    """What the report and the plot are made of (kept so that verification can add to them)."""

    trials: pd.DataFrame
    front: pd.DataFrame
    baselines: pd.DataFrame
    best: pd.Series | None
    comparison: Any
    counts: dict[str, int]
    usage: list[str]
    config_lines: list[str]


def write_outputs(
    run_dir: Path,
    config: SearchConfig,
    space: SearchSpace,
    study: Any,
    evaluator: CandidateEvaluator,
) -> tuple[SearchResult, SearchOutputs]:
    trials = trials_table(study, space, evaluator.cost_model, config.constraints())
    atomic_write_csv(run_dir / "trials.csv", trials)
    objectives = config.directions
    # Accuracy and latency are always measured, so the front is always reported on them too.
    front = pareto_front(trials, objectives)
    atomic_write_csv(run_dir / "pareto.csv", front)
    baselines = baseline_table(space, evaluator)
    atomic_write_csv(run_dir / "baselines.csv", baselines)
    best = select_best(front, objectives, config.select)
    if best is not None:
        export_best(run_dir, best, evaluator, config)
    states = trials["state"].value_counts().to_dict()
    counts = {"complete": states.get("COMPLETE", 0), "failed": states.get("FAIL", 0)}
    done = trials[trials["state"] == "COMPLETE"]
    counts["infeasible"] = int((~done["feasible"].astype(bool)).sum())
    constraints = config.constraints()
    outputs = SearchOutputs(
        trials=trials,
        front=front,
        baselines=baselines,
        best=best,
        comparison=compare_with_baselines(trials, baselines, objectives),
        counts=counts,
        usage=usage_lines(run_dir, config.supernet or run_dir / "supernet.pt"),
        config_lines=[
            f"target `{config.target}`, space `{space.name}` ({space.num_architectures():,} architectures), data `{config.data}`",
            f"engine {config.engine}, sampler {config.sampler}, objectives {', '.join(f'{k} ({d})' for k, d in objectives.items())}, seed {config.seed}",
            "constraints: " + (", ".join(f"{m} <= {b:g}" for m, b in constraints.items()) or "none"),
            f"peak memory policy: {config.memory_policy}"
            + (f" (t = {config.split_t})" if config.memory_policy == "split" else ""),
        ],
    )
    return write_report_files(run_dir, config, space, outputs), outputs


def write_report_files(
    run_dir: Path,
    config: SearchConfig,
    space: SearchSpace,
    outputs: SearchOutputs,
    verification: Any = None,
) -> SearchResult:
    """pareto.png and report.md (with the verified members, once there are any) and the summary."""
    plot_pareto(
        outputs.trials, outputs.baselines, run_dir / "pareto.png",
        f"{space.name} on {config.target}: {len(outputs.trials)} trials",
        verified=verification.table if verification is not None else None,
    )  # fmt: skip
    write_report(
        run_dir / "report.md",
        title=f"Search {run_dir.name}",
        config_lines=outputs.config_lines,
        counts=outputs.counts,
        front=outputs.front,
        best=outputs.best,
        comparison=outputs.comparison,
        objectives=config.directions,
        baselines=outputs.baselines,
        usage=outputs.usage,
        extra_sections=verification.report_lines() if verification is not None else [],
    )
    summary = format_summary(
        run_dir, outputs.front, outputs.best, outputs.comparison, outputs.counts, outputs.usage, config.constraints()
    )
    if verification is not None:
        summary += "\n" + "\n".join(verification.summary_lines())
    return SearchResult(run_dir, outputs.trials, outputs.front, outputs.best, summary)


def usage_lines(run_dir: Path, supernet: str | Path) -> list[str]:
    """How to use a finished run: exports, retraining, searching again with its supernet, Python."""
    return [
        f"python -m nas.export {run_dir} --format onnx          # or json, yaml, torchscript, tflite",
        f"python -m nas.train --arch {run_dir}/best/arch.json   # retrain from scratch (--init supernet to fine-tune)",
        f"python -m nas.search --supernet {supernet} --objectives accuracy,latency_ms,peak_memory_bytes   # search again, no supernet training",
        f"python -c \"from search_spaces import ArchSpec, build_model; m = build_model(ArchSpec.from_json('{run_dir}/best/arch.json'))\"",
        f"python -c \"import nas; df = nas.load_trials('{run_dir}'); print(nas.pareto_front(df))\"",
    ]


def format_summary(run_dir, front, best, comparison, counts, usage, constraints) -> str:
    lines = ["", f"trials: {', '.join(f'{k} {v}' for k, v in counts.items())}"]
    if front.empty:
        why = " meeting " + ", ".join(f"{m} <= {b:g}" for m, b in constraints.items()) if constraints else ""
        lines.append(f"no completed trial{why}: nothing exported")
    else:
        lines += ["Pareto front:", format_front(front)]
    if best is not None:
        lines.append(f"selected: trial {int(best['trial'])}  {best['arch']}")
    if comparison is not None:
        lines.append(
            f"hypervolume: search {comparison.hv_search:.4g} vs MobileNetV2 family {comparison.hv_baseline:.4g}; "
            f"{comparison.baselines_dominated}/{comparison.baselines_total} baselines dominated"
        )
    lines += [
        f"run folder: {run_dir}  (report.md, pareto.png, trials.csv, best/)",
        "use it:",
        *("  " + u for u in usage),
    ]
    return "\n".join(lines)


# ---- the search ----------------------------------------------------------------------------------
def run_search(config: SearchConfig, argv: list[str] | None = None) -> SearchResult:
    """Everything ``python -m nas.search`` does, callable from Python. Bad input raises
    ``UsageError``/``ValueError`` before the run folder is created or changed."""
    from .data import load_data
    from .device import Runtime
    from .distributed import check_workers

    quiet_optuna_experimental_warnings()
    if config.export_tflite:
        from hw_models.litert import require_litert

        require_litert("--tflite yes")
    space = get_space(config.space)
    cost_model = CostModel.create(config.target, config.memory_policy, config.split_t)
    check_feasible(space, cost_model, config.constraints())
    runtime = Runtime.create(config.device, config.precision)
    check_workers(config.train_workers, runtime)
    supernet, data_seed = given_supernet(config, space, runtime)
    data = load_data(config.data, resolution=max(space.resolutions), seed=data_seed)
    if getattr(data, "num_classes", space.num_classes) != space.num_classes:
        raise UsageError(
            f"the data has {data.num_classes} classes but space {space.name!r} has {space.num_classes}; "
            "use a space whose num_classes matches the data"
        )
    if supernet is None:
        check_training(config, space, data, runtime)
    # Ray is started (or joined) and a database study opened and checked before the run folder
    # exists, so that a cluster or storage that cannot be used leaves no run folder behind.
    with ray_session(config) if config.engine == "ray" else contextlib.nullcontext():
        study = open_study(config, space, None) if config.storage else None
        run_dir = prepare_run_dir(config, space, argv)
        status(
            f"run folder {run_dir}; space {space.name} ({space.num_architectures():,} architectures), data {config.data}"
            + (f"; study {config.study_name!r} in {shown_url(config.storage)}" if config.storage else "")
        )
        if study is None:
            study = open_study(config, space, run_dir)
        if supernet is None:
            started = time.perf_counter()
            supernet = obtain_supernet(config, space, data, run_dir, runtime)
            status(f"supernet: ready in {time.perf_counter() - started:.0f} s")
        evaluator = CandidateEvaluator(supernet, data, cost_model, runtime=runtime, workers=config.data_workers)
        status(
            f"search: {config.engine} ({config.sampler}), {config.trials} trials in total, "
            f"objectives {', '.join(config.objectives)}, target {config.target}"
        )
        with torch_threads(config.threads):
            if config.engine == "optuna":
                run_worker(
                    study, space, evaluator, config.objectives, config.trials, run_dir / LOCK_FILE,
                    progress=config.progress, constraints=config.constraints(),
                )  # fmt: skip
            else:
                from .ray_engine import run_ray

                run_ray(config, space, study, run_dir, data_seed)
            status("writing the run folder: trials, front, baselines, best architecture, report")
            with file_lock(run_dir / LOCK_FILE):
                result, outputs = write_outputs(run_dir, config, space, study, evaluator)
        if not config.verify_top:
            return result
        settings = config.verify_settings()
        status(
            f"verify: training {settings.top} front members for up to {settings.epochs} epochs "
            f"(from {settings.start}, pruner {settings.pruner})"
        )
        verify_args = dict(
            front=result.front, objectives=config.directions, settings=settings, storage=study._storage,  # noqa: SLF001
            space=space, data=data, inherited_model=evaluator.subnets.model, lock_path=run_dir / LOCK_FILE,
            progress=config.progress, runtime=runtime, data_workers=config.data_workers,
        )  # fmt: skip
        if config.engine == "ray":
            from .ray_verify import verify_on_ray

            verification = verify_on_ray(config, run_dir, data_seed, **verify_args)
        else:
            with torch_threads(config.threads):
                verification = verify_front(**verify_args, run_dir=run_dir)
        with file_lock(run_dir / LOCK_FILE):
            return write_report_files(run_dir, config, space, outputs, verification)


def check_training(config: SearchConfig, space: SearchSpace, data: Any, runtime: Any) -> None:
    """Refuse, before the run folder is touched, supernet training that cannot run: too little
    data for the batch over the training workers, or an existing checkpoint in ``--out`` trained
    with other settings (e.g. another ``--precision``)."""
    from .distributed import Ranks, check_subnet_parallel
    from .train import check_resumable, steps_per_epoch, supernet_identity

    train_config = supernet_train_config(config)
    check_subnet_parallel(config.subnet_parallel, config.train_workers, train_config.subnets_per_step)
    steps_per_epoch(data, train_config.batch_size, Ranks(0, config.train_workers, 0, config.subnet_parallel))
    if config.out:
        check_resumable(
            Path(config.out) / "supernet.pt",
            supernet_identity(space, data, train_config, config.seed, runtime.precision),
        )


def status(message: str) -> None:
    """A stage of the run, on stderr: visible in logs, where progress bars are switched off."""
    print(f"[nas.search] {message}", file=sys.stderr, flush=True)


class SearchParser(OneLineParser):
    """A usage error is raised, so that ``main`` reports it like any other bad input (exit 2)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    d = SearchConfig()
    p = SearchParser(
        prog="python -m nas.search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--target",
        default=d.target,
        help="latency target: a shipped name (pixel, host), a saved one, or a target file (default pixel)",
    )
    p.add_argument("--space", default=d.space, help="search space name or JSON file (default proxy-digits)")
    p.add_argument(
        "--data",
        default=d.data,
        help="'cluttered-digits' (embedded default), 'digits', a CIFAR-10 python folder, an image folder or an .npz file",
    )
    p.add_argument("--engine", default=d.engine, choices=ENGINES)
    p.add_argument("--sampler", default=d.sampler, choices=SAMPLERS)
    p.add_argument(
        "--objectives",
        default=",".join(d.objectives),
        help="comma-separated: accuracy, latency_ms, madds, params, peak_memory_bytes",
    )
    p.add_argument("--trials", type=int, default=d.trials, help=f"completed trials to reach (default {d.trials})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--max-latency-ms", type=float, default=None)
    p.add_argument("--max-madds", type=float, default=None)
    p.add_argument("--max-params", type=float, default=None)
    p.add_argument("--max-memory-kb", type=float, default=None, help="peak activation memory bound in KiB")
    p.add_argument("--memory-policy", default=d.memory_policy, choices=("bottleneck", "split", "naive"))
    p.add_argument("--split-t", type=int, default=d.split_t, help="chunks for --memory-policy split")
    p.add_argument("--select", default=d.select, choices=SELECTIONS, help="which front member to export as best")
    p.add_argument(
        "--out",
        default=None,
        help="run folder (default runs/<target>-<timestamp>); re-run with the same --out to continue",
    )
    p.add_argument(
        "--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved arguments"
    )
    p.add_argument(
        "--storage",
        default=None,
        help="database URL the study lives in, shared by workers on any machine: postgresql://user@host:5432/db "
        "(pip install 'invres-nas[postgres]'), mysql+pymysql://... ([mysql]), sqlite:///file.db "
        "(default: a journal file in the run folder)",
    )
    p.add_argument("--study-name", default=d.study_name, help=f"study name in the storage (default {d.study_name})")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (default: local runtime)")
    p.add_argument("--ray-workers", type=int, default=d.ray_workers, help="concurrent Ray trials")
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch threads for scoring trials (default 1, so that several workers share a machine; "
        "supernet training uses every core)",
    )
    p.add_argument("--supernet", default=None, help="reuse a trained supernet checkpoint")
    p.add_argument("--supernet-epochs", type=int, default=None, help="override the supernet training epochs")
    p.add_argument(
        "--device",
        default=d.device,
        help="auto|cpu|cuda|cuda:N|mps: supernet training and trial scoring (default auto)",
    )
    p.add_argument(
        "--precision", default=d.precision, help="supernet training precision: fp32, bf16 or fp16 (scoring is fp32)"
    )
    p.add_argument("--data-workers", type=int, default=d.data_workers, help="DataLoader worker processes (default 0)")
    p.add_argument(
        "--train-workers",
        type=int,
        default=d.train_workers,
        help="data-parallel supernet training processes (default 1)",
    )
    p.add_argument(
        "--subnet-parallel",
        type=int,
        default=d.subnet_parallel,
        metavar="G",
        help="groups of G training workers split each step's sub-networks and share a batch shard "
        "(exact; faster than data parallel where a step is many small ops, e.g. small images on CPUs; default 1)",
    )
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX export")
    p.add_argument(
        "--tflite",
        default="auto",
        choices=("auto", "yes", "no"),
        help="write best/model.tflite (checked on LiteRT): auto = when the [litert] extra is installed",
    )
    p.add_argument(
        "--verify-top",
        type=int,
        default=d.verify_top,
        metavar="K",
        help="after the search, train K members spread along the Pareto front standalone and compare their "
        "trained with their inherited accuracy (verify.csv); with --resume RUN, verifies a finished run",
    )
    p.add_argument("--verify-epochs", type=int, default=d.verify_epochs, help=f"epochs per verified member (default {d.verify_epochs})")
    p.add_argument(
        "--verify-from",
        default=d.verify_from,
        choices=VERIFY_FROM,
        help="supernet: fine-tune the inherited weights (default); scratch: train from random initialisation",
    )
    p.add_argument(
        "--verify-pruner",
        default=d.verify_pruner,
        choices=PRUNERS,
        help="stop hopeless members early on their per-epoch validation accuracy: Optuna's median, "
        "successive halving (asha) or hyperband pruner (default none)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def config_from_args(args: argparse.Namespace, argv: list[str] | None) -> SearchConfig:
    values = {
        "target": args.target,
        "space": args.space,
        "data": args.data,
        "engine": args.engine,
        "sampler": args.sampler,
        "objectives": args.objectives,
        "trials": args.trials,
        "seed": args.seed,
        "max_latency_ms": args.max_latency_ms,
        "max_madds": args.max_madds,
        "max_params": args.max_params,
        "max_memory_kb": args.max_memory_kb,
        "memory_policy": args.memory_policy,
        "split_t": args.split_t,
        "select": args.select,
        "out": args.out,
        "storage": args.storage,
        "study_name": args.study_name,
        "ray_address": args.ray_address,
        "ray_workers": args.ray_workers,
        "threads": args.threads,
        "supernet": args.supernet,
        "supernet_epochs": args.supernet_epochs,
        "device": args.device,
        "precision": args.precision,
        "data_workers": args.data_workers,
        "train_workers": args.train_workers,
        "subnet_parallel": args.subnet_parallel,
        "export_onnx": not args.no_onnx,
        "export_tflite": {"auto": None, "yes": True, "no": False}[args.tflite],
        "progress": not args.no_progress,
        "verify_top": args.verify_top,
        "verify_epochs": args.verify_epochs,
        "verify_from": args.verify_from,
        "verify_pruner": args.verify_pruner,
    }
    if args.resume:
        saved_path = Path(args.resume) / CONFIG_FILE
        if not saved_path.is_file():
            raise UsageError(f"--resume {args.resume} is not a run folder (no {CONFIG_FILE})")
        saved = read_json(saved_path, "run config")
        if not isinstance(saved, dict) or not isinstance(saved.get("args"), dict):
            raise UsageError(f"{saved_path} is not an invres-nas run config")
        given = {a.lstrip("-").split("=")[0].replace("-", "_") for a in (argv or []) if a.startswith("--")}
        merged = dict(saved["args"])
        merged.update({k: v for k, v in values.items() if k in given and k != "resume"})
        merged["out"] = str(args.resume)
        if "storage" not in given and merged.get("storage") and _password_masked(merged["storage"]):
            raise UsageError(
                f"{saved_path} records the storage without its password ({merged['storage']}); "
                "pass --storage with the full URL again (or keep the password in ~/.pgpass or PGPASSWORD)"
            )
        values = merged
    return SearchConfig.from_dict(values)


def _password_masked(url: str) -> bool:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).password == "***"
    except Exception:
        return False


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
        config = config_from_args(args, argv)
        result = run_search(config, argv)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (RayTrialError, WorkerError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # e.g. the disk filled up or the run folder was removed mid-run
        print(f"error: cannot write {e.filename or 'the run folder'}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: finished trials are saved; re-run the same command to continue", file=sys.stderr)
        return 130
    print(result.summary)
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0 if result.best is not None else 1


if __name__ == "__main__":
    sys.exit(main())
