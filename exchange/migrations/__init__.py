"""Alembic migrations of the exchange state database (sync runs and source cursors)."""

from __future__ import annotations

from pathlib import Path

from exchange.db import Migrations

__all__ = ["MIGRATIONS"]

# Its own version table, so the state can share a database with the license store.
MIGRATIONS = Migrations(Path(__file__).resolve().parent, "alembic_version_exchange")
