"""Every bad input: one line naming the problem and the fix, exit code 2, no traceback, and the
existing run folder left exactly as it was."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nas.config import SearchConfig
from nas.export import main as export_main
from nas.search import main as search_main
from nas.search import run_search
from nas.train import main as train_main

from ..cli_errors import one_line_error


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def space_file(tiny_space, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("space") / "tiny.json"
    tiny_space.to_json(path)
    return str(path)


@pytest.fixture(scope="module")
def existing_run(space_file, digits_npz, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "existing"
    run_search(SearchConfig(space=space_file, data=digits_npz, trials=2, supernet_epochs=1, out=str(out), progress=False, export_onnx=False))
    return out


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def truncated(path: Path, tmp_path: Path) -> str:
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    return str(tmp_path / "cut.pt")


def broken_space(space_file: str, tmp_path: Path, **change) -> str:
    data = json.loads(Path(space_file).read_text())
    data["stages"][0].update(change)
    return write(tmp_path, "space.json", json.dumps(data))


def other_space(space_file: str, tmp_path: Path) -> str:
    data = json.loads(Path(space_file).read_text())
    data["name"] = "other"
    data["stages"][0]["channels"] = [4, 8, 16]
    return write(tmp_path, "other-space.json", json.dumps(data))


# (case id, argv builder, expected fragment of the message)
CASES = [
    ("unknown target", lambda s, d, r, t: ["--target", "iphone99"], "unknown latency target 'iphone99'"),
    ("malformed target file", lambda s, d, r, t: ["--target", write(t, "bad.json", "{not json")], "bad.json"),
    ("space file not JSON", lambda s, d, r, t: ["--space", write(t, "s.json", "{oops")], "not valid JSON"),
    ("space zero channels", lambda s, d, r, t: ["--space", broken_space(s, t, channels=[0, 8])], "channels must hold integers >= 1"),
    ("space stride 3", lambda s, d, r, t: ["--space", broken_space(s, t, stride=3)], "stride must be one of (1, 2)"),
    ("space empty choices", lambda s, d, r, t: ["--space", broken_space(s, t, expansions=[])], "expansions must be a non-empty list"),
    ("space negative repeats", lambda s, d, r, t: ["--space", broken_space(s, t, repeats=[-1])], "repeats must hold integers >= 1"),
    ("zero trials", lambda s, d, r, t: ["--trials", "0"], "--trials must be a positive integer"),
    ("negative trials", lambda s, d, r, t: ["--trials", "-5"], "--trials must be a positive integer"),
    ("non-numeric constraint", lambda s, d, r, t: ["--max-latency-ms", "fast"], "--max-latency-ms"),
    ("negative constraint", lambda s, d, r, t: ["--max-madds", "-1"], "--max-madds must be a positive number"),
    ("impossible constraint", lambda s, d, r, t: ["--max-latency-ms", "1e-9"], "no architecture in space"),
    ("missing dataset", lambda s, d, r, t: ["--data", str(t / "nowhere")], "nowhere"),
    ("corrupt dataset", lambda s, d, r, t: ["--data", write(t, "x.npz", "garbage")], "x.npz"),
    ("checkpoint not a checkpoint", lambda s, d, r, t: ["--supernet", write(t, "bad.pt", "garbage")], "bad.pt"),
    ("checkpoint truncated", lambda s, d, r, t: ["--supernet", truncated(r / "supernet.pt", t)], "cut.pt"),
    ("checkpoint of another space", lambda s, d, r, t: ["--space", other_space(s, t), "--supernet", str(r / "supernet.pt"), "--out", str(t / "new")], "differs from space"),
    ("checkpoint trained on other data", lambda s, d, r, t: ["--data", "digits", "--supernet", str(r / "supernet.pt")], "was trained on data"),
    ("resume with another seed", lambda s, d, r, t: ["--seed", "7", "--out", str(r)], "different seed"),
    ("out is a file", lambda s, d, r, t: ["--out", write(t, "file.txt", "x")], "is a file"),
    ("resume with another space", lambda s, d, r, t: ["--space", other_space(s, t), "--out", str(r)], "different space"),
    ("resume with another target", lambda s, d, r, t: ["--target", "host", "--out", str(r)], "different target"),
    ("--resume with another target", lambda s, d, r, t: ["--resume", str(r), "--target", "host"], "different target"),
    ("--resume with another space", lambda s, d, r, t: ["--resume", str(r), "--space", other_space(s, t)], "different space"),
    ("resume folder that is not a run", lambda s, d, r, t: ["--resume", str(t)], "not a run folder"),
    ("zero threads", lambda s, d, r, t: ["--threads", "0"], "--threads must be an integer >= 1"),
    ("unknown sampler", lambda s, d, r, t: ["--sampler", "grid"], "--sampler"),
    ("unknown device", lambda s, d, r, t: ["--device", "gpu"], "--device must be one of auto, cpu, cuda, cuda:N, mps"),
    ("fp16 on the cpu", lambda s, d, r, t: ["--device", "cpu", "--precision", "fp16"], "--precision fp16 needs a GPU"),
    ("unknown precision", lambda s, d, r, t: ["--precision", "fp64"], "--precision must be one of fp32, bf16, fp16"),
    ("zero training workers", lambda s, d, r, t: ["--train-workers", "0"], "--train-workers must be an integer >= 1"),
    ("negative data workers", lambda s, d, r, t: ["--data-workers", "-1"], "--data-workers must be an integer >= 0"),
    ("batch not divisible by the workers", lambda s, d, r, t: ["--train-workers", "3"], "does not split evenly over 3 training workers"),
    ("sub-network groups without workers", lambda s, d, r, t: ["--subnet-parallel", "2"], "--subnet-parallel 2 needs a multiple of 2 training workers, but got 1"),
    ("zero sub-network groups", lambda s, d, r, t: ["--subnet-parallel", "0"], "--subnet-parallel must be an integer >= 1"),
    ("resume with another precision", lambda s, d, r, t: ["--precision", "bf16", "--out", str(r)], "different precision"),
    ("storage not a URL", lambda s, d, r, t: ["--storage", "my-study"], "'my-study' is not a database URL"),
    ("storage unknown scheme", lambda s, d, r, t: ["--storage", "redis://127.0.0.1/0"], "unknown database scheme 'redis'"),
    ("storage postgres:// scheme", lambda s, d, r, t: ["--storage", "postgres://u@127.0.0.1/db"], "start with postgresql://"),
    ("storage server refuses", lambda s, d, r, t: ["--storage", "postgresql://u:pw@127.0.0.1:1/db"], "postgresql://u:***@127.0.0.1:1/db"),
    ("storage sqlite folder missing", lambda s, d, r, t: ["--storage", f"sqlite:///{t}/no/such/dir/x.db"], "unable to open database file"),
    ("out under a file", lambda s, d, r, t: ["--out", write(t, "plain.txt", "x") + "/run"], "cannot create the run folder"),
    ("out under /proc", lambda s, d, r, t: ["--out", "/proc/invres-run"], "--out /proc/invres-run"),
]
if not torch.cuda.is_available():
    CASES.append(("cuda without a GPU", lambda s, d, r, t: ["--device", "cuda"], "CUDA is not available"))


@pytest.mark.parametrize("build, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(build, fragment, space_file, digits_npz, existing_run, tmp_path, capsys):
    before = snapshot(existing_run)
    args = build(space_file, digits_npz, existing_run, tmp_path)
    defaults = {"--space": space_file, "--data": digits_npz, "--out": str(tmp_path / "run"), "--trials": "2"}
    if "--resume" not in args:
        for flag, value in defaults.items():
            if flag not in args:
                args += [flag, value]
    assert search_main([*args, "--supernet-epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert fragment in err
    assert snapshot(existing_run) == before
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module, extra", [("psycopg", "postgres"), ("pymysql", "mysql")])
def test_storage_without_its_driver_names_the_extra(module, extra, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    url = {"postgres": "postgresql://u@127.0.0.1/db", "mysql": "mysql+pymysql://u@127.0.0.1/db"}[extra]
    assert search_main(["--storage", url, "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pip install 'invres-nas[{extra}]'" in err, err
    assert not (tmp_path / "run").exists()


def test_mysql_url_without_pymysql_names_the_pymysql_spelling(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # mysql:// means mysqlclient, which [mysql] does not bring
    assert search_main(["--storage", "mysql://u@127.0.0.1/db", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mysql+pymysql://" in err and "MySQLdb" in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("out", ["/proc/invres-retrain", "/dev/null/retrain"])
def test_train_out_that_cannot_be_created(existing_run, out, capsys):
    argv = ["--arch", str(existing_run / "best" / "arch.json"), "--epochs", "1", "--out", out, "--no-progress"]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and out in err, err


def test_export_out_that_cannot_be_written(existing_run, capsys):
    assert export_main([str(existing_run), "--format", "json", "--out", "/proc/invres-x/arch.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "/proc/invres-x/arch.json" in err, err


def test_corrupt_arch_json_in_export(existing_run, tmp_path, capsys):
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "best").mkdir()
    text = (existing_run / "best" / "arch.json").read_text()
    (copy / "best" / "arch.json").write_text(text[: len(text) // 2])
    assert export_main([str(copy), "--format", "json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not valid JSON" in err


@pytest.mark.parametrize("cut", [0, 0.5])
def test_corrupt_arch_json_in_train(existing_run, tmp_path, capsys, cut):
    text = (existing_run / "best" / "arch.json").read_text()
    path = tmp_path / "arch.json"
    path.write_text(text[: int(len(text) * cut)])
    assert train_main(["--arch", str(path), "--epochs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "arch.json" in err, err
    assert not (tmp_path / "retrained-scratch").exists()


def test_real_process_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "nas.search", "--target", "nope", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "pixel" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r").exists()


# ---- nas.train: the same guarantees -------------------------------------------------------------------
def few_images(tmp_path: Path) -> str:
    import numpy as np

    path = tmp_path / "few.npz"
    np.savez(path, x=np.zeros((40, 8, 8), np.uint8), y=np.arange(40) % 10)
    return str(path)


def wrong_classes_space(space_file: str, tmp_path: Path) -> str:
    data = json.loads(Path(space_file).read_text())
    data["num_classes"] = 3
    return write(tmp_path, "three.json", json.dumps(data))


def empty_class_folder(tmp_path: Path) -> str:
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "cat" / "a.png")
    return str(tmp_path / "imgs")


TRAIN_CASES = [
    ("zero training workers", lambda s, d, t: ["--train-workers", "0"], "argument --train-workers: must be an integer >= 1, but got 0"),
    ("negative data workers", lambda s, d, t: ["--data-workers", "-1"], "argument --data-workers: must be an integer >= 0"),
    ("unknown device", lambda s, d, t: ["--device", "tpu"], "--device must be one of"),
    ("fp16 on the cpu", lambda s, d, t: ["--device", "cpu", "--precision", "fp16"], "--precision fp16 needs a GPU (CUDA or MPS)"),
    ("batch not divisible", lambda s, d, t: ["--train-workers", "3"], "--batch-size 64 does not split evenly over 3 training workers"),
    ("more workers than data", lambda s, d, t: ["--data", few_images(t), "--train-workers", "2", "--batch-size", "32"], "fewer than one batch of 32 over 2 training workers"),
    ("folder with an empty class", lambda s, d, t: ["--data", empty_class_folder(t)], "dog has no images"),
    ("classes differ from the space", lambda s, d, t: ["--space", wrong_classes_space(s, t)], "the data has 10 classes but space"),
    ("unknown space", lambda s, d, t: ["--space", "nowhere"], "unknown search space 'nowhere'"),
    ("out is a file", lambda s, d, t: ["--out", write(t, "file.txt", "x")], "is a file, not a folder"),
    ("both space and arch", lambda s, d, t: ["--arch", "in16_c8_s2-head_c32_n10"], "not allowed with argument"),
    ("sub-network groups without workers", lambda s, d, t: ["--subnet-parallel", "2"], "--subnet-parallel 2 needs a multiple of 2 training workers, but got 1"),
    ("more sub-network groups than sub-networks", lambda s, d, t: ["--train-workers", "5", "--subnet-parallel", "5"], "more than the 4 sub-networks a step trains; use at most 4"),
    ("workers not a multiple of the groups", lambda s, d, t: ["--train-workers", "3", "--subnet-parallel", "2"], "needs a multiple of 2 training workers, but got 3"),
    ("sub-network groups for one network", lambda s, d, t: ["--arch", "in16_c8_s2-head_c32_n10", "--subnet-parallel", "2"], "a single network trains with 1"),
    ("zero sub-network groups", lambda s, d, t: ["--subnet-parallel", "0"], "argument --subnet-parallel: must be an integer >= 1"),
]
if not torch.cuda.is_available():
    TRAIN_CASES.append(("cuda without a GPU", lambda s, d, t: ["--device", "cuda:0"], "--device cuda:0: CUDA is not available"))


@pytest.mark.parametrize("build, fragment", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_bad_input_is_one_clear_line(build, fragment, space_file, digits_npz, tmp_path, capsys):
    args = build(space_file, digits_npz, tmp_path)
    defaults = {"--space": space_file, "--data": digits_npz, "--out": str(tmp_path / "out"), "--epochs": "1"}
    for flag, value in defaults.items():
        if flag not in args and not (flag == "--space" and "--arch" in args and fragment != "not allowed with argument"):
            args += [flag, value]
    err = one_line_error(train_main, [*args, "--no-progress"], capsys)
    assert fragment in err
    assert not (tmp_path / "out").exists()


def test_train_resume_with_another_precision_leaves_the_folder_alone(space_file, digits_npz, tmp_path, capsys):
    out = tmp_path / "sn"
    argv = ["--space", space_file, "--data", digits_npz, "--epochs", "1", "--batch-size", "32", "--out", str(out), "--no-progress"]
    assert train_main(argv) == 0
    before = snapshot(out)
    assert train_main([*argv, "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different precision" in err
    assert snapshot(out) == before
