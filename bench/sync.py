"""Benchmark one sync of the household registry against raw baselines, in one run.

    .venv/bin/python bench/sync.py [--persons 100000]

Stages and their baselines, on the same SQLite department database:

- land: the SQL connector + Parquet landing, against sqlite3 fetchall -> Arrow -> one Parquet file
- publish: quality gate + merge into the curated dataset + commit, against DuckDB copying the
  landed Parquet to one new Parquet file (no gate, no keys, no hashes)
- licenses: derivation + upsert into the license library, against one executemany INSERT of the
  same licenses into a bare SQLite table (no versions, no history, no index)
- re-publish: a full refresh of the unchanged table (every row compared, nothing written),
  against the same DuckDB copy

Figures are printed as rows/s and as ratios against the baseline measured in the same run (the
machine is shared and noisy; compare ratios, not absolute numbers).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=int, default=100_000)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="govx-bench-"))
    os.environ["GOVX_HOME"] = str(work / "home")
    os.environ["GOVX_CONFIG"] = str(REPO / "config")

    from exchange.config import load_deployment
    from exchange.demo import connection_env, generate_department_systems
    from exchange.sync import SyncContext, land, publish, publish_licenses

    systems, gen_s = timed(
        lambda: generate_department_systems(work / "departments", persons=args.persons)
    )
    os.environ.update(connection_env(systems))
    household = next(s for s in systems if s.source_id == "gd_household_registry")
    db_path = household.url.removeprefix("sqlite:///")
    rows = household.rows
    print(f"generated {args.persons:,} persons in {gen_s:.1f} s; persons table: {rows:,} rows")

    def raw_extract() -> int:
        with sqlite3.connect(db_path) as conn:
            cursor = conn.execute("SELECT * FROM persons ORDER BY updated_at, person_id")
            names = [d[0] for d in cursor.description]
            data = cursor.fetchall()
        table = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in data])
        pq.write_table(table, work / "raw.parquet", compression="zstd")
        return table.num_rows

    _, raw_land_s = timed(raw_extract)
    context = SyncContext(deployment=load_deployment())
    landed, land_s = timed(lambda: land("gd_household_registry", context=context))

    licenses = pq.read_table(work / "raw.parquet").to_pylist()

    def raw_insert() -> int:
        with sqlite3.connect(work / "raw_licenses.db") as conn:
            conn.execute("CREATE TABLE licenses (holder_id, type, number, issued, face)")
            payload = [
                (r["id_number"], t, r[n], r[d], r["address"])
                for r in licenses
                for t, n, d in (
                    ("card", "id_number", "card_issue_date"),
                    ("register", "register_no", "registered_on"),
                )
            ]
            conn.executemany("INSERT INTO licenses VALUES (?, ?, ?, ?, ?)", payload)
        return len(payload)

    def raw_copy() -> None:
        import duckdb

        source = f"{landed.landing_path}/*.parquet"
        duckdb.sql(
            f"COPY (SELECT * FROM read_parquet('{source}')) TO '{work / 'copy.parquet'}' "
            "(FORMAT parquet, COMPRESSION zstd)"
        )

    raw_licenses, raw_insert_s = timed(raw_insert)
    _, raw_copy_s = timed(raw_copy)
    _, publish_s = timed(lambda: publish(landed.run_id, context=context))
    [run], licenses_s = timed(lambda: publish_licenses("gd_household_registry", context=context))
    written = run.licenses_inserted
    again = land("gd_household_registry", full_refresh=True, context=context)
    _, raw_copy_again_s = timed(raw_copy)
    unchanged, republish_s = timed(lambda: publish(again.run_id, context=context))
    assert unchanged.rows_unchanged == run.rows_loaded and unchanged.curated_path is None

    def line(stage: str, done: float, baseline: float, unit: str) -> None:
        print(f"{stage:<11}{done:>12,.0f} {unit}{baseline:>12,.0f} {unit}{done / baseline:>8.2f}x")

    print()
    print(f"{'stage':<11}{'govexchange':>16}{'baseline':>16}{'ratio':>9}")
    line("land", rows / land_s, rows / raw_land_s, "r/s")
    line("publish", rows / publish_s, rows / raw_copy_s, "r/s")
    line("licenses", written / licenses_s, raw_licenses / raw_insert_s, "l/s")
    line("re-publish", rows / republish_s, rows / raw_copy_again_s, "r/s")
    total = land_s + publish_s + licenses_s
    print(
        f"\nwhole sync: {rows:,} rows -> {written:,} licenses in {total:.1f} s "
        f"({rows / total:,.0f} rows/s); {run.rows_quarantined} rows quarantined"
    )
    print("r/s = source rows per second, l/s = licenses per second; ratio = govexchange / baseline")


if __name__ == "__main__":
    main()
