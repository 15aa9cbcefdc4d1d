"""Alembic environment of the license store (run by :func:`license_store.migrations.upgrade`).

Runs on the connection a caller passes in ``config.attributes["connection"]``, else on
``sqlalchemy.url``; see :meth:`exchange.db.Migrations.run_env`.
"""

from __future__ import annotations

from license_store.migrations import MIGRATIONS
from license_store.models import metadata

MIGRATIONS.run_env(metadata)
