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
from nas.distributed import (
    Ranks,
    WorkerError,
    all_reduce_gradients,
    average_buffers,
    check_subnet_parallel,
    launch_local,
    torchrun_context,
)

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


def _subnet_gradient_job(ranks: Ranks, runtime: Runtime, folder: str) -> None:
    # Sub-network parallel: each rank trained other sub-networks, so each has other gradients.
    ranks = ranks.split(2)
    first = torch.nn.Parameter(torch.zeros(3))
    second = torch.nn.Parameter(torch.zeros(2))
    nobody = torch.nn.Parameter(torch.zeros(4))
    first.grad = torch.full((3,), float(ranks.rank + 1))
    if ranks.rank == 1:
        second.grad = torch.tensor([1.0, 2.0])
    all_reduce_gradients([first, second, nobody], ranks, bucket_bytes=12)  # one bucket per parameter
    report = {"first": first.grad.tolist(), "second": second.grad.tolist(), "nobody": nobody.grad is None}
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


def test_sub_network_groups_sum_their_gradients_and_a_gradient_one_rank_lacks_arrives(tmp_path):
    launch_local(functools.partial(_subnet_gradient_job, folder=str(tmp_path)), 2, CPU, threads=1)
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0] == reports[1]
    assert reports[0] == {"first": [3.0] * 3, "second": [1.0, 2.0], "nobody": True}


def test_ranks_in_sub_network_groups():
    ranks = Ranks(5, 8, 1).split(2)  # 4 shards of 2 ranks
    assert (ranks.shards, ranks.shard, ranks.slot, ranks.group_leader) == (4, 2, 1, 4)
    assert (Ranks(5, 8).shards, Ranks(5, 8).shard, Ranks(5, 8).slot) == (8, 5, 0)  # data parallel
    whole = Ranks(1, 2).split(2)
    assert (whole.shards, whole.shard, whole.slot, whole.group_leader) == (1, 0, 1, 0)


@pytest.mark.parametrize(
    "groups, workers, subnets, message",
    [
        (0, 2, 4, "--subnet-parallel must be an integer >= 1, but got 0"),
        (2, 3, 4, "--subnet-parallel 2 needs a multiple of 2 training workers, but got 3; use --train-workers 2 (or a multiple)"),
        (2, 1, 4, "--subnet-parallel 2 needs a multiple of 2 training workers, but got 1; use --train-workers 2 (or a multiple)"),
        (3, 3, 2, "--subnet-parallel 3 is more than the 2 sub-networks a step trains; use at most 2"),
        (2, 2, None, "--subnet-parallel splits a supernet's sub-networks; a single network trains with 1"),
    ],
)
def test_bad_sub_network_groups(groups, workers, subnets, message):
    with pytest.raises(ValueError) as info:
        check_subnet_parallel(groups, workers, subnets)
    assert str(info.value) == message
    check_subnet_parallel(1, workers, subnets)  # plain data parallel is always possible


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
    ranks: Ranks, runtime: Runtime, *, space, data, config, checkpoint: str | None, folder: str,
    stop_after: int | None = None, subnet_parallel: int = 1,
):  # fmt: skip
    from nas.train import train_supernet

    result = train_supernet(
        space, data, config, checkpoint_path=checkpoint, progress=False, seed=0, runtime=runtime,
        ranks=ranks.split(subnet_parallel),
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


# ---- sub-network parallel supernet training -------------------------------------------------------------
def _parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def _trained_by_ranks(workers: int, subnet_parallel: int, space, data, config, folder: Path) -> tuple[list, dict]:
    folder.mkdir()
    job = functools.partial(
        _supernet_job, space=space, data=data, config=config, checkpoint=str(folder / "supernet.pt"),
        folder=str(folder), subnet_parallel=subnet_parallel,
    )  # fmt: skip
    history = launch_local(job, workers, CPU, threads=1)
    digests = {(folder / f"rank{r}.txt").read_text() for r in range(workers)}
    assert len(digests) == 1, "the ranks ended with different weights or batch-norm statistics"
    from nas.checkpoint import load_supernet

    return history, _parameters(load_supernet(folder / "supernet.pt", space))


def _assert_same_training(a: tuple[list, dict], b: tuple[list, dict]) -> None:
    (history_a, weights_a), (history_b, weights_b) = a, b
    assert history_a[0]["loss"] == pytest.approx(history_b[0]["loss"], rel=1e-6)
    assert history_a[0]["train_accuracy"] == history_b[0]["train_accuracy"]
    for name, weight in weights_a.items():
        torch.testing.assert_close(weight, weights_b[name], rtol=1e-4, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.slow
def test_sub_network_parallel_ranks_train_what_one_process_trains(tiny_space, digits_npz, tmp_path):
    """Two ranks that split each step's sub-networks (the teacher on one, the rest on the other,
    soft labels sent across) end with one process's weights, up to float rounding (a few steps:
    rounding differences grow over many), while data parallel over the same ranks does not
    (batch norm sees half the batch)."""
    from nas.data import load_data
    from nas.train import SupernetTrainConfig, train_supernet

    data = load_data(digits_npz, resolution=16, seed=0).subset("train", 128, torch.Generator().manual_seed(0))
    config = SupernetTrainConfig(epochs=1, batch_size=32, num_random=2, warmup_epochs=0.5)
    torch.set_num_threads(1)
    single = train_supernet(tiny_space, data, config, progress=False, seed=0)
    one_process = (single.history, _parameters(single.supernet))
    split = _trained_by_ranks(2, 2, tiny_space, data, config, tmp_path / "split")
    _assert_same_training(split, one_process)
    _, data_parallel = _trained_by_ranks(2, 1, tiny_space, data, config, tmp_path / "data")
    assert any(not torch.allclose(w, one_process[1][n], rtol=1e-3, atol=1e-3) for n, w in data_parallel.items())


@pytest.mark.slow
def test_four_ranks_in_two_sub_network_groups_train_what_two_data_parallel_ranks_train(tiny_space, digits_npz, tmp_path):
    """Groups of 2 over 4 ranks: each group reads one of 2 shards, so the result is 2 data-parallel
    ranks' (same batch-norm batches), up to float rounding."""
    from nas.data import load_data
    from nas.train import SupernetTrainConfig

    data = load_data(digits_npz, resolution=16, seed=0).subset("train", 128, torch.Generator().manual_seed(0))
    config = SupernetTrainConfig(epochs=1, batch_size=32, num_random=1, warmup_epochs=0.5)
    grouped = _trained_by_ranks(4, 2, tiny_space, data, config, tmp_path / "grouped")
    _assert_same_training(grouped, _trained_by_ranks(2, 1, tiny_space, data, config, tmp_path / "data"))
