"""A lock per study, shared by every poolnas worker on it, across processes and machines.

Optuna hands out trials without a budget: each worker asks for one whenever it likes. To end a
study with exactly ``--trials`` complete trials, a worker counts the trials and starts its next
one while holding the study's :class:`StudyLock`, so no two workers can both see the last free
slot. The lock lives where the study lives:

- PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) keyed by the study name;
- MySQL / MariaDB: a named lock (``GET_LOCK``);
- an SQLite file or a journal file: an exclusive ``flock`` on ``<file>.poolnas-lock`` beside it
  (SQLite and journal files are shared by processes that see the same file system);
- an in-memory SQLite database, or a platform without ``flock``: no lock (one process).

Every kind is released when its holder dies, also by SIGKILL or power loss: the server drops the
session's locks with the connection, the kernel drops the ``flock`` with the process. The lock
is held for milliseconds (count the trials, create one), never while a model trains.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from poolnas.search._storage import StorageHandle

#: Suffix of the lock file beside an SQLite database or a journal file.
LOCK_SUFFIX = ".poolnas-lock"

_MYSQL_WAIT = 5  # seconds per GET_LOCK call; it is called again until the lock is free


class StudyLock:
    """Mutual exclusion among the workers of one study.

    Not re-entrant. :meth:`release` may be called when the lock is not held (it does nothing),
    so code that hands the lock on can release it early and again in a ``finally``.

    Args:
        handle: The opened storage of the study.
        study_name: The study. On a database server, workers of other studies do not wait for
            it; the studies of one SQLite or journal file share the file's lock.
    """

    def __init__(self, handle: StorageHandle, study_name: str) -> None:
        digest = hashlib.sha256(f"poolnas:{study_name}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)  # PostgreSQL: a bigint
        self._name = "poolnas_" + digest.hex()[:48]  # MySQL: at most 64 characters
        self._held = False
        self._connection: sa.Connection | None = None
        self._fd: int | None = None
        self.kind, self._engine, self.path = _kind_of(handle)

    @property
    def held(self) -> bool:
        """Whether this object holds the lock now."""
        return self._held

    def acquire(self) -> None:
        """Block until this worker holds the lock."""
        if self._held:
            raise RuntimeError("StudyLock is not re-entrant")
        if self.kind == "file":
            import fcntl

            assert self.path is not None
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        elif self.kind in ("postgresql", "mysql"):
            assert self._engine is not None
            connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                if self.kind == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": self._key})
                else:
                    while True:
                        granted = connection.execute(
                            sa.text("SELECT GET_LOCK(:name, :wait)"),
                            {"name": self._name, "wait": _MYSQL_WAIT},
                        ).scalar()
                        if granted == 1:
                            break
                        if granted is None:  # An error on the server, not a timeout.
                            raise RuntimeError(f"GET_LOCK({self._name!r}) failed on the server")
            except BaseException:
                connection.invalidate()  # Whatever the server granted dies with the session.
                connection.close()
                raise
            self._connection = connection
        self._held = True

    def release(self) -> None:
        """Let the next worker in; does nothing when the lock is not held."""
        if not self._held:
            return
        self._held = False
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # Closing the only descriptor drops the flock.
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                if self.kind == "postgresql":
                    connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"),
                                       {"key": self._key})
                else:
                    connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), {"name": self._name})
            except BaseException:
                connection.invalidate()  # Closing the session releases the lock as well.
                raise
            finally:
                connection.close()

    def __enter__(self) -> StudyLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _kind_of(handle: StorageHandle) -> tuple[str, sa.Engine | None, Path | None]:
    """``(kind, engine, lock file)`` for a storage."""
    if handle.is_journal:
        return _file_lock(Path(os.path.abspath(handle.url)))
    engine = handle.optuna_storage.engine  # type: ignore[attr-defined]
    backend = engine.url.get_backend_name()
    if backend == "postgresql":
        return "postgresql", engine, None
    if backend in ("mysql", "mariadb"):
        return "mysql", engine, None
    if backend == "sqlite":
        database = engine.url.database
        if not database or database == ":memory:":
            return "none", None, None
        return _file_lock(Path(os.path.abspath(database)))
    return "none", None, None  # Another database: workers may overshoot the budget by a few.


def _file_lock(path: Path) -> tuple[str, None, Path | None]:
    try:
        import fcntl  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        return "none", None, None
    return "file", None, path.with_name(path.name + LOCK_SUFFIX)
