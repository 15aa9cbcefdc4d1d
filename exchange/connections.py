"""Connection references: turn a connection id from the YAML into a SQLAlchemy URL, like Airflow.

A source names a connection id (``gd_household_db``); its secret lives in the environment variable
``AIRFLOW_CONN_GD_HOUSEHOLD_DB`` (or in ``$GOVX_HOME/.env``, which ``govx demo`` writes), so the
same configuration runs under Airflow, from the ``govx`` CLI and in tests. The value is either

* an Airflow connection URI: ``postgres://user:p%40ss@host:5432/db``, ``mysql://...``,
  ``sqlite:////abs/path.db`` (user, password, host and database are percent-decoded, as Airflow
  does; plain query parameters such as ``?sslmode=require`` are passed to the driver), or a
  SQLAlchemy URL that already names its driver (``postgresql+psycopg://...``), taken as it is;
* Airflow's JSON form: ``{"conn_type": "postgres", "host": ..., "login": ..., "password": ...,
  "port": ..., "schema": ..., "extra": {"sqlalchemy_query": {...}}}``.

Our drivers: ``postgres``/``postgresql`` → ``postgresql+psycopg``, ``mysql``/``mariadb`` →
``mysql+pymysql``, ``sqlite`` → ``sqlite``. A :class:`Connection` and every error print the URL
with the password hidden.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from sqlalchemy.engine import URL, make_url

from connectors.errors import TerminalError
from exchange.db import safe_url
from exchange.settings import ENV_FILE_NAME, load_env_file

__all__ = [
    "Connection",
    "ConnectionNotFound",
    "InvalidConnection",
    "env_var_name",
    "resolve_connection",
]

ENV_PREFIX = "AIRFLOW_CONN_"
# Connections that are not databases: a REST endpoint, or a drop folder (any fsspec URL).
PASSTHROUGH_SCHEMES = ("http", "https", "file", "memory", "s3", "gs", "abfs", "sftp")

DRIVERS = {
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mysql+pymysql",
    "sqlite": "sqlite",
}
JSON_KEYS = frozenset(
    {"conn_type", "host", "login", "password", "port", "schema", "extra", "description"}
)


class ConnectionNotFound(TerminalError, LookupError):
    """No connection with this id is configured; the message says which variable to set."""

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self.env_var = env_var_name(conn_id)
        super().__init__(
            f"connection {conn_id!r} is not configured: set the environment variable "
            f"{self.env_var} to an Airflow connection URI "
            f"(e.g. postgres://user:password@host:5432/dbname) or its JSON form, "
            f"or add that line to $GOVX_HOME/{ENV_FILE_NAME}; "
            f"`govx demo` writes $GOVX_HOME/{ENV_FILE_NAME} for the sample department systems"
        )


class InvalidConnection(TerminalError, ValueError):
    """A connection is configured but cannot be used; the message never shows the password."""

    def __init__(self, conn_id: str, reason: str) -> None:
        self.conn_id = conn_id
        self.env_var = env_var_name(conn_id)
        self.reason = reason
        super().__init__(f"connection {conn_id!r} ({self.env_var}): {reason}")


@dataclass(frozen=True, repr=False)
class Connection:
    """A resolved connection: ``url`` carries the secret, ``safe_url`` hides the password."""

    conn_id: str
    url: str
    safe_url: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "safe_url", safe_url(self.url))

    def __repr__(self) -> str:
        return f"Connection(conn_id={self.conn_id!r}, url={self.safe_url!r})"

    def __str__(self) -> str:
        return self.safe_url


def env_var_name(conn_id: str) -> str:
    """The environment variable that holds a connection: ``AIRFLOW_CONN_<ID upper>``."""
    return f"{ENV_PREFIX}{conn_id.upper()}"


def resolve_connection(conn_id: str) -> Connection:
    """Look a connection id up in the environment (after loading ``$GOVX_HOME/.env``).

    Raises :class:`ConnectionNotFound` when it is not set and :class:`InvalidConnection` when its
    value cannot be turned into a SQLAlchemy URL of a supported or installed dialect. REST and
    file-drop URLs (``https://``, ``file://``, ``s3://`` ...) pass through unchanged.
    """
    load_env_file()
    value = os.environ.get(env_var_name(conn_id))
    if value is None:
        raise ConnectionNotFound(conn_id)
    scheme = value.strip().partition("://")[0].lower()
    if scheme in PASSTHROUGH_SCHEMES:  # REST endpoints and file drops: the URL is used as given
        return Connection(conn_id, value.strip())
    url = _to_sqlalchemy_url(conn_id, value.strip())
    try:
        url.get_dialect()
    except Exception:
        raise InvalidConnection(
            conn_id, f"SQLAlchemy has no dialect {url.drivername!r} (is its package installed?)"
        ) from None
    return Connection(conn_id, url.render_as_string(hide_password=False))


def _to_sqlalchemy_url(conn_id: str, value: str) -> URL:
    if not value:
        raise InvalidConnection(conn_id, "the value is empty")
    if value.startswith("{"):
        return _from_json(conn_id, value)
    scheme, separator, _ = value.partition("://")
    if not separator or not scheme:
        raise InvalidConnection(conn_id, "not a connection URI like postgres://user:pw@host/db")
    if "+" in scheme:
        try:
            return make_url(value)
        except Exception:  # SQLAlchemy's message would quote the URL
            raise InvalidConnection(conn_id, "not a valid SQLAlchemy URL") from None
    if _conn_type(scheme) == "sqlite":
        return _sqlite_from_uri(value[len(scheme) + 3 :])
    return _from_airflow_uri(conn_id, scheme, value)


def _from_airflow_uri(conn_id: str, scheme: str, value: str) -> URL:
    """``postgres://user:pass@host:port/schema?param=v`` with percent-encoded parts."""
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise InvalidConnection(conn_id, "the port is not a number between 0 and 65535") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "__extra__" in query:
        query = _sqlalchemy_query(conn_id, query["__extra__"])
    return URL.create(
        _driver(conn_id, scheme),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        host=unquote(parts.hostname) if parts.hostname else None,
        port=port,
        database=unquote(parts.path[1:]) if parts.path[1:] else None,
        query=query,
    )


def _sqlite_from_uri(rest: str) -> URL:
    """Airflow's SQLite forms, after ``sqlite://``.

    ``/relative.db`` and ``//abs/path.db`` are SQLAlchemy's (three and four slashes; a relative
    path is relative to the working directory); ``%2Fabs%2Fpath.db`` is Airflow's
    percent-encoded host; nothing at all is an in-memory database.
    """
    location, _, query_text = rest.partition("?")
    path = unquote(location[1:] if location.startswith("/") else location)
    query = dict(parse_qsl(query_text, keep_blank_values=True))
    return URL.create("sqlite", database=path or None, query=query)


def _from_json(conn_id: str, value: str) -> URL:
    try:
        data = json.loads(value)
    except json.JSONDecodeError as exc:
        raise InvalidConnection(
            conn_id, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if not isinstance(data, dict):
        raise InvalidConnection(conn_id, "the JSON form must be an object")
    unknown = sorted(set(data) - JSON_KEYS)
    if unknown:
        raise InvalidConnection(conn_id, f"unknown key(s) in the JSON form: {', '.join(unknown)}")
    if not data.get("conn_type"):
        raise InvalidConnection(conn_id, "the JSON form needs 'conn_type' (e.g. 'postgres')")
    driver = _driver(conn_id, str(data["conn_type"]))
    for key in ("host", "login", "password", "schema"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise InvalidConnection(conn_id, f"{key!r} must be a string")
    port = data.get("port")
    if port not in (None, ""):
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise InvalidConnection(conn_id, "'port' must be a whole number") from None
    else:
        port = None
    query = _sqlalchemy_query(conn_id, data.get("extra"))
    if driver == "sqlite":  # Airflow's SqliteHook opens the file named by 'host'
        return URL.create("sqlite", database=data.get("host") or data.get("schema"), query=query)
    return URL.create(
        driver,
        username=data.get("login"),
        password=data.get("password"),
        host=data.get("host"),
        port=port,
        database=data.get("schema"),
        query=query,
    )


def _sqlalchemy_query(conn_id: str, extra: Any) -> dict[str, str]:
    """Driver parameters from Airflow extras: the ``sqlalchemy_query`` mapping, as Airflow does."""
    if extra in (None, ""):
        return {}
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except json.JSONDecodeError:
            raise InvalidConnection(conn_id, "'extra' is not valid JSON") from None
    if not isinstance(extra, dict):
        raise InvalidConnection(conn_id, "'extra' must be a JSON object")
    query = extra.get("sqlalchemy_query", {})
    if not isinstance(query, dict):
        raise InvalidConnection(conn_id, "'extra.sqlalchemy_query' must be a JSON object")
    return {str(key): str(value) for key, value in query.items()}


def _conn_type(scheme: str) -> str:
    """Airflow's normalisation: lower case, ``-`` to ``_``."""
    return scheme.lower().replace("-", "_")


def _driver(conn_id: str, conn_type: str) -> str:
    try:
        return DRIVERS[_conn_type(conn_type)]
    except KeyError:
        supported = ", ".join(sorted(DRIVERS))
        raise InvalidConnection(
            conn_id,
            f"unsupported connection type {conn_type!r} (supported: {supported}, "
            f"or a SQLAlchemy URL with its driver such as mssql+pyodbc://...)",
        ) from None
