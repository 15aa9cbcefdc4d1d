"""The ``sql`` connector on real SQLite, PostgreSQL and MariaDB: incremental reads and errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlalchemy as sa

from connectors.base import Extraction, ExtractRequest
from connectors.errors import (
    ConnectorError,
    ConnectorOptionError,
    SourceAuthError,
    SourceSchemaError,
    SourceUnavailable,
    TerminalError,
    TransientError,
)
from connectors.registry import connector_class
from connectors.sql import SqlConnector, SqlExtraction

SOURCE_ID = "test_household_registry"
T0 = dt.datetime(2024, 3, 1, 8, 0, 0)
NAMES = [
    "张三",
    "李四",
    "王小明",
    "赵敏",
    "欧阳娜娜",
    "司马光",
    "陈奕迅",
    "林心如",
    "黄飞鸿",
    "周杰伦",
    "吴彦祖",
    "郑秀文",
]

metadata = sa.MetaData()
persons = sa.Table(
    "persons",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("id_number", sa.String(18), nullable=False),
    sa.Column("name", sa.String(50), nullable=False),
    sa.Column("birth_date", sa.Date, nullable=False),
    sa.Column("updated_at", sa.TIMESTAMP, nullable=False),
)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'department.db'}"


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def db_url(request: pytest.FixtureRequest) -> str:
    """One test body, three real databases."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def person(i: int, updated_at: dt.datetime) -> dict[str, Any]:
    return {
        "id": i,
        "id_number": f"4401051990010{i:04d}X"[:18],
        "name": NAMES[(i - 1) % len(NAMES)],
        "birth_date": dt.date(1980 + i % 20, 1 + i % 12, 1 + i % 28),
        "updated_at": updated_at,
    }


def insert_people(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(persons.insert(), rows)


def extract(
    url: str, since: Any = None, **options: Any
) -> tuple[SqlExtraction, list[pa.RecordBatch]]:
    request = ExtractRequest(
        source_id=SOURCE_ID,
        options=options or {"table": "persons"},
        url=url,
        primary_key=("id",),
        cursor_column="updated_at",
        since=since,
    )
    extraction = connector_class("sql")(request).extract()
    assert isinstance(extraction, SqlExtraction)
    assert isinstance(extraction, Extraction)
    return extraction, list(extraction)


def ids(batches: list[pa.RecordBatch]) -> list[int]:
    return [i for batch in batches for i in batch.column("id").to_pylist()]


def stored(db_url: str, value: dt.date) -> object:
    """How a date or timestamp comes back: typed from servers, as its stored text from SQLite
    (which keeps dates as text; a bad value is then one row's problem, not the run's)."""
    if not db_url.startswith("sqlite"):
        return value
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value.isoformat()


def watermark(db_url: str, value: dt.datetime) -> str:
    """The cursor a run reports for a timestamp: ISO from servers, the stored text from SQLite."""
    text = stored(db_url, value)
    return text if isinstance(text, str) else value.isoformat()


def test_incremental_extract(engine: sa.Engine, db_url: str) -> None:
    insert_people(engine, [person(i, T0 + dt.timedelta(minutes=i)) for i in range(1, 13)])
    sqlite = db_url.startswith("sqlite")

    # full refresh: every row, in batches of the configured size, typed, Chinese intact
    first, batches = extract(db_url, table="persons", batch_size=5)
    assert [b.num_rows for b in batches] == [5, 5, 2]
    assert first.rows_read == 12
    assert first.schema.field("id").type == pa.int64()
    assert first.schema.field("id_number").type == pa.string()
    assert first.schema.field("name").type == pa.string()
    assert first.schema.field("birth_date").type == (pa.string() if sqlite else pa.date32())
    assert first.schema.field("updated_at").type == (pa.string() if sqlite else pa.timestamp("us"))
    assert all(b.schema == first.schema for b in batches)
    table = pa.Table.from_batches(batches)
    assert table.column("id").to_pylist() == list(range(1, 13))
    assert table.column("name").to_pylist() == NAMES
    assert table.column("birth_date").to_pylist()[0] == stored(db_url, person(1, T0)["birth_date"])
    assert table.column("updated_at").to_pylist()[-1] == stored(
        db_url, T0 + dt.timedelta(minutes=12)
    )
    assert first.cursor_after == watermark(db_url, T0 + dt.timedelta(minutes=12))
    since = json.loads(json.dumps(first.cursor_after))  # what a state store would give back

    # nothing changed: only the row at the watermark is read again, cursor unchanged
    second, batches = extract(db_url, since=since, table="persons", batch_size=5)
    assert ids(batches) == [12]
    assert second.rows_read == 1
    assert second.cursor_after == since
    assert second.schema == first.schema

    # two updates and two inserts: exactly those, oldest change first
    later = T0 + dt.timedelta(days=1)
    with engine.begin() as conn:
        for i, minutes in ((3, 2), (7, 1)):
            conn.execute(
                persons.update()
                .where(persons.c.id == i)
                .values(
                    name=f"{NAMES[i - 1]}（改名）",
                    updated_at=later + dt.timedelta(minutes=minutes),
                )
            )
    insert_people(engine, [person(13, later), person(14, later + dt.timedelta(minutes=3))])
    third, batches = extract(db_url, since=since, table="persons", batch_size=5)
    assert ids(batches) == [12, 13, 7, 3, 14]
    assert third.rows_read == 5
    assert pa.Table.from_batches(batches).column("name").to_pylist()[2:4] == [
        "陈奕迅（改名）",
        "王小明（改名）",
    ]
    assert third.cursor_after == watermark(db_url, later + dt.timedelta(minutes=3))


def test_a_row_committed_later_at_the_watermark_is_not_lost(engine: sa.Engine, db_url: str) -> None:
    insert_people(engine, [person(i, T0 + dt.timedelta(minutes=i)) for i in range(1, 4)])
    first, _ = extract(db_url, table="persons")
    # a transaction that stamped its row with the same second commits after the run
    insert_people(engine, [person(4, T0 + dt.timedelta(minutes=3))])
    second, batches = extract(db_url, since=first.cursor_after, table="persons")
    assert ids(batches) == [3, 4]
    assert second.cursor_after == first.cursor_after


def test_query_option_wraps_a_select(engine: sa.Engine, db_url: str) -> None:
    insert_people(engine, [person(i, T0 + dt.timedelta(minutes=i)) for i in range(1, 7)])
    query = (
        "SELECT id, name, birth_date, updated_at FROM persons "
        "WHERE name <> '张三' AND name LIKE '%' AND updated_at >= '2024-03-01 08:00:00';"
    )
    full, batches = extract(db_url, query=query, batch_size=2)
    assert ids(batches) == [2, 3, 4, 5, 6]
    assert [b.num_rows for b in batches] == [2, 2, 1]
    assert full.schema.names == ["id", "name", "birth_date", "updated_at"]
    assert full.schema.field("id").type == pa.int64()
    sqlite = db_url.startswith("sqlite")
    assert full.schema.field("birth_date").type == (pa.string() if sqlite else pa.date32())
    assert full.schema.field("updated_at").type == (pa.string() if sqlite else pa.timestamp("us"))

    since = watermark(db_url, T0 + dt.timedelta(minutes=4))
    incremental, batches = extract(db_url, since=since, query=query)
    assert ids(batches) == [4, 5, 6]  # the row at the watermark is read again
    assert incremental.cursor_after == watermark(db_url, T0 + dt.timedelta(minutes=6))


def test_columns_option_and_date_cursor(engine: sa.Engine, db_url: str) -> None:
    insert_people(engine, [person(i, T0) for i in range(1, 5)])
    request = ExtractRequest(
        source_id=SOURCE_ID,
        options={"table": "persons", "columns": ["id", "birth_date"]},
        url=db_url,
        primary_key=("id",),
        cursor_column="birth_date",
        since=None,
    )
    extraction = SqlConnector(request).extract()
    batches = list(extraction)
    assert extraction.schema.names == ["id", "birth_date"]
    newest = max(person(i, T0)["birth_date"] for i in range(1, 5))
    assert extraction.cursor_after == newest.isoformat()

    again = SqlConnector(
        ExtractRequest(**{**request.__dict__, "since": extraction.cursor_after})
    ).extract()
    again_ids = [i for b in again for i in b.column("id").to_pylist()]
    assert again.cursor_after == newest.isoformat()
    at_watermark = [i for i in range(1, 5) if person(i, T0)["birth_date"] == newest]
    assert again_ids == at_watermark  # only the rows at the watermark, read again
    assert sum(b.num_rows for b in batches) == 4


def test_empty_table_still_has_a_schema(engine: sa.Engine, db_url: str) -> None:
    extraction, batches = extract(db_url)
    assert batches == []
    assert extraction.schema.names == ["id", "id_number", "name", "birth_date", "updated_at"]
    assert extraction.cursor_after is None


def test_missing_table_is_a_terminal_schema_error(engine: sa.Engine, db_url: str) -> None:
    with pytest.raises(SourceSchemaError) as caught:
        extract(db_url, table="no_such_table")
    assert isinstance(caught.value, TerminalError)
    assert caught.value.source_id == SOURCE_ID
    assert SOURCE_ID in str(caught.value) and "no_such_table" in str(caught.value)


def test_missing_column_is_a_schema_error_naming_it(engine: sa.Engine, db_url: str) -> None:
    with pytest.raises(SourceSchemaError, match="'gender'"):
        extract(db_url, table="persons", columns=["id", "updated_at", "gender"])
    with pytest.raises(SourceSchemaError, match="no_such_column"):
        extract(db_url, query="SELECT id, updated_at, no_such_column FROM persons")


def test_query_on_missing_table_is_a_schema_error(engine: sa.Engine, db_url: str) -> None:
    with pytest.raises(SourceSchemaError, match="nowhere"):
        extract(db_url, query="SELECT * FROM nowhere")


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql+psycopg://postgres:s3cret-pw@127.0.0.1:1/postgres", id="postgres"),
        pytest.param("mysql+pymysql://root:s3cret-pw@127.0.0.1:1/govx", id="mariadb"),
    ],
)
def test_unreachable_server_is_transient(url: str) -> None:
    with pytest.raises(SourceUnavailable) as caught:
        extract(url)
    assert isinstance(caught.value, TransientError)
    assert SOURCE_ID in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in repr(caught.value)


@pytest.mark.mariadb
def test_bad_credentials_are_terminal(mariadb_url: str) -> None:
    url = sa.make_url(mariadb_url).set(username="govx_nobody", password="s3cret-pw")
    with pytest.raises(SourceAuthError) as caught:
        extract(url.render_as_string(hide_password=False))
    assert isinstance(caught.value, TerminalError)
    assert "govx_nobody" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


def test_sqlite_garbage_in_a_date_column_is_a_row_problem_not_a_failed_run(
    sqlite_url: str,
) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE persons (id INTEGER PRIMARY KEY, updated_at TIMESTAMP)"))
        conn.execute(sa.text("INSERT INTO persons VALUES (1, '2024-03-01 08:00:00'), (2, 'soon')"))
    extraction, batches = extract(sqlite_url)
    assert pa.Table.from_batches(batches).column("updated_at").to_pylist() == [
        "2024-03-01 08:00:00",
        "soon",
    ]
    # the stray text does not become the watermark (it would sort after every later date)
    assert extraction.cursor_after == "2024-03-01 08:00:00"
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO persons VALUES (3, '2024-03-02 09:00:00')"))
    _, batches = extract(sqlite_url, since=extraction.cursor_after)
    assert ids(batches) == [1, 3, 2]  # the new row is found; the stray one is simply read again


def test_sqlite_text_columns_stay_strings(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE persons (id INTEGER PRIMARY KEY, code TEXT, updated_at TEXT)")
        )
        conn.execute(sa.text("INSERT INTO persons VALUES (1, '007', '2024-03-01T08:00:00')"))
    extraction, batches = extract(sqlite_url)
    assert extraction.schema.field("code").type == pa.string()
    assert batches[0].column("code").to_pylist() == ["007"]
    assert extraction.cursor_after == "2024-03-01T08:00:00"
    _, batches = extract(sqlite_url, since=extraction.cursor_after)
    assert ids(batches) == [1]  # the row at the watermark, compared as text


@pytest.mark.parametrize(
    ("options", "option"),
    [
        ({"table": "persons", "tabel": "x"}, "tabel"),
        ({}, "table"),
        ({"table": "persons", "query": "SELECT 1"}, "query"),
        ({"query": "DELETE FROM persons"}, "query"),
        ({"query": "SELECT 1; DROP TABLE persons"}, "query"),
        ({"query": "SELECT * FROM persons", "schema": "public"}, "schema"),
        ({"table": "persons", "batch_size": 0}, "batch_size"),
        ({"table": "persons", "batch_size": "many"}, "batch_size"),
        ({"table": "persons", "columns": ["name"]}, "columns"),
    ],
)
def test_bad_options_are_rejected_before_connecting(options: dict[str, Any], option: str) -> None:
    request = ExtractRequest(
        source_id=SOURCE_ID,
        options=options,
        url="postgresql+psycopg://nobody:s3cret-pw@127.0.0.1:1/none",
        primary_key=("id",),
        cursor_column="updated_at",
        since=None,
    )
    with pytest.raises(ConnectorOptionError) as caught:
        SqlConnector(request)
    assert caught.value.option == option
    assert f"'{option}'" in str(caught.value)
    assert isinstance(caught.value, TerminalError)


def test_request_repr_hides_the_url() -> None:
    url = "postgresql+psycopg://u:s3cret-pw@h/db"
    request = ExtractRequest(SOURCE_ID, {}, url, ("id",), None, None)
    assert "s3cret-pw" not in repr(request)


def test_extraction_is_read_once(sqlite_url: str) -> None:
    sa.create_engine(sqlite_url).connect().close()
    metadata.create_all(sa.create_engine(sqlite_url))
    extraction, _ = extract(sqlite_url)
    with pytest.raises(RuntimeError):
        list(extraction)


def test_every_connector_error_names_its_source() -> None:
    error = ConnectorError("some_source", "because")
    assert str(error) == "source 'some_source': because"
