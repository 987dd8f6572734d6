"""The Ray engine against a real cluster (``ray start --head`` on loopback, its own temp folder and
port): joining it, ignoring it (and a stale address file it leaves), and surviving a Ray worker
process killed mid-trial. Slow: each case starts Ray processes."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_env(tmp_path: Path) -> dict[str, str]:
    """Ray's default temp folder under ``tmp_path`` (where `ray start` records its address, as
    /tmp/ray does on a user's machine), every Ray node address on 127.0.0.1 (Ray otherwise picks
    the machine's routable address), bounded memory."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_TMPDIR=str(tmp_path),
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_TOKEN_PATH=str(tmp_path / "auth_token"),  # the cluster's token, not the user's
        PYTHONUNBUFFERED="1",
    )
    return env


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    process: subprocess.Popen
    address_file: Path

    def stop(self) -> None:
        """SIGTERM to `ray start --block`, which stops every process it started (never `ray stop`,
        which stops every Ray process of the machine)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_cluster(tmp_path: Path, cpus: int = 2) -> Cluster:
    env = loopback_env(tmp_path)
    # the cluster authenticates with a token of its own (Ray's default; never the user's ~/.ray one)
    Path(env["RAY_AUTH_TOKEN_PATH"]).write_text(secrets.token_hex(32))
    port = free_port()
    temp_dir = tmp_path / "ray"
    log = open(tmp_path / "ray-start.log", "w")  # noqa: SIM115 (kept open for the process's life)
    process = subprocess.Popen(
        [RAY, "start", "--head", "--port", str(port), "--temp-dir", str(temp_dir), "--num-cpus", str(cpus),
         "--object-store-memory", str(100 * 1024**2), "--include-dashboard", "false", "--disable-usage-stats",
         "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    address_file = temp_dir / "ray_current_cluster"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited: {(tmp_path / 'ray-start.log').read_text()[-2000:]}")
        if address_file.is_file() and "--block" in (tmp_path / "ray-start.log").read_text():
            break
        time.sleep(0.5)
    else:
        process.kill()
        raise RuntimeError("ray start did not come up in 120 s")
    return Cluster(f"127.0.0.1:{port}", env, process, address_file)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # Ray's sockets live in its temp folder, and a socket path must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="invres-ray-", dir="/tmp"))
    started = start_cluster(folder)
    try:
        yield started
    finally:
        started.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def supernet(tiny_space, digits_npz, tmp_path_factory) -> tuple[str, str]:
    """(space file, supernet checkpoint): trained once, so that every search here only scores."""
    from nas.config import SearchConfig
    from nas.search import run_search

    folder = tmp_path_factory.mktemp("supernet")
    space_file = folder / "space.json"
    tiny_space.to_json(space_file)
    out = folder / "run"
    config = SearchConfig(
        space=str(space_file), data=digits_npz, trials=1, supernet_epochs=1, out=str(out), progress=False,
        export_onnx=False,
    )  # fmt: skip
    run_search(config)
    return str(space_file), str(out / "supernet.pt")


def search(supernet, digits_npz, out: Path, env, trials: int, *extra: str, **popen) -> subprocess.Popen:
    space_file, checkpoint = supernet
    cmd = [sys.executable, "-m", "nas.search", "--engine", "ray", "--ray-workers", "1", "--space", space_file,
           "--data", digits_npz, "--supernet", checkpoint, "--trials", str(trials), "--out", str(out),
           "--sampler", "random", "--no-progress", "--no-onnx", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return err


def assert_study_intact(out: Path, trials: int) -> pd.DataFrame:
    df = pd.read_csv(out / "trials.csv")
    assert (df["state"] == "COMPLETE").sum() == trials
    assert not (df["state"] == "RUNNING").any()
    assert df["trial"].is_unique and sorted(df["trial"]) == list(range(len(df)))
    return df


def test_joins_the_cluster_by_address_and_auto(cluster, supernet, digits_npz, tmp_path):
    err = finish(search(supernet, digits_npz, tmp_path / "by-address", cluster.env, 2, "--ray-address", cluster.address))
    assert f"ray: the Ray cluster at {cluster.address} (2 CPUs)" in err
    assert_study_intact(tmp_path / "by-address", 2)
    err = finish(search(supernet, digits_npz, tmp_path / "auto", cluster.env, 2, "--ray-address", "auto"))
    assert f"ray: the Ray cluster at {cluster.address} (2 CPUs)" in err
    assert_study_intact(tmp_path / "auto", 2)


def test_without_address_starts_its_own_instance_whatever_the_temp_folder_says(cluster, supernet, digits_npz, tmp_path):
    """A running cluster and then the stale address file it leaves when stopped (what breaks a
    plain ``ray.init(num_cpus=...)``) are both ignored: a local instance with the CPUs asked for."""
    err = finish(search(supernet, digits_npz, tmp_path / "beside", {**cluster.env, "RAY_ADDRESS": cluster.address}, 2))
    assert "ray: a local Ray instance with 1 CPUs" in err
    cluster.stop()
    assert cluster.address_file.read_text().strip().endswith(cluster.address.split(":")[1])  # stale
    err = finish(search(supernet, digits_npz, tmp_path / "stale", cluster.env, 2))
    assert "ray: a local Ray instance with 1 CPUs" in err
    assert_study_intact(tmp_path / "stale", 2)
    # joining the stopped cluster is a one-line error, exit 2
    proc = search(supernet, digits_npz, tmp_path / "gone", cluster.env, 2, "--ray-address", cluster.address)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in err, err
    errors = [line for line in err.strip().splitlines() if not line.startswith("[nas.search]")]  # status lines
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot join the Ray cluster at --ray-address {cluster.address}")
    assert "nothing answers at" in errors[0]
    assert not (tmp_path / "gone").exists()


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process below ``root`` (read from /proc)."""
    parents, commands = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            commands[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in found:
                found[child] = commands.get(child, "")
                frontier.append(child)
    return found


def test_a_ray_worker_killed_mid_trial_is_retried_and_the_study_stays_intact(cluster, supernet, digits_npz, tmp_path):
    """A SIGKILLed trial actor is retried by Tune and the study ends intact. The kill is timed
    from outside, so it can miss a trial (an actor between trials, or a lingering one of an
    earlier search): such an attempt must still leave the study intact, and another is made."""
    errors = []
    for attempt in range(3):
        out = tmp_path / f"killed-{attempt}"
        earlier = {pid for pid, command in _descendants(cluster.process.pid).items() if "ImplicitFunc" in command}
        proc = search(supernet, digits_npz, out, cluster.env, 4, "--ray-address", cluster.address)
        killed = None
        deadline = time.monotonic() + 300
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            for pid, command in _descendants(cluster.process.pid).items():
                if command.startswith("ray::ImplicitFunc") and pid not in earlier:  # the Tune trial's actor process
                    time.sleep(0.3)  # let it get into the trial
                    os.kill(pid, signal.SIGKILL)
                    killed = pid
                    break
            time.sleep(0.2)
        assert killed is not None, "no trial process appeared"
        err = finish(proc)
        df = assert_study_intact(out, 4)
        assert set(df["state"]) <= {"COMPLETE", "FAIL"}
        if "retried after its Ray worker died" in err:
            return
        errors.append(err[-1500:])
    pytest.fail("no kill of 3 led to a retried trial:\n" + "\n---\n".join(errors))
