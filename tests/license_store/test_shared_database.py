"""The exchange state and the license store can live in one database, each with its own schema."""

from __future__ import annotations

from sqlalchemy import event, inspect

from exchange.db import make_engine
from exchange.state import ExchangeState
from license_store import LicenseStore


def test_state_and_store_migrate_one_database_independently(db_url: str) -> None:
    with ExchangeState(db_url) as state:
        state.upgrade()
    with LicenseStore(db_url) as store:
        assert not store.is_current()  # the exchange's version table is not the store's
        store.upgrade()
        assert store.is_current() and store.count() == 0
    with ExchangeState(db_url) as state:
        state.upgrade()  # still current: the store's migrations left its version alone
        assert state.cursor("src") is None
    engine = make_engine(db_url)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"alembic_version_exchange", "alembic_version_license_store"} <= tables
    assert {"sync_runs", "source_cursors", "licenses"} <= tables


def test_sqlite_writers_take_the_write_lock_up_front(sqlite_url: str) -> None:
    with ExchangeState(sqlite_url) as state:
        state.upgrade()
        statements: list[str] = []
        event.listen(
            state.engine,
            "before_cursor_execute",
            lambda _conn, _cursor, sql, *_args: statements.append(sql),
        )
        state.start_run("src", None, full_refresh=True)
        state.runs("src")
    assert "BEGIN IMMEDIATE" in statements  # the write
    assert "BEGIN" in statements  # the read
