"""Opening the storage of a study safely: validate first, then let Optuna touch it.

A storage spec is one of:

- an SQLAlchemy URL of a database Optuna supports: ``sqlite:///path/x.db``,
  ``postgresql+psycopg://user@host:5432/db``, ``mysql+pymysql://user@host:3306/db``;
  ``postgresql://`` and ``mysql://`` get an installed driver (psycopg, PyMySQL) when the
  dialect's default one is missing;
- a journal file: a plain path (no ``://``) ending in ``.log``, e.g. ``runs/study.log`` — the
  convention of Optuna's ``JournalFileBackend`` examples and of ``optuna-dashboard study.log``,
  so the same string works for both. Journal files suit NFS, where SQLite locking is unreliable.

Before anything is created or written, :func:`open_storage` checks the spec and what is already
there, read-only, and raises :class:`~poolnas.spaces.PoolnasError` with one line that says what
to do: malformed URL, unknown database, missing driver, missing directory, a file that is not an
SQLite database (its header is read by poolnas; such a file is never opened by SQLite), a
database with unrelated tables, an Optuna or poolnas schema newer (or older) than the installed
code, an unreachable server. With ``create=False`` (reading commands) a missing database is an
error rather than a new empty one.

Beside each study's data live:

- the Pareto-front snapshots (:mod:`poolnas.search._snapshots`): ``poolnas_*`` tables in the
  same database, or ``<name>-snapshots.jsonl`` beside a journal file ``<name>.log``;
- the artifact directory for trained weights: ``<dir>/<name>-artifacts/`` beside
  ``sqlite:///<dir>/<name>.db`` or ``<dir>/<name>.log``. A database server has no "beside": the
  caller passes ``artifacts``, or there is none. The directory is created on the first write.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import optuna
import sqlalchemy as sa
from alembic.script import ScriptDirectory
from optuna.artifacts import FileSystemArtifactStore
from optuna.exceptions import ExperimentalWarning, StorageInternalError
from optuna.storages import JournalStorage, _rdb
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from poolnas.search._reclaim import RetryKilledTrial
from poolnas.search._snapshots import (
    SCHEMA_VERSION,
    SQLITE_BUSY_TIMEOUT,
    JournalSnapshotStore,
    SnapshotStore,
    newer_schema_error,
)
from poolnas.spaces import PoolnasError

if TYPE_CHECKING:
    from optuna.storages import BaseStorage

try:  # Optuna >= 4.9 renamed the callback and its argument.
    from optuna.storages import RetryHeartbeatStaleTrialCallback  # noqa: F401

    _CALLBACK_ARGUMENT = "heartbeat_stale_trial_callback"
except ImportError:  # pragma: no cover - older Optuna
    _CALLBACK_ARGUMENT = "failed_trial_callback"

SQLITE_HEADER = b"SQLite format 3\x00"
JOURNAL_SUFFIX = ".log"

# Tables of Optuna's RDB schema; two of them mark a database as Optuna's.
_OPTUNA_TABLES = frozenset(
    {
        "studies",
        "study_directions",
        "study_system_attributes",
        "study_user_attributes",
        "trial_heartbeats",
        "trial_intermediate_values",
        "trial_params",
        "trial_system_attributes",
        "trial_user_attributes",
        "trial_values",
        "trials",
        "version_info",
    }
)
_OPTUNA_MARKERS = frozenset({"studies", "version_info"})
_ALEMBIC_TABLE = "alembic_version"
_POOLNAS_PREFIX = "poolnas_"

# pip extras and installed alternatives for the drivers of the server databases.
_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_FALLBACK_DRIVERS = {
    "postgresql": ("psycopg", "psycopg2"),
    "mysql": ("pymysql", "mysqldb"),
    "mariadb": ("pymysql", "mysqldb"),
}
_DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}

_CONNECT_TIMEOUT = 10  # seconds, for the read-only checks against a server
_INITIALISING_WAIT = 30.0  # seconds to wait for another worker that is creating the schema
_OPEN_ATTEMPTS = 8


@dataclass(frozen=True)
class StorageHandle:
    """An opened, validated storage and what lives beside it.

    Attributes:
        url: The storage spec in effect: the SQLAlchemy URL (with the driver poolnas chose, if
            it chose one) or the journal file path.
        optuna_storage: ``optuna.storages.RDBStorage`` (heartbeat and retry of stale trials
            set up) or ``optuna.storages.JournalStorage`` for a ``.log`` file.
        snapshots: The Pareto-front snapshot store: SQL tables in the same database, or a
            JSON-lines file beside the journal.
        artifact_dir: Where trained weights go, or ``None`` for a server without one.
    """

    url: str
    optuna_storage: BaseStorage
    snapshots: SnapshotStore | JournalSnapshotStore
    artifact_dir: Path | None
    _engine: sa.Engine | None = field(default=None, repr=False, compare=False)
    #: The SQLite file this open created (None: it existed, or it is not SQLite).
    new_file: Path | None = field(default=None, compare=False)

    @property
    def is_journal(self) -> bool:
        """Whether the storage is a journal file rather than a database."""
        return self._engine is None

    @property
    def display_url(self) -> str:
        """The spec with any password hidden, for messages."""
        return mask_url(self.url)

    def artifact_store(self) -> FileSystemArtifactStore:
        """An Optuna artifact store in :attr:`artifact_dir`, created on its first write.

        Returns:
            A ``FileSystemArtifactStore``; reading from it before anything was written finds
            no artifacts and creates nothing.

        Raises:
            PoolnasError: If the storage has no artifact directory (a server URL opened without
                ``artifacts``).
        """
        if self.artifact_dir is None:
            raise PoolnasError(
                f"storage: {self.display_url} is a database server, so there is no place beside "
                "it for trained weights; pass an artifact directory (--artifacts)"
            )
        return _LazyFileSystemArtifactStore(self.artifact_dir)

    def discard_if_new(self) -> None:
        """Close, and remove the SQLite file this open created if it holds no study: a search
        refused or interrupted while starting leaves no file behind."""
        if self.new_file is None:
            self.close()
            return
        try:
            empty = not optuna.study.get_all_study_names(self.optuna_storage)
        except Exception:  # noqa: BLE001 - a file we cannot read back is not ours to keep
            empty = True
        self.close()
        if empty:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(f"{self.new_file}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Release the database connections (a journal file holds none)."""
        if self._engine is not None:
            remove_session = getattr(self.optuna_storage, "remove_session", None)
            if remove_session is not None:
                remove_session()
            self._engine.dispose()

    def __enter__(self) -> StorageHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _LazyFileSystemArtifactStore(FileSystemArtifactStore):
    """A ``FileSystemArtifactStore`` whose directory is created on the first write."""

    def __init__(self, base_path: Path) -> None:
        super().__init__(base_path)
        self._directory = base_path

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        self._directory.mkdir(parents=True, exist_ok=True)
        super().write(artifact_id, content_body)


#: A query parameter of a storage URL whose value is a credential (``password``,
#: ``sslpassword``, ``token``, ``api_key``, …), with its value.
_SECRET_QUERY = re.compile(
    r"([?&][^=&\s]*(?:pass|pwd|secret|token|key|auth|credential)[^=&\s]*=)[^&\s]*",
    re.IGNORECASE)
#: The password of a URL's user info.
_USER_PASSWORD = re.compile(r"(://\s*[^/:@\s]*:)[^@\s]*@")


def mask_url(url: str | sa.URL) -> str:
    """A storage spec with every credential hidden: the one way a URL is shown to anyone.

    The password of the user info becomes ``***``, and so does the value of every query
    parameter whose name looks like a credential (``password``, ``sslpassword``, ``token``,
    ``api_key``, …). A string that is not a valid URL is masked the same way.
    """
    text = url.render_as_string(hide_password=False) if isinstance(url, sa.URL) else url
    return _SECRET_QUERY.sub(r"\1***", _USER_PASSWORD.sub(r"\1***@", text))


def _is_journal_spec(spec: str) -> bool:
    return "://" not in spec and spec.endswith(JOURNAL_SUFFIX)


def needs_artifact_dir(spec: str) -> bool:
    """Whether trained weights of ``spec`` have no place beside it: a database server or an
    in-memory SQLite database (searches there need ``--artifacts``). False for a spec that is
    not a URL at all, which :func:`open_storage` refuses with its own message."""
    if not isinstance(spec, str) or _is_journal_spec(spec):
        return False
    try:
        parsed = sa.make_url(spec)
    except (sa_exc.ArgumentError, ValueError):
        return False
    if parsed.get_backend_name() == "sqlite":
        return not parsed.database or parsed.database == ":memory:"
    # Only a database that can be opened needs a place for weights; an unknown one is refused
    # by open_storage with its own message first.
    return parsed.get_backend_name() in _DEFAULT_PORTS


def open_storage(
    url: str,
    *,
    create: bool,
    heartbeat_interval: int | None = 60,
    grace_period: int | None = None,
    max_retry: int | None = 3,
    artifacts: str | os.PathLike[str] | None = None,
) -> StorageHandle:
    """Validate a storage spec, then open it for Optuna and poolnas.

    Nothing is created or modified unless every check passes. With ``create=True`` a missing
    SQLite file or journal file is created, and Optuna's and poolnas' tables are created in an
    empty database; several workers may do this at the same moment.

    Args:
        url: An SQLAlchemy URL or a journal file path ending in ``.log`` (see the module doc).
        create: Whether a missing database (file, tables) may be created. Reading commands
            (``front``, ``export``, ``dashboard``) pass ``False``.
        heartbeat_interval: Seconds between heartbeats of a running trial, or ``None`` for no
            heartbeat. A trial whose worker was killed is failed once its heartbeat is
            ``grace_period`` old and retried (as a new ``WAITING`` trial) up to ``max_retry``
            times. Works with ``study.optimize`` on RDB storages; journal files have no
            heartbeat.
        grace_period: Seconds without heartbeat before a running trial counts as dead; ``None``
            means twice ``heartbeat_interval``.
        max_retry: How often a dead trial is retried; ``None`` for no limit.
        artifacts: The artifact directory for trained weights. ``None``: ``<name>-artifacts/``
            beside an SQLite or journal file, and none for a server URL.

    Returns:
        The opened :class:`StorageHandle`.

    Raises:
        PoolnasError: If the spec or the database is not usable; nothing was changed then.
    """
    if not isinstance(url, str) or not url.strip():
        raise PoolnasError(f"storage: expected a database URL or a .log path, got {url!r}")
    if heartbeat_interval is not None and (
        not isinstance(heartbeat_interval, int) or heartbeat_interval <= 0
    ):
        raise PoolnasError(
            f"storage: heartbeat interval must be a positive number of seconds, "
            f"got {heartbeat_interval!r}"
        )
    if grace_period is not None and (not isinstance(grace_period, int) or grace_period <= 0):
        raise PoolnasError(
            f"storage: grace period must be a positive number of seconds, got {grace_period!r}"
        )
    explicit_dir = None if artifacts is None else _check_artifact_dir(Path(artifacts))
    if _is_journal_spec(url):
        return _open_journal(url, create=create, artifact_dir=explicit_dir)
    return _open_rdb(
        url,
        create=create,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
        artifact_dir=explicit_dir,
    )


def _check_artifact_dir(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise PoolnasError(
            f"storage: artifact directory {path} exists but is not a directory; "
            "choose another --artifacts"
        )
    return path


def _beside(path: Path) -> Path:
    """``<dir>/<name>-artifacts`` for ``<dir>/<name>.<suffix>``."""
    return path.with_name(f"{path.stem}-artifacts")


# --- Journal files ---------------------------------------------------------------------------


def _open_journal(spec: str, *, create: bool, artifact_dir: Path | None) -> StorageHandle:
    path = Path(os.path.abspath(spec))
    _check_parent(path, spec)
    if path.is_dir():
        raise PoolnasError(f"storage: {spec} is a directory, not a journal file")
    if path.exists():
        _check_journal_file(path, spec)
        if create and not os.access(path, os.W_OK):
            raise PoolnasError(f"storage: {spec} is read-only; poolnas cannot record trials in it")
    elif not create:
        raise PoolnasError(
            f"storage: journal file {spec} does not exist; check the path, or run "
            "`poolnas search` with it first"
        )
    elif not os.access(path.parent, os.W_OK):
        raise PoolnasError(f"storage: cannot create {spec}: directory {path.parent} is read-only")
    snapshots = JournalSnapshotStore(path.with_name(f"{path.stem}-snapshots.jsonl"))
    lock = JournalFileOpenLock(str(path)) if os.name == "nt" else None
    storage = JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    return StorageHandle(
        url=spec,
        optuna_storage=storage,
        snapshots=snapshots,
        artifact_dir=artifact_dir or _beside(path),
    )


def _check_parent(path: Path, spec: str) -> None:
    if not path.parent.is_dir():
        raise PoolnasError(
            f"storage: directory {path.parent} of {spec} does not exist; create it first"
        )


def _check_journal_file(path: Path, spec: str) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
            f.seek(0)
            first_line = f.readline(1 << 20)
    except OSError as error:
        raise PoolnasError(f"storage: cannot read {spec}: {error.strerror}") from None
    if head == SQLITE_HEADER:
        raise PoolnasError(
            f"storage: {spec} is an SQLite database, not a journal file; "
            f"use sqlite:///{spec} to open it"
        )
    if not first_line:
        return
    try:
        record = json.loads(first_line)
    except ValueError:
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise PoolnasError(
            f"storage: {spec} exists but is not an Optuna journal file; "
            "poolnas will not write to it — choose another path"
        )


# --- SQL databases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _DatabaseState:
    tables: frozenset[str]
    revisions: tuple[str, ...]
    optuna_version: str | None
    poolnas_version: int | None


def _parse_url(url: str) -> sa.URL:
    """The URL with an importable driver, or a PoolnasError."""
    try:
        parsed = sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        if re.match(r"[A-Za-z][\w+.-]*:", url) is None:
            message = (
                f"storage: {mask_url(url)!r} is not a database URL; write sqlite:///{url} for an "
                "SQLite "
                "file, or give a path ending in .log for a journal file"
            )
        else:
            message = (
                f"storage: {mask_url(url)!r} is not a valid database URL; expected e.g. "
                "sqlite:///poolnas.db, postgresql+psycopg://user@host:5432/db or "
                "mysql+pymysql://user@host:3306/db"
            )
        raise PoolnasError(message) from None
    backend = parsed.get_backend_name()
    shown = mask_url(parsed)
    try:
        dialect = parsed.get_dialect()
    except sa_exc.NoSuchModuleError:
        raise PoolnasError(
            f"storage: unknown database {parsed.drivername!r} in {shown}; use sqlite, "
            "postgresql+psycopg or mysql+pymysql"
        ) from None
    try:
        dialect.import_dbapi()
        return parsed
    except ImportError as error:
        missing = getattr(error, "name", None) or parsed.get_driver_name()
    if "+" not in parsed.drivername:
        # The dialect's default driver is missing; use another installed one if there is one.
        for driver in _FALLBACK_DRIVERS.get(backend, ()):
            candidate = parsed.set(drivername=f"{backend}+{driver}")
            try:
                candidate.get_dialect().import_dbapi()
            except (ImportError, sa_exc.NoSuchModuleError):
                continue
            return candidate
    extra = _EXTRAS.get(backend)
    if extra is None:
        advice = f"install the {missing} module"
    else:
        advice = f"run `pip install 'poolnas[{extra}]'`"
        recommended = f"{backend}+{_FALLBACK_DRIVERS[backend][0]}"
        if parsed.drivername != recommended:
            advice += f" and use {recommended}://"
    raise PoolnasError(
        f"storage: the driver module {missing!r} for {parsed.drivername}:// is not installed; "
        f"{advice}"
    )


def _sqlite_path(parsed: sa.URL) -> Path | None:
    """The database file of an SQLite URL, or ``None`` for an in-memory database."""
    if parsed.query.get("uri") in ("true", "1", "True"):
        raise PoolnasError(
            f"storage: SQLite URI filenames ({mask_url(parsed)}) are not supported; "
            "use sqlite:///path/to/file.db"
        )
    database = parsed.database
    if not database or database == ":memory:":
        return None
    return Path(os.path.abspath(database))


def _check_sqlite_file(path: Path, shown: str, *, create: bool) -> bool:
    """Check an SQLite file before SQLite opens it; whether it holds anything to inspect."""
    _check_parent(path, shown)
    if path.is_dir():
        raise PoolnasError(f"storage: {path} in {shown} is a directory, not an SQLite file")
    if not path.exists():
        if not create:
            raise PoolnasError(
                f"storage: {path} does not exist; check the path, or run `poolnas search` "
                "with this storage first"
            )
        if not os.access(path.parent, os.W_OK):
            raise PoolnasError(f"storage: cannot create {path}: its directory is read-only")
        return False
    try:
        with open(path, "rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as error:
        raise PoolnasError(f"storage: cannot read {path}: {error.strerror}") from None
    if not header:
        return False  # An empty file is an empty SQLite database.
    if header != SQLITE_HEADER:
        raise PoolnasError(
            f"storage: {path} exists but is not an SQLite database; poolnas will not touch it — "
            "choose another file name"
        )
    if create and not os.access(path, os.W_OK):
        raise PoolnasError(f"storage: {path} is read-only; poolnas cannot record trials in it")
    return True


def _inspection_engine(parsed: sa.URL, sqlite_path: Path | None) -> sa.Engine:
    if sqlite_path is not None:
        # Read-only: the checks must never write to a file that may turn out to be foreign.
        uri = sqlite_path.as_uri() + "?mode=ro"
        return sa.create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(uri, uri=True, timeout=SQLITE_BUSY_TIMEOUT),
            poolclass=NullPool,
        )
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() in _EXTRAS:
        connect_args["connect_timeout"] = _CONNECT_TIMEOUT
    return sa.create_engine(parsed, poolclass=NullPool, connect_args=connect_args)


def _first_line(error: BaseException) -> str:
    orig = getattr(error, "orig", None) or error
    text = str(orig).strip()
    return text.splitlines()[0].strip() if text else type(orig).__name__


def _where(parsed: sa.URL, sqlite_path: Path | None) -> str:
    if parsed.get_backend_name() == "sqlite":
        return str(sqlite_path) if sqlite_path is not None else "the in-memory database"
    host = parsed.host or "localhost"
    port = parsed.port or _DEFAULT_PORTS.get(parsed.get_backend_name(), "")
    address = f"{host}:{port}" if port else host
    return f"{parsed.get_backend_name()} database {parsed.database or ''!r} at {address}"


def _inspect(engine: sa.Engine, parsed: sa.URL, sqlite_path: Path | None) -> _DatabaseState:
    try:
        with engine.connect() as connection:
            tables = frozenset(sa.inspect(connection).get_table_names())
            revisions: tuple[str, ...] = ()
            optuna_version = None
            poolnas_version = None
            if _ALEMBIC_TABLE in tables:
                revisions = tuple(
                    str(r)
                    for r in connection.execute(
                        sa.text(f"SELECT version_num FROM {_ALEMBIC_TABLE}")
                    ).scalars()
                )
            if "version_info" in tables:
                try:
                    optuna_version = connection.execute(
                        sa.text("SELECT library_version FROM version_info")
                    ).scalar()
                except sa_exc.DBAPIError:
                    connection.rollback()
            if "poolnas_schema" in tables:
                try:
                    poolnas_version = connection.execute(
                        sa.text("SELECT version FROM poolnas_schema")
                    ).scalar()
                except sa_exc.DBAPIError:
                    connection.rollback()
    except sa_exc.DBAPIError as error:
        if sqlite_path is not None:
            raise PoolnasError(
                f"storage: cannot read {sqlite_path}: {_first_line(error)}"
            ) from None
        raise PoolnasError(
            f"storage: cannot connect to {_where(parsed, None)}: {_first_line(error)}"
        ) from None
    finally:
        engine.dispose()
    return _DatabaseState(tables, revisions, optuna_version, poolnas_version)


def _optuna_revisions() -> tuple[str, frozenset[str]]:
    """The alembic head of the installed Optuna and every revision it knows."""
    script = ScriptDirectory(os.path.join(os.path.dirname(_rdb.__file__), "alembic"))
    head = script.get_current_head()
    assert head is not None
    return head, frozenset(r.revision for r in script.walk_revisions())


def _classify(state: _DatabaseState, where: str, shown: str) -> str:
    """``"fresh"``, ``"optuna"`` or ``"initialising"``; raises for anything unusable."""
    if state.poolnas_version is not None and state.poolnas_version > SCHEMA_VERSION:
        raise newer_schema_error(where, state.poolnas_version)
    poolnas_tables = {t for t in state.tables if t.startswith(_POOLNAS_PREFIX)}
    optuna_tables = state.tables & _OPTUNA_TABLES
    foreign = state.tables - _OPTUNA_TABLES - poolnas_tables - {_ALEMBIC_TABLE}
    unrelated = PoolnasError(
        f"storage: {where} has tables that are not an Optuna study database "
        f"({', '.join(sorted(foreign or state.tables)[:5])}); poolnas will not add its tables "
        "there — use a new file or an empty database"
    )
    if not optuna_tables:
        if foreign or _ALEMBIC_TABLE in state.tables:
            raise unrelated
        return "fresh"
    if state.revisions and _OPTUNA_MARKERS <= state.tables:
        head, known = _optuna_revisions()
        if state.revisions == (head,):
            return "optuna"
        written_by = f" (written by Optuna {state.optuna_version})" if state.optuna_version else ""
        if all(r in known for r in state.revisions):
            raise PoolnasError(
                f"storage: {where} has an older Optuna schema{written_by} than the installed "
                f"Optuna {optuna.__version__}; upgrade it with "
                f"`optuna storage upgrade --storage {shown}` (back it up first)"
            )
        raise PoolnasError(
            f"storage: {where} was written by a newer Optuna{written_by} than the installed "
            f"Optuna {optuna.__version__}; upgrade Optuna (pip install -U optuna)"
        )
    if foreign:
        raise unrelated
    # Some of Optuna's tables but no schema stamp: another worker is creating them right now.
    return "initialising"


def _open_rdb(
    url: str,
    *,
    create: bool,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int | None,
    artifact_dir: Path | None,
) -> StorageHandle:
    parsed = _parse_url(url)
    shown = mask_url(parsed)
    is_sqlite = parsed.get_backend_name() == "sqlite"
    sqlite_path = _sqlite_path(parsed) if is_sqlite else None
    new_file = sqlite_path if sqlite_path is not None and not sqlite_path.exists() else None
    where = _where(parsed, sqlite_path)

    if is_sqlite and sqlite_path is None:
        if not create:
            raise PoolnasError(
                f"storage: {shown} is an in-memory database and holds no studies to read"
            )
        kind = "fresh"
    elif is_sqlite and not _check_sqlite_file(sqlite_path, shown, create=create):
        kind = "fresh"  # Missing or empty file: nothing to inspect.
    else:
        kind = _wait_for_schema(parsed, sqlite_path, where, shown)
    if kind == "fresh" and not create:
        raise PoolnasError(
            f"storage: {where} holds no Optuna studies; check the URL, or run `poolnas search` "
            "with it first"
        )
    if kind == "initialising" and not create:
        raise PoolnasError(
            f"storage: {where} has an incomplete Optuna schema; run `poolnas search` with it "
            "to complete it"
        )

    effective_url = parsed.render_as_string(hide_password=False)
    storage = _create_rdb_storage(
        effective_url,
        where=where,
        shown=shown,
        sqlite=is_sqlite,
        create=create,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        max_retry=max_retry,
    )
    engine: sa.Engine = storage.engine
    try:
        # Its tables are made by the first snapshot, so a search refused after opening (e.g. a
        # study of another program) leaves the database as it was.
        snapshots = SnapshotStore(engine, create=False)
    except BaseException:
        engine.dispose()
        raise
    if artifact_dir is None and sqlite_path is not None:
        artifact_dir = _beside(sqlite_path)
    return StorageHandle(
        url=effective_url,
        optuna_storage=storage,
        snapshots=snapshots,
        artifact_dir=artifact_dir,
        _engine=engine,
        new_file=new_file if create else None,
    )


def _wait_for_schema(parsed: sa.URL, sqlite_path: Path | None, where: str, shown: str) -> str:
    """Classify the database, waiting a while for a worker that is creating its schema."""
    deadline = time.monotonic() + _INITIALISING_WAIT
    while True:
        state = _inspect(_inspection_engine(parsed, sqlite_path), parsed, sqlite_path)
        kind = _classify(state, where, shown)
        if kind != "initialising" or time.monotonic() > deadline:
            return kind
        time.sleep(0.2)


def _create_rdb_storage(
    url: str,
    *,
    where: str,
    shown: str,
    sqlite: bool,
    create: bool,
    heartbeat_interval: int | None,
    grace_period: int | None,
    max_retry: int | None,
) -> optuna.storages.RDBStorage:
    engine_kwargs: dict[str, Any] = {}
    if sqlite:
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT}
    heartbeat: dict[str, Any] = {}
    if heartbeat_interval is not None:
        heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            _CALLBACK_ARGUMENT: None,
        }
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                warnings.simplefilter("ignore", FutureWarning)
                if heartbeat:
                    heartbeat[_CALLBACK_ARGUMENT] = RetryKilledTrial(max_retry=max_retry)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=dict(engine_kwargs),
                    skip_table_creation=not create,
                    **heartbeat,
                )
        except RuntimeError as error:
            # Optuna's schema check; the checks above normally catch this first.
            raise PoolnasError(f"storage: {where}: {_first_line(error)}") from None
        except (sa_exc.SQLAlchemyError, StorageInternalError) as error:
            # A concurrent worker created a table or stamped the schema between our steps.
            if attempt == _OPEN_ATTEMPTS - 1:
                raise PoolnasError(
                    f"storage: cannot open {shown}: {_first_line(error)}"
                ) from None
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


# --- Studies ---------------------------------------------------------------------------------


def list_studies(handle: StorageHandle) -> list[str]:
    """Names of the studies in a storage, oldest first.

    Args:
        handle: An opened storage.

    Returns:
        The study names.
    """
    return optuna.study.get_all_study_names(handle.optuna_storage)


def load_study(
    handle: StorageHandle,
    name: str,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Load an existing study by name.

    Args:
        handle: An opened storage.
        name: The study name.
        sampler: Passed to :func:`optuna.load_study`.
        pruner: Passed to :func:`optuna.load_study`.

    Returns:
        The study.

    Raises:
        PoolnasError: If there is no study of that name; the message lists the studies there.
    """
    names = list_studies(handle)
    if name not in names:
        raise PoolnasError(
            f"storage: no study named {name!r} in {handle.display_url}; "
            f"studies here: {', '.join(names) if names else '(none)'}"
        )
    return optuna.load_study(
        study_name=name, storage=handle.optuna_storage, sampler=sampler, pruner=pruner
    )

