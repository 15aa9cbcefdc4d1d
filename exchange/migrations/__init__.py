"""Alembic migrations of the exchange state database (sync runs and source cursors)."""
