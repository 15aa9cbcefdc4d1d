"""How the store reaches its database and how it fails: own errors, no passwords, no raw IDs."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.db import safe_url
from license_store import LicenseStore, LicenseStoreError, StoreUnavailable
from license_store.database import create_store_engine

UNREACHABLE = "postgresql+psycopg://govx:s3cret-pw@127.0.0.1:1/licenses?connect_timeout=2"


def test_unreachable_database_is_transient_and_hides_the_password() -> None:
    with LicenseStore(UNREACHABLE) as store, pytest.raises(StoreUnavailable) as caught:
        store.count()
    error = caught.value
    assert error.transient
    assert "s3cret-pw" not in str(error)
    assert "govx:***@127.0.0.1:1" in str(error)
    assert error.__cause__ is None and error.__suppress_context__  # no driver text chained
    assert "s3cret-pw" not in repr(store)


def test_default_url_comes_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from_env.db'}"
    monkeypatch.setenv("GOVX_LICENSE_DB_URL", url)
    with LicenseStore() as store:
        assert store.url == url


def test_default_url_is_a_sqlite_file_under_govx_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOVX_LICENSE_DB_URL", raising=False)
    monkeypatch.setenv("GOVX_HOME", str(tmp_path / "home"))
    with LicenseStore() as store:
        store.upgrade()
        assert store.is_current()
    assert (tmp_path / "home" / "licenses.db").is_file()


def test_sqlite_parent_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "licenses.db"
    with LicenseStore(f"sqlite:///{path}") as store:
        store.upgrade()
    assert path.is_file()


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'l.db'}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5_000
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql+pymysql://root:pw@127.0.0.1/x", "unsupported database 'mysql'"),
        ("not a url", "cannot use the database URL"),
    ],
)
def test_unusable_urls_are_store_errors(url: str, message: str) -> None:
    with pytest.raises(LicenseStoreError, match=message) as caught:
        LicenseStore(url)
    assert "pw@" not in str(caught.value)


def test_safe_url_hides_the_password() -> None:
    assert safe_url("postgresql://u:topsecret@db/x") == "postgresql://u:***@db/x"
    assert safe_url("::::") == "<unparsable database URL>"


@pytest.mark.postgres
def test_plain_postgresql_urls_use_psycopg(postgres_url: str) -> None:
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with LicenseStore(plain) as store:
        store.upgrade()
        assert store.count() == 0
