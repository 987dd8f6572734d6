"""nas.distributed with real gloo process groups on this machine: gradients are averaged over
ranks (missing ones stay missing), a rank's bad input comes back as one line, and data-parallel
supernet training keeps every rank identical and resumes exactly."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import pytest
import torch

from nas.device import Runtime
from nas.distributed import Ranks, WorkerError, all_reduce_gradients, average_buffers, launch_local, torchrun_context

CPU = Runtime.create("cpu")


def _gradient_job(ranks: Ranks, runtime: Runtime, folder: str) -> None:
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    unused = torch.nn.Parameter(torch.zeros(4))
    norm = torch.nn.BatchNorm1d(2)
    layer.weight.grad = torch.full_like(layer.weight, float(ranks.rank + 1))
    layer.bias.grad = torch.arange(2, dtype=torch.float32) * (ranks.rank + 1)
    norm.running_mean.fill_(float(ranks.rank))
    all_reduce_gradients([layer.weight, layer.bias, unused], ranks, bucket_bytes=8)  # several buckets
    average_buffers(norm, ranks)
    report = {
        "weight": layer.weight.grad.tolist(),
        "bias": layer.bias.grad.tolist(),
        "unused": unused.grad is None,
        "mean": norm.running_mean.tolist(),
    }
    Path(folder, f"rank{ranks.rank}.json").write_text(json.dumps(report))


def _failing_job(ranks: Ranks, runtime: Runtime) -> None:
    if ranks.rank == 1:
        raise ValueError("rank 1 found bad input; fix it")
    torch.distributed.barrier()


def test_gradients_are_averaged_over_ranks_and_missing_ones_stay_missing(tmp_path):
    launch_local(functools.partial(_gradient_job, folder=str(tmp_path)), 2, CPU, threads=1)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0] == reports[1]
    assert reports[0]["weight"] == [[1.5] * 3] * 2 and reports[0]["bias"] == [0.0, 1.5]
    assert reports[0]["unused"] and reports[0]["mean"] == [0.5, 0.5]


def test_a_rank_bad_input_is_one_line_in_the_launcher():
    with pytest.raises(ValueError) as info:
        launch_local(_failing_job, 2, CPU, threads=1)
    assert str(info.value) == "rank 1 found bad input; fix it"


def _crashing_job(ranks: Ranks, runtime: Runtime) -> None:
    if ranks.rank == 1:
        raise RuntimeError("rank 1 crashed first")
    torch.distributed.barrier()  # rank 0 then loses its peer, and fails too


def test_a_rank_crash_is_reported_by_its_own_message_not_a_peers_lost_connection(capsys):
    with pytest.raises(WorkerError) as info:
        launch_local(_crashing_job, 2, CPU, threads=1)
    assert str(info.value) == "a training rank failed: rank 1 crashed first (traceback above)"
    assert "RuntimeError: rank 1 crashed first" in capsys.readouterr().err


def test_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert torchrun_context() is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun_context() == Ranks(3, 4, 1)
    monkeypatch.delenv("RANK")
    with pytest.raises(ValueError, match="start the ranks with torchrun"):
        torchrun_context()


# ---- data-parallel supernet training -----------------------------------------------------------------
def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _supernet_job(
    ranks: Ranks, runtime: Runtime, *, space, data, config, checkpoint: str, folder: str, stop_after: int | None
):
    from nas.train import train_supernet

    result = train_supernet(
        space, data, config, checkpoint_path=checkpoint, progress=False, seed=0, runtime=runtime, ranks=ranks,
        on_epoch=(lambda record: record["epoch"] >= stop_after) if stop_after else None,
    )  # fmt: skip
    Path(folder, f"rank{ranks.rank}.txt").write_text(_digest(result.supernet))
    return result.history


@pytest.mark.slow
def test_two_ranks_stay_identical_and_resume_exactly(tiny_space, digits_npz, tmp_path):
    from nas.checkpoint import load_checkpoint, load_supernet
    from nas.data import load_data
    from nas.train import SupernetTrainConfig

    data = load_data(digits_npz, resolution=16, seed=0)
    config = SupernetTrainConfig(epochs=2, batch_size=32, num_random=1, warmup_epochs=0.5)

    def run(name: str, stop_after: int | None = None) -> list[dict]:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        job = functools.partial(
            _supernet_job, space=tiny_space, data=data, config=config, checkpoint=str(folder / "supernet.pt"),
            folder=str(folder), stop_after=stop_after,
        )  # fmt: skip
        return launch_local(job, 2, CPU, threads=1)

    straight = run("straight")
    digests = {(tmp_path / "straight" / f"rank{r}.txt").read_text() for r in (0, 1)}
    assert len(digests) == 1, "the ranks ended with different weights"
    assert [h["epoch"] for h in straight] == [1, 2] and straight[-1]["loss"] < straight[0]["loss"]
    assert straight[-1]["val_largest"] > 0.15

    stopped = run("resumed", stop_after=1)
    assert [h["epoch"] for h in stopped] == [1]
    payload = load_checkpoint(tmp_path / "resumed" / "supernet.pt", "invres-nas-supernet/1")
    assert payload["epoch"] == 1 and not payload["complete"] and payload["runtime"]["ranks"] == 2
    resumed = run("resumed")
    assert [h["epoch"] for h in resumed] == [1, 2]
    a = load_supernet(tmp_path / "straight" / "supernet.pt", tiny_space)
    b = load_supernet(tmp_path / "resumed" / "supernet.pt", tiny_space)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def _model_job(ranks: Ranks, runtime: Runtime, *, spec, data, config, folder: str):
    from nas.train import train_model

    result = train_model(spec, data, config, progress=False, seed=0, runtime=runtime, ranks=ranks)
    Path(folder, f"rank{ranks.rank}.txt").write_text(_digest(result.model))
    return result.history


@pytest.mark.slow
def test_two_ranks_training_a_network_end_identical_batch_norm_statistics_included(tiny_space, digits_npz, tmp_path):
    from nas.data import load_data
    from nas.train import TrainConfig

    data = load_data(digits_npz, resolution=16, seed=0)
    config = TrainConfig(epochs=1, batch_size=32, warmup_epochs=0.5)
    job = functools.partial(_model_job, spec=tiny_space.largest(), data=data, config=config, folder=str(tmp_path))
    history = launch_local(job, 2, CPU, threads=1)
    assert [h["epoch"] for h in history] == [1]
    digests = {(tmp_path / f"rank{r}.txt").read_text() for r in (0, 1)}
    assert len(digests) == 1, "the ranks ended with different weights or batch-norm statistics"
