"""The ``sql`` connector's fast paths give what its SQLAlchemy path gives, on real databases.

PostgreSQL reads through ADBC (``read_path == "adbc"``), MariaDB through ConnectorX
(``"connectorx"``) or, without it, the server-side cursor with values parsed by Arrow
(``"sqlalchemy-text"``); ``fast_path: off`` is the reference.
"""

from __future__ import annotations

import datetime as dt
import decimal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.base import ExtractRequest
from connectors.errors import (
    ConnectorOptionError,
    SourceDataError,
    SourceQueryError,
    SourceSchemaError,
    SourceUnavailable,
    TransientError,
)
from connectors.sql import SqlConnector, SqlExtraction
from connectors.sql_dialects import MySQLDialect, PostgresDialect, translate_error
from connectors.sql_fast import conformed, read_ahead, rebatched

SOURCE_ID = "test_fast_registry"
T0 = dt.datetime(2024, 3, 1, 8, 0, 0)
NAMES = ["张三", "李四", "王小明", "欧阳娜娜", "O'Brien; DROP TABLE registry; --", "100% 纯净"]

PG_REGISTRY = """
CREATE TABLE registry (
    id bigint PRIMARY KEY,
    code varchar(18) NOT NULL,
    name text,
    gender char(2),
    household int,
    status smallint,
    birth_date date,
    registered_at timestamp,
    changed_at timestamptz,
    opens time,
    area numeric(12, 2),
    share numeric(30, 10),
    big numeric(50, 5),
    loose numeric,
    income double precision,
    active boolean,
    photo bytea,
    updated_at timestamp NOT NULL
)
"""

MARIADB_REGISTRY = """
CREATE TABLE registry (
    id bigint PRIMARY KEY,
    code varchar(18) NOT NULL,
    name text,
    gender char(2),
    household int,
    status smallint,
    flag tinyint,
    born_year year,
    birth_date date,
    registered_at datetime,
    stamped_at datetime(6),
    area decimal(12, 2),
    share decimal(30, 10),
    income double,
    ratio float,
    updated_at timestamp NOT NULL DEFAULT '2000-01-01 00:00:00'
) CHARACTER SET utf8mb4
"""


def registry_row(i: int) -> dict[str, Any]:
    """Row ``i``; every nullable column is NULL in some row."""
    null = i % 5 == 0
    return {
        "id": i,
        "code": f"44010519900101{i:04d}",
        "name": None if null else NAMES[i % len(NAMES)],
        "gender": None if null else ("F" if i % 2 else "M"),
        "household": None if null else 10_000 + i,
        "status": None if null else i % 3,
        "birth_date": None if null else dt.date(1950 + i % 60, 1 + i % 12, 1 + i % 28),
        "registered_at": None if null else T0 - dt.timedelta(days=i, microseconds=i * 7),
        "area": None if null else decimal.Decimal(f"{i * 13}.{i % 100:02d}"),
        "share": None if null else decimal.Decimal(f"0.{i:010d}"),
        "income": None if null else i * 1.25 - 100.5,
        "updated_at": T0 + dt.timedelta(minutes=i // 2),  # pairs share a cursor value
    }


def pg_row(i: int) -> dict[str, Any]:
    null = i % 5 == 0
    return {
        **registry_row(i),
        "changed_at": None
        if null
        else dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
        + dt.timedelta(hours=i),
        "opens": None if null else dt.time(8, i % 60, i % 60, 250_000),
        "big": None if null else decimal.Decimal(f"{'9' * 40}{i:05d}.12345"),
        "loose": None if null else decimal.Decimal(f"{i}.{i:03d}"),
        "active": None if null else i % 2 == 0,
        "photo": None if null else bytes([i % 256, 0, 255]),
    }


def mariadb_row(i: int) -> dict[str, Any]:
    null = i % 5 == 0
    return {
        **registry_row(i),
        "flag": None if null else i % 2,
        "born_year": None if null else 1950 + i % 60,
        "stamped_at": None if null else T0 + dt.timedelta(seconds=i, microseconds=i * 1001),
        "ratio": None if null else [0.5, 1.1, -2.25][i % 3],
    }


def make_table(url: str, ddl: str, rows: list[dict[str, Any]], *inserts: str) -> None:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text(ddl))
        if rows:
            table = sa.Table("registry", sa.MetaData(), autoload_with=conn)
            conn.execute(table.insert(), rows)
        for insert in inserts:
            conn.execute(sa.text(insert))
    engine.dispose()


def extract(
    url: str, fast_path: str = "auto", since: Any = None, cursor: str = "updated_at", **options: Any
) -> tuple[SqlExtraction, list[pa.RecordBatch]]:
    request = ExtractRequest(
        source_id=SOURCE_ID,
        options={"table": "registry", **options, "fast_path": fast_path},
        url=url,
        primary_key=("id",),
        cursor_column=cursor,
        since=since,
    )
    extraction = SqlConnector(request).extract()
    return extraction, list(extraction)


def assert_same_read(
    url: str, expected_path: str, **kwargs: Any
) -> tuple[SqlExtraction, list[pa.RecordBatch]]:
    """The fast path and ``fast_path: off`` read the same batches, schema and cursor."""
    fast, fast_batches = extract(url, **kwargs)
    slow, slow_batches = extract(url, fast_path="off", **kwargs)
    assert (fast.read_path, slow.read_path) == (expected_path, "sqlalchemy")
    assert fast.schema.equals(slow.schema, check_metadata=True)
    assert [b.num_rows for b in fast_batches] == [b.num_rows for b in slow_batches]
    for fast_batch, slow_batch in zip(fast_batches, slow_batches, strict=True):
        assert fast_batch.schema.equals(fast.schema, check_metadata=True)
        assert fast_batch.equals(slow_batch), _first_difference(fast_batch, slow_batch)
    assert (fast.rows_read, fast.cursor_after) == (slow.rows_read, slow.cursor_after)
    return fast, fast_batches


def _first_difference(left: pa.RecordBatch, right: pa.RecordBatch) -> str:
    for name in left.schema.names:
        a, b = left.column(name).to_pylist(), right.column(name).to_pylist()
        if a != b:
            row = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
            return f"column {name!r}, row {row}: {a[row]!r} != {b[row]!r}"
    return "batches differ"


# --- PostgreSQL: ADBC ------------------------------------------------------------------------


@pytest.fixture
def pg_registry(postgres_url: str) -> str:
    make_table(postgres_url, PG_REGISTRY, [pg_row(i) for i in range(1, 41)])
    return postgres_url


@pytest.mark.postgres
def test_postgres_fast_path_reads_the_same_table(pg_registry: str) -> None:
    fast, batches = assert_same_read(pg_registry, "adbc", batch_size=7)
    assert [b.num_rows for b in batches] == [7] * 5 + [5]
    schema = fast.schema
    expected = {
        "id": pa.int64(),
        "household": pa.int64(),
        "status": pa.int64(),
        "name": pa.string(),
        "gender": pa.string(),
        "birth_date": pa.date32(),
        "registered_at": pa.timestamp("us"),
        "changed_at": pa.timestamp("us", tz="UTC"),
        "opens": pa.time64("us"),
        "area": pa.decimal128(12, 2),
        "share": pa.decimal128(30, 10),
        "big": pa.decimal256(50, 5),
        "loose": pa.float64(),
        "income": pa.float64(),
        "active": pa.bool_(),
        "photo": pa.binary(),
    }
    assert {name: schema.field(name).type for name in expected} == expected
    table = pa.Table.from_batches(batches)
    rows = {row["id"]: row for row in table.to_pylist()}
    assert rows[3]["name"] == NAMES[3] and rows[4]["name"] == NAMES[4]
    assert rows[5]["name"] is None and rows[5]["area"] is None and rows[5]["photo"] is None
    assert rows[7]["area"] == decimal.Decimal("91.07")
    assert rows[7]["big"] == decimal.Decimal(f"{'9' * 40}00007.12345")
    assert rows[7]["registered_at"] == T0 - dt.timedelta(days=7, microseconds=49)
    assert rows[7]["changed_at"] == dt.datetime(2023, 12, 31, 23, 0, tzinfo=dt.UTC)
    assert fast.cursor_after == (T0 + dt.timedelta(minutes=20)).isoformat()


@pytest.mark.postgres
def test_postgres_fast_path_incremental_reads_match(pg_registry: str) -> None:
    full, _ = extract(pg_registry)
    since = (T0 + dt.timedelta(minutes=15)).isoformat()
    _, batches = assert_same_read(pg_registry, "adbc", since=since, batch_size=4)
    ids = [i for b in batches for i in b.column("id").to_pylist()]
    assert ids == list(range(30, 41))  # the pair at the watermark is read again
    assert full.cursor_after == (T0 + dt.timedelta(minutes=20)).isoformat()

    # nothing newer: only the rows at the watermark, cursor unchanged
    again, batches = assert_same_read(pg_registry, "adbc", since=full.cursor_after)
    assert [i for b in batches for i in b.column("id").to_pylist()] == [40]
    assert again.cursor_after == full.cursor_after


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("cursor", "since"),
    [
        ("birth_date", dt.date(1980, 1, 1).isoformat()),
        ("area", "400.5"),
        ("changed_at", "2024-01-02T12:00:00+08:00"),
        ("name", "O'Brien; DROP TABLE registry; --"),  # a value, never SQL
        ("code", "100%' OR '1'='1"),
    ],
)
def test_postgres_since_is_rendered_as_a_literal_for_every_cursor_type(
    pg_registry: str, cursor: str, since: str
) -> None:
    fast, _ = assert_same_read(pg_registry, "adbc", since=since, cursor=cursor)
    assert fast.rows_read > 0
    assert extract(pg_registry)[0].rows_read == 40  # the table is still there


@pytest.mark.postgres
def test_postgres_query_option_reads_the_same(pg_registry: str) -> None:
    query = (
        "SELECT id, name, area, registered_at::date AS registered_on, updated_at FROM registry "
        "WHERE name LIKE '%' AND updated_at >= '2024-03-01 08:00:00' AND code <> ':x'"
    )
    assert_same_read(pg_registry, "adbc", query=query, table=None, batch_size=6)
    since = (T0 + dt.timedelta(minutes=10)).isoformat()
    _, batches = assert_same_read(pg_registry, "adbc", query=query, table=None, since=since)
    assert batches[0].column("registered_on").type == pa.date32()


@pytest.mark.postgres
def test_postgres_columns_adbc_cannot_reproduce_fall_back(postgres_url: str) -> None:
    make_table(
        postgres_url,
        "CREATE TABLE registry (id int PRIMARY KEY, doc jsonb, ref uuid, weight real, "
        "updated_at timestamp NOT NULL)",
        [
            {"id": 1, "doc": {"户主": "张三"}, "ref": None, "weight": 1.1, "updated_at": T0},
            {"id": 2, "doc": None, "ref": None, "weight": None, "updated_at": T0},
        ],
    )
    assert_same_read(postgres_url, "sqlalchemy", columns=["id", "weight", "updated_at"])
    assert_same_read(postgres_url, "sqlalchemy")
    fast, _ = assert_same_read(postgres_url, "adbc", columns=["id", "updated_at"])
    assert fast.rows_read == 2


@pytest.mark.postgres
def test_postgres_without_the_adbc_driver_reads_through_sqlalchemy(
    pg_registry: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "adbc_driver_postgresql", None)  # as if not installed
    extraction, batches = extract(pg_registry, batch_size=16)
    assert extraction.read_path == "sqlalchemy"
    assert [b.num_rows for b in batches] == [16, 16, 8]


@pytest.mark.postgres
def test_postgres_fast_path_session_is_read_only(postgres_url: str) -> None:
    dbapi = pytest.importorskip("adbc_driver_postgresql.dbapi")
    url = sa.make_url(postgres_url).update_query_dict({"application_name": "govx x"})
    reader = PostgresDialect().arrow_reader(url)
    assert reader is not None
    uri = reader.uri
    assert "connect_timeout=10" in uri and "application_name=govx%20x" in uri
    with dbapi.connect(uri, autocommit=True) as conn, conn.cursor() as cursor:
        with pytest.raises(dbapi.Error) as caught:
            cursor.execute("CREATE TABLE written (id int)")
        assert caught.value.sqlstate == "25006"  # read_only_sql_transaction


@pytest.mark.postgres
def test_postgres_batch_sizes_hold_across_driver_batches(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE registry AS SELECT i::bigint AS id, repeat('户', 40) AS name, "
                "timestamp '2024-01-01' + i * interval '1 second' AS updated_at "
                "FROM generate_series(1, 300000) AS i"
            )
        )
    engine.dispose()
    extraction, batches = extract(postgres_url, batch_size=70_000)
    assert extraction.read_path == "adbc"
    assert [b.num_rows for b in batches] == [70_000] * 4 + [20_000]
    ids = pa.chunked_array([b.column("id") for b in batches])
    assert ids.to_pylist() == list(range(1, 300_001))
    assert extraction.cursor_after == "2024-01-04T11:20:00"


def _backends(url: str) -> list[int]:
    """PIDs of the other busy sessions on the test database (the extraction's stream)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        pids = conn.execute(
            sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
                "AND state IS DISTINCT FROM 'idle'"
            )
        )
        found = [row[0] for row in pids]
    engine.dispose()
    return found


@pytest.fixture
def pg_wide(postgres_url: str) -> str:
    """~180 MB of rows: many driver batches, so a stream is still running after the first."""
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE registry AS SELECT i::bigint AS id, repeat('地址', 100) AS address, "
                "timestamp '2024-01-01' + i * interval '1 second' AS updated_at "
                "FROM generate_series(1, 300000) AS i"
            )
        )
    engine.dispose()
    return postgres_url


@pytest.mark.postgres
@pytest.mark.parametrize("fast_path", ["auto", "off"])
def test_postgres_connection_killed_mid_stream_is_transient(pg_wide: str, fast_path: str) -> None:
    request = ExtractRequest(
        SOURCE_ID,
        {"table": "registry", "fast_path": fast_path},
        pg_wide,
        ("id",),
        "updated_at",
        None,
    )
    extraction = SqlConnector(request).extract()
    assert extraction.read_path == ("adbc" if fast_path == "auto" else "sqlalchemy")
    batches = iter(extraction)
    next(batches)
    pids = _backends(pg_wide)
    assert len(pids) == 1
    admin = sa.create_engine(pg_wide, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
    admin.dispose()
    with pytest.raises(SourceUnavailable) as caught:
        for _ in batches:
            pass
    assert isinstance(caught.value, TransientError)
    assert SOURCE_ID in str(caught.value)
    assert extraction.rows_read < 300_000


@pytest.mark.postgres
def test_postgres_stopping_early_ends_the_query(pg_wide: str) -> None:
    request = ExtractRequest(
        SOURCE_ID, {"table": "registry", "batch_size": 1000}, pg_wide, ("id",), "updated_at", None
    )
    extraction = SqlConnector(request).extract()
    assert extraction.read_path == "adbc"
    batches = iter(extraction)
    first = next(batches)
    assert first.num_rows == 1000
    started = time.monotonic()
    batches.close()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while _backends(pg_wide) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _backends(pg_wide) == []  # the COPY was cancelled, not read to the end
    assert [t for t in threading.enumerate() if t.name == "govx-sql-read-ahead"] == []


@pytest.mark.postgres
def test_postgres_table_dropped_before_reading_is_a_schema_error(pg_registry: str) -> None:
    request = ExtractRequest(SOURCE_ID, {"table": "registry"}, pg_registry, ("id",), None, None)
    extraction = SqlConnector(request).extract()
    assert extraction.read_path == "adbc"
    engine = sa.create_engine(pg_registry, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE registry"))
    engine.dispose()
    with pytest.raises(SourceSchemaError, match="registry"):
        list(extraction)


@pytest.mark.postgres
def test_adbc_errors_are_translated_in_the_dialect(postgres_url: str) -> None:
    dbapi = pytest.importorskip("adbc_driver_postgresql.dbapi")
    url = sa.make_url(postgres_url)
    dialect = PostgresDialect()

    def translated(uri: str, sql: str | None = None) -> Exception:
        try:
            with dbapi.connect(uri) as conn, conn.cursor() as cursor:
                cursor.execute(sql or "SELECT 1")
                cursor.fetch_arrow_table()
        except Exception as exc:
            result = translate_error(exc, SOURCE_ID, url, dialect)
            assert result is not None
            return result
        raise AssertionError("no error")

    def libpq(**parts: Any) -> str:
        return url.set(drivername="postgresql", **parts).render_as_string(hide_password=False)

    assert isinstance(translated(libpq(database="govx_no_such_db")), SourceSchemaError)
    assert isinstance(translated(libpq(port=1)), SourceUnavailable)
    assert isinstance(translated(libpq(), "SELECT * FROM govx_nowhere"), SourceSchemaError)
    assert isinstance(translated(libpq(), "SELECT 1/0"), SourceDataError)


# --- MariaDB: ConnectorX, or the server-side cursor with values parsed by Arrow ----------------

MARIADB_PATHS = ["connectorx", "sqlalchemy-text"]


@pytest.fixture
def mariadb_registry(mariadb_url: str) -> str:
    make_table(mariadb_url, MARIADB_REGISTRY, [mariadb_row(i) for i in range(1, 41)])
    return mariadb_url


@pytest.fixture(params=MARIADB_PATHS)
def mariadb_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fast path under test; ``sqlalchemy-text`` is what MariaDB gets without ConnectorX."""
    if request.param == "connectorx":
        pytest.importorskip("connectorx")
    else:
        monkeypatch.setitem(sys.modules, "connectorx", None)  # as if not installed
    return str(request.param)


@pytest.mark.mariadb
def test_mariadb_fast_path_reads_the_same_table(mariadb_registry: str, mariadb_path: str) -> None:
    fast, batches = assert_same_read(mariadb_registry, mariadb_path, batch_size=7)
    assert [b.num_rows for b in batches] == [7] * 5 + [5]
    types = {name: fast.schema.field(name).type for name in fast.schema.names}
    assert types["id"] == types["flag"] == types["household"] == pa.int64()
    assert types["area"] == pa.decimal128(12, 2)
    assert types["share"] == pa.decimal128(30, 10)
    assert types["birth_date"] == pa.date32()
    assert types["stamped_at"] == pa.timestamp("us")
    assert types["ratio"] == types["income"] == pa.float64()
    assert types["born_year"] == pa.string()
    rows = {row["id"]: row for row in pa.Table.from_batches(batches).to_pylist()}
    assert rows[4]["name"] == NAMES[4] and rows[5]["name"] is None
    assert rows[3]["name"] == NAMES[3] and rows[11]["name"] == NAMES[5]
    assert rows[5]["area"] is rows[5]["share"] is rows[5]["stamped_at"] is rows[5]["ratio"] is None
    assert rows[7]["stamped_at"] == T0 + dt.timedelta(seconds=7, microseconds=7007)
    # DATETIME keeps no fraction: MariaDB truncated the 49 microseconds on insert
    assert rows[7]["registered_at"] == T0 - dt.timedelta(days=7, seconds=1)
    assert rows[7]["area"] == decimal.Decimal("91.07")
    assert rows[7]["share"] == decimal.Decimal("0.0000000007")
    assert rows[4]["ratio"] == 1.1  # FLOAT as the server's text, not float32 widened
    assert rows[7]["born_year"] == "1957"
    assert fast.cursor_after == (T0 + dt.timedelta(minutes=20)).isoformat()


@pytest.mark.mariadb
def test_mariadb_fast_path_incremental_reads_match(
    mariadb_registry: str, mariadb_path: str
) -> None:
    full, _ = extract(mariadb_registry)
    since = (T0 + dt.timedelta(minutes=15)).isoformat()
    _, batches = assert_same_read(mariadb_registry, mariadb_path, since=since, batch_size=4)
    assert [i for b in batches for i in b.column("id").to_pylist()] == list(range(30, 41))

    # nothing newer: only the rows at the watermark, cursor unchanged
    again, batches = assert_same_read(mariadb_registry, mariadb_path, since=full.cursor_after)
    assert [i for b in batches for i in b.column("id").to_pylist()] == [40]
    assert again.cursor_after == full.cursor_after


@pytest.mark.mariadb
def test_mariadb_query_option_reads_the_same(mariadb_registry: str, mariadb_path: str) -> None:
    query = (
        "SELECT id, name, area, share, ratio, income, born_year, DATE(registered_at) AS "
        "registered_on, stamped_at, updated_at FROM registry WHERE (name LIKE '%' OR name IS NULL) "
        "AND updated_at >= '2024-03-01 08:00:00' AND code <> ':x'"
    )
    fast, _ = assert_same_read(
        mariadb_registry, mariadb_path, query=query, table=None, batch_size=6
    )
    assert fast.rows_read == 40
    since = (T0 + dt.timedelta(minutes=10)).isoformat()
    _, batches = assert_same_read(
        mariadb_registry, mariadb_path, query=query, table=None, since=since
    )
    assert batches[0].column("registered_on").type == pa.date32()
    assert [i for b in batches for i in b.column("id").to_pylist()] == list(range(20, 41))


@pytest.mark.mariadb
@pytest.mark.parametrize(
    ("cursor", "since"),
    [
        ("birth_date", dt.date(1980, 1, 1).isoformat()),
        ("area", "400.5"),
        ("stamped_at", (T0 + dt.timedelta(seconds=20, microseconds=20020)).isoformat()),
        ("name", "O'Brien; DROP TABLE registry; --"),  # a value, never SQL
        ("code", "100%' OR '1'='1"),
        ("code", "0\\' OR 1=1 -- "),
        ("household", 10_020),
    ],
)
def test_mariadb_since_is_rendered_as_a_literal_for_every_cursor_type(
    mariadb_registry: str, cursor: str, since: Any
) -> None:
    pytest.importorskip("connectorx")
    fast, _ = assert_same_read(mariadb_registry, "connectorx", since=since, cursor=cursor)
    assert fast.rows_read > 0
    assert extract(mariadb_registry)[0].rows_read == 40  # the table is still there


@pytest.mark.mariadb
def test_mariadb_since_with_no_backslash_escapes(mariadb_registry: str) -> None:
    """PyMySQL's escaping follows the server's sql_mode, which the ConnectorX session shares."""
    pytest.importorskip("connectorx")
    admin = sa.create_engine(mariadb_registry, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(
            sa.text("SET GLOBAL sql_mode = CONCAT(@@GLOBAL.sql_mode, ',NO_BACKSLASH_ESCAPES')")
        )
    try:
        since = "\\' OR 1=1 -- "
        fast, _ = assert_same_read(mariadb_registry, "connectorx", since=since, cursor="code")
        assert fast.rows_read == 0  # every code is a digit string, sorting before a backslash
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SET GLOBAL sql_mode = REPLACE(@@GLOBAL.sql_mode, 'NO_BACKSLASH_ESCAPES', '')"
                )
            )
        admin.dispose()


@pytest.mark.mariadb
def test_mariadb_columns_connectorx_cannot_reproduce_fall_back(mariadb_url: str) -> None:
    pytest.importorskip("connectorx")
    make_table(
        mariadb_url,
        "CREATE TABLE registry (id int PRIMARY KEY, opens time, tags set('a','b'), "
        "kind enum('x','y'), doc json, photo blob, big decimal(65, 5), "
        "updated_at datetime NOT NULL)",
        [],
        "INSERT INTO registry VALUES (1, '08:30:00', 'a,b', 'y', '{\"户主\": \"张三\"}', x'00ff', "
        "'99999999999999999999999999999999999999999999999999999999999.12345', "
        "'2024-03-01 08:00:00')",
    )
    assert_same_read(mariadb_url, "sqlalchemy")
    for column in ("opens", "tags", "kind"):
        assert_same_read(mariadb_url, "sqlalchemy", columns=["id", column, "updated_at"])
    assert_same_read(mariadb_url, "sqlalchemy-text", columns=["id", "photo", "updated_at"])
    # MariaDB's JSON is LONGTEXT: text on every path
    _, batches = assert_same_read(mariadb_url, "connectorx", columns=["id", "doc", "updated_at"])
    assert batches[0].column("doc").to_pylist() == ['{"户主": "张三"}']
    _, batches = assert_same_read(mariadb_url, "connectorx", columns=["id", "big", "updated_at"])
    assert batches[0].column("big").to_pylist() == [
        decimal.Decimal("99999999999999999999999999999999999999999999999999999999999.12345")
    ]


@pytest.mark.mariadb
def test_mariadb_url_options_connectorx_would_not_honour_fall_back(mariadb_registry: str) -> None:
    pytest.importorskip("connectorx")
    url = sa.make_url(mariadb_registry).update_query_dict({"read_timeout": "30"})
    extraction, _ = extract(url.render_as_string(hide_password=False))
    assert extraction.read_path == "sqlalchemy-text"
    odd = sa.URL.create("mysql+pymysql", "gov x", "p@ss/w", "db", 3307, "hukou")
    reader = MySQLDialect().arrow_reader(odd)
    assert reader is not None
    assert reader.uri == "mysql://gov%20x:p%40ss%2Fw@db:3307/hukou?tcp_connect_timeout_ms=10000"
    assert "p@ss" not in repr(reader)


@pytest.mark.mariadb
def test_mariadb_fast_path_keeps_doubles_exact(mariadb_url: str) -> None:
    make_table(
        mariadb_url,
        "CREATE TABLE registry (id int PRIMARY KEY, x double, y float, "
        "updated_at datetime NOT NULL)",
        [
            {"id": 1, "x": 1.0000000000001, "y": 1.1, "updated_at": T0},
            {"id": 2, "x": -1.5e-300, "y": 3.4e38, "updated_at": T0},
        ],
    )
    # not compared with ``fast_path: off``: SQLAlchemy reflects DOUBLE as asdecimal=True and
    # rounds to 10 decimals there (1.0000000000001 -> 1.0, -1.5e-300 -> -0.0)
    extraction, batches = extract(mariadb_url)
    assert extraction.read_path == "connectorx"
    assert batches[0].column("x").to_pylist() == [1.0000000000001, -1.5e-300]
    assert batches[0].column("y").to_pylist() == [1.1, 3.4e38]


@pytest.mark.mariadb
def test_mariadb_unparsable_date_is_a_data_error(mariadb_url: str) -> None:
    engine = sa.create_engine(mariadb_url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("SET SESSION sql_mode = ''"))
        conn.execute(sa.text("CREATE TABLE registry (id int PRIMARY KEY, d date, updated_at date)"))
        conn.execute(sa.text("INSERT INTO registry VALUES (1, '0000-00-00', '2024-01-01')"))
    engine.dispose()
    for fast_path in ("auto", "off"):
        with pytest.raises(SourceDataError, match="'d'"):
            extract(mariadb_url, fast_path=fast_path)


def _mariadb_sessions(url: str) -> list[int]:
    """Ids of the other sessions running a statement on the test database (the extraction)."""
    database = sa.make_url(url).database
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        ids = conn.execute(
            sa.text(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = :db "
                "AND ID <> CONNECTION_ID() AND COMMAND <> 'Sleep'"
            ),
            {"db": database},
        )
        found = [row[0] for row in ids]
    engine.dispose()
    return found


@pytest.fixture
def mariadb_wide(mariadb_url: str) -> str:
    """~180 MB of rows: many driver batches, so a stream is still running after the first."""
    make_table(
        mariadb_url,
        "CREATE TABLE registry (id bigint PRIMARY KEY, address varchar(200), "
        "updated_at datetime NOT NULL) CHARACTER SET utf8mb4",
        [],
        "INSERT INTO registry SELECT seq, REPEAT('地址', 100), "
        "TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_300000",
    )
    return mariadb_url


@pytest.mark.mariadb
def test_mariadb_connectorx_batch_sizes_and_early_stop(mariadb_wide: str) -> None:
    pytest.importorskip("connectorx")
    extraction, batches = extract(mariadb_wide, batch_size=70_000)
    assert extraction.read_path == "connectorx"
    assert [b.num_rows for b in batches] == [70_000] * 4 + [20_000]
    ids = pa.chunked_array([b.column("id") for b in batches])
    assert ids.to_pylist() == list(range(1, 300_001))
    assert extraction.cursor_after == "2024-01-04T11:20:00"

    request = ExtractRequest(
        SOURCE_ID, {"table": "registry", "batch_size": 1000}, mariadb_wide, ("id",), None, None
    )
    stream = iter(SqlConnector(request).extract())
    assert next(stream).num_rows == 1000
    started = time.monotonic()
    stream.close()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while _mariadb_sessions(mariadb_wide) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _mariadb_sessions(mariadb_wide) == []  # the connection was dropped, not read to the end
    assert [t for t in threading.enumerate() if t.name == "govx-sql-read-ahead"] == []


@pytest.mark.mariadb
def test_mariadb_connectorx_connection_killed_mid_stream_is_transient(mariadb_wide: str) -> None:
    pytest.importorskip("connectorx")
    request = ExtractRequest(
        SOURCE_ID, {"table": "registry", "batch_size": 1000}, mariadb_wide, ("id",), None, None
    )
    extraction = SqlConnector(request).extract()
    assert extraction.read_path == "connectorx"
    batches = iter(extraction)
    next(batches)
    sessions = _mariadb_sessions(mariadb_wide)
    assert len(sessions) == 1
    admin = sa.create_engine(mariadb_wide, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f"KILL {int(sessions[0])}"))
    admin.dispose()
    with pytest.raises(SourceUnavailable) as caught:
        for _ in batches:
            pass
    assert isinstance(caught.value, TransientError)
    assert SOURCE_ID in str(caught.value)
    assert extraction.rows_read < 300_000


@pytest.mark.mariadb
def test_mariadb_table_dropped_before_reading_is_a_schema_error(mariadb_registry: str) -> None:
    pytest.importorskip("connectorx")
    request = ExtractRequest(
        SOURCE_ID, {"table": "registry"}, mariadb_registry, ("id",), None, None
    )
    extraction = SqlConnector(request).extract()
    assert extraction.read_path == "connectorx"
    engine = sa.create_engine(mariadb_registry, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE registry"))
    engine.dispose()
    with pytest.raises(SourceSchemaError, match="registry"):
        list(extraction)


@pytest.mark.mariadb
def test_connectorx_errors_are_translated_in_the_dialect(mariadb_registry: str) -> None:
    pytest.importorskip("connectorx")
    url = sa.make_url(mariadb_registry)
    dialect = MySQLDialect()
    schema = pa.schema([pa.field("x", pa.int64())])

    def translated(target: sa.URL, sql: str) -> Exception:
        reader = dialect.arrow_reader(target)
        assert reader is not None
        try:
            list(reader.batches(sql, schema, 10))
        except Exception as exc:
            result = translate_error(exc, SOURCE_ID, url, dialect)
            assert result is not None, exc
            return result
        raise AssertionError("no error")

    assert isinstance(translated(url, "SELECT x FROM govx_nowhere"), SourceSchemaError)
    assert isinstance(translated(url, "SELECT nocol AS x FROM registry"), SourceSchemaError)
    assert isinstance(translated(url, "SELEC 1"), SourceQueryError)
    # ConnectorX's pool retries a refused connection for 30 s before it gives up
    assert isinstance(translated(url.set(port=1), "SELECT 1 AS x"), SourceUnavailable)


# --- options and the building blocks ----------------------------------------------------------


def test_fast_path_option_is_checked() -> None:
    request = ExtractRequest(
        SOURCE_ID, {"table": "registry", "fast_path": "always"}, "sqlite://", ("id",), None, None
    )
    with pytest.raises(ConnectorOptionError) as caught:
        SqlConnector(request)
    assert caught.value.option == "fast_path"


def test_sqlite_has_no_fast_path(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    make_table(
        url, "CREATE TABLE registry (id INTEGER PRIMARY KEY, updated_at TIMESTAMP)", [{"id": 1}]
    )
    extraction, _ = extract(url)
    assert extraction.read_path == "sqlalchemy"


def _batch(ids: range) -> pa.RecordBatch:
    return pa.record_batch([pa.array(list(ids), pa.int64())], names=["id"])


def test_rebatched_cuts_any_stream_to_the_requested_size() -> None:
    stream = [_batch(range(0, 3)), _batch(range(3, 3)), _batch(range(3, 13)), _batch(range(13, 14))]
    cut = list(rebatched(stream, 4))
    assert [b.num_rows for b in cut] == [4, 4, 4, 2]
    assert [i for b in cut for i in b.column(0).to_pylist()] == list(range(14))
    assert list(rebatched([], 4)) == []


def test_conformed_casts_to_the_schema_or_says_which_column() -> None:
    schema = pa.schema([pa.field("n", pa.int64(), metadata={"sql_type": "SMALLINT"})])
    batch = pa.record_batch([pa.array([1, None], pa.int16())], names=["n"])
    assert conformed(batch, schema).schema.equals(schema, check_metadata=True)
    text = pa.record_batch([pa.array(["1.5"])], names=["n"])
    with pytest.raises(ValueError, match="column 'n'"):
        conformed(text, schema)


def test_read_ahead_hands_over_items_and_errors() -> None:
    def items() -> Iterator[int]:
        yield from range(5)
        raise OSError("connection lost")

    received = []
    with pytest.raises(OSError, match="connection lost"):
        for item in read_ahead(items(), cancel=lambda: None):
            received.append(item)
    assert received == list(range(5))


def test_read_ahead_cancels_and_joins_when_the_consumer_stops() -> None:
    release = threading.Event()
    cancelled = []

    def items() -> Iterator[int]:
        yield 1
        release.wait(5)  # a driver blocked in a read until the query is cancelled
        yield 2

    def cancel() -> None:
        cancelled.append(True)
        release.set()

    reader = read_ahead(items(), cancel=cancel)
    assert next(reader) == 1
    reader.close()
    assert cancelled == [True]
    assert [t for t in threading.enumerate() if t.name == "govx-sql-read-ahead"] == []
