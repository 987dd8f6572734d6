"""Database studies on real PostgreSQL and MySQL (MariaDB) servers: concurrent workers, killed
workers, errors.

The servers come from ``INVRES_TEST_POSTGRES_URL`` and ``INVRES_TEST_MYSQL_URL`` (``.ci/run``
starts a PostgreSQL server on loopback with ``.ci/postgres.sh``; ``.ci/mysql.sh`` starts a
MariaDB one the same way). Each test runs against every server that is set and is skipped for
the others, unless ``INVRES_REQUIRE_POSTGRES=1`` / ``INVRES_REQUIRE_MYSQL=1`` makes a missing
server a failure. Every test gets its own database.
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
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.config import SearchConfig
from nas.search import main as search_main
from nas.storage import ask_lock, connect_storage
from nas.study import RETRY_ATTR, WORKER_ATTR, count_states, open_study, run_worker, storage_for
from search_spaces import sample_spec

from .test_reliability import fake_evaluate

N_TRIALS = 12
HEARTBEAT = 1
GRACE = 3


@dataclass(frozen=True)
class Server:
    """A kind of database server the tests can run against, and how they learn of one."""

    url_variable: str
    require_variable: str
    driver: str
    extra: str
    start: str


SERVERS = {
    "postgresql": Server(
        "INVRES_TEST_POSTGRES_URL", "INVRES_REQUIRE_POSTGRES", "psycopg", "postgres", "source .ci/postgres.sh && postgres_start"
    ),
    "mysql": Server("INVRES_TEST_MYSQL_URL", "INVRES_REQUIRE_MYSQL", "pymysql", "mysql", "source .ci/mysql.sh && mysql_start"),
}


@pytest.fixture(scope="session", params=sorted(SERVERS))
def db_server(request) -> str:
    """The URL of a test server of each kind (PostgreSQL, MySQL/MariaDB); skipped if not set."""
    server = SERVERS[request.param]
    url = os.environ.get(server.url_variable)
    if not url:
        if os.environ.get(server.require_variable) == "1":
            pytest.fail(f"{server.require_variable}=1 but {server.url_variable} is not set (see {server.start})")
        pytest.skip(f"no {request.param} server: {server.start}")
    pytest.importorskip(server.driver, reason=f"pip install -e '.[{server.extra}]'")
    return url


@pytest.fixture
def database(db_server):
    """A fresh database on the test server; its URL (dropped afterwards)."""
    import sqlalchemy
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    server = make_url(db_server)
    name = f"invres_{uuid.uuid4().hex[:12]}"
    if server.get_backend_name() == "postgresql":
        create, drop = f'CREATE DATABASE "{name}"', f'DROP DATABASE "{name}" WITH (FORCE)'
    else:
        create, drop = f"CREATE DATABASE `{name}`", f"DROP DATABASE `{name}`"
    engine = sqlalchemy.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(create))
        yield server.set(database=name).render_as_string(hide_password=False)
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(drop))
    finally:
        engine.dispose()


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


def test_the_ask_lock_is_held_on_the_server(database, tiny_space, tmp_path):
    """Workers that share only the database (their lock files differ, as on two machines) wait
    for each other's ask lock: a worker holding it keeps another from counting and asking."""
    import threading

    holder = open_study(_config(database), tiny_space, None)
    # MySQL's dialect also goes by mariadb://: either spelling takes the same server lock
    spelling = database.replace("mysql+", "mariadb+", 1)
    other = open_study(_config(spelling), tiny_space, None)
    events: list[str] = []

    def ask_elsewhere() -> None:
        with ask_lock(other, tmp_path / "lock-elsewhere"):
            events.append("elsewhere")

    elsewhere = threading.Thread(target=ask_elsewhere)
    with ask_lock(holder, tmp_path / "lock-here"):
        elsewhere.start()
        elsewhere.join(timeout=1)  # long enough to take a free lock; the test never waits on success
        events.append("released")
    elsewhere.join()
    assert events == ["released", "elsewhere"]


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


# What each server says (through its driver) to a refused login and to a missing database.
REFUSED = {"postgresql": "password authentication failed", "mysql": "Access denied for user 'invres'"}
ABSENT = {"postgresql": 'database "no_such_db" does not exist', "mysql": "Unknown database 'no_such_db'"}


def test_wrong_password_and_missing_database_are_one_line_errors(db_server):
    from sqlalchemy.engine import make_url

    server = make_url(db_server)
    backend = server.get_backend_name()
    wrong = server.set(password="not-the-password").render_as_string(hide_password=False)
    with pytest.raises(ValueError) as refused:
        connect_storage(wrong)
    message = str(refused.value)
    assert "not-the-password" not in message and len(message.splitlines()) == 1, message
    assert REFUSED[backend] in message and "***" in message, message
    missing = server.set(database="no_such_db").render_as_string(hide_password=False)
    with pytest.raises(ValueError) as absent:
        connect_storage(missing)
    message = str(absent.value)
    assert ABSENT[backend] in message and len(message.splitlines()) == 1, message
    assert server.password not in message


def test_cli_on_a_database_masks_the_password_and_refuses_a_different_search(database, space_file, digits_npz, tmp_path, capsys):
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
    scheme = database.split("://")[0]
    assert json.loads(saved)["args"]["storage"].startswith(f"{scheme}://invres:***@")
    assert not (out / "study.journal").exists()  # the study lives in the database
    capsys.readouterr()
    # the same study name with another target is another search: refused before any folder exists
    other = tmp_path / "other"
    assert search_main([*args, "--target", "host", "--storage", database, "--out", str(other), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different target" in err and password not in err, err
    assert not other.exists()


@pytest.mark.slow
def test_cli_workers_on_a_database_one_killed(database, space_file, digits_npz, tmp_path):
    """End to end: two `nas.search` processes on one database study, one SIGKILLed mid-search;
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
