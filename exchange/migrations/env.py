"""Alembic environment of the exchange state database (run by ``ExchangeState.upgrade``)."""

from __future__ import annotations

import quality.history  # noqa: F401 - registers the supervision cards' table (source_cards)
from exchange.migrations import MIGRATIONS
from exchange.state import metadata

MIGRATIONS.run_env(metadata)
