"""Where the license store meets its database: engines, dialect quirks and error translation.

- :func:`create_store_engine` turns a URL into an engine: the shared
  :func:`exchange.db.make_engine` (psycopg 3, SQLite pragmas, ``BEGIN IMMEDIATE`` for writers),
  limited to the supported backends, with the store's JSON serializer.
- :func:`upsert_insert` gives the dialect's ``INSERT ... ON CONFLICT`` construct.
- :func:`refresh_statistics` re-analyses a table after a bulk load (PostgreSQL), so that the
  planner keeps using the indexes before autovacuum gets round to it.
- :func:`bulk_insert` is the fast path for many rows: one compiled ``INSERT``, values converted
  column by column with the column types' own bind processors, one ``executemany``.
- :func:`translate_errors` is the one place where SQLAlchemy and driver exceptions become
  :mod:`license_store.errors`; messages hide passwords and mask holder IDs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Table, exc
from sqlalchemy.engine import URL, Connection, Dialect, Engine

from exchange.db import engine_url, make_engine, safe_url
from exchange.standards.holder_ids import mask_ids_in_text
from license_store.errors import (
    ConflictError,
    LicenseStoreError,
    SchemaNotCurrent,
    StoreUnavailable,
)

__all__ = [
    "SUPPORTED_BACKENDS",
    "JSONText",
    "bulk_insert",
    "create_store_engine",
    "dump_json",
    "refresh_statistics",
    "translate_errors",
    "upsert_insert",
]

SUPPORTED_BACKENDS = ("sqlite", "postgresql")
MAX_MESSAGE = 300

# SQLSTATEs meaning "the schema is not what this code expects": undefined table / column.
_MISSING_SCHEMA_SQLSTATES = {"42P01", "42703"}
_MISSING_SCHEMA_SQLITE = ("no such table", "no such column")


def create_store_engine(url: str | URL) -> Engine:
    """An engine for the license store at ``url`` (SQLite or PostgreSQL), JSON as :func:`dump_json`.

    The engine is :func:`exchange.db.make_engine`'s; this adds the backend check.
    """
    parsed = engine_url(url)
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise LicenseStoreError(
            f"unsupported database {backend!r} for the license store at {safe_url(parsed)} "
            f"(supported: {', '.join(SUPPORTED_BACKENDS)})"
        )
    # No ping before each checkout (a round trip per request, ~8% of a lookup): a connection
    # the server dropped fails one statement with a disconnect error, which invalidates the
    # pool (503, retried by clients), and connections are recycled after 30 minutes.
    return make_engine(parsed, json_serializer=dump_json, pool_pre_ping=False, pool_recycle=1800)


def upsert_insert(dialect_name: str) -> Callable[..., Any]:
    """The dialect's ``insert()`` that offers ``on_conflict_do_update`` (SQLite, PostgreSQL)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - rejected by create_store_engine already
        raise LicenseStoreError(f"unsupported database {dialect_name!r} for the license store")
    return insert


@lru_cache(maxsize=64)
def _insert_plan(
    dialect: Dialect, table: Table, names: tuple[str, ...]
) -> tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]:
    """SQL text, parameter order and bind processors of ``INSERT INTO table (names)``."""
    compiled = table.insert().compile(dialect=dialect, column_keys=list(names))
    order = tuple(compiled.positiontup) if dialect.positional else names
    processors = tuple(
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in order
    )
    return compiled.string, order, processors


def bulk_insert(conn: Connection, table: Table, columns: Mapping[str, Sequence[Any]]) -> None:
    """Insert rows given column-wise (name -> values, all the same length), in bulk.

    Values go through the column types' own bind processors, as with
    ``conn.execute(table.insert(), rows)``, without SQLAlchemy's per-row bookkeeping, which
    dominates the cost of large inserts. SQLite: one ``executemany``; PostgreSQL: ``COPY``.
    """
    sql, order, processors = _insert_plan(conn.dialect, table, tuple(columns))
    converted = [
        list(map(process, columns[name])) if process is not None else columns[name]
        for name, process in zip(order, processors, strict=True)
    ]
    rows = list(zip(*converted, strict=True))
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, table, order, rows)
    elif conn.dialect.positional:
        conn.exec_driver_sql(sql, rows)
    else:  # pragma: no cover - both supported backends are handled above
        conn.exec_driver_sql(sql, [dict(zip(order, row, strict=True)) for row in rows])


def _copy_rows(
    conn: Connection, table: Table, names: Sequence[str], rows: Sequence[tuple[Any, ...]]
) -> None:
    """``COPY ... FROM STDIN`` through psycopg, on the connection's current transaction."""
    preparer = conn.dialect.identifier_preparer
    statement = (
        f"COPY {preparer.format_table(table)} "
        f"({', '.join(preparer.quote(name) for name in names)}) FROM STDIN"
    )
    dbapi = conn.dialect.loaded_dbapi
    try:
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi.Error as error:  # raw driver call: wrap it as SQLAlchemy would
        raise exc.DBAPIError.instance(
            statement, None, error, dbapi.Error, hide_parameters=True, dialect=conn.dialect
        ) from error


# Re-analyse when a load grew the table by this share of its rows (autovacuum's default rule),
# once at least this many rows came in.
ANALYZE_SCALE_FACTOR = 0.1
ANALYZE_MIN_ROWS = 1_000


def refresh_statistics(conn: Connection, table: Table, new_rows: int) -> bool:
    """``ANALYZE`` ``table`` on PostgreSQL if ``new_rows`` is large for it; says if it did.

    A table filled in bulk right after it was created has no statistics yet, and the planner
    then scans it instead of using an index: the next load's look-ups become quadratic.
    SQLite plans these look-ups well without statistics, so it is left alone.
    """
    if conn.dialect.name != "postgresql" or new_rows < ANALYZE_MIN_ROWS:
        return False
    estimate = conn.exec_driver_sql(
        "SELECT reltuples FROM pg_class WHERE oid = %(name)s::regclass", {"name": table.name}
    ).scalar_one()
    if estimate >= 0 and new_rows < ANALYZE_SCALE_FACTOR * estimate:
        return False
    conn.exec_driver_sql(f"ANALYZE {conn.dialect.identifier_preparer.format_table(table)}")
    return True


class JSONText(str):
    """JSON text already serialised (such as the canonical text of a content hash): stored as is."""


def dump_json(value: Any) -> str:
    """The engines' JSON serializer: compact, readable Chinese, :class:`JSONText` passed through."""
    if isinstance(value, JSONText):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def driver_message(error: BaseException) -> str:
    """First line of the driver's message, IDs masked, bounded; never the SQL parameters."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    text = mask_ids_in_text(lines[0].strip() if lines else type(original).__name__)
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    sqlstate = getattr(original, "sqlstate", None)
    return f"{text} [SQLSTATE {sqlstate}]" if sqlstate else text


def _is_missing_schema(error: exc.DBAPIError) -> bool:
    if getattr(error.orig, "sqlstate", None) in _MISSING_SCHEMA_SQLSTATES:
        return True
    message = str(error.orig).lower()
    return isinstance(error, exc.OperationalError) and any(
        marker in message for marker in _MISSING_SCHEMA_SQLITE
    )


def _translate(error: exc.SQLAlchemyError, where: str) -> LicenseStoreError:
    message = driver_message(error)
    if isinstance(error, exc.DBAPIError):
        if _is_missing_schema(error):
            return SchemaNotCurrent(
                f"license store at {where} lacks its schema ({message}): "
                "run LicenseStore.upgrade() to apply the migrations"
            )
        if isinstance(error, exc.IntegrityError):
            return ConflictError(f"license store at {where} refused the write: {message}")
        if isinstance(error, (exc.OperationalError, exc.InterfaceError)) or (
            error.connection_invalidated
        ):
            return StoreUnavailable(f"license store at {where} is unavailable: {message}")
        return LicenseStoreError(f"license store at {where} failed: {message}")
    if isinstance(error, exc.TimeoutError):  # connection pool exhausted
        return StoreUnavailable(f"license store at {where} is unavailable: {message}")
    if isinstance(error, (exc.ArgumentError, exc.NoSuchModuleError)):
        return LicenseStoreError(f"cannot use the database URL {where}: {message}")
    return LicenseStoreError(f"license store at {where} failed: {message}")


@contextmanager
def translate_errors(where: str) -> Iterator[None]:
    """Re-raise SQLAlchemy/driver errors as :mod:`license_store.errors`; ``where`` is a safe URL.

    The driver error is not chained (``from None``): its text and its SQL parameters may hold
    holder IDs. The translated message keeps the driver's first line (IDs masked) and SQLSTATE.
    """
    try:
        yield
    except exc.SQLAlchemyError as error:
        raise _translate(error, where) from None
