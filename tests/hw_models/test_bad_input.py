"""Every ``python -m hw_models.*`` entry point, on bad input: one ``error:`` line naming the path or
value, exit status 2, no traceback, and nothing created or changed on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from hw_models import calibrate, calibration_kit, predict, profile, report
from hw_models.calibration_kit import MANIFEST_COLUMNS
from search_spaces import get_space, mobilenet_v2

from ..cli_errors import one_line_error

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
NOT_AS_ROOT = pytest.mark.skipif(AS_ROOT, reason="root writes into read-only folders; /proc and /sys cases cover it")


def manifest(folder: Path, count: int = 3) -> Path:
    space = get_space("proxy-digits")
    rows = [",".join(MANIFEST_COLUMNS)]
    rows += [f"nets/net_{i:03d}.tflite,{space.smallest() if i == 0 else space.largest()},0,0,0" for i in range(count)]
    path = folder / "manifest.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def inputs(tmp_path, monkeypatch) -> Path:
    """A folder of bad (and a few good) inputs; the user target folder is set to a path inside it
    that must never be created."""
    monkeypatch.setenv("INVRES_NAS_TARGETS", str(tmp_path / "targets"))
    (tmp_path / "file.txt").write_text("keep")
    (tmp_path / "folder").mkdir()
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "list.json").write_text("[1, 2]")  # JSON, but not an object
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "latin1.csv").write_bytes("arch,latency_ms\n\xe9t\xe9,1\n".encode("latin-1"))
    (tmp_path / "no-usable-rows.csv").write_text("arch,latency_ms\nnonsense,1\nin32_c16_s2,-4\n")
    rows = [f"{mobilenet_v2(w)},{10 * w:.2f}" for w in (0.35, 0.5, 0.75, 1.0)]
    (tmp_path / "good.csv").write_text("arch,latency_ms\n" + "\n".join(rows) + "\n")
    kit = tmp_path / "kit"
    (kit / "logs").mkdir(parents=True)
    manifest(kit)
    for i in range(3):  # benchmark_model failed on the phone: no "Inference timings in us" line
        (kit / "logs" / f"net_{i:03d}.log").write_text("INFO: STARTING!\nERROR: Failed to load model\n")
    (tmp_path / "failed.log").write_text("INFO: STARTING!\nERROR: Failed to load model\n")
    (tmp_path / "kit-without-logs").mkdir()
    manifest(tmp_path / "kit-without-logs")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o555)
    yield tmp_path
    (tmp_path / "ro").chmod(0o755)


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


# (case id, CLI, argv (``{t}`` = the inputs folder), fragment of the one error line)
CASES = [
    # hw_models.calibrate: measurements
    ("calibrate missing file", calibrate.main, ["{t}/nowhere.csv", "--name", "x"], "{t}/nowhere.csv"),
    ("calibrate empty CSV", calibrate.main, ["{t}/empty.csv", "--name", "x"], "empty.csv has no rows"),
    ("calibrate CSV not UTF-8", calibrate.main, ["{t}/latin1.csv", "--name", "x"], "latin1.csv is not UTF-8"),
    (
        "calibrate CSV without a usable row",
        calibrate.main,
        ["{t}/no-usable-rows.csv", "--name", "x"],
        "no-usable-rows.csv has 0 usable rows (2 skipped: line 2: cannot parse architecture 'nonsense'",
    ),
    (
        "calibrate folder that is no kit",
        calibrate.main,
        ["{t}/folder", "--name", "x"],
        "folder/manifest.csv does not exist",
    ),
    (
        "calibrate kit whose logs have no timings",
        calibrate.main,
        ["{t}/kit", "--name", "x"],
        "net_000.log: no 'Inference timings in us' line",
    ),
    ("calibrate kit without logs", calibrate.main, ["{t}/kit-without-logs", "--name", "x"], "no benchmark_model logs"),
    (
        "calibrate log without timings",
        calibrate.main,
        ["{t}/failed.log", "--manifest", "{t}/kit/manifest.csv", "--name", "x"],
        "failed.log: no 'Inference timings in us' line",
    ),
    ("calibrate log without manifest", calibrate.main, ["{t}/failed.log", "--name", "x"], "pass --manifest"),
    (
        "calibrate manifest that is a folder",
        calibrate.main,
        ["{t}/failed.log", "--manifest", "{t}/folder", "--name", "x"],
        "--manifest {t}/folder is a folder",
    ),
    (
        "calibrate manifest that is not a manifest",
        calibrate.main,
        ["{t}/failed.log", "--manifest", "{t}/good.csv", "--name", "x"],
        "'file' and 'arch' columns",
    ),
    # hw_models.calibrate: target and output
    ("calibrate unknown base", calibrate.main, ["{t}/good.csv", "--name", "x", "--base", "iphone99"], "'iphone99'"),
    ("calibrate corrupt base", calibrate.main, ["{t}/good.csv", "--name", "x", "--base", "{t}/bad.json"], "bad.json"),
    ("calibrate empty base", calibrate.main, ["{t}/good.csv", "--name", "x", "--base", "{t}/empty.json"], "empty.json"),
    ("calibrate list as base", calibrate.main, ["{t}/good.csv", "--name", "x", "--base", "{t}/list.json"], "list.json"),
    ("calibrate path as name", calibrate.main, ["{t}/good.csv", "--name", "../x"], "'../x'"),
    ("calibrate unknown mode", calibrate.main, ["{t}/good.csv", "--name", "x", "--mode", "fit"], "--mode"),
    (
        "calibrate out in /proc",
        calibrate.main,
        ["{t}/good.csv", "--name", "x", "--out", "/proc/invres/x.json"],
        "/proc/invres/x.json",
    ),
    (
        "calibrate out in /sys",
        calibrate.main,
        ["{t}/good.csv", "--name", "x", "--out", "/sys/invres-x.json"],
        "/sys/invres-x.json",
    ),
    (
        "calibrate out deep under a file",
        calibrate.main,
        ["{t}/good.csv", "--name", "x", "--out", "{t}/file.txt/a/x.json"],
        "file.txt/a/x.json",
    ),
    pytest.param(
        "calibrate out in a read-only folder",
        calibrate.main,
        ["{t}/good.csv", "--name", "x", "--out", "{t}/ro/new/x.json"],
        "{t}/ro/new/x.json",
        marks=NOT_AS_ROOT,
    ),
    # hw_models.calibration_kit (checked before the [litert] extra is needed)
    (
        "kit out is a file",
        calibration_kit.main,
        ["--out", "{t}/file.txt", "--count", "3"],
        "--out {t}/file.txt is a file",
    ),
    ("kit out under a file", calibration_kit.main, ["--out", "{t}/file.txt/kit", "--count", "3"], "{t}/file.txt/kit"),
    ("kit out in /proc", calibration_kit.main, ["--out", "/proc/invres-kit", "--count", "3"], "/proc/invres-kit"),
    ("kit out holds a kit", calibration_kit.main, ["--out", "{t}/kit", "--count", "3"], "already holds a kit"),
    (
        "kit out not empty",
        calibration_kit.main,
        ["--out", "{t}/kit/logs", "--count", "3"],
        "{t}/kit/logs: it exists and is not empty",
    ),
    ("kit unknown space", calibration_kit.main, ["--out", "{t}/new", "--space", "nope"], "unknown search space 'nope'"),
    ("kit corrupt space", calibration_kit.main, ["--out", "{t}/new", "--space", "{t}/bad.json"], "not valid JSON"),
    ("kit unknown base", calibration_kit.main, ["--out", "{t}/new", "--base", "iphone99"], "'iphone99'"),
    (
        "kit zero networks",
        calibration_kit.main,
        ["--out", "{t}/new", "--count", "0"],
        "--count must be an integer >= 3",
    ),
    ("kit two networks", calibration_kit.main, ["--out", "{t}/new", "--count", "2"], "--count must be an integer >= 3"),
    (
        "kit negative threads",
        calibration_kit.main,
        ["--out", "{t}/new", "--threads", "-1"],
        "--threads must be an integer >= 1",
    ),
    (
        "kit zero threads",
        calibration_kit.main,
        ["--out", "{t}/new", "--threads", "0"],
        "--threads must be an integer >= 1",
    ),
    # hw_models.profile (all before any measurement)
    (
        "profile negative threads",
        profile.main,
        ["--target-name", "x", "--threads", "-1"],
        "--threads: must be an integer >= 1",
    ),
    (
        "profile zero threads",
        profile.main,
        ["--target-name", "x", "--threads", "0"],
        "--threads: must be an integer >= 1",
    ),
    (
        "profile negative warmup",
        profile.main,
        ["--target-name", "x", "--warmup", "-1"],
        "--warmup: must be an integer >= 0",
    ),
    ("profile two repeats", profile.main, ["--target-name", "x", "--repeats", "2"], "repeats must be an integer >= 3"),
    ("profile zero rounds", profile.main, ["--target-name", "x", "--rounds", "0"], "--rounds: must be an integer >= 1"),
    (
        "profile zero blocks",
        profile.main,
        ["--target-name", "x", "--max-blocks", "0"],
        "max_blocks must be an integer >= 1, but got 0",
    ),
    (
        "profile zero networks",
        profile.main,
        ["--target-name", "x", "--overhead-archs", "0"],
        "--overhead-archs: must be an integer >= 1",
    ),
    ("profile unknown space", profile.main, ["--target-name", "x", "--space", "nope"], "unknown search space 'nope'"),
    ("profile corrupt space", profile.main, ["--target-name", "x", "--space", "{t}/bad.json"], "not valid JSON"),
    ("profile list as space", profile.main, ["--target-name", "x", "--space", "{t}/list.json"], "list.json"),
    ("profile folder as space", profile.main, ["--target-name", "x", "--space", "{t}/folder"], "{t}/folder"),
    ("profile unknown runtime", profile.main, ["--target-name", "x", "--runtime", "tvm"], "--runtime"),
    ("profile path as name", profile.main, ["--target-name", "a/b"], "'a/b'"),
    (
        "profile out in /proc",
        profile.main,
        ["--target-name", "x", "--out", "/proc/invres-x.json"],
        "/proc/invres-x.json",
    ),
    ("profile out in /sys", profile.main, ["--target-name", "x", "--out", "/sys/invres/x.json"], "/sys/invres/x.json"),
    pytest.param(
        "profile out in a read-only folder",
        profile.main,
        ["--target-name", "x", "--out", "{t}/ro/x.json"],
        "{t}/ro/x.json",
        marks=NOT_AS_ROOT,
    ),
    # hw_models.report
    ("report missing arch file", report.main, ["--arch", "{t}/nowhere.json"], "nowhere.json"),
    ("report corrupt arch file", report.main, ["--arch", "{t}/bad.json"], "bad.json is not valid JSON"),
    ("report empty arch file", report.main, ["--arch", "{t}/empty.json"], "empty.json is not valid JSON"),
    (
        "report list as arch",
        report.main,
        ["--arch", "{t}/list.json"],
        "{t}/list.json: an architecture must be a JSON object",
    ),
    ("report folder as arch", report.main, ["--arch", "{t}/folder"], "{t}/folder"),
    ("report unknown arch", report.main, ["--arch", "resnet50"], "'resnet50'"),
    (
        "report zero bytes per element",
        report.main,
        ["--bytes-per-element", "0"],
        "--bytes-per-element: must be an integer >= 1",
    ),
    ("report negative chunks", report.main, ["--split-t", "-2"], "--split-t: must be an integer >= 1"),
    # hw_models.predict
    ("predict unknown target", predict.main, ["--arch", "mobilenet_v2", "--target", "iphone99"], "'iphone99'"),
    ("predict corrupt target", predict.main, ["--arch", "mobilenet_v2", "--target", "{t}/bad.json"], "bad.json"),
    ("predict empty target", predict.main, ["--arch", "mobilenet_v2", "--target", "{t}/empty.json"], "empty.json"),
    ("predict list as target", predict.main, ["--arch", "mobilenet_v2", "--target", "{t}/list.json"], "list.json"),
    (
        "predict folder as target",
        predict.main,
        ["--arch", "mobilenet_v2", "--target", "{t}/folder"],
        "{t}/folder is a directory",
    ),
    ("predict list as arch", predict.main, ["--arch", "{t}/list.json"], "{t}/list.json"),
    ("predict CSV as target", predict.main, ["--arch", "mobilenet_v2", "--target", "{t}/good.csv"], "good.csv"),
    ("predict corrupt arch", predict.main, ["--arch", "{t}/bad.json"], "bad.json"),
    (
        "predict pixel target in /proc",
        predict.main,
        ["--write-pixel-target", "/proc/invres-pixel.json"],
        "/proc/invres-pixel.json",
    ),
    (
        "predict pixel target under a file",
        predict.main,
        ["--write-pixel-target", "{t}/file.txt/p.json"],
        "{t}/file.txt/p.json",
    ),
]


def _fill(value: str, folder: Path) -> str:
    return value.replace("{t}", str(folder))


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


@pytest.mark.parametrize("name, main, argv, fragment", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(name, main, argv, fragment, inputs, capsys):
    argv = [_fill(a, inputs) for a in argv]
    before = snapshot(inputs)
    err = one_line_error(main, [*argv, "--no-progress"] if main in (profile.main, calibration_kit.main) else argv, capsys)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert _fill(fragment, inputs) in err, err
    assert snapshot(inputs) == before
    assert not (inputs / "targets").exists()


# ---- the calibration kit is a whole folder or nothing -------------------------------------------------
@pytest.fixture
def fake_litert(monkeypatch):
    """The kit's LiteRT conversion replaced by a stand-in that writes a few bytes (the [litert]
    extra is optional; the folder handling is what is tested here)."""
    from hw_models import litert

    converted: list[Path] = []

    def convert(model, path, shape):
        Path(path).write_bytes(b"TFL3")
        converted.append(Path(path))
        return Path(path)

    monkeypatch.setattr(litert, "require_litert", lambda what="": None)
    monkeypatch.setattr(litert, "with_random_statistics", lambda model, shape, seed=0: model)
    monkeypatch.setattr(litert, "convert", convert)
    return converted


def test_kit_is_written_whole(fake_litert, tmp_path):
    out = tmp_path / "a" / "b" / "kit"
    assert calibration_kit.main(["--out", str(out), "--space", "proxy-digits", "--count", "3", "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["manifest.csv", "nets", "run_on_phone.sh"]
    assert len(list((out / "nets").iterdir())) == 3
    assert [p.name for p in tmp_path.rglob(".*")] == []  # no temporary folder left behind
    (tmp_path / "empty").mkdir()
    assert calibration_kit.main(["--out", str(tmp_path / "empty"), "--space", "proxy-digits", "--count", "3"]) == 0
    assert (tmp_path / "empty" / "manifest.csv").is_file()


@pytest.mark.parametrize("failure", [ValueError("conversion failed"), KeyboardInterrupt()])
def test_kit_interrupted_leaves_nothing(fake_litert, tmp_path, monkeypatch, capsys, failure):
    from hw_models import litert

    def convert_twice(model, path, shape):
        if len(fake_litert) == 2:
            raise failure
        Path(path).write_bytes(b"TFL3")
        fake_litert.append(Path(path))

    monkeypatch.setattr(litert, "convert", convert_twice)
    argv = ["--out", str(tmp_path / "new" / "kit"), "--space", "proxy-digits", "--count", "3", "--no-progress"]
    if isinstance(failure, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            calibration_kit.main(argv)
    else:
        assert calibration_kit.main(argv) == 2
        assert capsys.readouterr().err == "error: conversion failed\n"
    assert len(fake_litert) == 2 and list(tmp_path.iterdir()) == []
