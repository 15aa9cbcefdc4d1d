"""Shared fixtures for the whole suite: an isolated ``$GOVX_HOME`` and real database servers.

* Every test gets its own ``$GOVX_HOME`` (``tmp_path / "govx_home"``) with the store URLs and the
  lake directory unset, and any environment variable a test (or ``load_env_file``) sets is
  removed afterwards, so no test writes into the source tree or leaks into the next one.
* ``postgres_url`` and ``mariadb_url`` create a fresh database per test on the local servers and
  drop it afterwards. Mark such tests ``@pytest.mark.postgres`` / ``@pytest.mark.mariadb``. When
  a server is unreachable the test is skipped, except on CI (``CI=true``), where it fails.
  ``GOVX_TEST_POSTGRES_URL`` / ``GOVX_TEST_MARIADB_URL`` point them at other admin URLs.

Test folders mirror the packages (``tests/connectors``, ``tests/exchange``) without
``__init__.py``; pytest's ``pythonpath = ["."]`` keeps the real packages importable.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN_URL = "mysql+pymysql://root@127.0.0.1:3306/"
STORE_ENV_VARS = ("GOVX_LICENSE_DB_URL", "GOVX_EXCHANGE_DB_URL", "GOVX_LAKE_DIR")


@pytest.fixture(autouse=True)
def isolated_govx_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point ``GOVX_HOME`` at a per-test directory; restore the environment afterwards."""
    saved = dict(os.environ)
    home = tmp_path / "govx_home"
    monkeypatch.setenv("GOVX_HOME", str(home))
    for name in STORE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    yield home
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    for name, value in saved.items():
        if os.environ.get(name) != value:
            os.environ[name] = value


def _unreachable(server: str, url: URL, exc: BaseException) -> None:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = lines[0] if lines else type(exc).__name__
    message = f"{server} not reachable at {url.host}:{url.port}: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _admin_engine(url: URL, server: str, connect_args: dict[str, object]) -> Iterator[Engine]:
    engine = sa.create_engine(
        url, isolation_level="AUTOCOMMIT", poolclass=NullPool, connect_args=connect_args
    )
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        _unreachable(server, url, exc)
    yield engine
    engine.dispose()


def _test_database_name() -> str:
    return f"govx_test_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def _postgres_admin() -> Iterator[Engine]:
    url = make_url(os.environ.get("GOVX_TEST_POSTGRES_URL", POSTGRES_ADMIN_URL))
    yield from _admin_engine(url, "PostgreSQL", {"connect_timeout": 5})


@pytest.fixture(scope="session")
def _mariadb_admin() -> Iterator[Engine]:
    url = make_url(os.environ.get("GOVX_TEST_MARIADB_URL", MARIADB_ADMIN_URL))
    yield from _admin_engine(url, "MariaDB", {"connect_timeout": 5, "charset": "utf8mb4"})


@pytest.fixture
def postgres_url(_postgres_admin: Engine) -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database (``govx_test_<uuid8>``), dropped afterwards."""
    name = _test_database_name()
    with _postgres_admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"))
    try:
        yield _postgres_admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with _postgres_admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def mariadb_url(_mariadb_admin: Engine) -> Iterator[str]:
    """URL of a fresh, empty utf8mb4 MariaDB database (``govx_test_<uuid8>``), dropped after."""
    name = _test_database_name()
    with _mariadb_admin.connect() as conn:
        conn.execute(
            sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        )
    try:
        url = _mariadb_admin.url.set(database=name).update_query_dict({"charset": "utf8mb4"})
        yield url.render_as_string(hide_password=False)
    finally:
        with _mariadb_admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
