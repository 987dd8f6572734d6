"""Where a study lives when it is shared beyond one run folder: a database (``--storage URL``).

Optuna's RDB storage (SQLAlchemy) holds the study in PostgreSQL, MySQL or SQLite. This module
opens it with one-line errors for every way that can fail, keeps a heartbeat for the trials this
process runs (so that workers on any machine can tell a dead worker's trial from a slow one), and
provides the lock under which workers ask for trials (a PostgreSQL advisory lock or MySQL GET_LOCK,
shared by every machine on the database; a file lock otherwise).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

from .run_dir import file_lock

# A worker records a heartbeat this often for each trial it runs; a RUNNING trial without one for
# the grace period is failed (and retried once) by the next worker that asks for a trial.
HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
CONNECT_TIMEOUT_SECONDS = 10
# Database backend -> (pip extra that installs its driver, what the driver is).
DRIVER_EXTRAS = {"postgresql": ("postgres", "psycopg 3"), "mysql": ("mysql", "PyMySQL"), "mariadb": ("mysql", "PyMySQL")}
# Optuna warns on every ask that heartbeats are meant for Study.optimize; the ask-and-tell loops
# of the search beats through Heartbeat below instead (verify trials keep no heartbeat).
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used", category=UserWarning)
URL_EXAMPLES = "postgresql://user@host:5432/dbname, mysql+pymysql://user@host/dbname or sqlite:///path/study.db"


def shown_url(url: str) -> str:
    """``url`` with its password masked, for messages and saved configs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL: nothing recognisable to mask
        return url


def connect_storage(
    url: str,
    heartbeat_seconds: int = HEARTBEAT_SECONDS,
    grace_seconds: int = GRACE_SECONDS,
    on_stale_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
) -> optuna.storages.RDBStorage:
    """Open the database at ``url`` (creating Optuna's tables if needed). Anything that keeps it
    from opening (not a URL, unknown scheme, missing driver, unknown host, refused connection or
    login, missing database, incompatible schema) is a one-line ``ValueError`` naming the URL
    (password masked)."""
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        backend = make_url(url).get_backend_name()
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise ValueError(f"--storage {url!r} is not a database URL; use e.g. {URL_EXAMPLES}") from None
    shown = shown_url(url)
    engine_kwargs: dict[str, Any] = {}
    if backend in DRIVER_EXTRAS:
        # an unreachable host fails after this long instead of the operating system's minutes
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    try:
        with warnings.catch_warnings(), _schema_lock(url, backend, engine_kwargs):
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeat_interval
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_seconds,
                grace_period=grace_seconds,
                heartbeat_stale_trial_callback=on_stale_trial,
            )
    except ImportError as e:
        extra, driver = DRIVER_EXTRAS.get(backend, (None, None))
        # Optuna re-raises the driver's ImportError; SQLAlchemy's own (in _schema_lock) names it
        missing = getattr(e.__cause__, "name", None) or e.name or "its driver"
        if extra is not None:
            fix = f"pip install 'invres-nas[{extra}]' (installs {driver})"
            if backend == "postgresql" and missing != "psycopg":
                fix += f", or install {missing}"
            elif extra == "mysql" and missing != "pymysql":  # mysql:// means MySQLdb (mysqlclient)
                fix = f"use {backend}+pymysql://... and {fix}, or install {missing}"
        else:
            fix = f"install the Python module {missing}"
        raise ValueError(f"--storage {shown} needs the {backend} driver ({missing} is not installed): {fix}") from None
    except sqlalchemy.exc.NoSuchModuleError:
        hint = "; PostgreSQL URLs start with postgresql://" if backend == "postgres" else ""
        raise ValueError(f"--storage {shown}: unknown database scheme {backend!r}{hint}; use e.g. {URL_EXAMPLES}") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise ValueError(f"cannot open --storage {shown}: {_reason(e)}") from None
    except RuntimeError as e:  # Optuna: the tables were made by an incompatible Optuna version
        raise ValueError(f"cannot use --storage {shown}: {_one_line(str(e))}") from None


@contextlib.contextmanager
def _schema_lock(url: str, backend: str, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    """Held while Optuna creates or checks its tables: workers started at the same moment on an
    empty database would otherwise race to create them (and all but one fail on a duplicate
    key). A server-side lock (PostgreSQL advisory lock, MySQL GET_LOCK) that the server releases
    if the worker dies; nothing for SQLite, which locks the whole file on write."""
    if backend not in DRIVER_EXTRAS:
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    engine = sqlalchemy.create_engine(url, poolclass=NullPool, **engine_kwargs)
    try:
        with engine.connect() as connection, _server_lock(connection, backend, "invres-nas:optuna-schema"):
            yield
    finally:
        engine.dispose()


# MariaDB's GET_LOCK takes no negative (endless) timeout, unlike MySQL's: wait this long per try.
MYSQL_LOCK_WAIT_SECONDS = 3600


@contextlib.contextmanager
def _server_lock(connection: Any, backend: str, name: str) -> Iterator[None]:
    """A session lock named ``name`` held on ``connection`` (a PostgreSQL advisory lock or a
    MySQL/MariaDB GET_LOCK), which the server releases if the connection dies."""
    import sqlalchemy

    if backend == "postgresql":
        key: int | str = zlib.crc32(name.encode())
        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": key})
        unlock = "SELECT pg_advisory_unlock(:key)"
    else:
        key = f"invres-nas:{zlib.crc32(name.encode()):08x}"  # lock names are at most 64 characters
        get = sqlalchemy.text("SELECT GET_LOCK(:key, :wait)")
        while (got := connection.execute(get, {"key": key, "wait": MYSQL_LOCK_WAIT_SECONDS}).scalar()) == 0:
            pass  # still held by another session after the wait
        if got != 1:
            raise RuntimeError(f"the server refused the lock {key} (GET_LOCK returned {got})")
        unlock = "SELECT RELEASE_LOCK(:key)"
    try:
        yield
    finally:
        connection.execute(sqlalchemy.text(unlock), {"key": key})
        connection.commit()


def _reason(error: Exception) -> str:
    """The database driver's own message (without SQLAlchemy's decoration), on one line."""
    original = getattr(error, "orig", None)
    args = getattr(original, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):  # PyMySQL: (code, message)
        return _one_line(f"{args[1]} (MySQL error {args[0]})")
    return _one_line(str(original if original is not None else error))


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines).replace("FATAL:  ", "")


def rdb_backend(study: optuna.Study) -> optuna.storages.RDBStorage | None:
    """The RDB storage under a study (Optuna wraps it in a cache), or None for other storages."""
    storage = study._storage  # noqa: SLF001 (no public accessor)
    storage = getattr(storage, "_backend", storage)
    return storage if isinstance(storage, optuna.storages.RDBStorage) else None


@contextlib.contextmanager
def ask_lock(study: optuna.Study, lock_path: Path) -> Iterator[None]:
    """The lock under which a worker counts trials and asks for one, so that workers never start
    more trials than asked for. On PostgreSQL and MySQL a server-side session lock on the study
    (an advisory lock, GET_LOCK), which every machine using the database shares (and which the
    server releases if the worker dies); on other storages a file lock (the workers of one run
    folder on one machine)."""
    backend = rdb_backend(study)
    dialect = backend.engine.dialect.name if backend is not None else None
    if backend is None or dialect not in DRIVER_EXTRAS:
        with file_lock(lock_path):
            yield
        return
    with backend.engine.connect() as connection, _server_lock(connection, dialect, f"invres-nas:{study.study_name}"):
        yield


def heartbeat_seconds(study: optuna.Study) -> int | None:
    """The study storage's heartbeat interval, or None if it keeps no heartbeats (journal)."""
    get_interval = getattr(study._storage, "get_heartbeat_interval", None)  # noqa: SLF001
    return get_interval() if get_interval is not None else None


class Heartbeat:
    """Records a heartbeat every interval for each trial this process is running (a daemon
    thread, started with the first trial), on storages that keep heartbeats. A process that dies
    stops beating, and after the grace period any worker fails its trials and retries them."""

    def __init__(self, study: optuna.Study) -> None:
        self._storage = study._storage  # noqa: SLF001
        self.interval = heartbeat_seconds(study)
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, trial_id: int) -> None:
        if self.interval is None:
            return
        self._storage.record_heartbeat(trial_id)  # at once: a trial is never without one
        with self._lock:
            self._trial_ids.add(trial_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            with self._lock:
                trial_ids = sorted(self._trial_ids)
            for trial_id in trial_ids:
                # A database hiccup must not kill the thread: the next beat tries again, and
                # only a silence longer than the grace period fails the trial.
                with contextlib.suppress(Exception):
                    self._storage.record_heartbeat(trial_id)
