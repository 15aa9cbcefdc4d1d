"""Schema migrations of the license store (Alembic), configured in code: no ``alembic.ini``.

``upgrade(target)`` brings a database to head, ``current_revision(target)`` and
``is_current(target)`` say where it is. ``target`` is a URL or an engine the caller holds;
migrations then run on one of its connections, inside one transaction. Database errors leave
as :mod:`license_store.errors`. The running itself is :class:`exchange.db.Migrations`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.config import Config
from sqlalchemy.engine import Engine

from exchange.db import Migrations, safe_url
from license_store.database import create_store_engine, translate_errors

__all__ = [
    "MIGRATIONS",
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
MIGRATIONS = Migrations(MIGRATIONS_DIR, VERSION_TABLE)


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the license store's migrations, ``sqlalchemy.url`` set if given."""
    return MIGRATIONS.config(url)


def head_revision() -> str:
    """The revision this code's schema is at."""
    return MIGRATIONS.head_revision()


def _where(target: str | Engine) -> str:
    return safe_url(target.url if isinstance(target, Engine) else target)


@contextmanager
def _engine(target: str | Engine) -> Iterator[Engine]:
    """The engine ``target`` names, translated errors; one made from a URL is disposed after."""
    with translate_errors(_where(target)):
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
    with _engine(target) as engine:
        MIGRATIONS.upgrade(engine, revision)


def current_revision(target: str | Engine) -> str | None:
    """The revision the database at ``target`` is at; ``None`` before the first migration."""
    with _engine(target) as engine:
        return MIGRATIONS.current_revision(engine)


def is_current(target: str | Engine) -> bool:
    """Whether the database at ``target`` is migrated to this code's head revision."""
    return current_revision(target) == head_revision()
