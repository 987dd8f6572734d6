"""Database studies on a real PostgreSQL server: concurrent workers, killed workers, errors.

The server comes from ``INVRES_TEST_POSTGRES_URL`` (``.ci/run`` starts one on loopback with
``.ci/postgres.sh``). Without it these tests are skipped, unless ``INVRES_REQUIRE_POSTGRES=1``
(set by ``.ci/run``), which makes a missing server a failure. Every test gets its own database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.config import SearchConfig
from nas.search import main as search_main
from nas.storage import connect_storage
from nas.study import RETRY_ATTR, WORKER_ATTR, count_states, open_study, run_worker, storage_for
from search_spaces import sample_spec

from .test_reliability import fake_evaluate

N_TRIALS = 12
HEARTBEAT = 1
GRACE = 3


@pytest.fixture(scope="session")
def postgres_server() -> str:
    url = os.environ.get("INVRES_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("INVRES_REQUIRE_POSTGRES") == "1":
            pytest.fail("INVRES_REQUIRE_POSTGRES=1 but INVRES_TEST_POSTGRES_URL is not set (see .ci/postgres.sh)")
        pytest.skip("no PostgreSQL server: source .ci/postgres.sh && postgres_start")
    pytest.importorskip("psycopg", reason="pip install -e '.[postgres]'")
    return url


@pytest.fixture
def database(postgres_server):
    """A fresh database on the test server; its URL (dropped afterwards)."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server)
    name = f"invres_{uuid.uuid4().hex[:12]}"
    conninfo = dict(host=server.host, port=server.port, user=server.username, password=server.password)
    with psycopg.connect(dbname=server.database, autocommit=True, **conninfo) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield server.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(dbname=server.database, autocommit=True, **conninfo) as connection:
        connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _config(url: str, trials: int = N_TRIALS) -> SearchConfig:
    return SearchConfig(space="x", trials=trials, storage=url, progress=False)


# A worker process on the shared study. With "foreign" it records a token of another machine,
# so that only its heartbeat can tell the others that it died (as for a worker elsewhere).
WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import nas.study
    from search_spaces import SearchSpace
    from nas.config import SearchConfig
    from tests.nas.test_reliability import fake_evaluate
    space = SearchSpace.from_json(sys.argv[1])
    url, trials, lock, foreign, heartbeat, grace = sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5] == "1", int(sys.argv[6]), int(sys.argv[7])
    if foreign:
        nas.study.worker_token = lambda: "another-machine:4242:1"
    config = SearchConfig(space="x", trials=trials, storage=url, progress=False)
    study = nas.study.open_study(config, space, None, nas.study.storage_for(config, None, heartbeat, grace))
    def slow(spec):
        time.sleep(0.2)
        return fake_evaluate(spec)
    done = nas.study.run_worker(study, space, slow, ("accuracy", "latency_ms"), trials, lock, progress=False)
    print("done", done, flush=True)
    """
)


def _start_worker(space_file: Path, url: str, lock: Path, foreign: bool = False) -> subprocess.Popen:
    root = Path(__file__).resolve().parents[2]
    args = [str(space_file), url, str(N_TRIALS), str(lock), "1" if foreign else "0", str(HEARTBEAT), str(GRACE)]
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_complete(study: optuna.Study, at_least: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while count_states(study)[TrialState.COMPLETE] < at_least:
        assert time.monotonic() < deadline, "the workers made no progress"
        time.sleep(0.2)


def _assert_study_intact(study: optuna.Study, n_trials: int, failed: int) -> None:
    """Exactly n complete trials, nothing RUNNING, numbers unique and gap-free, each failed
    trial that had sampled an architecture retried exactly once (a lost trial would leave fewer, a duplicate more)."""
    trials = study.get_trials()
    counts = count_states(study)
    assert counts[TrialState.COMPLETE] == n_trials, counts
    assert counts[TrialState.RUNNING] == 0, counts
    assert counts[TrialState.FAIL] == failed, counts
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert len(trials) == n_trials + failed
    for t in trials:
        if t.state == TrialState.FAIL:
            retries = [r for r in trials if r.user_attrs.get(RETRY_ATTR) == t.number]
            if not t.params:  # killed before it sampled anything: nothing to retry
                assert not retries
                continue
            assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
            # the retry is the same architecture (killed while sampling: the part it had)
            assert t.params.items() <= retries[0].params.items()


@pytest.fixture
def space_file(tiny_space, tmp_path) -> Path:
    path = tmp_path / "space.json"
    tiny_space.to_json(path)
    return path


def test_two_worker_processes_finish_exactly_n_unique_trials(database, space_file, tiny_space, tmp_path):
    # separate lock files: the workers share only the database (as on two machines)
    workers = [_start_worker(space_file, database, tmp_path / f"lock{i}") for i in range(2)]
    done = []
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err
        done.append(int(out.split()[-1]))
    study = open_study(_config(database), tiny_space, None)
    _assert_study_intact(study, N_TRIALS, failed=0)
    assert sum(done) == N_TRIALS and all(d > 0 for d in done), done


@pytest.mark.parametrize("foreign", [False, True], ids=["same-machine", "other-machine"])
def test_survivor_finishes_after_a_worker_is_sigkilled(database, space_file, tiny_space, tmp_path, foreign):
    """A worker killed mid-search leaves its trial RUNNING; the surviving worker fails it (by
    the dead process id on one machine, by the stopped heartbeat from another), retries it once
    and completes the study."""
    study = open_study(_config(database), tiny_space, None)
    victim = _start_worker(space_file, database, tmp_path / "lock-victim", foreign=foreign)
    survivor = _start_worker(space_file, database, tmp_path / "lock-survivor", foreign=foreign)
    _wait_for_complete(study, 3)
    # kill while the victim holds a trial (it always does between its trials' asks)
    deadline = time.monotonic() + 60
    while not any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err
    fails = count_states(study)[TrialState.FAIL]
    assert fails <= 1  # the victim had at most one trial running
    _assert_study_intact(study, N_TRIALS, failed=fails)


def test_resumed_worker_completes_a_study_left_by_a_killed_worker(database, space_file, tiny_space, tmp_path):
    """The only worker (on another machine) is killed mid-trial; a worker started later waits
    out the grace period, fails the stale trial, retries it, and completes the study."""
    config = _config(database)
    study = open_study(config, tiny_space, None, storage_for(config, None, HEARTBEAT, GRACE))
    victim = _start_worker(space_file, database, tmp_path / "lock-victim", foreign=True)
    _wait_for_complete(study, 3)
    deadline = time.monotonic() + 60
    while count_states(study)[TrialState.RUNNING] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    stuck = study.get_trials(states=(TrialState.RUNNING,))
    assert len(stuck) == 1  # RUNNING with nobody running it
    run_worker(study, tiny_space, fake_evaluate, ("accuracy", "latency_ms"), N_TRIALS, tmp_path / "lock", progress=False)
    _assert_study_intact(study, N_TRIALS, failed=1)
    assert study.get_trials()[stuck[0].number].state == TrialState.FAIL


def test_wrong_password_and_missing_database_are_one_line_errors(postgres_server):
    from sqlalchemy.engine import make_url

    server = make_url(postgres_server)
    wrong = server.set(password="not-the-password").render_as_string(hide_password=False)
    with pytest.raises(ValueError) as refused:
        connect_storage(wrong)
    assert "not-the-password" not in str(refused.value)
    assert "password authentication failed" in str(refused.value) and len(str(refused.value).splitlines()) == 1
    missing = server.set(database="no_such_db").render_as_string(hide_password=False)
    with pytest.raises(ValueError) as absent:
        connect_storage(missing)
    assert 'database "no_such_db" does not exist' in str(absent.value)
    assert server.password not in str(absent.value)


def test_cli_on_postgres_masks_the_password_and_refuses_a_different_search(database, space_file, digits_npz, tmp_path, capsys):
    args = ["--space", str(space_file), "--data", digits_npz, "--trials", "3", "--supernet-epochs", "1"]
    out = tmp_path / "run"
    verify = ["--verify-top", "1", "--verify-epochs", "1"]  # a second study in the same database
    assert search_main([*args, *verify, "--storage", database, "--out", str(out), "--no-progress", "--no-onnx"]) == 0
    names = {s.study_name for s in optuna.get_all_study_summaries(database)}
    assert "invres-nas" in names and len(names) == 2, names
    assert (out / "verify.csv").exists()
    saved = (out / "config.json").read_text()
    password = database.split(":")[2].split("@")[0]
    assert password not in saved and "***" in saved
    assert json.loads(saved)["args"]["storage"].startswith("postgresql://invres:***@")
    assert not (out / "study.journal").exists()  # the study lives in the database
    capsys.readouterr()
    # the same study name with another target is another search: refused before any folder exists
    other = tmp_path / "other"
    assert search_main([*args, "--target", "host", "--storage", database, "--out", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different target" in err and password not in err, err
    assert not other.exists()


@pytest.mark.slow
def test_cli_workers_on_postgres_one_killed(database, space_file, digits_npz, tmp_path):
    """End to end: two `nas.search` processes on one PostgreSQL study, one SIGKILLed mid-search;
    the survivor finishes, and re-running the command leaves exactly N complete trials."""
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "nas.search", "--space", str(space_file), "--data", digits_npz,
        "--trials", str(N_TRIALS), "--supernet-epochs", "2", "--storage", database, "--out", str(out),
        "--no-progress", "--no-onnx",
    ]
    first = subprocess.run([*cmd[:8], "1", *cmd[9:]], capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr  # trains the supernet both workers share
    workers = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    study = optuna.load_study(study_name="invres-nas", storage=database)
    _wait_for_complete(study, 4, timeout=300)
    os.kill(workers[0].pid, signal.SIGKILL)
    workers[0].communicate()
    _, err = workers[1].communicate(timeout=600)
    assert workers[1].returncode == 0, err
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    fails = count_states(study)[TrialState.FAIL]
    _assert_study_intact(study, N_TRIALS, failed=fails)


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed(database, tiny_space, tmp_path):
    """A worker killed between asking for a trial and its first heartbeat leaves a RUNNING trial
    that Optuna's stale-trial check never fails (it has no heartbeat); once older than the grace
    period it is failed, retried, and the study completes."""
    config = _config(database)
    study = open_study(config, tiny_space, None, storage_for(config, None, HEARTBEAT, GRACE))
    stuck = study.ask()  # no worker token, no heartbeat: as left by a worker killed right after ask
    sample_spec(stuck, tiny_space)
    time.sleep(GRACE + 1)
    run_worker(study, tiny_space, fake_evaluate, ("accuracy", "latency_ms"), N_TRIALS, tmp_path / "lock", progress=False)
    assert study.get_trials()[stuck.number].state == TrialState.FAIL
    _assert_study_intact(study, N_TRIALS, failed=1)


@pytest.mark.parametrize("beat_once", [True, False], ids=["heartbeat-stopped", "no-heartbeat"])
def test_verify_member_of_a_dead_worker_on_another_machine_is_failed_and_trained_again(
    database, tiny_space, digits_npz, tmp_path, beat_once
):
    """Verify trials beat like search trials: a member whose worker elsewhere died (its token
    names another machine, so only the heartbeat tells) is failed after the grace period and
    trained here; every member ends with one COMPLETE trial."""
    from nas.data import load_data
    from nas.verify import VerifySettings, open_verify_study, queue_unfinished, verify_worker

    from .test_verify import _members

    members = _members(tiny_space, 2)
    settings = VerifySettings(top=2, epochs=1, start="scratch")
    storage = storage_for(_config(database), None, HEARTBEAT, GRACE)
    study = open_verify_study(storage, settings, members)
    queue_unfinished(study, members, tiny_space)
    taken = study.ask()
    taken.set_user_attr(WORKER_ATTR, "another-machine:4242:1")
    sample_spec(taken, tiny_space)
    if beat_once:
        study._storage.record_heartbeat(taken._trial_id)  # noqa: SLF001
    time.sleep(GRACE + 1)
    data = load_data(digits_npz, resolution=16, seed=0)
    trained = verify_worker(study, members, tiny_space, data, None, settings, tmp_path / "lock", progress=False)
    assert trained == 2
    states = [t.state for t in study.get_trials()]
    assert study.get_trials()[taken.number].state == TrialState.FAIL
    assert states.count(TrialState.COMPLETE) == 2 and TrialState.RUNNING not in states
