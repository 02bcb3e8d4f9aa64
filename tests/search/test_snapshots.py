"""Tests for poolnas.search._snapshots on real SQLite, PostgreSQL and MySQL databases."""

from __future__ import annotations

import datetime
import json
import multiprocessing
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from poolnas.search import _snapshots
from poolnas.search._snapshots import (
    SCHEMA_VERSION,
    FrontMember,
    JournalSnapshotStore,
    SnapshotStore,
)
from poolnas.spaces import PoolnasError

FRONT = [(3, 0.123456789012345678, 1_234_567.0), (7, 0.95, 3_500_000_000.0), (1, 0.5, 10.0)]


def count_rows(url: str) -> dict[str, int]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return {
                name: connection.execute(sa.text(f"SELECT COUNT(*) FROM {name}")).scalar()
                for name in _snapshots.TABLE_NAMES
            }
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def record(store: SnapshotStore | JournalSnapshotStore, study: str, after: int, front=FRONT) -> int:
    return store.record(
        study,
        after_trial_number=after,
        n_complete=after + 1,
        front=front,
        hypervolume=0.25 + after / 100,
        reference_flops=4e9,
    )


def test_record_history_latest_round_trip(database_url: str) -> None:
    store = SnapshotStore(database_url)
    assert store.history("a") == [] and store.latest("a") is None
    before = datetime.datetime.now(datetime.timezone.utc)
    first = record(store, "a", 5)
    second = record(store, "a", 2, front=FRONT[:1])
    third = record(store, "b", 9, front=[])
    assert len({first, second, third}) == 3

    history = store.history("a")
    assert [s.after_trial_number for s in history] == [2, 5]
    assert [s.id for s in history] == [second, first]
    snapshot = history[1]
    assert snapshot.study_name == "a" and snapshot.n_complete == 6
    assert snapshot.hypervolume == 0.30 and snapshot.reference_flops == 4e9
    # Sorted by flops; doubles round-trip exactly (MySQL FLOAT would not).
    assert snapshot.members == (
        FrontMember(1, 0.5, 10.0),
        FrontMember(3, 0.123456789012345678, 1_234_567.0),
        FrontMember(7, 0.95, 3_500_000_000.0),
    )
    assert snapshot.created_at.tzinfo is not None
    assert before - datetime.timedelta(seconds=5) <= snapshot.created_at
    assert snapshot.created_at <= datetime.datetime.now(datetime.timezone.utc)
    assert store.latest("a") == snapshot
    assert store.latest("b").members == ()
    assert store.history("nobody") == []


@pytest.mark.parametrize("kind", ["sql", "journal"])
def test_positional_record_without_n_complete(kind: str, tmp_path: Path) -> None:
    if kind == "sql":
        store = SnapshotStore(f"sqlite:///{tmp_path / 'x.db'}")
    else:
        store = JournalSnapshotStore(tmp_path / "x.jsonl")
    snapshot_id = store.record("a", 4, [(4, 0.9, 10.0)], 0.5, 100.0)
    snapshot = store.latest("a")
    assert snapshot.id == snapshot_id and snapshot.n_complete is None
    assert (snapshot.after_trial_number, snapshot.hypervolume) == (4, 0.5)
    assert snapshot.members == (FrontMember(4, 0.9, 10.0),)


def test_delete_study_removes_only_that_study(database_url: str) -> None:
    store = SnapshotStore(database_url)
    record(store, "a", 1)
    record(store, "a", 2)
    kept = record(store, "b", 1)
    assert store.delete_study("a") == 2
    assert store.history("a") == []
    assert [s.id for s in store.history("b")] == [kept]
    assert count_rows(database_url)["poolnas_front_members"] == len(FRONT)
    assert store.delete_study("a") == 0


def test_table_creation_is_idempotent(database_url: str) -> None:
    first = SnapshotStore(database_url)
    record(first, "a", 1)
    second = SnapshotStore(database_url)
    second.create_tables()
    assert len(second.history("a")) == 1
    assert count_rows(database_url)["poolnas_schema"] == 1
    first.engine.dispose()
    second.engine.dispose()


def test_create_false_creates_nothing_until_record(database_url: str) -> None:
    store = SnapshotStore(database_url, create=False)
    assert store.history("a") == [] and store.latest("a") is None
    assert store.delete_study("a") == 0
    if not database_url.startswith("sqlite"):
        assert not table_names(database_url) & set(_snapshots.TABLE_NAMES)
    record(store, "a", 1)
    assert len(store.history("a")) == 1


def test_newer_schema_is_refused(database_url: str) -> None:
    SnapshotStore(database_url).engine.dispose()
    engine = sa.create_engine(database_url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE poolnas_schema SET version = :v"), {"v": 99})
    engine.dispose()
    for create in (True, False):
        with pytest.raises(PoolnasError, match="newer poolnas.*upgrade poolnas"):
            SnapshotStore(database_url, create=create)


# --- One transaction -------------------------------------------------------------------------


def test_duplicate_member_leaves_no_snapshot(database_url: str) -> None:
    store = SnapshotStore(database_url)
    record(store, "a", 1)
    before = count_rows(database_url)
    duplicated = [(4, 0.6, 10.0), (5, 0.7, 20.0), (4, 0.8, 30.0)]
    with pytest.raises(sa.exc.IntegrityError):
        record(store, "a", 2, front=duplicated)
    assert count_rows(database_url) == before
    assert [s.after_trial_number for s in store.history("a")] == [1]
    # The store still works afterwards.
    record(store, "a", 3)
    assert [s.after_trial_number for s in store.history("a")] == [1, 3]


class Injected(RuntimeError):
    pass


def test_failure_after_half_the_members_leaves_nothing(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SnapshotStore(database_url)
    record(store, "a", 1)
    before = count_rows(database_url)
    real_insert = _snapshots._insert_members

    def half_then_fail(connection, snapshot_id, members):
        real_insert(connection, snapshot_id, members[: len(members) // 2 + 1])
        raise Injected("simulated crash between the member inserts")

    monkeypatch.setattr(_snapshots, "_insert_members", half_then_fail)
    with pytest.raises(Injected):
        record(store, "a", 2)
    assert count_rows(database_url) == before
    assert [s.after_trial_number for s in store.history("a")] == [1]


def test_non_finite_values_are_refused_before_writing(tmp_path: Path) -> None:
    store = SnapshotStore(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError, match="non-finite"):
        record(store, "a", 1, front=[(1, float("nan"), 1.0)])
    with pytest.raises(ValueError, match="reference_flops"):
        store.record("a", after_trial_number=1, n_complete=1, front=[], hypervolume=0.1,
                     reference_flops=0.0)
    assert store.history("a") == []


# --- Concurrency -----------------------------------------------------------------------------

WORKERS = 4


def _create_and_record(url: str, barrier, index: int, results) -> None:
    try:
        barrier.wait(timeout=60)
        store = SnapshotStore(url)
        snapshot_id = store.record(
            "race",
            after_trial_number=index,
            n_complete=index + 1,
            front=[(index, 0.5, 100.0 + index)],
            hypervolume=0.1,
            reference_flops=1e3,
        )
        store.engine.dispose()
        results.put((index, snapshot_id, None))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        results.put((index, None, repr(error)))


def _run_workers(target: Callable, *args: object) -> list[tuple]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(WORKERS)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*args, barrier, i, results)) for i in range(WORKERS)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=180) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return sorted(outcomes)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_concurrent_table_creation_and_records(
    backend: str, new_database: Callable[[str], str]
) -> None:
    url = new_database(backend)
    outcomes = _run_workers(_create_and_record, url)
    assert [error for _, _, error in outcomes] == [None] * WORKERS
    assert len({snapshot_id for _, snapshot_id, _ in outcomes}) == WORKERS
    rows = count_rows(url)
    assert rows == {
        "poolnas_schema": 1,
        "poolnas_front_snapshots": WORKERS,
        "poolnas_front_members": WORKERS,
    }
    history = SnapshotStore(url, create=False).history("race")
    assert [s.after_trial_number for s in history] == list(range(WORKERS))


def test_sqlite_writer_waits_for_a_lock_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SnapshotStore(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")  # Hold the write lock like another worker mid-commit.
    released = threading.Event()

    def release_later() -> None:
        time.sleep(1.5)
        holder.execute("COMMIT")
        released.set()

    thread = threading.Thread(target=release_later)
    thread.start()
    try:
        record(store, "a", 1)  # Would raise "database is locked" without a busy timeout.
        assert released.is_set()
    finally:
        thread.join()
        holder.close()
    assert len(store.history("a")) == 1


# --- Journal snapshots -----------------------------------------------------------------------


def test_journal_store_round_trip_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "study-snapshots.jsonl"
    store = JournalSnapshotStore(path)
    assert store.history("a") == [] and store.latest("a") is None
    assert not path.exists()
    first = record(store, "a", 5)
    second = record(store, "a", 2, front=FRONT[:1])
    third = record(store, "b", 1, front=[])
    assert (first, second, third) == (1, 2, 3)
    history = store.history("a")
    assert [s.after_trial_number for s in history] == [2, 5]
    assert history[1].members[0] == FrontMember(1, 0.5, 10.0)
    assert history[1].members[1].accuracy == 0.123456789012345678
    assert store.latest("a").id == first
    assert history[1].created_at.tzinfo is not None

    assert store.delete_study("a") == 2
    assert store.history("a") == [] and [s.id for s in store.history("b")] == [third]
    # Ids keep growing after a rewrite, also for another instance that cached the old file.
    other = JournalSnapshotStore(path)
    assert record(other, "c", 1) == 4
    assert record(store, "c", 2) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study-snapshots.jsonl"]


def test_journal_store_skips_a_line_cut_short_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    store = JournalSnapshotStore(path)
    record(store, "a", 1)
    with open(path, "ab") as f:
        f.write(b'{"poolnas_schema":1,"id":2,"study_na')  # A writer died mid-line.
    assert [s.after_trial_number for s in store.history("a")] == [1]
    record(JournalSnapshotStore(path), "a", 3)
    assert [s.after_trial_number for s in store.history("a")] == [1, 3]


def test_journal_store_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    line = {"poolnas_schema": SCHEMA_VERSION + 1, "id": 1, "study_name": "a"}
    path.write_text(json.dumps(line) + "\n")
    with pytest.raises(PoolnasError, match="newer poolnas"):
        JournalSnapshotStore(path)


def _journal_record(path: str, barrier, index: int, results) -> None:
    try:
        barrier.wait(timeout=60)
        store = JournalSnapshotStore(path)
        ids = [record(store, f"w{index}", n) for n in range(5)]
        results.put((index, ids, None))
    except BaseException as error:  # noqa: BLE001 - reported to the parent
        results.put((index, None, repr(error)))


def test_journal_store_concurrent_writers_get_unique_ids(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    outcomes = _run_workers(_journal_record, str(path))
    assert [error for _, _, error in outcomes] == [None] * WORKERS
    ids = [i for _, worker_ids, _ in outcomes for i in worker_ids]
    assert sorted(ids) == list(range(1, 5 * WORKERS + 1))
    store = JournalSnapshotStore(path)
    for index in range(WORKERS):
        assert [s.after_trial_number for s in store.history(f"w{index}")] == list(range(5))
