"""Benchmark the ``sql`` connector's extract-and-land against raw dumps and pandas, in one run.

    .venv/bin/python bench/extract.py [--rows 1000000] [--rounds 3] [--memory-rows 5000000]
                                      [--databases postgres,mariadb]

For each database a scratch database gets a registry-like ``persons`` table (filled in SQL:
``generate_series`` on PostgreSQL, the ``seq_1_to_N`` sequence engine on MariaDB), then the same
``SELECT * FROM persons ORDER BY updated_at, id`` is read three ways, interleaved, ``--rounds``
times (the best round of each counts: the machine is shared and noisy):

- raw dump, discarded: PostgreSQL ``COPY (SELECT ...) TO STDOUT`` through psycopg into /dev/null;
  MariaDB ``mariadb --batch --quick -e "SELECT ..." > /dev/null`` (the Debian client)
- ``pandas.read_sql`` + ``DataFrame.to_parquet``
- the ``sql`` connector (``fast_path: auto``) + ``exchange.lake.LandingWriter``: the real landing

Figures are rows/s and the connector's ratios to both baselines (issue 3 asks for >= 0.7x the raw
dump and >= 4x pandas). ``--memory-rows N`` then extracts and lands an N-row table in a fresh child
process and reports its peak RSS (target: under 500 MB for 5,000,000 rows). The child reads its own
``VmHWM`` from ``/proc/self/status``: ``ru_maxrss`` of ``RUSAGE_CHILDREN`` (or ``wait4``) is no use
here, because Linux carries the parent's high-water mark into a child started by vfork + exec, so
it reports this process's pandas peak instead. The scratch databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from connectors.sql import SqlExtraction

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MARIADB_ADMIN = "mysql+pymysql://root@127.0.0.1:3306/"
QUERY = "SELECT * FROM persons ORDER BY updated_at, id"
MEMORY_LIMIT_MB = 500

PG_TABLE = """
CREATE TABLE persons (
    id bigint PRIMARY KEY,
    id_number varchar(18) NOT NULL,
    name varchar(50) NOT NULL,
    gender char(1),
    birth_date date NOT NULL,
    region_code char(6) NOT NULL,
    address varchar(200),
    household_no varchar(20),
    registered_on date,
    living_area numeric(10, 2),
    income double precision,
    status smallint NOT NULL,
    updated_at timestamp NOT NULL
);
INSERT INTO persons
SELECT i,
    '440105' || to_char(date '1950-01-01' + i % 20000, 'YYYYMMDD') || lpad((i % 1000)::text, 3, '0')
        || (i % 10)::text,
    (ARRAY['张', '李', '王', '赵', '欧阳', '司马', '陈', '林'])[1 + i % 8]
        || (ARRAY['三', '四', '小明', '敏', '娜娜', '光', '奕迅', '心如'])[1 + (i / 8) % 8],
    CASE WHEN i % 2 = 0 THEN 'F' ELSE 'M' END,
    date '1950-01-01' + i % 20000,
    (ARRAY['440105', '440106', '440111', '440303'])[1 + i % 4],
    CASE WHEN i % 17 = 0 THEN NULL
        ELSE '广东省广州市海珠区新港西路' || (i % 500)::text || '号' || (i % 30)::text || '栋' END,
    'HH' || lpad((i / 3)::text, 10, '0'),
    CASE WHEN i % 11 = 0 THEN NULL ELSE date '2000-01-01' + i % 8000 END,
    CASE WHEN i % 13 = 0 THEN NULL ELSE ((i % 20000) / 100.0)::numeric(10, 2) END,
    (i % 9973) * 1.25,
    (i % 3)::smallint,
    timestamp '2024-01-01' + i * interval '1 second'
FROM generate_series(1, {rows}) AS i;
CREATE INDEX persons_cursor ON persons (updated_at, id);
ANALYZE persons;
"""

MARIADB_TABLE = """
CREATE TABLE persons (
    id bigint PRIMARY KEY,
    id_number varchar(18) NOT NULL,
    name varchar(50) NOT NULL,
    gender char(1),
    birth_date date NOT NULL,
    region_code char(6) NOT NULL,
    address varchar(200),
    household_no varchar(20),
    registered_on date,
    living_area decimal(10, 2),
    income double,
    status smallint NOT NULL,
    updated_at datetime NOT NULL,
    KEY persons_cursor (updated_at, id)
) CHARACTER SET utf8mb4;
INSERT INTO persons
SELECT seq,
    CONCAT('440105', DATE_FORMAT(DATE '1950-01-01' + INTERVAL (seq % 20000) DAY, '%Y%m%d'),
        LPAD(seq % 1000, 3, '0'), seq % 10),
    CONCAT(ELT(1 + seq % 8, '张', '李', '王', '赵', '欧阳', '司马', '陈', '林'),
        ELT(1 + (seq DIV 8) % 8, '三', '四', '小明', '敏', '娜娜', '光', '奕迅', '心如')),
    IF(seq % 2 = 0, 'F', 'M'),
    DATE '1950-01-01' + INTERVAL (seq % 20000) DAY,
    ELT(1 + seq % 4, '440105', '440106', '440111', '440303'),
    IF(seq % 17 = 0, NULL, CONCAT('广东省广州市海珠区新港西路', seq % 500, '号', seq % 30, '栋')),
    CONCAT('HH', LPAD(seq DIV 3, 10, '0')),
    IF(seq % 11 = 0, NULL, DATE '2000-01-01' + INTERVAL (seq % 8000) DAY),
    IF(seq % 13 = 0, NULL, (seq % 20000) / 100),
    (seq % 9973) * 1.25,
    seq % 3,
    TIMESTAMP '2024-01-01 00:00:00' + INTERVAL seq SECOND
FROM seq_1_to_{rows};
ANALYZE TABLE persons;
"""


@dataclass(frozen=True)
class Scratch:
    """A scratch database on one server: where it is and how to dump it raw."""

    backend: str  # postgres | mariadb
    name: str
    url: str  # SQLAlchemy URL (with the driver the connector uses)

    @property
    def label(self) -> str:
        return "PostgreSQL" if self.backend == "postgres" else "MariaDB"

    @property
    def raw_label(self) -> str:
        if self.backend == "postgres":
            return "COPY TO STDOUT"
        return "mariadb -e"


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _admin(url: str) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@contextmanager
def scratch_database(backend: str) -> Iterator[Scratch]:
    """Create an empty scratch database; drop it afterwards, whatever happens."""
    name = f"govx_bench_{uuid.uuid4().hex[:8]}"
    admin = _admin(PG_ADMIN if backend == "postgres" else MARIADB_ADMIN)
    if backend == "postgres":
        create = f"CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"
        drop = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        create = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        drop = f"DROP DATABASE IF EXISTS `{name}`"
    with admin.connect() as conn:
        conn.execute(sa.text(create))
    url = admin.url.set(database=name)
    if backend == "mariadb":
        url = url.update_query_dict({"charset": "utf8mb4"})
    try:
        yield Scratch(backend, name, url.render_as_string(hide_password=False))
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(drop))
        admin.dispose()


def fill(scratch: Scratch, rows: int) -> float:
    """Create and fill ``persons`` with ``rows`` rows, in SQL; return the seconds it took."""
    if scratch.backend == "postgres":
        import psycopg

        def run() -> None:
            statements = PG_TABLE.format(rows=rows).split(";\n")
            with psycopg.connect(_libpq(scratch), autocommit=True) as conn:
                for statement in filter(str.strip, statements):
                    conn.execute(statement.encode())  # our own constant DDL, no values

        return timed(run)
    script = MARIADB_TABLE.format(rows=rows).encode()
    return timed(
        lambda: subprocess.run(
            _mariadb_cli(scratch), input=script, stdout=subprocess.DEVNULL, check=True
        )
    )


def _libpq(scratch: Scratch) -> str:
    return sa.make_url(scratch.url).set(drivername="postgresql").render_as_string(False)


def _mariadb_cli(scratch: Scratch) -> list[str]:
    return ["mariadb", "-h", "127.0.0.1", "-P", "3306", "-u", "root", scratch.name]


def raw_dump(scratch: Scratch) -> None:
    """Baseline: the server's own dump of the SELECT, thrown away."""
    if scratch.backend == "postgres":
        import psycopg
        from psycopg import sql

        copy = sql.SQL("COPY ({}) TO STDOUT").format(sql.SQL(QUERY))
        with (
            psycopg.connect(_libpq(scratch)) as conn,
            conn.cursor() as cursor,
            open(os.devnull, "wb") as sink,
            cursor.copy(copy) as stream,
        ):
            for chunk in stream:
                sink.write(chunk)
        return
    with open(os.devnull, "wb") as sink:
        command = [*_mariadb_cli(scratch), "--batch", "--quick", "-e", QUERY]
        subprocess.run(command, stdout=sink, check=True)


def pandas_to_parquet(scratch: Scratch, folder: Path) -> None:
    """Baseline: what a script would do: ``read_sql`` into a DataFrame, then ``to_parquet``."""
    import pandas as pd

    engine = sa.create_engine(scratch.url, poolclass=sa.pool.NullPool)
    try:
        frame = pd.read_sql(QUERY, engine)
    finally:
        engine.dispose()
    frame.to_parquet(folder / "pandas.parquet")


def _extraction(url: str, batch_size: int) -> SqlExtraction:
    from connectors.base import ExtractRequest
    from connectors.sql import SqlConnector

    request = ExtractRequest(
        source_id="bench_persons",
        options={"table": "persons", "batch_size": batch_size},
        url=url,
        primary_key=("id",),
        cursor_column="updated_at",
        since=None,
    )
    return SqlConnector(request).extract()


def connector_only(url: str, batch_size: int) -> tuple[int, str]:
    """The connector's batches, thrown away: how much of the landing time is extraction."""
    extraction = _extraction(url, batch_size)
    for _ in extraction:
        pass
    return extraction.rows_read, extraction.read_path


def connector_landing(url: str, lake: Path, batch_size: int) -> tuple[int, str]:
    """The real thing: the ``sql`` connector's batches written by the lake's LandingWriter."""
    from exchange.lake import LandingWriter

    extraction = _extraction(url, batch_size)
    run_id = uuid.uuid4().hex[:8]
    writer = LandingWriter("bench_persons", run_id, extraction.schema, lake=lake)
    for batch in extraction:
        writer.write(batch)
    manifest = writer.close(None, extraction.cursor_after)
    shutil.rmtree(writer.final_dir)
    return manifest.rows, extraction.read_path


def compare(scratch: Scratch, rows: int, rounds: int, batch_size: int, work: Path) -> None:
    """Measure the ways interleaved; print the best round of each and the ratios."""
    best = dict.fromkeys(("raw", "pandas", "extract", "connector"), float("inf"))
    path = ""
    for round_no in range(1, rounds + 1):
        seconds = {
            "raw": timed(lambda: raw_dump(scratch)),
            "pandas": timed(lambda: pandas_to_parquet(scratch, work)),
        }
        start = time.perf_counter()
        extracted, _ = connector_only(scratch.url, batch_size)
        seconds["extract"] = time.perf_counter() - start
        start = time.perf_counter()
        landed, path = connector_landing(scratch.url, work / "lake", batch_size)
        seconds["connector"] = time.perf_counter() - start
        assert landed == extracted == rows, f"read {extracted}/{landed} rows, expected {rows}"
        for key, value in seconds.items():
            best[key] = min(best[key], value)
        figures = ", ".join(f"{key} {rows / value:,.0f}" for key, value in seconds.items())
        print(f"  round {round_no}: {figures} rows/s", flush=True)
    rate = {key: rows / value for key, value in best.items()}
    print(f"\n  {'method':<50}{'rows/s':>12}{'seconds':>9}")
    names = {
        "raw": f"raw {scratch.raw_label} -> /dev/null",
        "pandas": "pandas.read_sql + to_parquet",
        "extract": f"sql connector ({path}), batches discarded",
        "connector": f"sql connector ({path}) + LandingWriter",
    }
    for key, name in names.items():
        print(f"  {name:<50}{rate[key]:>12,.0f}{best[key]:>9.2f}")
    print(
        f"\n  {scratch.label}: connector / raw dump = {rate['connector'] / rate['raw']:.2f}x "
        f"(target >= 0.70x); connector / pandas = {rate['connector'] / rate['pandas']:.2f}x "
        f"(target >= 4x); extraction alone / raw dump = {rate['extract'] / rate['raw']:.2f}x\n",
        flush=True,
    )


def peak_rss_mb(url: str, work: Path, batch_size: int) -> tuple[float, str]:
    """Extract and land in a child process; its peak RSS in MB and what it said."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child-extract",
        url,
        "--batch-size",
        str(batch_size),
        "--work",
        str(work),
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the extraction child failed ({done.returncode}): {done.stderr}")
    said, peak_kb = done.stdout.strip().rsplit(" ", 1)
    return int(peak_kb) / 1024, said


def child_extract(url: str, work: Path, batch_size: int) -> None:
    landed, path = connector_landing(url, work / "lake-memory", batch_size)
    print(f"{landed:,} rows through {path}; VmHWM kB {_own_peak_rss_kb()}")


def _own_peak_rss_kb() -> int:
    """This process's peak resident set since its exec (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=5000, help="the connector's batch_size")
    parser.add_argument("--memory-rows", type=int, default=0, help="e.g. 5000000; 0 skips it")
    parser.add_argument("--databases", default="postgres,mariadb")
    parser.add_argument("--child-extract", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child_extract:
        child_extract(args.child_extract, args.work, args.batch_size)
        return

    work = Path(tempfile.mkdtemp(prefix="govx-bench-extract-"))
    try:
        for backend in args.databases.split(","):
            with scratch_database(backend) as scratch:
                print(f"{scratch.label}: filling {args.rows:,} rows ...", flush=True)
                print(f"  filled in {fill(scratch, args.rows):.1f} s", flush=True)
                compare(scratch, args.rows, args.rounds, args.batch_size, work)
            if args.memory_rows:
                with scratch_database(backend) as scratch:
                    print(f"{scratch.label}: filling {args.memory_rows:,} rows ...", flush=True)
                    print(f"  filled in {fill(scratch, args.memory_rows):.1f} s", flush=True)
                    start = time.perf_counter()
                    peak, said = peak_rss_mb(scratch.url, work, args.batch_size)
                    seconds = time.perf_counter() - start
                    verdict = "under" if peak < MEMORY_LIMIT_MB else "OVER"
                    print(
                        f"  child process: {said.split(';')[0]} in {seconds:.1f} s "
                        f"({args.memory_rows / seconds:,.0f} rows/s); peak RSS {peak:,.0f} MB "
                        f"({verdict} the {MEMORY_LIMIT_MB} MB target)\n",
                        flush=True,
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("rows/s = source rows per second (best of the rounds); ratio = connector / baseline")


if __name__ == "__main__":
    main()
