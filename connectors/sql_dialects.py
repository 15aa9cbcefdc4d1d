"""Database quirks of the ``sql`` connector, and the one place its driver errors are translated.

Shared code in :mod:`connectors.sql` speaks SQLAlchemy; whatever differs per backend lives in a
:class:`SqlDialect` here: connect arguments, how to learn the column types of a free ``query``
(cursor descriptions, or a temporary view on SQLite, whose descriptions carry no types) and how
the driver reports errors (PostgreSQL SQLSTATEs, MySQL/MariaDB error numbers, SQLite result
codes). :func:`translating_errors` turns every SQLAlchemy or driver exception into a
:mod:`connectors.errors` class, with a message that names the source and never the password.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection
from sqlalchemy.types import TypeEngine

from connectors.errors import (
    ConnectorError,
    SourceAuthError,
    SourceConfigError,
    SourceDataError,
    SourceQueryError,
    SourceSchemaError,
    SourceUnavailable,
)

__all__ = ["SqlDialect", "dialect_for", "escape_colons", "translating_errors"]

CONNECT_TIMEOUT_SECONDS = 10

ErrorClass = type[ConnectorError]
ColumnTypes = list[tuple[str, TypeEngine[Any]]]


def escape_colons(sql: str) -> str:
    """Escape ``:`` so that ``text()`` does not read ``'12:30'`` or ``::date`` as bind params."""
    return sql.replace(":", r"\:")


class SqlDialect:
    """Behaviour for any backend SQLAlchemy speaks; subclasses override what differs."""

    backend = "generic"

    def connect_args(self, url: URL) -> dict[str, Any]:
        """Extra DBAPI ``connect()`` arguments (never overriding the URL's own query)."""
        return {}

    def execution_options(self) -> dict[str, Any]:
        """Connection execution options for a read."""
        return {}

    def describe_query(self, conn: Connection, query: str) -> ColumnTypes:
        """Column names and SQLAlchemy types of a SELECT, without reading its rows."""
        probe = sa.text(f"SELECT * FROM ({escape_colons(query)}) AS govx_probe WHERE 1=0")
        result = conn.execute(probe)
        try:
            description = result.cursor.description or ()
            return [(str(d[0]), self.type_from_description(d)) for d in description]
        finally:
            result.close()

    def type_from_description(self, description: Sequence[Any]) -> TypeEngine[Any]:
        """The SQLAlchemy type of a DBAPI ``cursor.description`` entry (``NullType`` if unknown)."""
        python_type = description[1]
        if isinstance(python_type, type):
            for candidate, sql_type in _PYTHON_TYPES:
                if issubclass(python_type, candidate):
                    return sql_type
        return sa.types.NullType()

    def classify(self, error: sa_exc.DBAPIError) -> ErrorClass | None:
        """The connector error class for a driver error, or ``None`` to decide by DBAPI class."""
        return None

    def abandon_stream(self, conn: Connection, result: sa.CursorResult[Any]) -> None:
        """Stop a half-read server-side cursor without fetching its remaining rows."""
        conn.invalidate()


class PostgresDialect(SqlDialect):
    """PostgreSQL through psycopg 3: SQLSTATEs; connection failures carry only a message."""

    backend = "postgresql"

    def connect_args(self, url: URL) -> dict[str, Any]:
        if "connect_timeout" in url.query:
            return {}
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}

    def execution_options(self) -> dict[str, Any]:
        return {"postgresql_readonly": True}

    def type_from_description(self, description: Sequence[Any]) -> TypeEngine[Any]:
        from psycopg.postgres import types as pg_types

        info = pg_types.get(description[1])
        name = info.name if info is not None else ""
        if name == "numeric":
            return sa.Numeric(description[4], description[5])
        return _PG_TYPES.get(name, sa.types.NullType())

    def classify(self, error: sa_exc.DBAPIError) -> ErrorClass | None:
        sqlstate = getattr(error.orig, "sqlstate", None)
        if sqlstate:
            return _PG_SQLSTATES.get(sqlstate) or _PG_SQLSTATE_CLASSES.get(sqlstate[:2])
        message = str(error.orig)
        if any(marker in message for marker in _PG_AUTH_MARKERS):
            return SourceAuthError
        if "database" in message and "does not exist" in message:
            return SourceSchemaError
        return None


class MySQLDialect(SqlDialect):
    """MySQL and MariaDB through PyMySQL: error numbers; always utf8mb4."""

    backend = "mysql"

    def connect_args(self, url: URL) -> dict[str, Any]:
        args: dict[str, Any] = {}
        if "connect_timeout" not in url.query:
            args["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
        if "charset" not in url.query:
            args["charset"] = "utf8mb4"
        return args

    def type_from_description(self, description: Sequence[Any]) -> TypeEngine[Any]:
        code = description[1]
        if code in (0, 246):  # DECIMAL, NEWDECIMAL: the display length bounds the precision
            return sa.Numeric(description[3], description[5])
        return _MYSQL_TYPES.get(code, sa.types.NullType())

    def abandon_stream(self, conn: Connection, result: sa.CursorResult[Any]) -> None:
        # PyMySQL drains an unbuffered (SSCursor) result on release and again when it is garbage
        # collected; mark it finished so that closing the socket is enough.
        pending = getattr(result.cursor, "_result", None)
        if pending is not None and getattr(pending, "unbuffered_active", False):
            pending.unbuffered_active = False
        conn.invalidate()

    def classify(self, error: sa_exc.DBAPIError) -> ErrorClass | None:
        args = getattr(error.orig, "args", ())
        errno = args[0] if args and isinstance(args[0], int) else None
        return _MYSQL_ERRNOS.get(errno) if errno is not None else None


class SQLiteDialect(SqlDialect):
    """SQLite: descriptions carry no types, so a free query is described via a temporary view."""

    backend = "sqlite"

    def describe_query(self, conn: Connection, query: str) -> ColumnTypes:
        view = f"govx_probe_{uuid.uuid4().hex[:12]}"
        conn.execute(sa.text(f'CREATE TEMP VIEW "{view}" AS {escape_colons(query)}'))
        try:
            columns = sa.inspect(conn).get_columns(view, schema="temp")
        finally:
            conn.execute(sa.text(f'DROP VIEW temp."{view}"'))
        return [(column["name"], column["type"]) for column in columns]

    def classify(self, error: sa_exc.DBAPIError) -> ErrorClass | None:
        name = getattr(error.orig, "sqlite_errorname", "") or ""
        message = str(error.orig)
        if message.startswith(("no such table", "no such column", "unknown database")):
            return SourceSchemaError
        for prefix, error_class in _SQLITE_RESULT_CODES:
            if name.startswith(prefix):
                return error_class
        return None


def dialect_for(url: URL) -> SqlDialect:
    """The quirks object for a connection URL's backend."""
    backend = url.get_backend_name()
    if backend == "postgresql":
        return PostgresDialect()
    if backend in ("mysql", "mariadb"):
        return MySQLDialect()
    if backend == "sqlite":
        return SQLiteDialect()
    return SqlDialect()


def describe_location(url: URL) -> str:
    """Where the data lives, for messages: backend, database and host, never credentials."""
    backend = url.get_backend_name()
    if backend == "sqlite":
        return f"sqlite database {url.database or ':memory:'}"
    host = url.host or "localhost"
    port = f":{url.port}" if url.port else ""
    return f"{backend} database {url.database or '(default)'!r} at {host}{port}"


@contextmanager
def translating_errors(source_id: str, url: URL, dialect: SqlDialect) -> Iterator[None]:
    """Run a block that talks to the database; let only connector errors out of it."""
    try:
        yield
    except ConnectorError:
        raise
    except Exception as exc:
        translated = translate_error(exc, source_id, url, dialect)
        if translated is None:
            raise
        raise translated from _safe_cause(exc, url)


def translate_error(
    exc: BaseException, source_id: str, url: URL, dialect: SqlDialect
) -> ConnectorError | None:
    """The connector error for an exception raised while reading, or ``None`` (not ours)."""
    where = describe_location(url)
    if isinstance(exc, sa_exc.NoSuchTableError):
        return SourceSchemaError(source_id, f"table {exc.args[0]!r} does not exist in {where}")
    if isinstance(exc, sa_exc.DBAPIError):
        error_class = _classify(exc, dialect)
        detail = _redact(_first_line(str(exc.orig)), url)
        return error_class(source_id, f"{_VERBS[error_class]} {where}: {detail}")
    if isinstance(exc, sa_exc.TimeoutError):
        return SourceUnavailable(source_id, f"timed out waiting for a connection to {where}")
    if isinstance(exc, (sa_exc.NoSuchModuleError, sa_exc.ArgumentError, ImportError)):
        detail = _redact(_first_line(str(exc)), url)
        return SourceConfigError(source_id, f"cannot use the connection to {where}: {detail}")
    if isinstance(exc, (ValueError, TypeError, ArithmeticError, UnicodeError)):
        detail = _redact(_first_line(str(exc)), url)
        return SourceDataError(source_id, f"unreadable value from {where}: {detail}")
    return None


def _classify(exc: sa_exc.DBAPIError, dialect: SqlDialect) -> ErrorClass:
    if exc.connection_invalidated:
        return SourceUnavailable
    specific = dialect.classify(exc)
    if specific is not None:
        return specific
    for dbapi_class, error_class in _DBAPI_CLASSES:
        if isinstance(exc, dbapi_class):
            return error_class
    return ConnectorError


def _safe_cause(exc: BaseException, url: URL) -> BaseException | None:
    """Keep the driver error as ``__cause__`` unless its text could reveal the password."""
    password = url.password
    if password and str(password) in str(exc):
        return None
    return exc


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip() if text.strip() else "(no message)"


def _redact(text: str, url: URL) -> str:
    password = url.password
    return text.replace(str(password), "***") if password else text


_VERBS: dict[ErrorClass, str] = {
    SourceUnavailable: "cannot read",
    SourceAuthError: "access denied by",
    SourceSchemaError: "missing in",
    SourceQueryError: "query rejected by",
    SourceDataError: "unreadable data from",
    ConnectorError: "database error from",
}

_DBAPI_CLASSES: tuple[tuple[type[sa_exc.DBAPIError], ErrorClass], ...] = (
    (sa_exc.OperationalError, SourceUnavailable),
    (sa_exc.InterfaceError, SourceUnavailable),
    (sa_exc.InternalError, SourceUnavailable),
    (sa_exc.ProgrammingError, SourceQueryError),
    (sa_exc.NotSupportedError, SourceQueryError),
    (sa_exc.DataError, SourceDataError),
    (sa_exc.IntegrityError, SourceDataError),
)

_PYTHON_TYPES: tuple[tuple[type, TypeEngine[Any]], ...] = (
    (bool, sa.Boolean()),
    (int, sa.BigInteger()),
    (float, sa.Float()),
    (decimal.Decimal, sa.Numeric()),
    (dt.datetime, sa.DateTime()),
    (dt.date, sa.Date()),
    (dt.time, sa.Time()),
    (str, sa.String()),
    (bytes, sa.LargeBinary()),
)

_PG_TYPES: dict[str, TypeEngine[Any]] = {
    "bool": sa.Boolean(),
    "int2": sa.SmallInteger(),
    "int4": sa.Integer(),
    "int8": sa.BigInteger(),
    "oid": sa.BigInteger(),
    "float4": sa.Float(),
    "float8": sa.Float(),
    "date": sa.Date(),
    "time": sa.Time(),
    "timestamp": sa.DateTime(),
    "timestamptz": sa.DateTime(timezone=True),
    "text": sa.Text(),
    "varchar": sa.String(),
    "bpchar": sa.String(),
    "name": sa.String(),
    "bytea": sa.LargeBinary(),
}

_PG_AUTH_MARKERS = (
    "password authentication failed",
    "authentication failed",
    "no pg_hba.conf entry",
    'role "',  # role "x" does not exist
    "permission denied",
)

_PG_SQLSTATES: dict[str, ErrorClass] = {
    "28000": SourceAuthError,  # invalid_authorization_specification
    "28P01": SourceAuthError,  # invalid_password
    "42501": SourceAuthError,  # insufficient_privilege
    "3D000": SourceSchemaError,  # invalid_catalog_name (no such database)
    "3F000": SourceSchemaError,  # invalid_schema_name
    "42P01": SourceSchemaError,  # undefined_table
    "42703": SourceSchemaError,  # undefined_column
    "55P03": SourceUnavailable,  # lock_not_available
    "57014": SourceUnavailable,  # query_canceled (statement_timeout)
}

_PG_SQLSTATE_CLASSES: dict[str, ErrorClass] = {
    "08": SourceUnavailable,  # connection exception
    "40": SourceUnavailable,  # transaction rollback: serialization failure, deadlock
    "53": SourceUnavailable,  # insufficient resources
    "57": SourceUnavailable,  # operator intervention: shutdown, cannot connect now
    "58": SourceUnavailable,  # system error (I/O)
    "0A": SourceQueryError,  # feature not supported
    "42": SourceQueryError,  # syntax error or access rule violation
    "22": SourceDataError,  # data exception
}

_MYSQL_ERRNOS: dict[int, ErrorClass] = {
    **dict.fromkeys((1044, 1045, 1142, 1143, 1227, 1698), SourceAuthError),
    **dict.fromkeys((1049, 1051, 1054, 1146), SourceSchemaError),
    **dict.fromkeys((1052, 1060, 1064, 1149, 1235, 1248), SourceQueryError),
    **dict.fromkeys((1264, 1292, 1365, 1366), SourceDataError),
    **dict.fromkeys(
        (1040, 1053, 1205, 1213, 1317, 1927, 1969, 2002, 2003, 2005, 2006, 2013, 2055, 3024, 4031),
        SourceUnavailable,
    ),
}

_MYSQL_TYPES: dict[int, TypeEngine[Any]] = {
    **dict.fromkeys((1, 2, 3, 8, 9, 13), sa.BigInteger()),  # TINY SHORT LONG LONGLONG INT24 YEAR
    **dict.fromkeys((4, 5), sa.Float()),  # FLOAT DOUBLE
    **dict.fromkeys((7, 12), sa.DateTime()),  # TIMESTAMP DATETIME
    **dict.fromkeys((10, 14), sa.Date()),  # DATE NEWDATE
    11: sa.Time(),  # TIME (PyMySQL returns a timedelta)
    **dict.fromkeys((15, 247, 248, 253, 254), sa.String()),  # VARCHAR ENUM SET VAR_STRING STRING
    **dict.fromkeys((249, 250, 251, 252), sa.Text()),  # the BLOB/TEXT family
}

_SQLITE_RESULT_CODES: tuple[tuple[str, ErrorClass], ...] = (
    ("SQLITE_BUSY", SourceUnavailable),
    ("SQLITE_LOCKED", SourceUnavailable),
    ("SQLITE_IOERR", SourceUnavailable),
    ("SQLITE_CANTOPEN", SourceUnavailable),
    ("SQLITE_PROTOCOL", SourceUnavailable),
    ("SQLITE_AUTH", SourceAuthError),
    ("SQLITE_PERM", SourceAuthError),
    ("SQLITE_CORRUPT", SourceDataError),
    ("SQLITE_NOTADB", SourceDataError),
    ("SQLITE_MISMATCH", SourceDataError),
    ("SQLITE_TOOBIG", SourceDataError),
    ("SQLITE_ERROR", SourceQueryError),
)
