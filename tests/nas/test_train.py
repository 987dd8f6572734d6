"""Supernet and standalone training, batch-norm recalibration, subnet evaluation, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from nas.checkpoint import load_supernet
from nas.data import load_data
from nas.device import Runtime
from nas.evaluate import SubnetEvaluator, evaluate_model, recalibrate_batch_norm
from nas.train import SupernetTrainConfig, TrainConfig, learning_rate, sandwich, train_model, train_supernet
from nas.train import main as train_main

FAST = SupernetTrainConfig(epochs=4, batch_size=32, num_random=1, warmup_epochs=0.5)


@pytest.fixture(scope="module")
def data(digits_npz):
    return load_data(digits_npz, resolution=16, seed=0)


@pytest.fixture(scope="module")
def trained(tiny_space, data, tmp_path_factory):
    path = tmp_path_factory.mktemp("supernet") / "supernet.pt"
    return train_supernet(tiny_space, data, FAST, checkpoint_path=path, progress=False, seed=0), path


def test_supernet_learns(trained, tiny_space, data):
    result, _ = trained
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    score = SubnetEvaluator(result.supernet, data)(tiny_space.largest())
    assert score.accuracy > 0.3  # 10 classes: chance is 0.1
    assert score.examples == data.size("val")


def test_training_is_seeded_and_reproducible(trained, tiny_space, data):
    result, _ = trained
    again = train_supernet(tiny_space, data, FAST, progress=False, seed=0)
    for (name, a), b in zip(result.supernet.state_dict().items(), again.supernet.state_dict().values()):
        assert torch.equal(a, b), name
    other = train_supernet(tiny_space, data, dataclasses.replace(FAST, epochs=1), progress=False, seed=1)
    assert not torch.equal(other.supernet.stem.conv.weight, result.supernet.stem.conv.weight)


def test_resume_mid_training_equals_training_straight_through(trained, tiny_space, data, tmp_path):
    result, _ = trained
    path = tmp_path / "supernet.pt"
    # Stopped after epoch 2 of 4 (the checkpoint a killed run leaves), then resumed: the same
    # weights as four epochs in one go.
    stop_after = {"calls": 0}

    def interrupt(*args, **kwargs):
        stop_after["calls"] += 1
        if stop_after["calls"] > 2:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        import nas.train

        original = nas.train.save_checkpoint
        mp.setattr(nas.train, "save_checkpoint", lambda *a, **k: (interrupt(), original(*a, **k)))
        with pytest.raises(KeyboardInterrupt):
            train_supernet(tiny_space, data, FAST, checkpoint_path=path, progress=False, seed=0)
    assert torch.load(path, weights_only=True)["epoch"] == 2
    resumed = train_supernet(tiny_space, data, FAST, checkpoint_path=path, progress=False, seed=0)
    assert resumed.resumed_at_epoch == 2
    for (name, a), b in zip(result.supernet.state_dict().items(), resumed.supernet.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_finished_checkpoint_is_reused_not_retrained(trained, tiny_space, data):
    result, path = trained
    again = train_supernet(tiny_space, data, FAST, checkpoint_path=path, progress=False, seed=0)
    assert again.resumed_at_epoch == 4 and again.seconds == 0.0
    loaded = load_supernet(path, tiny_space)
    assert torch.equal(loaded.stem.conv.weight, result.supernet.stem.conv.weight)


def test_checkpoint_with_other_settings_is_refused(trained, tiny_space, data):
    _, path = trained
    with pytest.raises(ValueError, match="different config"):
        train_supernet(tiny_space, data, dataclasses.replace(FAST, lr=0.05), checkpoint_path=path, progress=False)


@pytest.mark.parametrize(
    "content, fragment",
    [(b"", "corrupt"), (b"garbage", "corrupt"), (None, "not an invres-nas-supernet/1 file")],
    ids=["empty", "garbage", "other torch file"],
)
def test_bad_checkpoint_is_one_line(tmp_path, tiny_space, content, fragment):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=fragment) as info:
        load_supernet(path, tiny_space)
    assert "\n" not in str(info.value)


def test_truncated_checkpoint_is_refused(trained, tiny_space, tmp_path):
    _, path = trained
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(ValueError, match="corrupt"):
        load_supernet(cut, tiny_space)


def test_checkpoint_holding_code_is_refused(tmp_path, tiny_space):
    """weights_only loading: a pickle that would run code is an error, and the code never runs."""
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "invres-nas-supernet/1", "payload": Evil()}, path)
    with pytest.raises(ValueError, match="corrupt or not an invres-nas file"):
        load_supernet(path, tiny_space)
    assert not marker.exists()


def test_recalibration_gives_exact_batch_statistics():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
    x = torch.randn(40, 3, 5, 5) * 3 + 1
    recalibrate_batch_norm(model, [x[:20], x[20:]])
    conv_out = model[0](x).detach()
    assert torch.allclose(model[1].running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert not model.training and model[1].momentum == 0.1


def test_evaluator_recalibrates_and_matches_the_exported_model(trained, tiny_space, data):
    result, _ = trained
    evaluator = SubnetEvaluator(result.supernet, data)
    spec = tiny_space.sample(np.random.default_rng(0))
    model = evaluator.model(spec)
    plain = result.supernet.extract(spec).eval()  # supernet statistics, not recalibrated
    assert not torch.equal(model.stem[1].running_mean, plain.stem[1].running_mean)
    score = evaluator(spec)
    again = evaluate_model(model, data, "val", resolution=spec.resolution)
    assert score == again


def test_scoring_batches_are_sized_by_the_crops_they_are_read_at(digits_npz):
    # Crops are normalised at the data's resolution before they are resized to the candidate's:
    # a batch's size comes from the larger of the two, not from the candidate's alone.
    from nas.evaluate import EvalImages

    cpu = Runtime.create("cpu", "fp32")
    images = EvalImages(load_data(digits_npz, resolution=48, seed=0), "val", cpu, cache_bytes=0)
    assert images.batch_size(32, 500) == cpu.eval_batch_size(48, 500) < cpu.eval_batch_size(32, 500)
    assert images.batch_size(64, 500) == cpu.eval_batch_size(64, 500)


def test_sandwich_is_largest_smallest_then_random(tiny_space):
    specs = sandwich(tiny_space, np.random.default_rng(0), 3)
    assert specs[0] == tiny_space.largest() and specs[1] == tiny_space.smallest() and len(specs) == 5


def test_learning_rate_schedule():
    assert learning_rate(0, 100, 10, 1.0) == pytest.approx(0.1)
    assert learning_rate(9, 100, 10, 1.0) == pytest.approx(1.0)
    assert learning_rate(55, 100, 10, 1.0) == pytest.approx(0.5)
    assert learning_rate(99, 100, 10, 1.0) < 0.01


def test_train_model_from_scratch_and_fine_tune(trained, tiny_space, data):
    result, _ = trained
    spec = tiny_space.smallest()
    scratch = train_model(spec, data, TrainConfig(epochs=4, batch_size=32, warmup_epochs=0.5), progress=False)
    assert scratch.history[-1]["val_accuracy"] > 0.2 and not scratch.model.training
    inherited = result.supernet.extract(spec)
    # Fine-tuning starts from the inherited weights: at a vanishing learning rate they barely move.
    tuned = train_model(spec, data, TrainConfig(epochs=1, batch_size=32, lr=1e-9), init=inherited, progress=False)
    for (name, a), b in zip(tuned.model.state_dict().items(), inherited.state_dict().values()):
        if name.endswith("weight") and a.ndim > 1:
            assert torch.allclose(a, b, atol=1e-6), name
    assert len(tuned.history) == 1 and "val_accuracy" in tuned.history[0]


def test_train_model_on_epoch_callback_sees_each_record_and_can_stop(tiny_space, data):
    seen = []

    def report(record):
        seen.append(record)
        return record["epoch"] == 2

    config = TrainConfig(epochs=5, batch_size=32, warmup_epochs=0.5)
    result = train_model(tiny_space.smallest(), data, config, progress=False, on_epoch=report)
    assert result.stopped_early and [h["epoch"] for h in result.history] == [1, 2] and len(seen) == 2
    for record in seen:
        assert {"epoch", "loss", "train_accuracy", "val_accuracy", "val_loss", "seconds", "images_per_second"} <= set(record)
        assert 0 <= record["val_accuracy"] <= 1 and record["images_per_second"] > 0
    finished = train_model(tiny_space.smallest(), data, dataclasses.replace(config, epochs=1), progress=False, on_epoch=lambda r: None)
    assert not finished.stopped_early


def test_a_callback_exception_stops_training(tiny_space, data):
    class Pruned(Exception):
        pass

    def prune(record):
        raise Pruned

    with pytest.raises(Pruned):
        train_model(tiny_space.smallest(), data, TrainConfig(epochs=3, batch_size=32), progress=False, on_epoch=prune)


def test_supernet_trains_in_bf16_and_without_channels_last(tiny_space, data):
    config = dataclasses.replace(FAST, epochs=1)
    bf16 = train_supernet(tiny_space, data, config, progress=False, runtime=Runtime.create("cpu", "bf16"))
    plain = train_supernet(tiny_space, data, config, progress=False, runtime=Runtime.create("cpu", channels_last=False))
    for result in (bf16, plain):
        assert np.isfinite(result.history[0]["loss"]) and result.supernet.stem.conv.weight.dtype == torch.float32
    assert not plain.supernet.stem.conv.weight.is_contiguous(memory_format=torch.channels_last) or plain.supernet.stem.conv.weight.shape[1] == 3


def test_a_checkpoint_trained_in_another_precision_is_refused(trained, tiny_space, data):
    _, path = trained
    with pytest.raises(ValueError, match="different precision"):
        train_supernet(tiny_space, data, FAST, checkpoint_path=path, progress=False, runtime=Runtime.create("cpu", "bf16"))


def test_config_validation():
    with pytest.raises(ValueError, match="epochs must be an integer >= 1"):
        SupernetTrainConfig(epochs=0)
    with pytest.raises(ValueError, match="num_random must be an integer >= 0"):
        SupernetTrainConfig(num_random=-1)


def test_train_cli(trained, tiny_space, digits_npz, tmp_path, capsys):
    result, path = trained
    spec = tiny_space.sample(np.random.default_rng(4))
    arch = tmp_path / "best" / "arch.json"
    arch.parent.mkdir()
    spec.to_json(arch)
    (tmp_path / "supernet.pt").write_bytes(path.read_bytes())
    code = train_main(
        ["--arch", str(arch), "--data", digits_npz, "--epochs", "1", "--batch-size", "32", "--init", "supernet", "--no-progress"]
    )
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "test accuracy" in out
    assert (tmp_path / "best" / "retrained-supernet" / "model.pt").is_file()
    assert train_main(["--arch", "in32_c8_s2-nonsense", "--no-progress"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_train_cli_supernet_mode_writes_a_checkpoint_search_accepts(tiny_space, digits_npz, tmp_path, capsys):
    from nas.checkpoint import load_supernet_with_identity
    from nas.config import SearchConfig
    from nas.search import given_supernet

    space_file = tmp_path / "tiny.json"
    tiny_space.to_json(space_file)
    out = tmp_path / "sn"
    argv = ["--space", str(space_file), "--data", digits_npz, "--epochs", "1", "--batch-size", "32", "--out", str(out), "--no-progress"]
    assert train_main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "trained in" in printed and "cpu, fp32" in printed and f"--supernet {out / 'supernet.pt'}" in printed
    supernet, identity = load_supernet_with_identity(out / "supernet.pt", tiny_space)
    assert identity["data"] == digits_npz and identity["precision"] == "fp32" and identity["config"]["epochs"] == 1
    assert (out / "supernet.json").is_file()
    # the settings nas.search would train with: the same identity, so the search accepts and reuses it
    config = SearchConfig(space=str(space_file), data=digits_npz, supernet=str(out / "supernet.pt"), supernet_epochs=1)
    reused, seed = given_supernet(config, tiny_space)
    assert seed == 0 and torch.equal(reused.stem.conv.weight, supernet.stem.conv.weight)
    assert train_main(argv) == 0
    assert "already trained" in capsys.readouterr().out


def test_sandwich_share_puts_the_teacher_first_and_every_sub_network_on_one_rank(tiny_space):
    import numpy as np

    from hw_models.analytic import count_madds
    from nas.train import sandwich, sandwich_share

    specs = sandwich(tiny_space, np.random.default_rng([0, 3]), 3)
    assert sandwich_share(specs, 1, 0) == [0, 1, 2, 3, 4]
    for parts in (2, 3, 5):
        shares = [sandwich_share(specs, parts, p) for p in range(parts)]
        assert shares[0][0] == 0, "the teacher trains on the group's first rank"
        assert sorted(i for share in shares for i in share) == list(range(len(specs)))
        assert all(shares), "every rank has a sub-network to train"
    halves = [sandwich_share(specs, 2, p) for p in (0, 1)]
    loads = [sum(count_madds(specs[i]) for i in share) for share in halves]
    # longest-first to the least loaded: no single move of a sub-network evens the loads out more
    for i in halves[0][1:]:
        assert abs(loads[0] - loads[1]) <= abs(loads[0] - loads[1] - 2 * count_madds(specs[i]))
