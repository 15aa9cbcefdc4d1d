"""The one way govexchange opens a SQL database and migrates it.

The exchange state and the license store both reach their databases through a URL:

- :func:`make_engine` turns a URL into a configured SQLAlchemy engine. ``postgresql://`` and
  ``postgres://`` use psycopg 3; servers get ``pool_pre_ping``. SQLite gets its parent folder
  created, WAL, foreign keys, a busy timeout and explicit ``BEGIN`` (``BEGIN IMMEDIATE`` on a
  connection carrying :data:`WRITE_OPTION`, so that concurrent writers queue instead of failing).
- :func:`begin_write` opens such a writer transaction.
- :func:`safe_url` is the only form a URL may take in a log or a message (password hidden).
- :class:`Migrations` runs a package's Alembic migrations and reads its current and head
  revisions. Each package keeps its own scripts folder and its own version table, so several
  packages can share one database; its ``env.py`` calls :meth:`Migrations.run_env`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

__all__ = [
    "WRITE_OPTION",
    "Migrations",
    "begin_write",
    "engine_url",
    "make_engine",
    "safe_url",
]

# Execution option a connection carries when it is about to write (SQLite: BEGIN IMMEDIATE).
WRITE_OPTION = "govx_write"
SQLITE_BUSY_TIMEOUT_MS = 30_000


SENSITIVE_QUERY_KEYS = ("password", "secret", "token", "key")


def safe_url(url: str | URL) -> str:
    """The URL as it may be shown: the password and secret-looking query parameters as ``***``."""
    try:
        parsed = make_url(url)
    except exc.ArgumentError:
        return "<unparsable database URL>"
    hidden = {
        key: "***"
        for key in parsed.query
        if any(word in key.lower() for word in SENSITIVE_QUERY_KEYS)
    }
    if hidden:
        parsed = parsed.update_query_dict(hidden)
    return parsed.render_as_string(hide_password=True)


def engine_url(url: str | URL) -> URL:
    """The URL an engine connects to: ``postgresql://`` and ``postgres://`` use psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _sqlite_file(url: URL) -> Path | None:
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN (pysqlite's own would be deferred and would
    # commit before DDL); see the SQLAlchemy pysqlite "serializable isolation" recipe.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    writing = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for ``url`` with the settings every govexchange store wants.

    ``kwargs`` go to :func:`sqlalchemy.create_engine` (such as ``json_serializer``).
    """
    parsed = engine_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = _sqlite_file(parsed)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {
            "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            **kwargs.get("connect_args", {}),
        }
        engine = sa.create_engine(parsed, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        sa.event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    # Pooled connections for as many threads as a server runs queries in (anyio's default
    # thread limit is 40): a smaller pool opens and closes a connection per request under load.
    kwargs.setdefault("pool_size", int(os.environ.get("GOVX_DB_POOL_SIZE", "20")))
    kwargs.setdefault("max_overflow", 20)
    return sa.create_engine(parsed, **kwargs)


@contextmanager
def begin_write(engine: Engine) -> Iterator[Connection]:
    """One write transaction; on SQLite it takes the write lock up front (``BEGIN IMMEDIATE``)."""
    with engine.connect() as conn:
        conn.execution_options(**{WRITE_OPTION: True})
        with conn.begin():
            yield conn


@cache
def _head_revision(script_location: Path) -> str | None:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    return ScriptDirectory.from_config(config).get_current_head()


@dataclass(frozen=True)
class Migrations:
    """A package's Alembic migrations: its scripts folder and the version table it records in."""

    script_location: Path
    version_table: str

    def config(self, url: str | None = None) -> Config:
        """An Alembic config (no ``alembic.ini``) for these migrations, ``sqlalchemy.url`` if given.

        Callers normally pass a connection in ``config.attributes["connection"]`` instead.
        """
        config = Config()
        config.set_main_option("script_location", str(self.script_location))
        if url is not None:
            config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        return config

    def head_revision(self) -> str:
        """The newest revision the code knows."""
        head = _head_revision(self.script_location)
        if head is None:  # pragma: no cover - every package ships its migrations
            raise RuntimeError(f"no migrations found in {self.script_location}")
        return head

    def current_revision(self, engine: Engine) -> str | None:
        """The revision the database is at; ``None`` before the first migration."""
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": self.version_table})
            return context.get_current_revision()

    def is_current(self, engine: Engine) -> bool:
        """Whether the database is migrated to the code's head revision."""
        return self.current_revision(engine) == self.head_revision()

    def upgrade(self, engine: Engine, revision: str = "head") -> None:
        """Migrate the database to ``revision`` in one write transaction (idempotent)."""
        config = self.config()
        with begin_write(engine) as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)

    def run_env(self, metadata: sa.MetaData) -> None:
        """The body of the package's ``env.py``: run its migrations as Alembic asks.

        Online, on the connection passed in ``config.attributes["connection"]`` (what
        :meth:`upgrade` does), else on ``sqlalchemy.url``; offline (``--sql``), emit SQL. Never
        configures logging: the application's logging stays as the application set it.
        """
        from alembic import context

        options: dict[str, Any] = {
            "target_metadata": metadata,
            "version_table": self.version_table,
        }
        url = context.config.get_main_option("sqlalchemy.url")
        if context.is_offline_mode():
            context.configure(
                url=url, literal_binds=True, dialect_opts={"paramstyle": "named"}, **options
            )
            with context.begin_transaction():
                context.run_migrations()
            return

        def run(connection: Connection) -> None:
            context.configure(
                connection=connection,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
                **options,
            )
            with context.begin_transaction():
                context.run_migrations()

        connection = context.config.attributes.get("connection")
        if connection is not None:
            run(connection)
            return
        if not url:
            raise RuntimeError("no connection passed and no sqlalchemy.url configured")
        engine = make_engine(url)
        try:
            with begin_write(engine) as connection:
                run(connection)
        finally:
            engine.dispose()
