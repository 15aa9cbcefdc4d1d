"""Alembic migrations: they apply, report the revision, match the models and leave logging alone."""

from __future__ import annotations

import logging

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from license_store import LicenseStore, SchemaNotCurrent
from license_store.database import create_store_engine
from license_store.migrations import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    is_current,
    upgrade,
)
from license_store.models import metadata

TABLES = {"licenses", "license_versions", "license_sequences", VERSION_TABLE}


def test_upgrade_applies_the_schema_and_reports_current(db_url: str) -> None:
    assert current_revision(db_url) is None
    assert not is_current(db_url)
    upgrade(db_url)
    assert current_revision(db_url) == head_revision() == "0007"
    assert is_current(db_url)
    engine = create_store_engine(db_url)
    try:
        inspector = inspect(engine)
        assert set(inspector.get_table_names()) >= TABLES
        indexes = {ix["name"]: ix["column_names"] for ix in inspector.get_indexes("licenses")}
        assert indexes["ix_licenses_holder_id"][0] == "holder_id"
    finally:
        engine.dispose()
    upgrade(db_url)  # idempotent
    assert is_current(db_url)


def test_store_upgrade_and_is_current(db_url: str) -> None:
    with LicenseStore(db_url) as store:
        assert not store.is_current()
        store.upgrade()
        assert store.is_current()


def test_models_match_the_migrations(db_url: str) -> None:
    engine = create_store_engine(db_url)
    try:
        upgrade(engine)  # an engine the caller holds
        with engine.connect() as conn:
            options = {"compare_type": True, "version_table": VERSION_TABLE}
            context = MigrationContext.configure(conn, opts=options)
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_env_runs_on_a_passed_connection_and_downgrades(sqlite_url: str) -> None:
    engine = create_store_engine(sqlite_url)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        assert is_current(engine)
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) == {VERSION_TABLE}
        assert current_revision(engine) is None
    finally:
        engine.dispose()


def test_env_runs_from_a_configured_url(sqlite_url: str) -> None:
    command.upgrade(alembic_config(sqlite_url), "head")
    assert is_current(sqlite_url)


def test_migrations_leave_application_logging_alone(sqlite_url: str) -> None:
    app_logger = logging.getLogger("govexchange.test_app")
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    level_before = root.level
    upgrade(sqlite_url)
    assert not app_logger.disabled  # fileConfig() would disable existing loggers
    assert root.handlers == handlers_before
    assert root.level == level_before


def test_reading_an_unmigrated_store_says_so(db_url: str) -> None:
    with LicenseStore(db_url) as store, pytest.raises(SchemaNotCurrent, match="upgrade"):
        store.count()
