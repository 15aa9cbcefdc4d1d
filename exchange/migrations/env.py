"""Alembic environment of the exchange state database (run by ``ExchangeState.upgrade``)."""

from __future__ import annotations

from exchange.migrations import MIGRATIONS
from exchange.state import metadata

MIGRATIONS.run_env(metadata)
