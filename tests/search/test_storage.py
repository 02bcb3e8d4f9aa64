"""Tests for poolnas.search._storage: opening storages safely, on real files and servers.

Every refused storage is checked to be left exactly as it was: same files with the same bytes,
no new file or directory, and on servers the same tables and rows.
"""

from __future__ import annotations

import json
import multiprocessing
import socket
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from poolnas.search._snapshots import JournalSnapshotStore, SnapshotStore
from poolnas.search._storage import (
    StorageHandle,
    list_studies,
    load_study,
    open_storage,
)
from poolnas.spaces import PoolnasError

optuna.logging.set_verbosity(optuna.logging.WARNING)

DIRECTIONS = ["maximize", "minimize"]


def objective(trial: optuna.Trial) -> tuple[float, float]:
    return trial.suggest_float("accuracy", 0, 1), trial.suggest_float("flops", 1, 1e6)


def make_study(url: str, name: str = "s", n_trials: int = 3) -> None:
    with open_storage(url, create=True) as handle:
        study = optuna.create_study(
            storage=handle.optuna_storage, study_name=name, directions=DIRECTIONS
        )
        study.optimize(objective, n_trials=n_trials)
        handle.snapshots.record(
            name, after_trial_number=n_trials - 1, n_complete=n_trials, front=[],
            hypervolume=0.0, reference_flops=1e6,
        )


def execute(url: str, *statements: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(sa.text(statement))
    finally:
        engine.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Relative paths (and anything created by mistake) land in tmp_path, where the
    # fingerprint sees them.
    monkeypatch.chdir(tmp_path)


def assert_refused(
    fingerprint: Callable, url: str, match: str, *, check_url: str | None = None,
    creates: tuple[bool, ...] = (True, False), **kwargs: Any,
) -> PoolnasError:
    """open_storage(url) raises PoolnasError matching ``match`` and changes nothing."""
    before = fingerprint(check_url)
    error = None
    for create in creates:
        with pytest.raises(PoolnasError, match=match) as info:
            open_storage(url, create=create, **kwargs)
        message = str(info.value)
        assert "\n" not in message, message
        assert fingerprint(check_url) == before
        error = info.value
    assert error is not None
    return error


# --- Opening ---------------------------------------------------------------------------------


def test_sqlite_storage_round_trip(tmp_path: Path, fingerprint: Callable) -> None:
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    handle = open_storage(url, create=True)
    assert isinstance(handle, StorageHandle) and not handle.is_journal
    assert isinstance(handle.optuna_storage, optuna.storages.RDBStorage)
    assert isinstance(handle.snapshots, SnapshotStore)
    assert handle.artifact_dir == tmp_path / "runs-artifacts"
    assert handle.url == url
    storage = handle.optuna_storage
    assert storage.heartbeat_interval == 60
    callback = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(callback, optuna.storages.RetryHeartbeatStaleTrialCallback)
    assert storage.engine_kwargs["connect_args"]["timeout"] == 60
    study = optuna.create_study(storage=storage, study_name="a", directions=DIRECTIONS)
    study.optimize(objective, n_trials=2)
    handle.close()

    before = fingerprint()
    with open_storage(url, create=False) as reader:
        assert list_studies(reader) == ["a"]
        assert len(load_study(reader, "a").trials) == 2
        assert reader.snapshots.history("a") == []
    assert fingerprint() == before  # Reading changed nothing.


def test_relative_sqlite_path_and_default_name(tmp_path: Path) -> None:
    with open_storage("sqlite:///poolnas.db", create=True) as handle:
        assert handle.artifact_dir == tmp_path / "poolnas-artifacts"
    assert (tmp_path / "poolnas.db").read_bytes().startswith(b"SQLite format 3\x00")


def test_empty_file_is_an_empty_sqlite_database(tmp_path: Path) -> None:
    (tmp_path / "empty.db").touch()
    with open_storage(f"sqlite:///{tmp_path / 'empty.db'}", create=True) as handle:
        assert list_studies(handle) == []


def test_in_memory_sqlite(fingerprint: Callable) -> None:
    with open_storage("sqlite://", create=True) as handle:
        assert handle.artifact_dir is None
        optuna.create_study(storage=handle.optuna_storage, study_name="m", directions=DIRECTIONS)
        assert list_studies(handle) == ["m"]
    assert_refused(fingerprint, "sqlite:///:memory:", "in-memory", creates=(False,))


def test_no_heartbeat(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with open_storage(url, create=True, heartbeat_interval=None) as handle:
        assert handle.optuna_storage.heartbeat_interval is None
        assert handle.optuna_storage.get_heartbeat_stale_trial_callback() is None


@pytest.mark.parametrize("bad", [0, -5, 1.5])
def test_bad_heartbeat_is_refused(bad: Any, fingerprint: Callable, tmp_path: Path) -> None:
    assert_refused(
        fingerprint, f"sqlite:///{tmp_path / 'x.db'}", "heartbeat", heartbeat_interval=bad
    )


def test_server_storages_open_and_share_snapshots(database_url: str) -> None:
    with open_storage(database_url, create=True, artifacts="weights") as handle:
        study = optuna.create_study(
            storage=handle.optuna_storage, study_name="srv", directions=DIRECTIONS
        )
        study.optimize(objective, n_trials=2)
        handle.snapshots.record(
            "srv", after_trial_number=1, n_complete=2, front=[(0, 0.5, 10.0)],
            hypervolume=0.1, reference_flops=100.0,
        )
        assert handle.artifact_dir == Path.cwd() / "weights"
    with open_storage(database_url, create=False) as reader:
        assert list_studies(reader) == ["srv"]
        assert reader.snapshots.latest("srv").members[0].trial_number == 0
        if not database_url.startswith("sqlite"):
            assert reader.artifact_dir is None  # A server has no "beside".
            with pytest.raises(PoolnasError, match="artifact directory"):
                reader.artifact_store()


def test_default_driver_is_chosen_when_missing(servers, monkeypatch: pytest.MonkeyPatch) -> None:
    url = servers["mysql"].create()
    plain = url.replace("mysql+pymysql://", "mysql://")
    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # mysqlclient, the dialect default
    try:
        with open_storage(plain, create=True) as handle:
            assert handle.url.startswith("mysql+pymysql://")
    finally:
        servers["mysql"].drop(url)


def test_artifact_dir_is_created_on_first_write_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'art.db'}"
    # ask/tell below: no heartbeat (Optuna's heartbeat only runs inside study.optimize).
    with open_storage(url, create=True, heartbeat_interval=None) as handle:
        store = handle.artifact_store()
        assert isinstance(store, optuna.artifacts.FileSystemArtifactStore)
        assert not handle.artifact_dir.exists()
        study = optuna.create_study(storage=handle.optuna_storage, directions=DIRECTIONS)
        trial = study.ask()
        weights = tmp_path / "weights.bin"
        weights.write_bytes(b"\x00\x01weights")
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=store, file_path=str(weights), study_or_trial=trial
        )
        assert (tmp_path / "art-artifacts" / artifact_id).read_bytes() == b"\x00\x01weights"
        copy = tmp_path / "copy.bin"
        optuna.artifacts.download_artifact(
            artifact_store=store, file_path=str(copy), artifact_id=artifact_id
        )
        assert copy.read_bytes() == b"\x00\x01weights"


def test_artifacts_that_is_a_file_is_refused(tmp_path: Path, fingerprint: Callable) -> None:
    (tmp_path / "weights").write_text("not a directory")
    assert_refused(
        fingerprint, f"sqlite:///{tmp_path / 'x.db'}", "artifact directory .* is not a directory",
        artifacts="weights",
    )


def test_journal_storage(tmp_path: Path, fingerprint: Callable) -> None:
    with open_storage("runs.log", create=True) as handle:
        assert handle.is_journal
        assert isinstance(handle.optuna_storage, optuna.storages.JournalStorage)
        assert isinstance(handle.snapshots, JournalSnapshotStore)
        assert handle.snapshots.path == tmp_path / "runs-snapshots.jsonl"
        assert handle.artifact_dir == tmp_path / "runs-artifacts"
        study = optuna.create_study(
            storage=handle.optuna_storage, study_name="j", directions=DIRECTIONS
        )
        study.optimize(objective, n_trials=2)
        handle.snapshots.record(
            "j", after_trial_number=1, n_complete=2, front=[], hypervolume=0.0,
            reference_flops=1.0,
        )
    before = fingerprint()
    with open_storage(str(tmp_path / "runs.log"), create=False) as reader:
        assert list_studies(reader) == ["j"]
        assert len(load_study(reader, "j").trials) == 2
        assert len(reader.snapshots.history("j")) == 1
    assert fingerprint() == before


def test_unknown_study_lists_the_studies_here(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    make_study(url, "alpha", n_trials=1)
    make_study(url, "beta", n_trials=1)
    with open_storage(url, create=False) as handle:
        with pytest.raises(PoolnasError, match=r"no study named 'gamma' in sqlite:///.*x\.db; "
                           r"studies here: alpha, beta$"):
            load_study(handle, "gamma")
    with open_storage("empty.log", create=True) as handle:
        with pytest.raises(PoolnasError, match=r"studies here: \(none\)"):
            load_study(handle, "gamma")


def test_killed_worker_trial_is_failed_and_retried(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    context = multiprocessing.get_context("spawn")
    worker = context.Process(target=_hang_in_trial, args=(url,))
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while True:
            assert time.monotonic() < deadline, "the worker never started its trial"
            assert worker.is_alive()
            if (tmp_path / "hb.db").exists():
                try:
                    probe = open_storage(url, create=False)
                except PoolnasError:  # The worker is creating the database this moment.
                    time.sleep(0.2)
                    continue
                with probe:
                    if "hb" in list_studies(probe):
                        trials = load_study(probe, "hb").trials
                        if trials and trials[0].state == TrialState.RUNNING:
                            break
            time.sleep(0.2)
    finally:
        worker.kill()  # SIGKILL: no chance to mark the trial failed.
        worker.join()
    time.sleep(3)  # Longer than the grace period of 2 seconds.
    with open_storage(url, create=True, heartbeat_interval=1, grace_period=2) as handle:
        study = load_study(handle, "hb")
        optuna.storages.fail_stale_trials(study)
        trials = study.trials
        assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
        assert trials[1].params == trials[0].params
        assert trials[1].system_attrs["failed_trial"] == 0
        study.optimize(lambda t: (0.5, t.suggest_float("flops", 1, 1e6) * 0 + 1.0), n_trials=1)
        assert study.trials[1].state == TrialState.COMPLETE


def _hang_in_trial(url: str) -> None:
    handle = open_storage(url, create=True, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(
        storage=handle.optuna_storage, study_name="hb", directions=DIRECTIONS
    )

    def hang(trial: optuna.Trial) -> tuple[float, float]:
        trial.suggest_float("flops", 1, 1e6)
        time.sleep(600)
        return 0.0, 0.0

    study.optimize(hang, n_trials=1)


# --- Concurrent workers ----------------------------------------------------------------------

WORKERS = 4


def _open_and_run(url: str, barrier, index: int, results) -> None:
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        barrier.wait(timeout=60)
        handle = open_storage(url, create=True)
        study = optuna.create_study(
            storage=handle.optuna_storage, study_name="shared", directions=DIRECTIONS,
            load_if_exists=True,
        )
        study.optimize(objective, n_trials=2)
        handle.snapshots.record(
            "shared", after_trial_number=index, n_complete=index, front=[],
            hypervolume=0.0, reference_flops=1.0,
        )
        handle.close()
        results.put((index, None))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        results.put((index, repr(error)))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_workers_starting_together_share_one_storage(
    backend: str, new_database: Callable[[str], str]
) -> None:
    url = new_database(backend)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    processes = [
        context.Process(target=_open_and_run, args=(url, barrier, i, results))
        for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=240) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert outcomes == [(i, None) for i in range(WORKERS)]
    with open_storage(url, create=False) as handle:
        study = load_study(handle, "shared")
        assert len(study.trials) == 2 * WORKERS
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
        assert len(handle.snapshots.history("shared")) == WORKERS
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        for table in ("version_info", "alembic_version", "poolnas_schema"):
            assert connection.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar() == 1
    engine.dispose()


# --- Refusals: the URL -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("poolnas.db", r"not a database URL; write sqlite:///poolnas\.db"),
        ("results/", "not a database URL"),
        ("sqlite:/x.db", "not a valid database URL"),
        ("postgresql+psycopg://host:notaport/db", "not a valid database URL"),
        ("foo://bar/db", "unknown database 'foo'"),
        ("postgresql+nodriver://host/db", "unknown database 'postgresql\\+nodriver'"),
        ("postgresql+psycopg2://host/db",
         r"'psycopg2'.*pip install 'poolnas\[postgres\]'.*postgresql\+psycopg://"),
        ("   ", "expected a database URL"),
    ],
)
def test_malformed_urls_are_refused(url: str, match: str, fingerprint: Callable) -> None:
    assert_refused(fingerprint, url, match)


@pytest.mark.parametrize(
    ("url", "module", "match"),
    [
        ("postgresql+psycopg://u@127.0.0.1/db", "psycopg",
         r"'psycopg' for postgresql\+psycopg:// is not installed; run `pip install "
         r"'poolnas\[postgres\]'`$"),
        ("postgresql://u@127.0.0.1/db", "psycopg", r"pip install 'poolnas\[postgres\]'"),
        ("mysql+pymysql://u@127.0.0.1/db", "pymysql", r"pip install 'poolnas\[mysql\]'"),
    ],
)
def test_missing_driver_says_what_to_install(
    url: str, module: str, match: str, fingerprint: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # As if it were not installed.
    assert_refused(fingerprint, url, match)


# --- Refusals: SQLite files ------------------------------------------------------------------


def test_missing_directory_is_refused_and_not_created(
    tmp_path: Path, fingerprint: Callable
) -> None:
    assert_refused(
        fingerprint, f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}",
        r"directory .*no/such of .* does not exist; create it first",
    )
    assert_refused(fingerprint, "nowhere/x.log", "does not exist; create it first")


def test_create_false_does_not_create_a_database(tmp_path: Path, fingerprint: Callable) -> None:
    assert_refused(
        fingerprint, f"sqlite:///{tmp_path / 'x.db'}", r"x\.db does not exist; check the path",
        creates=(False,),
    )
    assert_refused(fingerprint, "x.log", r"journal file x\.log does not exist", creates=(False,))


@pytest.mark.parametrize(
    "content",
    [
        b"accuracy,flops\n0.9,1000\n",
        b"SQLite format 2\x00" + b"\x00" * 100,  # Almost the header.
        b"SQLite",  # Shorter than the header.
        bytes(range(256)) * 8,
        b'{"op_code":0,"worker_id":"w","study_name":"s","directions":[1]}\n',  # A journal.
    ],
)
def test_file_that_is_not_sqlite_is_never_touched(
    content: bytes, tmp_path: Path, fingerprint: Callable
) -> None:
    (tmp_path / "data.db").write_bytes(content)
    assert_refused(fingerprint, f"sqlite:///{tmp_path / 'data.db'}", "is not an SQLite database")


def test_directory_as_database_is_refused(tmp_path: Path, fingerprint: Callable) -> None:
    (tmp_path / "dir.db").mkdir()
    assert_refused(fingerprint, f"sqlite:///{tmp_path / 'dir.db'}", "is a directory")
    (tmp_path / "dir.log").mkdir()
    assert_refused(fingerprint, "dir.log", "is a directory")


def test_empty_sqlite_file_is_not_a_study_for_readers(
    tmp_path: Path, fingerprint: Callable
) -> None:
    (tmp_path / "empty.db").touch()
    assert_refused(
        fingerprint, f"sqlite:///{tmp_path / 'empty.db'}", "holds no Optuna studies",
        creates=(False,),
    )


@pytest.mark.parametrize(
    "statements",
    [
        ["CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
         "INSERT INTO customers VALUES (1, 'Ada')"],
        # A table that happens to share a name with Optuna's, beside foreign ones.
        ["CREATE TABLE studies (id INTEGER)", "CREATE TABLE patients (id INTEGER)"],
        # Another application that uses alembic.
        ["CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
         "INSERT INTO alembic_version VALUES ('abc123')"],
    ],
)
def test_database_with_unrelated_tables_is_refused(
    statements: list[str], database_url: str, fingerprint: Callable
) -> None:
    execute(database_url, *statements)
    assert_refused(
        fingerprint, database_url, "has tables that are not an Optuna study database",
        check_url=database_url,
    )


def test_newer_optuna_schema_is_refused(database_url: str, fingerprint: Callable) -> None:
    make_study(database_url)
    execute(
        database_url,
        "UPDATE alembic_version SET version_num = 'v9.9.0.a'",
        "UPDATE version_info SET library_version = '9.9.0'",
    )
    error = assert_refused(
        fingerprint, database_url,
        r"written by a newer Optuna \(written by Optuna 9\.9\.0\).*pip install -U optuna",
        check_url=database_url,
    )
    assert optuna.__version__ in str(error)


def test_older_optuna_schema_is_refused(database_url: str, fingerprint: Callable) -> None:
    make_study(database_url)
    execute(database_url, "UPDATE alembic_version SET version_num = 'v3.0.0.d'")
    assert_refused(
        fingerprint, database_url, r"older Optuna schema.*optuna storage upgrade --storage",
        check_url=database_url,
    )


def test_newer_poolnas_schema_is_refused(database_url: str, fingerprint: Callable) -> None:
    make_study(database_url)
    execute(database_url, "UPDATE poolnas_schema SET version = 2")
    assert_refused(
        fingerprint, database_url, r"newer poolnas \(schema version 2.*upgrade poolnas",
        check_url=database_url,
    )


def test_server_database_without_studies_is_refused_for_readers(
    database_url: str, fingerprint: Callable
) -> None:
    if database_url.startswith("sqlite"):
        return  # A missing file is covered above.
    assert_refused(
        fingerprint, database_url, "holds no Optuna studies", check_url=database_url,
        creates=(False,),
    )


# --- Refusals: servers -----------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql"])
def test_unreachable_server_names_host_and_port(scheme: str, fingerprint: Callable) -> None:
    port = free_port()
    error = assert_refused(
        fingerprint, f"{scheme}://someone:s3cret@127.0.0.1:{port}/db",
        rf"cannot connect to (postgresql|mysql) database 'db' at 127\.0\.0\.1:{port}: ",
    )
    assert "s3cret" not in str(error)


@pytest.mark.parametrize("backend", ["postgresql", "mysql"])
def test_missing_server_database_is_refused(
    backend: str, servers, fingerprint: Callable
) -> None:
    servers[backend]._admin()  # Skips (or fails on CI) when the server is down.
    url = servers[backend].admin_url.set(database="poolnas_no_such_database")
    assert_refused(
        fingerprint, url.render_as_string(hide_password=False),
        "cannot connect to .*poolnas_no_such_database",
    )


# --- Refusals: journal files -----------------------------------------------------------------


def test_file_that_is_not_a_journal_is_never_touched(tmp_path: Path, fingerprint: Callable) -> None:
    (tmp_path / "train.log").write_text("epoch 1: loss 0.5\nepoch 2: loss 0.4\n")
    assert_refused(fingerprint, "train.log", "is not an Optuna journal file")
    sqlite3.connect(tmp_path / "db.log").execute("CREATE TABLE t (x)").connection.close()
    assert_refused(fingerprint, "db.log", r"is an SQLite database.*use sqlite:///db\.log")


def test_journal_with_newer_snapshots_is_refused(tmp_path: Path, fingerprint: Callable) -> None:
    (tmp_path / "j-snapshots.jsonl").write_text(
        json.dumps({"poolnas_schema": 99, "id": 1, "study_name": "s"}) + "\n"
    )
    assert_refused(fingerprint, "j.log", "newer poolnas", creates=(True,))


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres:S3cretPW@127.0.0.1:5432/db",
    "mysql+pymysql://root:S3cretPW@127.0.0.1/db?charset=utf8mb4",
    "postgresql://u@h/db?password=S3cretPW&sslmode=require",
    "postgresql://u@h/db?sslpassword=S3cretPW",
    "bogus :// u:S3cretPW@host",
    "x://u:S3cretPW@h/db?api_key=S3cretPW",
])
def test_mask_url_hides_every_credential_and_keeps_the_rest(url: str) -> None:
    from poolnas.search import mask_url

    shown = mask_url(url)
    assert "S3cretPW" not in shown and "***" in shown
    assert shown.split("://")[0] == url.split("://")[0]


def test_a_search_never_prints_the_password(tmp_path: Path, capsys) -> None:
    from poolnas.search._cli import main

    url = "postgresql+psycopg://postgres:S3cretPW@127.0.0.1:1/nowhere"
    code = main(["search", "--storage", url, "--artifacts", str(tmp_path), "--trials", "1"])
    out, err = capsys.readouterr()
    assert code == 2 and err.startswith("poolnas: error:")
    assert "S3cretPW" not in out + err
