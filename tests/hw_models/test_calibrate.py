from __future__ import annotations

import numpy as np
import pytest

from hw_models import calibrate_target, load_target, predict_latency_ms, read_measurements
from hw_models.calibrate import main
from search_spaces import get_space


@pytest.fixture(autouse=True)
def user_dir(tmp_path, monkeypatch):
    folder = tmp_path / "targets"
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(folder))
    return folder


def device_latency(spec) -> float:
    """A made-up device 30% slower than the pixel target."""
    return 1.3 * predict_latency_ms(spec, "pixel")


def write_csv(tmp_path, n, rng, header=True, bad=True):
    space = get_space("mobilenetv2-imagenet")
    lines = ["arch,latency_ms,notes"] if header else []
    specs = [space.sample(rng) for _ in range(n)]
    noise = rng.normal(0, 0.01, n)
    for s, e in zip(specs, noise):
        lines.append(f"{s},{device_latency(s) * (1 + e):.4f},ok")
    if bad:
        lines.insert(2, "in224_garbage,12.0,bad arch")  # line 3
        lines.insert(4, f"{specs[0]},-3,negative")  # line 5
        lines.insert(5, f"{specs[0]},fast,not a number")  # line 6
        lines.insert(6, "# a comment line")
    path = tmp_path / "measurements.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, specs


def test_read_measurements_reports_bad_rows_with_line_numbers(tmp_path, rng):
    path, specs = write_csv(tmp_path, 6, rng)
    data = read_measurements(path)
    assert len(data.specs) == 6 and list(data.specs) == specs
    assert [p.split(":")[0] for p in data.problems] == ["line 3", "line 5", "line 6"]
    assert "cannot parse architecture 'in224_garbage'" in data.problems[0]
    assert "positive" in data.problems[1] and "not a number" in data.problems[2]
    assert 3 not in data.lines and all(line >= 2 for line in data.lines)


def test_headerless_csv_and_arch_files_next_to_it(tmp_path, rng):
    space = get_space("proxy-digits")
    specs = [space.sample(rng) for _ in range(3)]
    (tmp_path / "archs").mkdir()
    specs[0].to_json(tmp_path / "archs" / "a.json")
    rows = [f"archs/a.json,{device_latency(specs[0])}"] + [f"{s},{device_latency(s)}" for s in specs[1:]]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(rows) + "\n")
    data = read_measurements(path)
    assert list(data.specs) == specs and not data.problems


def test_scale_calibration_recovers_the_factor(tmp_path, rng):
    path, specs = write_csv(tmp_path, 5, rng, bad=False)
    data = read_measurements(path)
    target = calibrate_target(data.specs, data.latencies_ms, "slowphone", base="pixel", mode="scale")
    assert target.fit["mode"] == "scale" and target.scale == pytest.approx(1.3, rel=0.02)
    assert target.fit["cv_mape_pct"] < 3 and target.fit["base_mape_pct_before_calibration"] > 20
    assert target.coefficients == load_target("pixel").coefficients


def test_refit_and_auto_modes(rng, tmp_path):
    path, _ = write_csv(tmp_path, 12, rng, bad=False)
    data = read_measurements(path)
    refit = calibrate_target(data.specs, data.latencies_ms, "refitphone", mode="refit")
    assert refit.fit["mode"] == "refit" and all(c >= 0 for c in refit.coefficients)
    assert refit.fit["rows"] == 12 and refit.fit["cv"] == "leave-one-out"
    auto = calibrate_target(data.specs, data.latencies_ms, "autophone", mode="auto")
    assert set(auto.fit["alternatives_cv_mape_pct"]) == {"scale", "refit"}
    assert auto.fit["cv_mape_pct"] == min(auto.fit["alternatives_cv_mape_pct"].values())
    few = calibrate_target(data.specs[:4], data.latencies_ms[:4], "fewphone", mode="auto")
    assert set(few.fit["alternatives_cv_mape_pct"]) == {"scale"}
    with pytest.raises(ValueError, match="at least 8"):
        calibrate_target(data.specs[:4], data.latencies_ms[:4], "x", mode="refit")
    with pytest.raises(ValueError, match="at least 3"):
        calibrate_target(data.specs[:2], data.latencies_ms[:2], "x")


def test_cli_saves_a_target_usable_by_name(tmp_path, rng, capsys, user_dir):
    path, specs = write_csv(tmp_path, 10, rng)
    assert main([str(path), "--name", "myphone", "--device", "Pixel 7, big core"]) == 0
    captured = capsys.readouterr()
    assert captured.err.count("warning: skipped line") == 3 and "line 5" in captured.err
    assert "leave-one-out MAPE" in captured.out and "--target myphone" in captured.out
    assert (user_dir / "myphone.json").is_file()
    target = load_target("myphone")
    assert target.provenance["device"] == "Pixel 7, big core" and target.provenance["rows"] == 10
    errors = [abs(predict_latency_ms(s, "myphone") - device_latency(s)) / device_latency(s) for s in specs]
    assert np.mean(errors) < 0.05


def test_cli_errors(tmp_path, rng, capsys):
    assert main([str(tmp_path / "missing.csv"), "--name", "x"]) == 2
    assert "cannot read measurements file" in capsys.readouterr().err
    path = tmp_path / "few.csv"
    path.write_text("arch,latency_ms\nnonsense,1\nin32_c16_s2-ir_r1_k3_s1_e1_c8-head_c32_n10,0\n")
    assert main([str(path), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "line 3" in err and "error: " in err and "needs at least 3" in err
    path.write_text("model,seconds\na,1\n")
    assert main([str(path), "--name", "x"]) == 2
    path.write_text("arch,latency_ms\n" + "\n".join(f"{get_space('proxy-digits').sample(rng)},1.0" for _ in range(3)))
    assert main([str(path), "--name", "x", "--base", "nowhere"]) == 2
    assert "unknown latency target 'nowhere'" in capsys.readouterr().err


# ---- TFLite benchmark_model logs (the calibration kit's output) ------------------------------
def benchmark_log(graph: str | None, avg_us: float, prefix: str = "INFO: ") -> str:
    """A log in the format of TFLite's benchmark_model (tensorflow/lite/tools/benchmark): the
    parameter echo naming the graph, the stats lines, and the summary line with C++ default
    double formatting (6 significant digits, exponent form from 1e6)."""
    lines = [
        f"{prefix}STARTING!",
        f"{prefix}Log parameter values verbosely: [0]",
        f"{prefix}Num threads: [1]",
    ]
    if graph is not None:
        lines.append(f"{prefix}Graph: [{graph}]")
    lines += [
        f"{prefix}Loaded model {graph}",
        f"{prefix}The input model file size (MB): 13.9788",
        f"{prefix}Initialized session in 5.579ms.",
        f"{prefix}Running benchmark for at least 10 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.",
        f"{prefix}count=10 first={avg_us * 1.2:.0f} curr={avg_us:.0f} min={avg_us * 0.98:.0f} max={avg_us * 1.2:.0f} avg={avg_us:.6g} std=2565",
        "",
        f"{prefix}Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.",
        f"{prefix}count=100 first={avg_us:.0f} curr={avg_us:.0f} min={avg_us * 0.98:.0f} max={avg_us * 1.05:.0f} "
        f"avg={avg_us:.6g} std=2565 p5={avg_us * 0.98:.0f} median={avg_us:.0f} p95={avg_us * 1.04:.0f}",
        "",
        f"{prefix}Inference timings in us: Init: 5579, First inference: {avg_us * 1.2:.0f}, "
        f"Warmup (avg): {avg_us * 1.1:.6g}, Inference (avg): {avg_us:.6g}",
        f"{prefix}Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
        "to the actual memory footprint of the model at runtime. Take the information at your discretion.",
        f"{prefix}Memory footprint delta from the start of the tool (MB): init=6.36328 overall=109.832",
    ]
    return "\n".join(lines) + "\n"


def write_kit_folder(tmp_path, specs, latencies_ms, logs_in_subfolder=True):
    from hw_models.calibration_kit import MANIFEST_COLUMNS

    kit = tmp_path / "kit"
    logs = kit / "logs" if logs_in_subfolder else kit
    logs.mkdir(parents=True)
    rows = [",".join(MANIFEST_COLUMNS)]
    for i, (s, ms) in enumerate(zip(specs, latencies_ms)):
        rows.append(f"nets/net_{i:03d}.tflite,{s},0,0,0")
        (logs / f"net_{i:03d}.log").write_text(
            benchmark_log(f"/data/local/tmp/invres-kit/net_{i:03d}.tflite", ms * 1000, prefix="INFO: " if i % 2 else "")
        )
    (kit / "manifest.csv").write_text("\n".join(rows) + "\n")
    return kit


def test_parse_benchmark_log_reads_every_run_and_its_graph():
    from hw_models.calibrate import parse_benchmark_log

    text = benchmark_log("/data/local/tmp/a.tflite", 1240270.0) + benchmark_log(None, 7654.32, prefix="I tflite  : ")
    runs = parse_benchmark_log(text)
    assert [r.graph for r in runs] == ["/data/local/tmp/a.tflite", None]
    assert runs[0].inference_avg_us == pytest.approx(1.24027e6) and runs[0].latency_ms == pytest.approx(1240.27)
    assert runs[0].init_us == 5579 and runs[0].warmup_avg_us == pytest.approx(1.1 * 1240270, rel=1e-5)
    assert runs[1].latency_ms == pytest.approx(7.65432)
    assert "e+06" in text  # the exponent form benchmark_model prints for large averages
    assert parse_benchmark_log("INFO: count=3 first=1 curr=1\nsegmentation fault\n") == []


def test_calibrate_from_a_kit_folder_of_benchmark_logs(tmp_path, rng, capsys, user_dir):
    from hw_models.calibrate import read_kit

    space = get_space("mobilenetv2-imagenet")
    specs = [space.sample(rng) for _ in range(10)]
    latencies = [device_latency(s) * (1 + e) for s, e in zip(specs, rng.normal(0, 0.01, 10))]
    kit = write_kit_folder(tmp_path, specs, latencies)
    data = read_kit(kit)
    assert data.specs == tuple(specs) and not data.problems
    np.testing.assert_allclose(data.latencies_ms, latencies, rtol=1e-5)
    assert main([str(kit), "--name", "kitphone", "--mode", "scale"]) == 0
    out = capsys.readouterr().out
    assert "leave-one-out MAPE" in out and "kitphone" in out
    target = load_target("kitphone")
    assert target.fit["scale_on_base"] == pytest.approx(1.3, rel=0.02)
    assert "benchmark_model" in target.provenance["runtime"]
    # one concatenated log file with the manifest works too
    joined = tmp_path / "all.log"
    joined.write_text("".join(p.read_text() for p in sorted((kit / "logs").glob("*.log"))))
    assert read_kit(joined, kit / "manifest.csv").specs == tuple(specs)


def test_kit_problems_are_reported_not_fatal(tmp_path, rng, capsys):
    from hw_models.calibrate import read_kit

    space = get_space("mobilenetv2-imagenet")
    specs = [space.sample(rng) for _ in range(5)]
    kit = write_kit_folder(tmp_path, specs, [device_latency(s) for s in specs], logs_in_subfolder=False)
    (kit / "net_001.log").write_text("ERROR: Failed to load model\n")
    (kit / "stray.log").write_text(benchmark_log("/data/local/tmp/other.tflite", 1000.0))
    data = read_kit(kit)
    assert len(data.specs) == 4
    text = " | ".join(data.problems)
    assert "net_001.log: no 'Inference timings in us' line" in text
    assert "other.tflite is not in manifest.csv" in text and "no timing for net_001.tflite" in text


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda kit: (kit / "manifest.csv").unlink(), "manifest.csv does not exist"),
        (lambda kit: [p.unlink() for p in (kit / "logs").glob("*.log")], "no benchmark_model logs"),
        (lambda kit: (kit / "manifest.csv").write_text("a,b\n1,2\n"), "'file' and 'arch' columns"),
    ],
)
def test_bad_kit_folders_are_one_line_errors(tmp_path, rng, capsys, make, message):
    space = get_space("mobilenetv2-imagenet")
    specs = [space.sample(rng) for _ in range(4)]
    kit = write_kit_folder(tmp_path, specs, [device_latency(s) for s in specs])
    make(kit)
    assert main([str(kit), "--name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_log_file_needs_its_manifest(tmp_path, capsys):
    log = tmp_path / "run.log"
    log.write_text(benchmark_log("/data/local/tmp/net_000.tflite", 1000.0))
    assert main([str(log), "--name", "x"]) == 2
    assert "--manifest" in capsys.readouterr().err


def test_a_refit_has_a_basis_for_the_ops_of_the_networks_it_was_fitted_on(rng):
    plain = [get_space("mobilenetv2-imagenet").sample(rng) for _ in range(10)]
    ofa = [get_space("ofa-mbv3").sample(rng) for _ in range(10)]
    v2 = calibrate_target(plain, [device_latency(s) for s in plain], "v2phone", mode="refit")
    assert v2.ops == ()
    with pytest.raises(ValueError, match="no basis for the cost of squeeze-excitation"):
        v2.predict(ofa[0])
    v3 = calibrate_target(plain + ofa, [device_latency(s) for s in plain + ofa], "v3phone", mode="refit")
    assert set(v3.ops) == {"squeeze_excitation", "hswish", "mbv3_head"} and v3.predict(ofa[0]) > 0
    scaled = calibrate_target(ofa, [device_latency(s) for s in ofa], "scaled", mode="scale")
    assert scaled.ops == load_target("pixel").ops  # one factor on the base target keeps its basis
