"""Connection references resolve like Airflow's and never show a password."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from connectors.errors import TerminalError
from exchange.connections import (
    Connection,
    ConnectionNotFound,
    InvalidConnection,
    env_var_name,
    resolve_connection,
)

SECRET = "Pa55:w/rd@中"
QUOTED_SECRET = "Pa55%3Aw%2Frd%40%E4%B8%AD"


def resolve(value: str, monkeypatch: pytest.MonkeyPatch, conn_id: str = "dept_db") -> Connection:
    monkeypatch.setenv(env_var_name(conn_id), value)
    return resolve_connection(conn_id)


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        assert SECRET not in str(text)
        assert QUOTED_SECRET not in str(text)


@pytest.mark.parametrize(
    ("uri", "drivername"),
    [
        ("postgres", "postgresql+psycopg"),
        ("postgresql", "postgresql+psycopg"),
        ("mysql", "mysql+pymysql"),
        ("mariadb", "mysql+pymysql"),
    ],
)
def test_airflow_uri_becomes_our_driver(
    uri: str, drivername: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = resolve(f"{uri}://gov%20user:{QUOTED_SECRET}@db.example.gov.cn:5433/hukou", monkeypatch)
    url = make_url(conn.url)
    assert url.drivername == drivername
    assert (url.username, url.password) == ("gov user", SECRET)
    assert (url.host, url.port, url.database) == ("db.example.gov.cn", 5433, "hukou")
    assert conn.conn_id == "dept_db"
    assert conn.safe_url == f"{drivername}://gov user:***@db.example.gov.cn:5433/hukou"
    assert_no_secret(conn, repr(conn), conn.safe_url)


def test_uri_query_parameters_reach_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = resolve("postgres://u:pw@h/db?sslmode=require&sslpassword=hush", monkeypatch)
    url = make_url(conn.url)
    assert dict(url.query) == {"sslmode": "require", "sslpassword": "hush"}
    assert "hush" not in conn.safe_url and "sslmode=require" in conn.safe_url


def test_sqlalchemy_url_with_driver_is_taken_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    value = f"postgresql+psycopg://u:{QUOTED_SECRET}@10.0.0.5/db"
    conn = resolve(value, monkeypatch)
    assert make_url(conn.url).password == SECRET
    assert conn.url == value


@pytest.mark.parametrize(
    ("value", "database"),
    [
        ("sqlite:////srv/govx/hukou.db", "/srv/govx/hukou.db"),
        ("sqlite:///relative/hukou.db", "relative/hukou.db"),
        ("sqlite://%2Fsrv%2Fgovx%2FHuKou.db", "/srv/govx/HuKou.db"),
        ("sqlite:////srv/%E6%88%B7%E7%B1%8D.db", "/srv/户籍.db"),
        ("sqlite://", None),
    ],
)
def test_airflow_sqlite_forms(
    value: str, database: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(resolve(value, monkeypatch).url)
    assert url.drivername == "sqlite"
    assert url.database == database


def test_json_form(monkeypatch: pytest.MonkeyPatch) -> None:
    value = json.dumps(
        {
            "conn_type": "postgres",
            "host": "pg.gd.gov.cn",
            "login": "exchange",
            "password": SECRET,
            "port": "5432",
            "schema": "hukou",
            "extra": {"sqlalchemy_query": {"sslmode": "verify-full"}},
        }
    )
    conn = resolve(value, monkeypatch)
    url = make_url(conn.url)
    assert url.drivername == "postgresql+psycopg"
    assert (url.username, url.password) == ("exchange", SECRET)
    assert (url.host, url.port) == ("pg.gd.gov.cn", 5432)
    assert url.database == "hukou"
    assert url.query == {"sslmode": "verify-full"}
    assert_no_secret(conn, repr(conn))


def test_json_form_for_sqlite_uses_host_as_path(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = resolve('{"conn_type": "sqlite", "host": "/data/marriage.db"}', monkeypatch)
    assert make_url(conn.url).database == "/data/marriage.db"


def test_missing_connection_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_GD_HOUSEHOLD_DB", raising=False)
    with pytest.raises(ConnectionNotFound) as caught:
        resolve_connection("gd_household_db")
    message = str(caught.value)
    assert "AIRFLOW_CONN_GD_HOUSEHOLD_DB" in message
    assert "govx demo" in message and "$GOVX_HOME/.env" in message
    assert isinstance(caught.value, TerminalError)


def test_env_file_under_govx_home_is_read(
    isolated_govx_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated_govx_home.mkdir(parents=True, exist_ok=True)
    (isolated_govx_home / ".env").write_text(
        "AIRFLOW_CONN_FOSHAN_MARRIAGE_DB=mysql://exchange:pw@127.0.0.1:3306/marriage\n",
        encoding="utf-8",
    )
    monkeypatch.delenv("AIRFLOW_CONN_FOSHAN_MARRIAGE_DB", raising=False)
    conn = resolve_connection("foshan_marriage_db")
    assert make_url(conn.url).drivername == "mysql+pymysql"


def test_real_environment_wins_over_env_file(
    isolated_govx_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolated_govx_home.mkdir(parents=True, exist_ok=True)
    (isolated_govx_home / ".env").write_text("AIRFLOW_CONN_X_DB=mysql://from-file/db\n")
    conn = resolve("postgres://from-env/db", monkeypatch, conn_id="x_db")
    assert make_url(conn.url).host == "from-env"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("just text", "not a connection URI"),
        (f"ftp://u:{QUOTED_SECRET}@h/x", "unsupported connection type 'ftp'"),
        (f"postgres://u:{QUOTED_SECRET}@h:port/db", "port"),
        (f"postgres://u:{QUOTED_SECRET}@h:99999/db", "port"),
        (f"nosuchdb+driver://u:{QUOTED_SECRET}@h/db", "no dialect"),
        (f'{{"conn_type": "postgres", "password": "{SECRET}", "port": "x"}}', "'port'"),
        (f'{{"conn_type": "postgres", "password": "{SECRET}", "pasword": 1}}', "pasword"),
        (f'{{"password": "{SECRET}"}}', "conn_type"),
        (f'{{"conn_type": "postgres", "password": "{SECRET}",}}', "not valid JSON"),
        (f'{{"conn_type": "oracle", "password": "{SECRET}"}}', "unsupported"),
        (f'{{"conn_type": "postgres", "password": "{SECRET}", "extra": "{{"}}', "'extra'"),
    ],
)
def test_invalid_connections_never_show_the_password(
    value: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InvalidConnection) as caught:
        resolve(value, monkeypatch)
    error = caught.value
    assert reason in str(error)
    assert "AIRFLOW_CONN_DEPT_DB" in str(error)
    assert isinstance(error, TerminalError)
    assert_no_secret(error, repr(error), error.args)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_connection_repr_and_str_hide_the_password() -> None:
    conn = Connection("dept_db", f"mysql+pymysql://root:{QUOTED_SECRET}@127.0.0.1/db")
    assert conn.safe_url == "mysql+pymysql://root:***@127.0.0.1/db"
    assert str(conn) == conn.safe_url
    assert (
        repr(conn) == "Connection(conn_id='dept_db', url='mysql+pymysql://root:***@127.0.0.1/db')"
    )
    assert_no_secret(conn, repr(conn), f"{conn}", f"{conn!r}", [conn], {"c": conn})
