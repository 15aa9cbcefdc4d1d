"""The one way govexchange opens a SQL database and migrates it.

Both the exchange state and the license store reach their databases through a URL; this module
turns a URL into a configured SQLAlchemy engine (SQLite: parent folder created, WAL journal,
busy timeout, foreign keys; servers: pre-ping) and runs a package's Alembic migrations on it.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url

__all__ = ["current_revision", "head_revision", "make_engine", "migrate", "safe_url"]

SQLITE_BUSY_TIMEOUT_MS = 30_000


def safe_url(url: str | sa.URL) -> str:
    """The URL with its password hidden: the only form a URL may take in a log or message."""
    return make_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str | sa.URL, **kwargs: object) -> Engine:
    """A SQLAlchemy engine for ``url`` with the settings every govexchange store wants."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(parsed, **kwargs)


def _alembic_config(script_location: Path, engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option(
        "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return config


def migrate(engine: Engine, script_location: Path, revision: str = "head") -> None:
    """Run the Alembic migrations in ``script_location`` on ``engine`` up to ``revision``."""
    config = _alembic_config(script_location, engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def head_revision(script_location: Path) -> str | None:
    """The newest revision the code knows."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    return ScriptDirectory.from_config(config).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` if never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
