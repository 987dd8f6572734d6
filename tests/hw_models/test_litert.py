"""LiteRT: .tflite export checked against torch, the litert runtime, profiling, the calibration kit.

Marked ``litert``: excluded from the default run, run by ``pytest -m litert`` (``.ci/run`` does,
after installing the extra). Without the extra they skip, unless INVRES_REQUIRE_LITERT=1 (CI),
where a missing extra is a failure. The tests at the end check the one-line error without it.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest
import torch

from hw_models import litert as litert_module
from hw_models.litert import EXTRA, TFLiteModel, export_checked, litert_available, with_random_statistics
from search_spaces import build_model, get_space

TINY = "in16_c8_s2-ir_r1_k3_s1_e1_c8-ir_r2_k5_s2_e4_c12-ir_r1_k7_s1_e3_c16-head_c32_n10"


def calibrated(spec, seed=0):
    """A built network with O(1) outputs (batch-norm statistics from random images)."""
    return with_random_statistics(build_model(spec), (1, 3, spec.resolution, spec.resolution), seed)


@pytest.mark.litert
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_export_checked_runs_the_tflite_against_torch(tmp_path, quantize):
    _require()
    from search_spaces import parse_arch

    spec = parse_arch(TINY)
    model = calibrated(spec)
    check = export_checked(model, (1, 3, 16, 16), tmp_path / "m.tflite", quantize)
    assert check.path.is_file() and check.bytes == check.path.stat().st_size
    assert check.max_abs_diff <= check.tolerance
    assert not list(tmp_path.glob(".invres-tflite-*"))  # staging folder removed
    runtime = TFLiteModel(check.path, threads=1)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = model(x).numpy()
    got = runtime(x.numpy())
    assert got.shape == expected.shape == (1, 10)
    if quantize == "none":
        assert not runtime.quantized and np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())
    else:
        assert runtime.quantized and check.int8_top1_agreement is not None and check.int8_top1_agreement >= 0.5
        assert np.abs(got - expected).max() <= 0.25 * np.abs(expected).max()  # int8 tracks the float model


@pytest.mark.litert
def test_a_mismatching_conversion_is_an_error_and_writes_nothing(tmp_path, monkeypatch):
    _require()
    from search_spaces import parse_arch

    spec = parse_arch(TINY)
    model = calibrated(spec)
    original = TFLiteModel.__call__
    monkeypatch.setattr(TFLiteModel, "__call__", lambda self, x: original(self, x) + 1.0)
    with pytest.raises(RuntimeError, match="LiteRT output differs from torch"):
        export_checked(model, (1, 3, 16, 16), tmp_path / "m.tflite")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.litert
def test_measure_latency_on_litert(tmp_path):
    _require()
    from hw_models import measure_latency_ms, measure_many

    m = measure_latency_ms(TINY, runtime="litert", threads=1, repeats=10)
    assert m.runtime == "litert" and m.median_ms > 0 and m.threads == 1
    specs = [get_space("proxy-digits").sample(np.random.default_rng(i)) for i in range(3)]
    many = measure_many(specs, "litert", repeats=6, rounds=2)
    assert len(many) == 3 and all(x.median_ms > 0 for x in many)


@pytest.mark.litert
def test_profile_a_litert_target(tmp_path):
    _require()
    from hw_models.profile import main as profile_main
    from hw_models.targets import read_target

    out = tmp_path / "host-litert.json"
    argv = ["--target-name", "host-litert", "--runtime", "litert", "--max-blocks", "6", "--repeats", "6",
            "--rounds", "2", "--overhead-archs", "4", "--out", str(out), "--no-progress"]  # fmt: skip
    assert profile_main(argv) == 0
    target = read_target(out)
    assert target.lookup is not None and target.lookup.runtime == "litert"
    assert "LiteRT" in target.provenance["runtime"] and "signature" in target.provenance["method"]
    spec = get_space("proxy-digits").sample(np.random.default_rng(1))
    with pytest.warns(UserWarning):  # parts left out by --max-blocks come from the fallback model
        assert target.predict(spec) > 0


@pytest.mark.litert
def test_calibration_kit_writes_tflite_networks_and_a_manifest(tmp_path, capsys):
    _require()
    from hw_models.calibration_kit import main as kit_main

    kit = tmp_path / "kit"
    assert kit_main(["--out", str(kit), "--space", "proxy-digits", "--count", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "benchmark_model" in out and "adb" in out and "python -m hw_models.calibrate" in out
    with open(kit / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"nets/net_{i:03d}.tflite" for i in range(3)]
    predicted = [float(r["predicted_ms"]) for r in rows]
    assert predicted == sorted(predicted) and len({r["arch"] for r in rows}) == 3
    for r in rows:
        runtime = TFLiteModel(kit / r["file"])
        assert runtime.input_shape[0] == 1 and int(r["madds"]) > 0
    script = (kit / "run_on_phone.sh").read_text()
    assert "--graph=/data/local/tmp/invres-kit/$name.tflite" in script and "net_002" in script
    assert kit_main(["--out", str(kit), "--space", "proxy-digits", "--count", "3"]) == 2  # never overwrites a kit


@pytest.mark.litert
def test_nas_export_tflite_from_an_architecture(tmp_path, capsys):
    _require()
    from nas.export import main as export_main

    out = tmp_path / "m.tflite"
    assert export_main([TINY, "--format", "tflite", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "max abs diff vs torch" in text and "freshly initialised" in text and out.is_file()
    scale = float(text.split("output scale ")[1].split(")")[0])
    assert scale > 1e-3  # batch-norm statistics from random images: the comparison is not vacuous


def _require() -> None:
    if not litert_available():
        if os.environ.get("INVRES_REQUIRE_LITERT") == "1":
            pytest.fail(f"INVRES_REQUIRE_LITERT=1 but the [litert] extra is not installed ({EXTRA})")
        pytest.skip(f"the [litert] extra is not installed ({EXTRA})")


# ---- without the extra: one-line errors naming it (default suite) -----------------------------
@pytest.fixture
def no_litert(monkeypatch):
    monkeypatch.setattr(litert_module, "_importable", lambda name: False)


def test_require_litert_names_the_extra(no_litert):
    with pytest.raises(ValueError, match=r'pip install -e "\.\[litert\]"'):
        litert_module.require_litert()


def test_measure_litert_without_the_extra(no_litert):
    from hw_models import measure_latency_ms

    with pytest.raises(ValueError, match=r"runtime 'litert' needs .*\[litert\]"):
        measure_latency_ms(TINY, runtime="litert")


@pytest.mark.parametrize(
    "module, argv",
    [
        ("nas.export", [TINY, "--format", "tflite", "--out", "m.tflite"]),
        ("hw_models.profile", ["--target-name", "x", "--runtime", "litert", "--out", "x.json"]),
        ("hw_models.calibration_kit", ["--out", "kit"]),
        ("nas.search", ["--tflite", "yes", "--out", "run", "--no-progress"]),
    ],
)
def test_clis_without_the_extra_fail_in_one_line(no_litert, module, argv, capsys, tmp_path, monkeypatch):
    import importlib

    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and '[litert]"' in err
    assert list(tmp_path.iterdir()) == []
