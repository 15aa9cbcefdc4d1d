"""Revision 0005: the supervision cards' table applies, matches its model and downgrades."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from exchange.migrations import MIGRATIONS
from exchange.state import ExchangeState, metadata
from quality.history import source_cards


def test_state_migrations_create_source_cards_matching_the_model(tmp_path: Path) -> None:
    with ExchangeState(f"sqlite:///{tmp_path / 'exchange.db'}") as state:
        state.upgrade()
        assert MIGRATIONS.current_revision(state.engine) == "0006"
        assert source_cards.name in sa.inspect(state.engine).get_table_names()
        with state.engine.connect() as conn:
            options = {"compare_type": True, "version_table": MIGRATIONS.version_table}
            context = MigrationContext.configure(conn, opts=options)
            assert compare_metadata(context, metadata) == []


def test_source_cards_downgrades_to_0004(tmp_path: Path) -> None:
    from alembic import command

    with ExchangeState(f"sqlite:///{tmp_path / 'exchange.db'}") as state:
        state.upgrade()
        config = MIGRATIONS.config()
        with state.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
        assert MIGRATIONS.current_revision(state.engine) == "0004"
        assert "source_cards" not in sa.inspect(state.engine).get_table_names()
        assert "sync_runs" in sa.inspect(state.engine).get_table_names()
