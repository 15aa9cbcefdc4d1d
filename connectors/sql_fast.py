"""Arrow-native reads for the ``sql`` connector: one SELECT decoded straight into Arrow batches.

The ``sql`` connector normally reads through SQLAlchemy, so every value becomes a Python object
before it becomes Arrow. Where a backend has a well-kept driver that decodes rows into Arrow itself
(ADBC: for PostgreSQL ``adbc_driver_postgresql``, which reads ``COPY (SELECT ...) TO STDOUT (FORMAT
binary)``; for MySQL/MariaDB ConnectorX, whose Rust MySQL client streams the result as Arrow record
batches), the connector hands that driver the same SELECT as SQL text instead. What comes back is
made indistinguishable from the SQLAlchemy path:

- :func:`conformed` casts each batch to the connector's schema (int16 to int64, text to decimal...);
- :func:`rebatched` cuts the driver's batches (sized in bytes) to the requested number of rows;
- :func:`read_ahead` decodes on a background thread at most ``depth`` batches ahead, so decoding
  overlaps the caller's Parquet writing while memory stays bounded; a consumer that stops early
  cancels the query instead of reading the rest.

Which backend has such a reader, which column types it reproduces exactly, the SQL it is given and
how its errors are translated live in :mod:`connectors.sql_dialects`. This module raises plain
``ValueError`` for values it cannot convert; the caller's ``translating_errors`` block turns them,
like every driver error, into connector errors.
"""

from __future__ import annotations

import importlib
import queue
import threading
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import pyarrow as pa

__all__ = ["AdbcReader", "ArrowReader", "ConnectorXReader", "conformed", "read_ahead", "rebatched"]

T = TypeVar("T")

READ_AHEAD_BATCHES = 2
_POLL_SECONDS = 0.1


@dataclass(frozen=True)
class AdbcReader:
    """Runs one SELECT through an ADBC driver's DB-API module and streams the result as Arrow.

    ``uri`` is what the driver's ``connect()`` takes (for PostgreSQL a libpq URI); it carries the
    password, so it is left out of ``repr``.
    """

    driver: str
    uri: str = field(repr=False)
    read_path: ClassVar[Literal["adbc"]] = "adbc"

    def batches(
        self, sql: str, schema: pa.Schema, batch_size: int
    ) -> Generator[pa.RecordBatch, None, None]:
        """Batches of exactly ``batch_size`` rows (the last may be shorter) typed as ``schema``."""
        dbapi: Any = importlib.import_module(f"{self.driver}.dbapi")
        with (
            closing(dbapi.connect(self.uri, autocommit=True)) as connection,
            closing(connection.cursor()) as cursor,
        ):
            cursor.execute(sql)
            reader = cursor.fetch_record_batch()
            try:
                decoded = (conformed(batch, schema) for batch in reader)
                yield from rebatched(read_ahead(decoded, cancel=cursor.adbc_cancel), batch_size)
            finally:
                reader.close()


@dataclass(frozen=True)
class ConnectorXReader:
    """Runs one SELECT through ConnectorX (``return_type="arrow_stream"``) and streams it as Arrow.

    ``uri`` is ConnectorX's connection string (``mysql://user:password@host:port/db``); it carries
    the password, so it is left out of ``repr``. ``pre_execution`` runs on the same session first.
    ConnectorX decodes on its own thread into a bounded channel of ``DRIVER_BATCH_ROWS``-row
    batches; closing the reader drops that connection, which ends the query. Its failures arrive
    as Rust panics (``PanicException``, a ``BaseException``): value conversions become
    ``ValueError`` naming the candidate columns, anything else a ``RuntimeError`` carrying the
    driver's message, which :mod:`connectors.sql_dialects` translates.
    """

    uri: str = field(repr=False)
    pre_execution: tuple[str, ...] = ()
    read_path: ClassVar[Literal["connectorx"]] = "connectorx"

    DRIVER_BATCH_ROWS: ClassVar[int] = 5000

    def batches(
        self, sql: str, schema: pa.Schema, batch_size: int
    ) -> Generator[pa.RecordBatch, None, None]:
        """Batches of exactly ``batch_size`` rows (the last may be shorter) typed as ``schema``."""
        connectorx: Any = importlib.import_module("connectorx")
        reader = _connectorx_call(
            lambda: connectorx.read_sql(
                self.uri,
                sql,
                return_type="arrow_stream",
                batch_size=self.DRIVER_BATCH_ROWS,
                pre_execution_query=list(self.pre_execution) or None,
            ),
            schema,
        )
        try:
            decoded = (conformed(batch, schema) for batch in _panics_translated(reader, schema))
            # no way to interrupt a batch being decoded: stopping waits for it (bounded), then
            # closing the reader drops the connection and with it the query
            yield from rebatched(read_ahead(decoded, cancel=lambda: None), batch_size)
        finally:
            reader.close()


ArrowReader = AdbcReader | ConnectorXReader


def _panics_translated(
    reader: Iterable[pa.RecordBatch], schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    iterator = iter(reader)
    while True:
        batch = _connectorx_call(lambda: next(iterator, None), schema)
        if batch is None:
            return
        yield batch


def _connectorx_call(call: Callable[[], T], schema: pa.Schema) -> T:
    try:
        return call()
    except Exception:
        raise
    except BaseException as exc:  # pyo3's PanicException; never KeyboardInterrupt/SystemExit
        if type(exc).__name__ != "PanicException":
            raise
        message = _first_line(str(exc))
        if any(marker in message for marker in _CONVERSION_PANICS):
            raise ValueError(
                f"{_candidate_columns(message, schema)}: cannot convert a value: {message}"
            ) from None
        raise RuntimeError(message) from None


# panics about a value ConnectorX could not convert (rather than about its connection)
_CONVERSION_PANICS = ("convert the value", "Could not retrieve", "Destination(")


def _candidate_columns(message: str, schema: pa.Schema) -> str:
    """The columns a ConnectorX conversion panic can be about (it names the Rust type only)."""
    if "NaiveDateTime" in message:
        names = [f.name for f in schema if pa.types.is_timestamp(f.type)]
    elif "NaiveDate" in message:
        names = [f.name for f in schema if pa.types.is_date(f.type)]
    elif "NaiveTime" in message:
        names = [f.name for f in schema if pa.types.is_time(f.type)]
    else:
        names = []
    names = names or schema.names
    if len(names) == 1:
        return f"column {names[0]!r}"
    return "one of the columns " + ", ".join(repr(name) for name in names)


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"


def conformed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with each column cast to the type (and metadata) of ``schema``, by position."""
    if batch.num_columns != len(schema):
        raise ValueError(f"the driver returned {batch.num_columns} columns, expected {len(schema)}")
    arrays = []
    for column, target in zip(batch.columns, schema, strict=True):
        if isinstance(column.type, pa.BaseExtensionType):  # e.g. PostgreSQL numeric as opaque text
            column = column.storage
        if column.type != target.type:
            try:
                column = column.cast(target.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(
                    f"column {target.name!r}: cannot convert a value to {target.type}: {exc}"
                ) from None
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def rebatched(batches: Iterable[pa.RecordBatch], size: int) -> Iterator[pa.RecordBatch]:
    """Re-cut a stream of batches into batches of ``size`` rows (zero-copy where possible)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        offset = 0
        while offset < batch.num_rows:
            take = min(size - count, batch.num_rows - offset)
            pending.append(batch.slice(offset, take))
            count += take
            offset += take
            if count == size:
                yield _joined(pending)
                pending, count = [], 0
    if count:
        yield _joined(pending)


def _joined(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def read_ahead(
    items: Iterator[T], cancel: Callable[[], None], depth: int = READ_AHEAD_BATCHES
) -> Iterator[T]:
    """Iterate ``items`` on a background thread, at most ``depth`` items ahead of the consumer.

    An exception raised by ``items`` is raised again in the consumer. When the consumer stops
    early, ``cancel`` is called (to interrupt a driver blocked in a read) and the thread is joined
    before this generator returns, so the caller may close the driver's objects afterwards.
    """
    handoff: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer((False, item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            offer((True, exc))
        else:
            offer((True, None))

    thread = threading.Thread(target=produce, name="govx-sql-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            finished, value = handoff.get()
            if finished:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        if thread.is_alive():
            stop.set()
            try:
                cancel()
            finally:
                thread.join()
