"""Pareto-front snapshots: which trials were on the front after each completed trial.

poolnas keeps its own tables beside Optuna's, in the same database, all named ``poolnas_*``:

``poolnas_schema``
    One row: the version of these tables (:data:`SCHEMA_VERSION`). A database written by a
    newer poolnas is refused with a :class:`~poolnas.spaces.PoolnasError`.
``poolnas_front_snapshots``
    One row per snapshot: study name, the trial after which it was taken, how many trials were
    complete then, the hypervolume and the reference FLOPs it was computed with, when.
``poolnas_front_members``
    The trials on the front of each snapshot with their accuracy and FLOPs.

A snapshot and its members are written in one transaction, so the history is never
half-written. Creating the tables is idempotent and safe when several workers start at once.

Journal-file storages have no SQL database; :class:`JournalSnapshotStore` keeps the same
history as JSON lines in a file beside the journal, one snapshot per line.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
from optuna.storages.journal import JournalFileOpenLock, JournalFileSymlinkLock
from sqlalchemy import exc as sa_exc

from poolnas.spaces import PoolnasError

#: Version of the poolnas tables (and of the journal snapshot lines) written by this code.
SCHEMA_VERSION = 1

#: SQLite writers wait this long (seconds) for a lock instead of failing with "database is locked".
SQLITE_BUSY_TIMEOUT = 60

_STUDY_NAME_LENGTH = 512  # Optuna's own limit for indexed strings (study names).
_CREATE_ATTEMPTS = 8

_metadata = sa.MetaData()

_schema_table = sa.Table(
    "poolnas_schema",
    _metadata,
    # A single row, like Optuna's ``version_info``: the primary key makes concurrent first
    # inserts collide instead of writing two rows.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.CheckConstraint("id = 1", name="poolnas_schema_single_row"),
)

_snapshots_table = sa.Table(
    "poolnas_front_snapshots",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("study_name", sa.String(_STUDY_NAME_LENGTH), nullable=False),
    sa.Column("after_trial_number", sa.Integer, nullable=False),
    sa.Column("n_complete", sa.Integer, nullable=True),
    sa.Column("hypervolume", sa.Double, nullable=False),
    sa.Column("reference_flops", sa.Double, nullable=False),
    # Naive UTC: the same on every backend; read back as aware UTC datetimes.
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Index("poolnas_front_snapshots_study", "study_name", "after_trial_number"),
)

_members_table = sa.Table(
    "poolnas_front_members",
    _metadata,
    sa.Column(
        "snapshot_id",
        sa.Integer,
        sa.ForeignKey("poolnas_front_snapshots.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("trial_number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("accuracy", sa.Double, nullable=False),
    sa.Column("flops", sa.Double, nullable=False),
)

TABLE_NAMES = (_schema_table.name, _snapshots_table.name, _members_table.name)


class FrontMember(NamedTuple):
    """A trial on a snapshot's front: ``(trial_number, accuracy, flops)``."""

    trial_number: int
    accuracy: float
    flops: float


@dataclass(frozen=True)
class Snapshot:
    """The Pareto front of a study as it was after one completed trial.

    Attributes:
        id: The snapshot's id in its store.
        study_name: The Optuna study it belongs to.
        after_trial_number: The number of the trial whose completion it follows.
        n_complete: How many trials of the study were complete when it was taken, if recorded.
        hypervolume: The normalised hypervolume of the front (see
            :func:`poolnas.search.hypervolume`).
        reference_flops: The reference FLOPs the hypervolume was computed with.
        created_at: When it was written, an aware UTC datetime.
        members: The front, sorted by FLOPs ascending.
    """

    id: int
    study_name: str
    after_trial_number: int
    n_complete: int | None
    hypervolume: float
    reference_flops: float
    created_at: datetime
    members: tuple[FrontMember, ...]


def newer_schema_error(where: str, version: int) -> PoolnasError:
    """The error for poolnas tables written by a newer poolnas."""
    return PoolnasError(
        f"storage: the poolnas tables in {where} were written by a newer poolnas "
        f"(schema version {version}; this poolnas reads version {SCHEMA_VERSION}); "
        "upgrade poolnas (pip install -U poolnas)"
    )


def read_schema_version(connection: sa.Connection) -> int | None:
    """The version in ``poolnas_schema``, or ``None`` when the table or its row is missing."""
    if not sa.inspect(connection).has_table(_schema_table.name):
        return None
    return connection.execute(sa.select(_schema_table.c.version)).scalar()


def engine_for_url(url: str | sa.URL, **engine_kwargs: Any) -> sa.Engine:
    """An engine whose SQLite connections wait for locks instead of failing at once."""
    parsed = sa.make_url(url)
    kwargs = dict(engine_kwargs)
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.get("connect_args", {}))
        connect_args.setdefault("timeout", SQLITE_BUSY_TIMEOUT)
        kwargs["connect_args"] = connect_args
    elif parsed.get_backend_name() == "mysql":
        kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


def _check_front(front: Iterable[Sequence[Any]]) -> list[FrontMember]:
    members = []
    for item in front:
        trial_number, accuracy, flops = item
        member = FrontMember(int(trial_number), float(accuracy), float(flops))
        if not (math.isfinite(member.accuracy) and math.isfinite(member.flops)):
            raise ValueError(f"front member {tuple(item)!r} has a non-finite value")
        members.append(member)
    return members


def _check_numbers(hypervolume: float, reference_flops: float) -> None:
    if not math.isfinite(hypervolume):
        raise ValueError(f"hypervolume must be finite, got {hypervolume!r}")
    if not (math.isfinite(reference_flops) and reference_flops > 0):
        raise ValueError(f"reference_flops must be positive and finite, got {reference_flops!r}")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def _insert_members(
    connection: sa.Connection, snapshot_id: int, members: Sequence[FrontMember]
) -> None:
    """Insert the members of one snapshot (inside the caller's transaction)."""
    if members:
        connection.execute(
            sa.insert(_members_table),
            [
                {
                    "snapshot_id": snapshot_id,
                    "trial_number": m.trial_number,
                    "accuracy": m.accuracy,
                    "flops": m.flops,
                }
                for m in members
            ],
        )


class SnapshotStore:
    """Pareto-front snapshots in the ``poolnas_*`` tables of an SQL database.

    Example::

        store = SnapshotStore(handle.optuna_storage.engine)
        store.record("digits", 7, [(3, 0.91, 1.2e6), (7, 0.95, 4.0e6)], 0.87, 2.0e7,
                     n_complete=8)
        store.latest("digits").members

    Args:
        bind: A SQLAlchemy URL or an engine. Pass ``RDBStorage.engine`` to share Optuna's
            connection pool; an SQLite URL gets a busy timeout of :data:`SQLITE_BUSY_TIMEOUT`.
        create: Create the tables now if they are missing. With ``False`` nothing is created
            until the first :meth:`record`; reading a database without the tables gives an
            empty history.

    Raises:
        PoolnasError: If the tables were written by a newer poolnas.
    """

    def __init__(self, bind: str | sa.URL | sa.Engine, *, create: bool = True) -> None:
        self._engine = bind if isinstance(bind, sa.Engine) else engine_for_url(bind)
        self._ready = False
        if create:
            self.create_tables()
        else:
            with self._engine.connect() as connection:
                self._check_version(read_schema_version(connection))

    @property
    def engine(self) -> sa.Engine:
        """The engine the store writes with."""
        return self._engine

    def _where(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)

    def _check_version(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise newer_schema_error(self._where(), version)

    def create_tables(self) -> None:
        """Create the tables and the schema row if they are missing.

        Idempotent and safe when several processes call it at the same moment: a "table already
        exists" or duplicate-key error from a concurrent creator is caught and the step retried.

        Raises:
            PoolnasError: If the tables were written by a newer poolnas.
        """
        for attempt in range(_CREATE_ATTEMPTS):
            try:
                with self._engine.connect() as connection:
                    version = read_schema_version(connection)
                self._check_version(version)
                if version is None:
                    _metadata.create_all(self._engine, checkfirst=True)
                    try:
                        with self._engine.begin() as connection:
                            connection.execute(
                                sa.insert(_schema_table).values(id=1, version=SCHEMA_VERSION)
                            )
                    except sa_exc.IntegrityError:
                        pass  # Another worker wrote the row first.
                    with self._engine.connect() as connection:
                        self._check_version(read_schema_version(connection))
                self._ready = True
                return
            except (sa_exc.OperationalError, sa_exc.ProgrammingError, sa_exc.IntegrityError):
                # Another worker created a table between our check and our CREATE.
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))

    def _has_tables(self, connection: sa.Connection) -> bool:
        if self._ready:
            return True
        if not sa.inspect(connection).has_table(_snapshots_table.name):
            return False
        self._check_version(read_schema_version(connection))
        return True

    def record(
        self,
        study_name: str,
        after_trial_number: int,
        front: Iterable[Sequence[Any]],
        hypervolume: float,
        reference_flops: float,
        *,
        n_complete: int | None = None,
    ) -> int:
        """Write one snapshot and its members in one transaction.

        Args:
            study_name: The Optuna study.
            after_trial_number: The trial whose completion the snapshot follows.
            front: ``(trial_number, accuracy, flops)`` of each trial on the front, e.g.
                ``[(t.number, *t.values) for t in pareto_front(trials)]``.
            hypervolume: Its hypervolume.
            reference_flops: The reference FLOPs of that hypervolume.
            n_complete: How many trials of the study were complete (``None``: not recorded).

        Returns:
            The id of the new snapshot.

        Raises:
            ValueError: If a value is not finite.
            sqlalchemy.exc.SQLAlchemyError: If the database refuses the write (e.g. a trial
                listed twice); nothing of the snapshot is written then.
        """
        members = _check_front(front)
        _check_numbers(hypervolume, reference_flops)
        if not self._ready:
            self.create_tables()
        with self._engine.begin() as connection:
            result = connection.execute(
                sa.insert(_snapshots_table).values(
                    study_name=study_name,
                    after_trial_number=int(after_trial_number),
                    n_complete=None if n_complete is None else int(n_complete),
                    hypervolume=float(hypervolume),
                    reference_flops=float(reference_flops),
                    created_at=datetime.now(timezone.utc).replace(tzinfo=None),
                )
            )
            snapshot_id = int(result.inserted_primary_key[0])
            _insert_members(connection, snapshot_id, members)
        return snapshot_id

    def history(self, study_name: str) -> list[Snapshot]:
        """All snapshots of a study, oldest trial first.

        Args:
            study_name: The Optuna study.

        Returns:
            Snapshots ordered by ``after_trial_number`` (then id); empty when there are none.
        """
        return self._read(study_name, latest_only=False)

    def latest(self, study_name: str) -> Snapshot | None:
        """The snapshot after the highest trial number, or ``None`` when there is none."""
        snapshots = self._read(study_name, latest_only=True)
        return snapshots[0] if snapshots else None

    def _read(self, study_name: str, *, latest_only: bool) -> list[Snapshot]:
        s, m = _snapshots_table, _members_table
        with self._engine.connect() as connection:
            if not self._has_tables(connection):
                return []
            query = sa.select(s).where(s.c.study_name == study_name)
            if latest_only:
                query = query.order_by(s.c.after_trial_number.desc(), s.c.id.desc()).limit(1)
            else:
                query = query.order_by(s.c.after_trial_number, s.c.id)
            rows = connection.execute(query).all()
            if not rows:
                return []
            members_query = (
                sa.select(m.c.snapshot_id, m.c.trial_number, m.c.accuracy, m.c.flops)
                .order_by(m.c.snapshot_id, m.c.flops, m.c.trial_number)
            )
            if latest_only:
                members_query = members_query.where(m.c.snapshot_id == rows[0].id)
            else:
                members_query = members_query.join(s, s.c.id == m.c.snapshot_id).where(
                    s.c.study_name == study_name
                )
            members: dict[int, list[FrontMember]] = {}
            for row in connection.execute(members_query):
                members.setdefault(row.snapshot_id, []).append(
                    FrontMember(row.trial_number, row.accuracy, row.flops)
                )
        return [
            Snapshot(
                id=row.id,
                study_name=row.study_name,
                after_trial_number=row.after_trial_number,
                n_complete=row.n_complete,
                hypervolume=row.hypervolume,
                reference_flops=row.reference_flops,
                created_at=_utc(row.created_at),
                members=tuple(members.get(row.id, ())),
            )
            for row in rows
        ]

    def delete_study(self, study_name: str) -> int:
        """Delete every snapshot of a study, in one transaction.

        Call it beside :func:`optuna.delete_study`, so that a new study of the same name does
        not inherit the old history.

        Returns:
            How many snapshots were deleted.
        """
        s, m = _snapshots_table, _members_table
        with self._engine.connect() as connection:
            if not self._has_tables(connection):
                return 0
        with self._engine.begin() as connection:
            ids = sa.select(s.c.id).where(s.c.study_name == study_name).scalar_subquery()
            connection.execute(sa.delete(m).where(m.c.snapshot_id.in_(ids)))
            return connection.execute(sa.delete(s).where(s.c.study_name == study_name)).rowcount


class JournalSnapshotStore:
    """Pareto-front snapshots as JSON lines, for journal-file storages.

    Same methods as :class:`SnapshotStore`. Each snapshot is one line, appended with a single
    write under Optuna's journal file lock, so it is written whole or not at all: a line cut
    short by a crash is ignored by readers. ``delete_study`` rewrites the file atomically.

    Args:
        path: The JSON-lines file; created on the first :meth:`record`.

    Raises:
        PoolnasError: If the file was written by a newer poolnas.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        # Cache for record(): how far the file has been read, and the highest id seen there.
        self._inode: int | None = None
        self._offset = 0
        self._max_id = 0
        for _ in self._lines():
            break  # Reading the first line checks the schema version.

    @property
    def path(self) -> Path:
        """The JSON-lines file."""
        return self._path

    @contextmanager
    def _locked(self) -> Iterator[None]:
        lock_class = JournalFileOpenLock if os.name == "nt" else JournalFileSymlinkLock
        lock = lock_class(str(self._path))
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        if not line.endswith(b"\n"):
            return None
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict) or "id" not in record:
            return None
        version = record.get("poolnas_schema", SCHEMA_VERSION)
        if version > SCHEMA_VERSION:
            raise newer_schema_error(str(self._path), version)
        return record

    def _lines(self) -> Iterator[dict[str, Any]]:
        try:
            with open(self._path, "rb") as f:
                for line in f:
                    record = self._parse(line)
                    if record is not None:
                        yield record
        except FileNotFoundError:
            return

    def _catch_up(self) -> bool:
        """Read what was appended since the last call; whether a cut-short line ends the file."""
        try:
            stat = os.stat(self._path)
        except FileNotFoundError:
            self._inode, self._offset, self._max_id = None, 0, 0
            return False
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._inode, self._offset, self._max_id = stat.st_ino, 0, 0
        with open(self._path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines(keepends=True):
            record = self._parse(line)
            if record is not None:
                self._max_id = max(self._max_id, int(record["id"]))
        self._offset += end
        return end < len(data)

    def record(
        self,
        study_name: str,
        after_trial_number: int,
        front: Iterable[Sequence[Any]],
        hypervolume: float,
        reference_flops: float,
        *,
        n_complete: int | None = None,
    ) -> int:
        """Append one snapshot; see :meth:`SnapshotStore.record`."""
        members = _check_front(front)
        _check_numbers(hypervolume, reference_flops)
        with self._locked():
            cut_short = self._catch_up()
            snapshot_id = self._max_id + 1
            line = json.dumps(
                {
                    "poolnas_schema": SCHEMA_VERSION,
                    "id": snapshot_id,
                    "study_name": study_name,
                    "after_trial_number": int(after_trial_number),
                    "n_complete": None if n_complete is None else int(n_complete),
                    "hypervolume": float(hypervolume),
                    "reference_flops": float(reference_flops),
                    "created_at": datetime.now(timezone.utc).isoformat(),
                    "members": [list(m) for m in members],
                },
                separators=(",", ":"),
            )
            # A line cut short by a crashed writer is closed first, so it stays one bad line.
            data = (b"\n" if cut_short else b"") + line.encode("utf-8") + b"\n"
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        return snapshot_id

    @staticmethod
    def _snapshot(record: dict[str, Any]) -> Snapshot:
        members = sorted(
            (FrontMember(int(n), float(a), float(f)) for n, a, f in record["members"]),
            key=lambda m: (m.flops, m.trial_number),
        )
        return Snapshot(
            id=int(record["id"]),
            study_name=record["study_name"],
            after_trial_number=int(record["after_trial_number"]),
            n_complete=None if record["n_complete"] is None else int(record["n_complete"]),
            hypervolume=float(record["hypervolume"]),
            reference_flops=float(record["reference_flops"]),
            created_at=_utc(datetime.fromisoformat(record["created_at"])),
            members=tuple(members),
        )

    def history(self, study_name: str) -> list[Snapshot]:
        """All snapshots of a study; see :meth:`SnapshotStore.history`."""
        snapshots = [
            self._snapshot(record)
            for record in self._lines()
            if record.get("study_name") == study_name
        ]
        snapshots.sort(key=lambda s: (s.after_trial_number, s.id))
        return snapshots

    def latest(self, study_name: str) -> Snapshot | None:
        """The snapshot after the highest trial number; see :meth:`SnapshotStore.latest`."""
        snapshots = self.history(study_name)
        return snapshots[-1] if snapshots else None

    def delete_study(self, study_name: str) -> int:
        """Delete every snapshot of a study by rewriting the file atomically.

        Returns:
            How many snapshots were deleted.
        """
        with self._locked():
            kept: list[bytes] = []
            deleted = 0
            try:
                with open(self._path, "rb") as f:
                    for line in f:
                        record = self._parse(line)
                        if record is None:
                            continue
                        if record.get("study_name") == study_name:
                            deleted += 1
                        else:
                            kept.append(line)
            except FileNotFoundError:
                return 0
            if deleted:
                temporary = self._path.with_name(self._path.name + f".{os.getpid()}.tmp")
                with open(temporary, "wb") as f:
                    f.writelines(kept)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(temporary, self._path)
        return deleted
