"""End-to-end search at tiny size: a real supernet, real trials, every output file."""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

import nas
from nas.config import SearchConfig
from nas.export import export_run, load_model
from nas.export import main as export_main
from nas.search import main as search_main
from nas.search import run_search
from search_spaces import ArchSpec, build_model

TRIAL_COLUMNS = ["trial", "state", "accuracy", "latency_ms", "madds", "params", "peak_memory_bytes", "arch"]


@pytest.fixture(scope="module")
def space_file(tiny_space, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("space") / "tiny.json"
    tiny_space.to_json(path)
    return str(path)


@pytest.fixture(scope="module")
def finished_run(space_file, digits_npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    config = SearchConfig(space=space_file, data=digits_npz, trials=6, supernet_epochs=1, out=str(out), progress=False)
    return run_search(config), config


def test_run_folder_holds_every_output(finished_run):
    result, _ = finished_run
    run = result.run_dir
    for name in ["config.json", "trials.csv", "pareto.csv", "report.md", "pareto.png", "baselines.csv"]:
        assert (run / name).is_file(), name
    for name in ["arch.json", "deployment.json", "model.pt", "model.onnx"]:
        assert (run / "best" / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["args"]["target"] == "pixel" and config["space"]["name"] == "tiny-test"
    assert "torch" in config["versions"] and config["seed"] == 0
    deployment = json.loads((run / "best" / "deployment.json").read_text())
    assert deployment["memory_policy"] == "bottleneck" and deployment["executor"] == "fused-blocks"


def test_trials_table(finished_run):
    result, _ = finished_run
    df = nas.load_trials(result.run_dir)
    assert list(df.columns[: len(TRIAL_COLUMNS)]) == TRIAL_COLUMNS
    assert (df["state"] == "COMPLETE").sum() == 6
    assert df["trial"].is_unique
    assert {"params_resolution", "params_s0_channels", "params_s1_repeats"} <= set(df.columns)
    assert df["accuracy"].between(0, 1).all() and (df["latency_ms"] > 0).all()
    for arch in df["arch"]:
        ArchSpec.from_string(arch)
    # the journal opens in Optuna (and Optuna Dashboard) with named objectives
    import optuna

    backend = optuna.storages.journal.JournalFileBackend(str(result.run_dir / "study.journal"))
    study = optuna.load_study(study_name="invres-nas", storage=optuna.storages.JournalStorage(backend))
    assert study.metric_names == ["accuracy", "latency_ms"] and len(study.trials) == len(df)


def test_pareto_and_hypervolume_from_pandas(finished_run):
    result, _ = finished_run
    df = nas.load_trials(result.run_dir)
    front = nas.pareto_front(df, {"accuracy": "max", "latency_ms": "min"})
    saved = pd.read_csv(result.run_dir / "pareto.csv")
    assert sorted(front["trial"]) == sorted(saved["trial"])
    hv = nas.hypervolume(df, {"accuracy": "max", "latency_ms": "min"}, {"accuracy": 0.0, "latency_ms": df.latency_ms.max() * 2})
    assert hv > 0
    assert "Hypervolume" in (result.run_dir / "report.md").read_text()


def test_best_model_reproduces_its_accuracy_and_exports(finished_run):
    result, _ = finished_run
    best = result.run_dir / "best"
    spec = ArchSpec.from_json(best / "arch.json")
    model, saved_spec = load_model(best / "model.pt")
    assert saved_spec == spec
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build_model(spec).parameters())
    session = ort.InferenceSession(str(best / "model.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, spec.resolution, spec.resolution)
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()[:1]})[0]
    assert np.abs(got - expected[:1]).max() <= 1e-4


@pytest.mark.parametrize("fmt", ["json", "yaml", "onnx", "torchscript"])
def test_export_formats(finished_run, fmt, tmp_path):
    result, _ = finished_run
    path = export_run(result.run_dir, fmt, tmp_path / f"model.{fmt}")
    assert path.is_file() and path.stat().st_size > 0
    if fmt in ("json", "yaml"):
        from search_spaces import parse_arch

        spec = parse_arch(str(path))
        assert spec == ArchSpec.from_json(result.run_dir / "best" / "arch.json")
        text = path.read_text()
        assert "deployment" in text and "executor" in text


def test_export_cli_errors(tmp_path, capsys):
    assert export_main([str(tmp_path), "--format", "onnx"]) == 2
    assert "has no best/arch.json" in capsys.readouterr().err


def test_rerun_continues_the_study(finished_run, space_file, digits_npz):
    result, config = finished_run
    more = SearchConfig(**{**config.to_dict(), "trials": 8, "objectives": tuple(config.objectives)})
    again = run_search(more)
    df = again.trials
    assert (df["state"] == "COMPLETE").sum() == 8
    assert df["trial"].tolist() == list(range(len(df)))
    # the supernet was trained once, by the first run
    assert (result.run_dir / "supernet.pt").is_file()


def test_cli_summary(space_file, digits_npz, tmp_path, capsys):
    out = tmp_path / "cli"
    code = search_main(
        ["--space", space_file, "--data", digits_npz, "--trials", "3", "--supernet-epochs", "1", "--out", str(out),
         "--no-progress", "--no-onnx", "--sampler", "random", "--objectives", "accuracy,madds,peak_memory_bytes",
         "--memory-policy", "split", "--split-t", "2"]
    )
    text = capsys.readouterr().out
    assert code == 0
    deployment = json.loads((out / "best" / "deployment.json").read_text())
    assert deployment["executor"] == "hw_models.executor.SplitExecutor" and deployment["t"] == 2
    assert "Pareto front" in text and str(out) in text and "python -m nas.export" in text
    assert not (out / "best" / "model.onnx").exists()


def test_constraints_keep_infeasible_trials_off_the_front(space_file, digits_npz, tmp_path, tiny_space):
    from hw_models import count_madds

    median_madds = float(np.median([count_madds(tiny_space.sample(np.random.default_rng(i))) for i in range(50)]))
    config = SearchConfig(
        space=space_file, data=digits_npz, trials=6, supernet_epochs=1, out=str(tmp_path / "c"),
        progress=False, max_madds=median_madds, export_onnx=False, sampler="random",
    )
    result = run_search(config)
    df = result.trials
    assert (df.loc[~df["feasible"], "madds"] > median_madds).all()
    assert (result.front["madds"] <= median_madds).all()
    # the values the samplers (and Optuna Dashboard) see, one per bound, named by the metric
    for t in completed_study_trials(result.run_dir):
        assert t.constraints == {"madds": pytest.approx(t.user_attrs["madds"] - median_madds)}


def completed_study_trials(run_dir) -> list:
    import optuna

    backend = optuna.storages.journal.JournalFileBackend(str(run_dir / "study.journal"))
    study = optuna.load_study(study_name="invres-nas", storage=optuna.storages.JournalStorage(backend))
    return [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]


def test_ray_engine_same_outputs(space_file, digits_npz, tmp_path, finished_run, monkeypatch):
    """Relative paths work although Ray runs each trial in a working directory of its own."""
    result, _ = finished_run
    monkeypatch.chdir(tmp_path)
    config = SearchConfig(
        space=space_file, data=os.path.relpath(digits_npz), trials=3, out="ray", progress=False,
        engine="ray", ray_workers=2, supernet=os.path.relpath(result.run_dir / "supernet.pt"), export_onnx=False,
        max_params=1e9,
    )
    ray_result = run_search(config)
    df = ray_result.trials
    assert list(df.columns) == list(result.trials.columns)
    assert (df["state"] == "COMPLETE").sum() == 3
    assert df["accuracy"].notna().all() and df["madds"].notna().all()
    assert (ray_result.run_dir / "best" / "model.pt").is_file()
    assert all(set(t.constraints) == {"params"} for t in completed_study_trials(ray_result.run_dir))


def test_reused_supernet_keeps_its_data_split(finished_run, space_file, digits_npz, tmp_path):
    """Another --seed with --supernet still scores on the split the supernet was trained with
    (never on its training images): the baselines score exactly as in the original run."""
    result, _ = finished_run
    config = SearchConfig(
        space=space_file, data=digits_npz, trials=2, seed=5, out=str(tmp_path / "reuse"), progress=False,
        supernet=str(result.run_dir / "supernet.pt"), export_onnx=False, sampler="random",
    )  # fmt: skip
    again = run_search(config)
    original = pd.read_csv(result.run_dir / "baselines.csv")
    reused = pd.read_csv(again.run_dir / "baselines.csv")
    assert reused["accuracy"].tolist() == original["accuracy"].tolist()
    # fine-tuning the exported architecture finds the supernet the run was given
    from nas.train import main as train_main

    arch = str(again.run_dir / "best" / "arch.json")
    argv = ["--arch", arch, "--init", "supernet", "--epochs", "1", "--data", digits_npz, "--no-progress"]
    assert train_main(argv) == 0
    assert (again.run_dir / "best" / "retrained-supernet" / "model.pt").is_file()


def test_ray_trial_error_is_reported_by_its_root_cause():
    from nas.ray_engine import _last_line

    error = RuntimeError("Traceback (most recent call last):\n  File x, line 1\n\nValueError: no such file\n")
    assert _last_line(error) == "ValueError: no such file"


def test_a_finished_supernet_beside_the_run_is_reused(space_file, tmp_path, capsys):
    """Same space, embedded data, seed and training settings: the second run copies the first
    run's supernet instead of training (deterministic, so the scores are the same); other
    settings train their own."""

    def search(name: str, **changes) -> nas.search.SearchResult:
        settings = {"space": space_file, "data": "digits", "trials": 2, "supernet_epochs": 1, "progress": False,
                    "export_onnx": False, "sampler": "random", **changes}  # fmt: skip
        return run_search(SearchConfig(out=str(tmp_path / name), **settings))

    first = search("first")
    capsys.readouterr()
    second = search("second", max_latency_ms=1e3)
    assert "supernet: reusing" in capsys.readouterr().err
    assert (tmp_path / "second" / "supernet.pt").read_bytes() == (tmp_path / "first" / "supernet.pt").read_bytes()
    first_scores = pd.read_csv(first.run_dir / "baselines.csv")["accuracy"].tolist()
    assert pd.read_csv(second.run_dir / "baselines.csv")["accuracy"].tolist() == first_scores
    search("other-seed", seed=1)
    assert "supernet: reusing" not in capsys.readouterr().err


@pytest.mark.litert
def test_run_best_folder_has_a_checked_tflite_and_exports_int8(space_file, digits_npz, tmp_path, capsys):
    from hw_models.litert import TFLiteModel, litert_available

    if not litert_available():
        if os.environ.get("INVRES_REQUIRE_LITERT") == "1":
            pytest.fail("INVRES_REQUIRE_LITERT=1 but the [litert] extra is not installed")
        pytest.skip('the [litert] extra is not installed (pip install -e ".[litert]")')
    # a run of its own: the shared finished_run is made without the tflite export (tests/conftest.py)
    config = SearchConfig(
        space=space_file, data=digits_npz, trials=3, supernet_epochs=1, out=str(tmp_path / "run"), progress=False
    )
    assert config.export_tflite is None  # the default: written when the extra is installed
    result = run_search(config)
    assert "best/model.tflite: LiteRT output vs torch max abs diff" in capsys.readouterr().err
    best = result.run_dir / "best"
    assert (best / "model.tflite").is_file()  # written by the search when the extra is installed
    model, spec = load_model(best / "model.pt")
    x = torch.randn(1, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(TFLiteModel(best / "model.tflite")(x.numpy()) - expected).max() <= 1e-4 * max(1, np.abs(expected).max())
    # int8 (PT2E, calibrated on the run's data): written only if the file reproduces the quantized
    # graph; with litert-torch 0.10 it does not for every trained network (README, Export), and
    # then the export is refused in one line and writes nothing
    out = tmp_path / "q.tflite"
    code = export_main([str(result.run_dir), "--format", "tflite", "--quantize", "int8", "--out", str(out)])
    captured = capsys.readouterr()
    if code == 0:
        assert "top-1 agreement" in captured.out and TFLiteModel(out).quantized
    else:
        assert code == 1 and not out.exists()
        assert "int8 file's output differs from the quantized torch graph" in captured.err
        assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "onnx", "--quantize", "int8"], "--quantize int8 needs --format tflite"),
        (["--format", "onnx", "--quantize", "int4"], "--quantize must be none or int8"),
    ],
)
def test_export_quantize_errors(finished_run, argv, message, capsys):
    result, _ = finished_run
    assert export_main([str(result.run_dir), *argv]) == 2
    assert message in capsys.readouterr().err


def test_export_an_architecture_string_or_file(finished_run, tmp_path, capsys):
    result, _ = finished_run
    arch = result.run_dir / "best" / "arch.json"
    out = tmp_path / "m.onnx"
    assert export_main([str(arch), "--format", "onnx", "--out", str(out)]) == 0  # uses best/model.pt beside it
    assert "freshly initialised" not in capsys.readouterr().out and out.is_file()
    spec = ArchSpec.from_json(arch)
    assert export_main([str(spec), "--format", "onnx", "--out", str(tmp_path / "n.onnx")]) == 0
    assert "freshly initialised" in capsys.readouterr().out
    assert export_main([str(spec), "--format", "onnx"]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert export_main([str(tmp_path / "missing" / "run"), "--format", "json"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_int8_calibration_images_are_normalised_training_images(digits_npz):
    # the calibration sample of --quantize int8 (the LiteRT conversion itself is tested under -m litert)
    from nas.export import calibration_images

    x = calibration_images(digits_npz, 12, seed=0, count=16)
    assert x.shape == (16, 3, 12, 12) and x.dtype == torch.float32
    assert abs(float(x.mean())) < 0.5 and 0.5 < float(x.std()) < 2.0  # normalised with the training statistics
    assert torch.equal(x, calibration_images(digits_npz, 12, seed=0, count=16))  # seeded


def tiny_ofa_space():
    """``proxy-ofa-digits`` in miniature: per-block kernels and expansions, SE, h-swish, the
    MobileNetV3 head."""
    from search_spaces import SearchSpace, StageChoices

    return SearchSpace(
        name="tiny-ofa-test",
        resolutions=(12, 16),
        stem_channels=8,
        stem_activation="hswish",
        stages=(
            StageChoices(expansions=(1,), channels=(8,), repeats=(1,), activation="relu"),
            StageChoices(
                expansions=(2, 4), channels=(16,), repeats=(1, 2), kernel_sizes=(3, 5), stride=2,
                per_block=True, se_ratio=0.25, activation="relu",
            ),
            StageChoices(
                expansions=(2, 4), channels=(24,), repeats=(1, 2), kernel_sizes=(3, 5), stride=2,
                per_block=True, se_ratio=0.25, activation="hswish",
            ),
        ),
        head="mbv3",
        head_channels=32,
        last_channels=40,
        head_activation="hswish",
        num_classes=10,
    )


def test_search_on_a_per_block_space_with_se_and_hswish(digits_npz, tmp_path):
    """The OFA-style path end to end: supernet with elastic SE, per-block Optuna parameters,
    pixel latency of SE/h-swish networks, the best network exported (ONNX equal to torch)."""
    space = tiny_ofa_space()
    space_path = tmp_path / "ofa.json"
    space.to_json(space_path)
    config = SearchConfig(
        space=str(space_path), data=digits_npz, trials=5, supernet_epochs=1, out=str(tmp_path / "run"),
        progress=False, sampler="random",
    )
    result = run_search(config)
    df = nas.load_trials(result.run_dir)
    assert (df["state"] == "COMPLETE").sum() == 5 and (df["latency_ms"] > 0).all()
    assert {"params_s1_b0_kernel", "params_s1_b1_expansion", "params_s2_repeats"} <= set(df.columns)
    for arch in df["arch"]:
        spec = ArchSpec.from_string(arch)
        assert space.contains(spec) and spec.head == "mbv3" and spec.stages[1].se_ratio == 0.25
    best = result.run_dir / "best"
    spec = ArchSpec.from_json(best / "arch.json")
    model, _ = load_model(best / "model.pt")
    x = torch.randn(1, 3, spec.resolution, spec.resolution)  # the ONNX file has batch 1
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(best / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.slow
def test_ofa_mbv3_space_searches_end_to_end(digits_npz, tmp_path):
    """Once-for-All's full MobileNetV3 space (every stage, SE, h-swish, 3/5/7 kernels, depths
    2-4) through nas.search, kept small by a 32 px resolution, 10 classes and one epoch."""
    import dataclasses

    from search_spaces import get_space

    space = dataclasses.replace(get_space("ofa-mbv3"), name="ofa-mbv3-32px", resolutions=(32,), num_classes=10)
    space_path = tmp_path / "ofa-mbv3.json"
    space.to_json(space_path)
    out = tmp_path / "run"
    code = search_main(
        ["--space", str(space_path), "--data", digits_npz, "--trials", "3", "--supernet-epochs", "1",
         "--out", str(out), "--no-progress", "--sampler", "random", "--target", "pixel"]
    )
    assert code == 0
    df = nas.load_trials(out)
    assert (df["state"] == "COMPLETE").sum() == 3 and (df["latency_ms"] > 0).all()
    assert all(space.contains(ArchSpec.from_string(a)) for a in df["arch"])
    assert (out / "best" / "model.onnx").is_file()
