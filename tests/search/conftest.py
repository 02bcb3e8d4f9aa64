"""Fixtures for the storage tests: fresh SQLite files and fresh PostgreSQL and MySQL databases.

Server tests connect to the servers named by ``POOLNAS_TEST_POSTGRES_URL`` and
``POOLNAS_TEST_MYSQL_URL`` (defaults: the local PostgreSQL as ``postgres`` and the local
MariaDB/MySQL as ``root``, no password). Each test gets its own database, named
``poolnas_test_<session token>_<n>`` and dropped afterwards. When a server cannot be reached the
test is skipped, or fails if the environment variable ``CI`` is set.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

ADMIN_URLS = {
    "postgresql": os.environ.get(
        "POOLNAS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
    "mysql": os.environ.get("POOLNAS_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
SESSION_TOKEN = secrets.token_hex(4)


def unavailable(message: str) -> None:
    """Skip, or fail when ``CI`` is set: on CI a missing server is a broken set-up."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so a missing server is a failure)", pytrace=False)
    pytest.skip(message)


class ServerDatabases:
    """Creates uniquely named databases on one server and drops them again."""

    def __init__(self, backend: str, admin_url: str) -> None:
        self.backend = backend
        self.admin_url = sa.make_url(admin_url)
        self._engine: sa.Engine | None = None
        self._error: str | None = None
        self._counter = itertools.count()
        self._created: list[str] = []

    def _admin(self) -> sa.Engine:
        if self._engine is None and self._error is None:
            engine = sa.create_engine(
                self.admin_url,
                isolation_level="AUTOCOMMIT",
                connect_args={"connect_timeout": 5},
                poolclass=sa.pool.NullPool,
            )
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
                self._engine = engine
            except sa.exc.DBAPIError as error:
                self._error = str(error.orig).strip().splitlines()[0]
        if self._engine is None:
            where = self.admin_url.render_as_string(hide_password=True)
            unavailable(f"{self.backend} server not reachable at {where}: {self._error}")
        assert self._engine is not None
        return self._engine

    def create(self) -> str:
        """Create a fresh database; its URL (same server and user as the admin URL)."""
        engine = self._admin()
        name = f"poolnas_test_{SESSION_TOKEN}_{next(self._counter)}"
        with engine.connect() as connection:
            if self.backend == "mysql":
                connection.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            else:
                connection.execute(sa.text(f"CREATE DATABASE {name}"))
        self._created.append(name)
        return self.admin_url.set(database=name).render_as_string(hide_password=False)

    def drop(self, url: str) -> None:
        name = sa.make_url(url).database
        if self._engine is None or name not in self._created:
            return
        with self._engine.connect() as connection:
            if self.backend == "postgresql":
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            else:
                connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        self._created.remove(name)

    def drop_all(self) -> None:
        for name in list(self._created):
            self.drop(self.admin_url.set(database=name).render_as_string(hide_password=False))
        if self._engine is not None:
            self._engine.dispose()


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, ServerDatabases]]:
    """One :class:`ServerDatabases` per server backend; drops leftovers at the end."""
    servers = {backend: ServerDatabases(backend, url) for backend, url in ADMIN_URLS.items()}
    yield servers
    for server in servers.values():
        server.drop_all()


@pytest.fixture
def new_database(
    servers: dict[str, ServerDatabases], tmp_path: Path
) -> Iterator[Callable[[str], str]]:
    """``new_database(backend)``: the URL of a fresh, empty database of that backend.

    ``sqlite`` gives a file URL in ``tmp_path`` (the file does not exist yet).
    """
    made: list[tuple[str, str]] = []
    sqlite_files = itertools.count()

    def make(backend: str) -> str:
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / f'study{next(sqlite_files)}.db'}"
        url = servers[backend].create()
        made.append((backend, url))
        return url

    yield make
    for backend, url in made:
        servers[backend].drop(url)


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    """A fresh database on each backend in turn."""
    return new_database(request.param)


def _tree(root: Path) -> dict[str, str]:
    result = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            result[relative] = "link:" + os.readlink(path)
        elif path.is_dir():
            result[relative] = "dir"
        else:
            result[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def _database_contents(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        contents: dict[str, Any] = {}
        with engine.connect() as connection:
            for name, table in sorted(metadata.tables.items()):
                columns = sorted(column.name for column in table.columns)
                rows = sorted(repr(tuple(row)) for row in connection.execute(sa.select(table)))
                contents[name] = (columns, rows)
        return contents
    finally:
        engine.dispose()


@pytest.fixture
def fingerprint(tmp_path: Path) -> Callable[[str | None], Any]:
    """``fingerprint(url)``: everything in ``tmp_path`` (paths and SHA-256 of each file) and,
    for a server URL, every table with its columns and rows. Equal before and after means
    nothing was created or changed."""

    def take(url: str | None = None) -> Any:
        files = _tree(tmp_path)
        if url is None or url.startswith("sqlite"):
            return files
        return files, _database_contents(url)

    return take
