"""The ``sql`` connector: read a table or a SELECT from any SQLAlchemy database, incrementally.

Options (the ``connector.options`` block of a source)::

    table: persons          # a table or view; identifiers are quoted by SQLAlchemy
    schema: hukou           # optional, only with ``table``
    query: SELECT ...       # instead of ``table``: one SELECT, wrapped as a subquery
    columns: [id, name]     # optional; must include the primary key and the cursor column
    batch_size: 5000        # optional; rows per Arrow record batch (overrides the request)
    fast_path: auto         # optional; "off" always reads through SQLAlchemy's Python rows

A full refresh (``since`` is ``None``) reads every row; an incremental run reads
``WHERE cursor >= :since ORDER BY cursor, primary key`` with ``since`` as a bound parameter: the
rows at the watermark itself are read again, so a row committed later with the same cursor value
(clocks with second precision, long transactions) is never lost; re-reading an unchanged row is
harmless because the license store writes only changed content. Rows
stream through a server-side cursor (``stream_results``/``yield_per``) and become Arrow batches
column by column, typed from the reflected column types. ``cursor_after`` is the highest cursor
value read, made JSON-friendly (dates and datetimes as ISO strings); the next run's ``since`` is
turned back into the column's type before it is compared. Backend differences live in
:mod:`connectors.sql_dialects`, which also translates every driver error.

With ``fast_path: auto`` (the default) the same SELECT is read the fastest way the backend allows,
with the same schema, values, batches and cursor (``SqlExtraction.read_path`` says which):

- ``adbc``: PostgreSQL with ``adbc_driver_postgresql`` installed and only column types it returns
  exactly; rows arrive as Arrow (binary ``COPY``), see :mod:`connectors.sql_fast`;
- ``connectorx``: MySQL/MariaDB through PyMySQL URLs with ``connectorx`` installed and only column
  types it returns exactly (decimals and floats selected as the server's text); rows arrive as
  Arrow record batches;
- ``sqlalchemy-text``: otherwise MySQL/MariaDB through PyMySQL; the server-side cursor hands
  numbers, dates and timestamps over as text and Arrow parses them, column by column;
- ``sqlalchemy``: everything else, and any source with ``fast_path: off``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeEngine

from connectors.base import Connector, ExtractRequest
from connectors.errors import (
    ConnectorOptionError,
    SourceConfigError,
    SourceDataError,
    SourceQueryError,
    SourceSchemaError,
)
from connectors.registry import register
from connectors.sql_dialects import (
    SqlDialect,
    describe_location,
    dialect_for,
    escape_colons,
    translating_errors,
)
from connectors.sql_fast import ArrowReader

__all__ = ["ReadPath", "SqlConnector", "SqlExtraction", "SqlOptions", "arrow_type_for"]

ReadPath = Literal["adbc", "connectorx", "sqlalchemy-text", "sqlalchemy"]


class SqlOptions(BaseModel):
    """The options of the ``sql`` connector, as written in YAML."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    table: str | None = Field(default=None, min_length=1)
    schema_: str | None = Field(default=None, alias="schema", min_length=1)
    query: str | None = Field(default=None, min_length=1)
    columns: tuple[str, ...] | None = Field(default=None, min_length=1)
    batch_size: StrictInt | None = Field(default=None, gt=0)
    fast_path: Literal["auto", "off"] = "auto"


@register("sql")
class SqlConnector(Connector):
    """Reads one table, view or SELECT of a SQL database."""

    def __init__(self, request: ExtractRequest) -> None:
        super().__init__(request)
        self.options = self.parse_options(SqlOptions)
        self.batch_size = self.resolve_batch_size(self.options.batch_size)
        self.query = _check_shape(request, self.options)

    def extract(self) -> SqlExtraction:
        """Connect, learn the columns and their types, and return the (not yet read) batches."""
        request = self.request
        url = _parse_url(request)
        dialect = dialect_for(url)
        with translating_errors(request.source_id, url, dialect):
            engine = sa.create_engine(
                url, poolclass=NullPool, connect_args=dialect.connect_args(url)
            )
            with engine.connect() as conn:
                reading = conn.execution_options(**dialect.execution_options())
                plan = self._plan(reading, url, dialect)
        return SqlExtraction(request, engine, dialect, plan, self.batch_size)

    def _read_path(
        self, conn: Connection, url: URL, dialect: SqlDialect, statement: sa.Select[Any]
    ) -> tuple[ReadPath, ArrowReader | None, str | None]:
        """The fastest way to read ``statement`` here: the path, its reader and its SQL text."""
        if self.options.fast_path == "off":
            return "sqlalchemy", None, None
        reader = dialect.arrow_reader(url)
        if reader is not None:
            arrow_sql = dialect.arrow_select(conn, statement)
            if arrow_sql is not None:
                return reader.read_path, reader, arrow_sql
        if dialect.streams_text(conn, statement):
            return "sqlalchemy-text", None, None
        return "sqlalchemy", None, None

    def _plan(self, conn: Connection, url: URL, dialect: SqlDialect) -> _Plan:
        request = self.request
        if self.query is not None:
            described = dialect.describe_query(conn, self.query)
            names = [name for name, _ in described]
            duplicate = next((n for n in names if names.count(n) > 1), None)
            if duplicate is not None:
                raise SourceQueryError(
                    request.source_id, f"the query returns column {duplicate!r} more than once"
                )
            text = sa.text(escape_colons(self.query))
            source: sa.FromClause = text.columns(*(sa.column(n, t) for n, t in described)).subquery(
                "govx_source"
            )
            what = "the query"
        else:
            assert self.options.table is not None
            source = sa.Table(
                self.options.table, sa.MetaData(), schema=self.options.schema_, autoload_with=conn
            )
            what = f"table {_qualified(self.options.schema_, self.options.table)!r}"
        wanted = list(self.options.columns or [c.name for c in source.columns])
        needed = [*wanted, *request.primary_key]
        if request.cursor_column:
            needed.append(request.cursor_column)
        for name in dict.fromkeys(needed):
            if name not in source.columns:
                raise SourceSchemaError(
                    request.source_id,
                    f"column {name!r}{_role(name, request)} does not exist in {what} "
                    f"({describe_location(url)})",
                )
        columns = [source.columns[name] for name in wanted]
        as_text = {c.name for c in columns if dialect.reads_as_text(c.type)}
        statement = sa.select(
            *(
                sa.type_coerce(c, sa.String()).label(c.name) if c.name in as_text else c
                for c in columns
            )
        )
        cursor = source.columns[request.cursor_column] if request.cursor_column else None
        if cursor is not None and request.since is not None:
            if cursor.name in as_text:
                text_cursor = sa.type_coerce(cursor, sa.String())
                bound = sa.bindparam("since", str(request.since), type_=sa.String())
                statement = statement.where(text_cursor >= bound)
            else:
                since = _since_as_column_value(request, cursor.type)
                bound = sa.bindparam("since", since, type_=cursor.type)
                statement = statement.where(cursor >= bound)
        order = [source.columns[name] for name in request.primary_key]
        statement = statement.order_by(*([cursor] if cursor is not None else []), *order)
        fields = [
            _arrow_field(c.name, c.type, conn.dialect, text=c.name in as_text) for c in columns
        ]
        path, reader, arrow_sql = self._read_path(conn, url, dialect, statement)
        return _Plan(
            statement=statement,
            schema=pa.schema(fields),
            cursor_index=wanted.index(request.cursor_column) if request.cursor_column else None,
            cursor_as_text=request.cursor_column in as_text,
            path=path,
            reader=reader,
            arrow_sql=arrow_sql,
        )


@dataclass(frozen=True)
class _Plan:
    statement: sa.Select[Any]
    schema: pa.Schema
    cursor_index: int | None
    path: ReadPath = "sqlalchemy"
    reader: ArrowReader | None = None
    arrow_sql: str | None = None
    cursor_as_text: bool = False


class SqlExtraction:
    """The batches of one ``sql`` read; iterate once. The engine is disposed when reading ends."""

    def __init__(
        self,
        request: ExtractRequest,
        engine: Engine,
        dialect: SqlDialect,
        plan: _Plan,
        batch_size: int,
    ) -> None:
        self._request = request
        self._engine = engine
        self._dialect = dialect
        self._plan = plan
        self._batch_size = batch_size
        self._rows_read = 0
        self._max_cursor: Any = None
        self._started = False

    @property
    def schema(self) -> pa.Schema:
        return self._plan.schema

    @property
    def rows_read(self) -> int:
        return self._rows_read

    @property
    def read_path(self) -> ReadPath:
        """How the rows are read: ``adbc``, ``connectorx``, ``sqlalchemy-text``, ``sqlalchemy``."""
        return self._plan.path

    @property
    def cursor_after(self) -> Any | None:
        if self._max_cursor is None:
            return self._request.since
        return _json_value(self._max_cursor)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._started:
            raise RuntimeError("an extraction can be read once; call extract() again")
        self._started = True
        return self._batches()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        request = self._request
        plan = self._plan
        try:
            if plan.reader is not None and plan.arrow_sql is not None:
                batches = plan.reader.batches(plan.arrow_sql, plan.schema, self._batch_size)
            else:
                batches = self._sqlalchemy_batches()
            with (
                translating_errors(request.source_id, self._engine.url, self._dialect),
                closing(batches),  # stopped early: the reader stops its query now, not at GC
            ):
                for batch in batches:
                    self._rows_read += batch.num_rows
                    self._note_cursor(batch)
                    yield batch
        finally:
            self._engine.dispose()

    def _sqlalchemy_batches(self) -> Generator[pa.RecordBatch, None, None]:
        with self._engine.connect() as conn:
            streaming = conn.execution_options(
                stream_results=True,
                yield_per=self._batch_size,
                **self._dialect.execution_options(),
            )
            if self._plan.path == "sqlalchemy-text":
                # the driver's values as they are: SQLAlchemy would post-process none of them
                self._dialect.prepare_text_stream(streaming)
                compiled = self._plan.statement.compile(dialect=streaming.dialect)
                result = streaming.exec_driver_sql(str(compiled), compiled.params)
                as_text = self._dialect.text_columns(result.cursor.description or ())
            else:
                result = streaming.execute(self._plan.statement)
                as_text = frozenset()
            finished = False
            try:
                for rows in result.partitions(self._batch_size):
                    yield self._record_batch(rows, as_text)
                finished = True
            finally:
                if not finished:  # stopped early: do not read the rest of the cursor
                    self._dialect.abandon_stream(conn, result)

    def _record_batch(
        self, rows: Sequence[Sequence[Any]], as_text: frozenset[int] = frozenset()
    ) -> pa.RecordBatch:
        schema = self._plan.schema
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
        arrays = [
            self._parsed_array(values, field) if i in as_text else self._arrow_array(values, field)
            for i, (values, field) in enumerate(zip(columns, schema, strict=True))
        ]
        return pa.RecordBatch.from_arrays(arrays, schema=schema)

    def _parsed_array(self, values: Sequence[Any], field: pa.Field) -> pa.Array:
        """A column whose values arrived as the server's text, parsed by Arrow."""
        try:
            return pa.array(values, type=pa.string()).cast(field.type)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise SourceDataError(
                self._request.source_id,
                f"column {field.name!r}: cannot convert a value to {field.type}: {exc}",
            ) from None

    def _arrow_array(self, values: Sequence[Any], field: pa.Field) -> pa.Array:
        try:
            return pa.array(values, type=field.type)
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as first:
            coerce = _coercion_for(field.type)
            try:
                if coerce is None:
                    raise first
                return pa.array([None if v is None else coerce(v) for v in values], type=field.type)
            except (pa.ArrowException, TypeError, ValueError, ArithmeticError) as exc:
                raise SourceDataError(
                    self._request.source_id,
                    f"column {field.name!r}: cannot convert a value to {field.type}: {exc}",
                ) from None

    def _note_cursor(self, batch: pa.RecordBatch) -> None:
        index = self._plan.cursor_index
        if index is None:
            return
        column = batch.column(index)
        if self._plan.cursor_as_text:
            # only dates and timestamps may move the watermark: a stray text ('soon') would sort
            # after every date and hide all later rows; such a row is simply read again
            column = column.filter(pc.match_substring_regex(column, ISO_DATE_PREFIX))
        highest = pc.max(column).as_py()
        if highest is not None and (self._max_cursor is None or highest > self._max_cursor):
            self._max_cursor = highest


ISO_DATE_PREFIX = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"


def arrow_type_for(sql_type: TypeEngine[Any]) -> pa.DataType:
    """The Arrow type a column of this SQLAlchemy type becomes (anything unknown: string)."""
    if isinstance(sql_type, sa.Boolean):
        return pa.bool_()
    if isinstance(sql_type, sa.Integer):
        return pa.int64()
    if isinstance(sql_type, sa.Float):
        return pa.float64()
    if isinstance(sql_type, sa.Numeric):
        return _decimal_type(sql_type.precision, sql_type.scale)
    if isinstance(sql_type, sa.DateTime):
        return pa.timestamp("us", tz="UTC" if sql_type.timezone else None)
    if isinstance(sql_type, sa.Date):
        return pa.date32()
    if isinstance(sql_type, sa.Time):
        return pa.time64("us")
    if isinstance(sql_type, sa.LargeBinary | sa.BINARY | sa.VARBINARY):
        return pa.binary()
    return pa.string()


def _decimal_type(precision: int | None, scale: int | None) -> pa.DataType:
    """Exact decimals when the precision is declared; float64 for unconstrained NUMERIC."""
    scale = scale or 0
    if precision is None or not 0 <= scale <= precision:
        return pa.float64()
    if precision <= 38:
        return pa.decimal128(precision, scale)
    if precision <= 76:
        return pa.decimal256(precision, scale)
    return pa.float64()


def _arrow_field(
    name: str, sql_type: TypeEngine[Any], dialect: sa.Dialect, *, text: bool = False
) -> pa.Field:
    try:
        declared = sql_type.compile(dialect=dialect)
    except Exception:  # NullType and some reflected types have no DDL form
        declared = ""
    metadata = {"sql_type": declared} if declared else None
    arrow_type = pa.string() if text else arrow_type_for(sql_type)
    return pa.field(name, arrow_type, nullable=True, metadata=metadata)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.hex()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _as_int(value: Any) -> int:
    if isinstance(value, float | decimal.Decimal) and value != int(value):
        raise ValueError(f"{value!r} is not a whole number")
    return int(value)


def _as_time(value: Any) -> dt.time:
    if isinstance(value, dt.timedelta) and dt.timedelta(0) <= value < dt.timedelta(days=1):
        return (dt.datetime.min + value).time()  # PyMySQL returns TIME columns as timedelta
    raise TypeError(f"{value!r} is not a time of day")


def _coercion_for(arrow_type: pa.DataType) -> Callable[[Any], Any] | None:
    if pa.types.is_string(arrow_type):
        return _as_text
    if pa.types.is_floating(arrow_type):
        return float
    if pa.types.is_integer(arrow_type):
        return _as_int
    if pa.types.is_binary(arrow_type):
        return lambda v: v.encode("utf-8") if isinstance(v, str) else bytes(v)
    if pa.types.is_time(arrow_type):
        return _as_time
    return None


def _json_value(value: Any) -> Any:
    """A cursor value as JSON: ISO strings for dates and times, exact strings for decimals."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _since_as_column_value(request: ExtractRequest, sql_type: TypeEngine[Any]) -> Any:
    """Turn a saved (JSON) cursor back into the cursor column's Python type."""
    since = request.since
    if not isinstance(since, str):
        return since
    try:
        if isinstance(sql_type, sa.DateTime):
            return dt.datetime.fromisoformat(since)
        if isinstance(sql_type, sa.Date):
            return dt.datetime.fromisoformat(since).date()
        if isinstance(sql_type, sa.Time):
            return dt.time.fromisoformat(since)
        if isinstance(sql_type, sa.Numeric) and not isinstance(sql_type, sa.Float):
            return decimal.Decimal(since)
    except (ValueError, decimal.InvalidOperation):
        raise SourceDataError(
            request.source_id,
            f"the saved cursor {since!r} is not a valid value for cursor column "
            f"{request.cursor_column!r} ({sql_type!r})",
        ) from None
    return since


def _check_shape(request: ExtractRequest, options: SqlOptions) -> str | None:
    """Check the options that depend on each other; return the normalised query, if any."""
    source_id = request.source_id
    if options.table and options.query:
        raise ConnectorOptionError(source_id, "query", "give either 'table' or 'query', not both")
    if not options.table and not options.query:
        raise ConnectorOptionError(
            source_id, "table", "required: give 'table' (optionally with 'schema') or 'query'"
        )
    if options.schema_ and not options.table:
        raise ConnectorOptionError(source_id, "schema", "only applies together with 'table'")
    if options.columns is not None:
        duplicate = next((c for c in options.columns if options.columns.count(c) > 1), None)
        if duplicate is not None:
            raise ConnectorOptionError(source_id, "columns", f"{duplicate!r} is listed twice")
        cursor = [request.cursor_column] if request.cursor_column else []
        required = [*request.primary_key, *cursor]
        missing = [name for name in required if name not in options.columns]
        if missing:
            raise ConnectorOptionError(
                source_id,
                "columns",
                f"must include the primary key and cursor columns (missing: {', '.join(missing)})",
            )
    if request.batch_size <= 0:
        raise ConnectorOptionError(source_id, "batch_size", "must be a positive number of rows")
    if options.query is None:
        return None
    query = options.query.strip().rstrip(";").strip()
    first_word = query.split(None, 1)[0].lower() if query else ""
    if first_word not in ("select", "with") or ";" in query:
        raise ConnectorOptionError(source_id, "query", "must be a single SELECT statement")
    return query


def _parse_url(request: ExtractRequest) -> URL:
    try:
        return make_url(request.url)
    except Exception:  # the message would quote the URL, password included
        raise SourceConfigError(
            request.source_id, "the connection URL is not a valid SQLAlchemy URL"
        ) from None


def _qualified(schema: str | None, table: str) -> str:
    return f"{schema}.{table}" if schema else table


def _role(name: str, request: ExtractRequest) -> str:
    if name == request.cursor_column:
        return " (the cursor column)"
    if name in request.primary_key:
        return " (in the primary key)"
    return ""
