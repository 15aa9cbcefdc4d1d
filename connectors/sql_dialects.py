"""Database quirks of the ``sql`` connector, and the one place its driver errors are translated.

Shared code in :mod:`connectors.sql` speaks SQLAlchemy; whatever differs per backend lives in a
:class:`SqlDialect` here: connect arguments, how to learn the column types of a free ``query``
(cursor descriptions, or a temporary view on SQLite, whose descriptions carry no types), how the
driver reports errors (PostgreSQL SQLSTATEs, MySQL/MariaDB error numbers, SQLite result codes)
and the backend's fast read path, if it has one:

- PostgreSQL: an Arrow-native driver (:class:`~connectors.sql_fast.AdbcReader` over
  ``adbc_driver_postgresql``) given the connector's SELECT as SQL text, its bound values rendered
  by psycopg as literals (``psycopg.sql.Literal``), for the column types it returns exactly as
  psycopg would (:meth:`PostgresDialect.arrow_select`);
- MySQL/MariaDB: ConnectorX (:class:`~connectors.sql_fast.ConnectorXReader`) given the SELECT as
  SQL text, its bound values rendered by PyMySQL's own escaping, for the column types it returns
  exactly as PyMySQL would (:meth:`MySQLDialect.arrow_select`); otherwise the same server-side
  cursor, but PyMySQL hands numbers, dates and timestamps over as the server's text and Arrow parses
  them, instead of building a Python object per value (:meth:`MySQLDialect.streams_text`).

:func:`translating_errors` turns every SQLAlchemy or driver exception, from either path, into a
:mod:`connectors.errors` class, with a message that names the source and never the password.
"""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import mysql as sa_mysql
from sqlalchemy.engine import URL, Connection
from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter, ColumnElement
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
from connectors.sql_fast import AdbcReader, ArrowReader, ConnectorXReader

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

    def classify(self, error: BaseException) -> ErrorClass | None:
        """The connector error class for a driver's exception, or ``None`` to decide by its
        DB-API class. ``error`` is the driver's own exception (SQLAlchemy's ``orig``)."""
        return None

    def abandon_stream(self, conn: Connection, result: sa.CursorResult[Any]) -> None:
        """Stop a half-read server-side cursor without fetching its remaining rows."""
        conn.invalidate()

    def arrow_reader(self, url: URL) -> ArrowReader | None:
        """A driver that decodes this backend's rows into Arrow itself, or ``None``."""
        return None

    def arrow_select(self, conn: Connection, statement: sa.Select[Any]) -> str | None:
        """The SELECT as SQL text for :meth:`arrow_reader`, or ``None`` if a column of it would not
        come back exactly as through SQLAlchemy (the caller then reads through SQLAlchemy)."""
        return None

    def streams_text(self, conn: Connection, statement: sa.Select[Any]) -> bool:
        """Whether this SELECT can stream with values as the server's text, for Arrow to parse."""
        return False

    def prepare_text_stream(self, conn: Connection) -> None:
        """Make a (fresh, single-use) streaming connection hand values over as text."""

    def reads_as_text(self, sql_type: TypeEngine[Any]) -> bool:
        """Whether a column of this declared type is read as its stored text, not converted."""
        return False

    def text_columns(self, description: Sequence[Sequence[Any]]) -> frozenset[int]:
        """Positions of the result columns whose values arrive as text on a text stream."""
        return frozenset()


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

    def classify(self, error: BaseException) -> ErrorClass | None:
        sqlstate = getattr(error, "sqlstate", None)  # psycopg and ADBC errors both carry it
        if sqlstate:
            return _PG_SQLSTATES.get(sqlstate) or _PG_SQLSTATE_CLASSES.get(sqlstate[:2])
        message = str(error)
        if any(marker in message for marker in _PG_AUTH_MARKERS):
            return SourceAuthError
        if "database" in message and "does not exist" in message:
            return SourceSchemaError
        return None

    def arrow_reader(self, url: URL) -> AdbcReader | None:
        if importlib.util.find_spec("adbc_driver_postgresql") is None:
            return None
        return AdbcReader("adbc_driver_postgresql", _libpq_uri(url))

    def arrow_select(self, conn: Connection, statement: sa.Select[Any]) -> str | None:
        """The connector's SELECT with its bound values (the ``since`` cursor) rendered by psycopg.

        Numeric columns are selected as their text (``CAST(x AS TEXT)``, the server's canonical
        form, which ADBC would otherwise produce client-side and slower) and cast to the exact
        decimal by Arrow; filter and order are untouched.
        """
        columns = list(statement.selected_columns)
        if not all(_adbc_reads_exactly(column.type, conn.dialect) for column in columns):
            return None
        projected = [
            sa.cast(c, sa.Text).label(c.name) if _is_exact_numeric(c.type) else c for c in columns
        ]
        inlined = visitors.replacement_traverse(
            statement.with_only_columns(*projected), {}, _psycopg_literals(conn)
        )
        # "named" keeps a literal ``%`` as it is (pyformat would double it for the DB-API)
        compiled = inlined.compile(dialect=type(conn.dialect)(paramstyle="named"))
        if compiled.binds:  # a bound value we did not inline: never format it ourselves
            return None
        return str(compiled)


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

    def classify(self, error: BaseException) -> ErrorClass | None:
        args = getattr(error, "args", ())
        errno = args[0] if args and isinstance(args[0], int) else None
        if errno is None and _is_connectorx_error(error):
            # ConnectorX: "MySqlError { ERROR 1146 (42S02): ... }", or a failed socket/pool
            found = _CONNECTORX_ERRNO.search(str(error))
            if found is None:
                return SourceUnavailable if _CONNECTORX_IO.search(str(error)) else None
            errno = int(found.group(1))
        return _MYSQL_ERRNOS.get(errno) if errno is not None else None

    def streams_text(self, conn: Connection, statement: sa.Select[Any]) -> bool:
        """Only when SQLAlchemy would not post-process a column (BIT, SET, JSON, TIME do)."""
        if conn.dialect.driver != "pymysql":
            return False
        return all(
            isinstance(c.type, sa.Float) or _result_processor(c.type, conn.dialect) is None
            for c in statement.selected_columns
        )

    def prepare_text_stream(self, conn: Connection) -> None:
        from pymysql import converters

        driver_connection = conn.connection.driver_connection
        decoders = dict(driver_connection.decoders)
        decoders.update(dict.fromkeys(_MYSQL_TEXT_STREAMED, converters.through))
        driver_connection.decoders = decoders

    def text_columns(self, description: Sequence[Sequence[Any]]) -> frozenset[int]:
        return frozenset(i for i, d in enumerate(description) if d[1] in _MYSQL_TEXT_STREAMED)

    def arrow_reader(self, url: URL) -> ConnectorXReader | None:
        """ConnectorX, when installed and the URL has nothing it would read differently."""
        if url.get_driver_name() != "pymysql" or importlib.util.find_spec("connectorx") is None:
            return None
        uri = _connectorx_uri(url)
        if uri is None:
            return None
        return ConnectorXReader(uri, pre_execution=("SET SESSION TRANSACTION READ ONLY",))

    def arrow_select(self, conn: Connection, statement: sa.Select[Any]) -> str | None:
        """The connector's SELECT with its bound values (the ``since`` cursor) rendered by PyMySQL.

        DECIMAL and FLOAT columns are selected as the server's text (``CAST(x AS CHAR)``, what the
        text protocol sends PyMySQL) and cast to the exact type by Arrow: ConnectorX would widen
        FLOAT to 1.100000023841858 and fails on decimals whose scale is not 10. Filter and order
        are untouched.
        """
        if conn.dialect.driver != "pymysql":
            return None
        projected = []
        for column in statement.selected_columns:
            kind = _connectorx_kind(column.type, conn.dialect)
            if kind is None:
                return None
            projected.append(
                sa.cast(column, sa.String()).label(column.name) if kind == "text" else column
            )
        replace = _pymysql_literals(conn)
        if replace is None:
            return None
        try:
            inlined = visitors.replacement_traverse(
                statement.with_only_columns(*projected), {}, replace
            )
        except _UnsafeLiteral:
            return None
        # "named" keeps a literal ``%`` as it is (pyformat would double it for the DB-API)
        compiled = inlined.compile(dialect=type(conn.dialect)(paramstyle="named"))
        if compiled.binds:  # a bound value we did not inline: never format it ourselves
            return None
        return str(compiled)


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

    def reads_as_text(self, sql_type: TypeEngine[Any]) -> bool:
        """Dates and times: SQLite stores them as text whatever the declaration, and a department
        file may hold any text there. Read as text, a bad value is one row's problem (the quality
        gate quarantines it) rather than a failed run, and the cursor compares in the source's
        own text format."""
        return isinstance(sql_type, sa.Date | sa.DateTime | sa.Time)

    def classify(self, error: BaseException) -> ErrorClass | None:
        name = getattr(error, "sqlite_errorname", "") or ""
        message = str(error)
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
    driver_error = _driver_error(exc)
    if driver_error is not None:
        error_class = _classify(exc, driver_error, dialect)
        detail = _redact(_first_line(str(driver_error)), url)
        return error_class(source_id, f"{_VERBS[error_class]} {where}: {detail}")
    if isinstance(exc, sa_exc.TimeoutError):
        return SourceUnavailable(source_id, f"timed out waiting for a connection to {where}")
    if isinstance(exc, (sa_exc.NoSuchModuleError, sa_exc.ArgumentError, ImportError)):
        detail = _redact(_first_line(str(exc)), url)
        return SourceConfigError(source_id, f"cannot use the connection to {where}: {detail}")
    if isinstance(exc, OSError):  # a socket, or an Arrow stream whose connection broke
        detail = _redact(_first_line(str(exc)), url)
        return SourceUnavailable(source_id, f"{_VERBS[SourceUnavailable]} {where}: {detail}")
    if isinstance(exc, (ValueError, TypeError, ArithmeticError, UnicodeError)):
        detail = _redact(_first_line(str(exc)), url)
        return SourceDataError(source_id, f"unreadable value from {where}: {detail}")
    return None


def _driver_error(exc: BaseException) -> BaseException | None:
    """The driver's own exception: SQLAlchemy's ``orig``, or a DB-API error raised directly (the
    fast path uses its driver without SQLAlchemy); ``None`` for anything else."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.orig
    if any(cls.__name__ in _DBAPI_CLASSES for cls in type(exc).__mro__):
        return exc
    if _is_connectorx_error(exc):
        return exc
    return None


def _is_connectorx_error(exc: BaseException) -> bool:
    """ConnectorX raises its driver's errors as a bare ``RuntimeError`` with the Rust message
    (:class:`~connectors.sql_fast.ConnectorXReader` turns its panics into the same)."""
    return type(exc) is RuntimeError and _CONNECTORX_MARKERS.search(str(exc)) is not None


def _classify(exc: BaseException, driver_error: BaseException, dialect: SqlDialect) -> ErrorClass:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return SourceUnavailable
    specific = dialect.classify(driver_error)
    if specific is not None:
        return specific
    # SQLAlchemy's wrappers carry the DB-API (PEP 249) class names, like the drivers' own errors
    for cls in type(exc).__mro__:
        if cls.__name__ in _DBAPI_CLASSES:
            return _DBAPI_CLASSES[cls.__name__]
    return ConnectorError


def _libpq_uri(url: URL) -> str:
    """A libpq connection URI for ``url``, with the connector's timeout and read-only session."""
    query = {key: value for key, value in url.query.items() if isinstance(value, str)}
    query.setdefault("connect_timeout", str(CONNECT_TIMEOUT_SECONDS))
    query.setdefault("options", "-c default_transaction_read_only=on")
    uri = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    # libpq decodes %XX only (not "+"), so every key and value is quoted in full
    pairs = (f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in query.items())
    return f"{uri}?{'&'.join(pairs)}"


def _connectorx_uri(url: URL) -> str | None:
    """ConnectorX's ``mysql://`` URI for ``url``, or ``None`` if the URL has options it would not
    honour (anything but ``charset=utf8mb4``, which ConnectorX always uses)."""
    extra = {key: value for key, value in url.query.items() if key != "charset"}
    if extra or url.query.get("charset", "utf8mb4") != "utf8mb4":
        return None
    user = quote(url.username or "", safe="")
    password = f":{quote(str(url.password), safe='')}" if url.password is not None else ""
    host = url.host or "localhost"
    port = url.port or 3306
    database = quote(url.database or "", safe="")
    timeout = CONNECT_TIMEOUT_SECONDS * 1000
    return f"mysql://{user}{password}@{host}:{port}/{database}?tcp_connect_timeout_ms={timeout}"


class _UnsafeLiteral(Exception):
    """A bound value PyMySQL's escaping is not trusted with; the caller falls back."""


def _pymysql_literals(conn: Connection) -> Callable[[Any], ColumnElement[Any] | None] | None:
    """A replacement for ``visitors.replacement_traverse``: each bound parameter becomes the literal
    PyMySQL's own ``Connection.escape`` renders (which honours ``NO_BACKSLASH_ESCAPES``)."""
    import pymysql

    driver_connection = conn.connection.driver_connection
    if not isinstance(driver_connection, pymysql.connections.Connection):
        return None

    def replace(element: Any) -> ColumnElement[Any] | None:
        if not isinstance(element, BindParameter):
            return None
        value = element.effective_value
        if type(value) not in _PYMYSQL_SAFE_LITERALS:
            raise _UnsafeLiteral(type(value).__name__)
        try:
            rendered = driver_connection.escape(value)
        except Exception:  # e.g. NaN, which MySQL cannot store
            raise _UnsafeLiteral(repr(value)) from None
        if not isinstance(rendered, str):
            raise _UnsafeLiteral(repr(value))
        return sa.literal_column(rendered, type_=element.type)

    return replace


def _connectorx_kind(sql_type: TypeEngine[Any], dialect: sa.Dialect) -> str | None:
    """How ConnectorX reads a column of this type exactly as PyMySQL does: ``"native"``, as the
    server's ``"text"`` (``CAST(x AS CHAR)``), or ``None`` (it cannot: read through SQLAlchemy)."""
    if isinstance(sql_type, sa.Float):
        return "native" if _declared(sql_type, dialect) == "DOUBLE" else "text"
    if isinstance(sql_type, sa.Numeric):
        return "text"
    if _result_processor(sql_type, dialect) is not None:  # BIT, SET, ENUM, JSON, TIME, BOOLEAN
        return None
    if isinstance(sql_type, sa.Integer | sa_mysql.YEAR | sa.Date):
        return "native"
    if isinstance(sql_type, sa.DateTime) and not sql_type.timezone:
        return "native"
    if isinstance(sql_type, sa.String) and not isinstance(sql_type, sa.Enum | sa_mysql.SET):
        return "native"
    return None


def _declared(sql_type: TypeEngine[Any], dialect: sa.Dialect) -> str:
    try:
        declared = sql_type.compile(dialect=dialect)
    except Exception:  # NullType and some reflected types have no DDL form
        return ""
    return re.sub(r"\(.*?\)", "", declared).split(" ", 1)[0].upper()


def _psycopg_literals(conn: Connection) -> Callable[[Any], ColumnElement[Any] | None]:
    """A replacement for ``visitors.replacement_traverse``: each bound parameter becomes the
    literal psycopg renders for its value (quoted and typed, e.g. ``'...'::timestamp``)."""
    from psycopg import sql

    driver_connection = conn.connection.driver_connection
    context = driver_connection if _is_psycopg_connection(driver_connection) else None

    def replace(element: Any) -> ColumnElement[Any] | None:
        if isinstance(element, BindParameter):
            rendered = sql.Literal(element.effective_value).as_string(context)
            return sa.literal_column(rendered, type_=element.type)
        return None

    return replace


def _is_psycopg_connection(candidate: Any) -> bool:
    import psycopg

    return isinstance(candidate, psycopg.Connection)


def _adbc_reads_exactly(sql_type: TypeEngine[Any], dialect: sa.Dialect) -> bool:
    """Whether ADBC returns this column type with the values psycopg gives, once cast."""
    try:
        declared = sql_type.compile(dialect=dialect)
    except Exception:  # NullType and some reflected types have no DDL form
        return False
    return re.sub(r"\(.*?\)", "", declared).strip().upper() in _ADBC_EXACT_PG_TYPES


def _is_exact_numeric(sql_type: TypeEngine[Any]) -> bool:
    return isinstance(sql_type, sa.Numeric) and not isinstance(sql_type, sa.Float)


def _result_processor(sql_type: TypeEngine[Any], dialect: sa.Dialect) -> Any:
    return sql_type.dialect_impl(dialect).result_processor(dialect, None)


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

_DBAPI_CLASSES: dict[str, ErrorClass] = {
    "OperationalError": SourceUnavailable,
    "InterfaceError": SourceUnavailable,
    "InternalError": SourceUnavailable,
    "ProgrammingError": SourceQueryError,
    "NotSupportedError": SourceQueryError,
    "DataError": SourceDataError,
    "IntegrityError": SourceDataError,
    "DatabaseError": ConnectorError,
}

# Declared PostgreSQL types (as SQLAlchemy compiles them, without length or precision) whose ADBC
# values, cast to the connector's Arrow type, equal psycopg's. REAL is not among them (ADBC's
# float32 widens to 1.100000023841858 where psycopg reads the text 1.1), nor TIME WITH TIME ZONE,
# JSON, UUID, arrays, enums, ranges or extension types: those columns are read through SQLAlchemy.
_ADBC_EXACT_PG_TYPES = frozenset(
    {
        "BOOLEAN",
        "SMALLINT",
        "INTEGER",
        "BIGINT",
        "DOUBLE PRECISION",
        "FLOAT",
        "NUMERIC",
        "DECIMAL",
        "CHAR",
        "VARCHAR",
        "TEXT",
        "DATE",
        "TIMESTAMP WITHOUT TIME ZONE",
        "TIMESTAMP WITH TIME ZONE",
        "TIME WITHOUT TIME ZONE",
        "BYTEA",
    }
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
    "float4": sa.REAL(),
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

# Bound values rendered for ConnectorX: PyMySQL escapes exactly these (others go through str()).
_PYMYSQL_SAFE_LITERALS = frozenset(
    (str, int, bool, float, decimal.Decimal, dt.date, dt.datetime, dt.time, type(None))
)

# ConnectorX's MySQL errors, as its RuntimeError (or a translated panic) words them
_CONNECTORX_MARKERS = re.compile(
    r"MySqlError \{|MySQLError\(|DriverError \{|timed out waiting for connection|IO error"
)
_CONNECTORX_ERRNO = re.compile(r"ERROR (\d+) \(")
_CONNECTORX_IO = re.compile(r"DriverError|IO error|timed out waiting for connection|os error")

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

# Field types a text stream leaves undecoded: TINY SHORT LONG FLOAT DOUBLE TIMESTAMP LONGLONG INT24
# DATE DATETIME YEAR NEWDATE, DECIMAL NEWDECIMAL. Arrow parses the text to the column's type.
_MYSQL_TEXT_STREAMED = frozenset((1, 2, 3, 4, 5, 7, 8, 9, 10, 12, 13, 14, 0, 246))

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
