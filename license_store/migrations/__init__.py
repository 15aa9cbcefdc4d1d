"""Schema migrations of the license store (Alembic), configured in code: no ``alembic.ini``.

``upgrade(target)`` brings a database to head, ``current_revision(target)`` and
``is_current(target)`` say where it is. ``target`` is a URL or an engine the caller holds;
migrations then run on one of its connections, inside one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from license_store.database import create_store_engine, safe_url, translate_errors

__all__ = [
    "MIGRATIONS_DIR",
    "VERSION_TABLE",
    "alembic_config",
    "current_revision",
    "head_revision",
    "is_current",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent
# Its own version table, so the store can share a database with other Alembic-managed schemas.
VERSION_TABLE = "alembic_version_license_store"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the license store's migrations, ``sqlalchemy.url`` set if given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@cache
def head_revision() -> str:
    """The revision this code's schema is at."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _where(target: str | Engine) -> str:
    return safe_url(target.url if isinstance(target, Engine) else target)


@contextmanager
def _engine(target: str | Engine) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = create_store_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade(target: str | Engine, revision: str = "head") -> None:
    """Migrate the database at ``target`` (URL or engine) to ``revision``, in one transaction."""
    with translate_errors(_where(target)), _engine(target) as engine, engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def current_revision(target: str | Engine) -> str | None:
    """The revision the database at ``target`` is at; ``None`` before the first migration."""
    with translate_errors(_where(target)), _engine(target) as engine, engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def is_current(target: str | Engine) -> bool:
    """Whether the database at ``target`` is migrated to this code's head revision."""
    return current_revision(target) == head_revision()
