"""Benchmark the Great Expectations quality gate against the same rules as one DuckDB query.

    .venv/bin/python bench/quality.py [--rows 1000000] [--dirty 0.05]

One Parquet file of license-like rows (a household registry: resident ID card and household
register, ``--dirty`` of the rows breaking one rule each, in eight different ways) is split
row by row twice, each time into passed rows and held rows with the rules they failed:

- gate: ``quality.gate.RowGate.split`` -- the vectorised check columns, the source's full GX
  suite validated on pandas (``result_format`` COMPLETE) and the masked reasons per held row;
- baseline: one DuckDB SQL query over the same Parquet file computing the same rules (the same
  check characters, date formats, region table lookups, status values, uniqueness among the last
  row of each key) into a list of failed rules per row, fetched as Arrow and split.

Both read the Parquet file inside the timing; the GX context and suite are built before it (once
per process in production). Printed: rows/s of each and the ratio gate/DuckDB time (target
<= 4). The machine is shared and noisy: compare the ratio, not the absolute figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from exchange.config import Deployment

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

REGIONS = ("440103", "440104", "440106", "440111", "440303", "440304", "110101", "310104")
"""Counties in use in every birth year generated (1985 on), per python-stdnum's GB/T 2260 table."""
STATUSES = ("正常", "迁出", "注销")
FAULTS = (
    "bad_check",
    "blank_name",
    "ends_before_issue",
    "not_a_date",
    "unknown_status",
    "birth_mismatch",
    "duplicate_number",
    "overlong_number",
)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def _ids(rng: np.random.Generator, births: np.ndarray) -> np.ndarray:
    """Valid resident IDs (GB 11643) for the given birth dates, as an (n, 18) byte array."""
    n = len(births)
    region = np.array([list(r.encode()) for r in REGIONS], dtype=np.uint8)[
        rng.integers(0, len(REGIONS), n)
    ]
    stamp = np.array(
        [list(d.encode()) for d in np.datetime_as_string(births).astype(str)], dtype=np.uint8
    )[:, [0, 1, 2, 3, 5, 6, 8, 9]]
    serial = (rng.integers(0, 1000, n)[:, None] // np.array([100, 10, 1]) % 10 + 48).astype(
        np.uint8
    )
    body = np.concatenate([region, stamp, serial], axis=1)
    weights = np.array([pow(2, 17 - i, 11) for i in range(17)])
    total = ((body.astype(np.int64) - 48) * weights).sum(axis=1)
    check = np.frombuffer(b"10X98765432", dtype=np.uint8)[total % 11]
    return np.concatenate([body, check[:, None]], axis=1)


def _text(rows: np.ndarray) -> pa.Array:
    return pa.array(rows.view(f"S{rows.shape[1]}").ravel().astype(str))


def license_rows(count: int, dirty: float, seed: int = 7) -> tuple[pa.Table, int]:
    """``count`` household rows, ``dirty`` of them breaking one rule each (fault by fault)."""
    rng = np.random.default_rng(seed)
    births = np.datetime64("1985-01-01") + rng.integers(0, 365 * 35, count).astype("timedelta64[D]")
    ids = _ids(rng, births)
    issued = np.datetime64("2015-01-01") + rng.integers(0, 3000, count).astype("timedelta64[D]")
    until = issued + np.timedelta64(3652, "D")
    person_id = np.arange(1, count + 1)
    columns = {
        "person_id": pa.array(person_id),
        "id_number": _text(ids),
        "name": pa.array(np.where(person_id % 2 == 0, "陈小明", "李美玲")),
        "birth_date": pa.array(births.astype("datetime64[D]")).cast(pa.date32()),
        "card_issue_date": pa.array(np.datetime_as_string(issued)),
        "card_valid_to": pa.array(np.datetime_as_string(until)),
        "register_no": pa.array(np.char.add("440604", person_id.astype(str))),
        "registered_on": pa.array(np.datetime_as_string(issued)),
        "household_status": pa.array(np.array(STATUSES)[rng.integers(0, 3, count)]),
    }
    table = pa.table(columns)
    bad = rng.choice(count, size=int(count * dirty), replace=False)
    kinds = np.arange(len(bad)) % len(FAULTS)
    data = {name: table.column(name).to_numpy(zero_copy_only=False).copy() for name in columns}
    for fault, rows in ((f, bad[kinds == i]) for i, f in enumerate(FAULTS)):
        if fault == "bad_check":
            data["id_number"][rows] = [
                v[:-1] + ("0" if v[-1] != "0" else "1") for v in data["id_number"][rows]
            ]
        elif fault == "blank_name":
            data["name"][rows] = " "
        elif fault == "ends_before_issue":
            data["card_valid_to"][rows] = "2014-12-31"
        elif fault == "not_a_date":
            data["registered_on"][rows] = "待补录"
        elif fault == "unknown_status":
            data["household_status"][rows] = "待核实"
        elif fault == "birth_mismatch":
            data["birth_date"][rows] = data["birth_date"][rows] + np.timedelta64(1, "D")
        elif fault == "duplicate_number":
            data["id_number"][rows] = data["id_number"][(rows + 1) % count]
        else:
            data["register_no"][rows] = "R" * 129
    types = {name: table.schema.field(name).type for name in columns}
    return pa.table({n: pa.array(v, type=types[n]) for n, v in data.items()}), len(bad)


def bench_deployment() -> Deployment:
    from exchange.config import Deployment, load_deployment

    data = load_deployment(REPO / "config").model_dump()
    data["sources"] = [
        {
            "id": "bench_household",
            "name": "基准户籍库",
            "department": "gd_public_security",
            "connector": {"kind": "sql", "options": {"table": "persons"}},
            "connection": "bench_db",
            "dataset": "household_registry",
            "primary_key": ["person_id"],
            "licenses": [
                {
                    "type": "resident_id_card",
                    "holder_id": "id_number",
                    "holder_name": "name",
                    "number": "id_number",
                    "issue_date": "card_issue_date",
                    "valid_to": "card_valid_to",
                    "status": "household_status",
                    "status_values": {"正常": "valid", "迁出": "valid", "注销": "revoked"},
                    "face": {"birth_date": "birth_date"},
                },
                {
                    "type": "household_register",
                    "holder_id": "id_number",
                    "holder_name": "name",
                    "number": "register_no",
                    "issue_date": "registered_on",
                    "status": "household_status",
                    "status_values": {"正常": "valid", "迁出": "revoked", "注销": "revoked"},
                },
            ],
        }
    ]
    return Deployment.model_validate(data)


DUCKDB_RULES = """
WITH raw AS (
    SELECT *, row_number() OVER () AS _row FROM read_parquet(?)
), checked AS (
    SELECT *,
        upper(replace(replace(trim(id_number), ' ', ''), '-', '')) AS _id,
        nullif(trim(name), '') AS _name,
        nullif(trim(register_no), '') AS _number,
        try_strptime(nullif(trim(card_issue_date), ''), {formats})::DATE AS _issued,
        try_strptime(nullif(trim(card_valid_to), ''), {formats})::DATE AS _until,
        try_strptime(nullif(trim(registered_on), ''), {formats})::DATE AS _registered,
        coalesce(trim(household_status), '') AS _status,
        _row IN (SELECT max(_row) FROM raw GROUP BY person_id) AS _latest
    FROM raw
), ric AS (
    SELECT *,
        try_strptime(substr(_id, 7, 8), '%Y%m%d')::DATE AS _born,
        CASE
            WHEN _id IS NULL OR _id = '' THEN NULL
            WHEN length(_id) <> 18 THEN 'wrong_length'
            WHEN NOT regexp_full_match(_id, '[0-9]{{17}}[0-9X]') THEN 'bad_format'
            WHEN try_strptime(substr(_id, 7, 8), '%Y%m%d') IS NULL THEN 'bad_birth_date'
            WHEN try_strptime(substr(_id, 7, 8), '%Y%m%d')::DATE > current_date
                THEN 'future_birth_date'
            WHEN substr('10X98765432', ({checksum}) % 11 + 1, 1) <> substr(_id, 18, 1)
                THEN 'bad_check_character'
            WHEN substr(_id, 1, 10) NOT IN (SELECT place FROM known_places)
                THEN 'unknown_region'
        END AS _ric
    FROM checked
), shared_ids AS (
    SELECT _id FROM ric WHERE _latest AND _id <> '' GROUP BY _id HAVING count(*) > 1
), shared_numbers AS (
    SELECT _number FROM ric WHERE _latest GROUP BY _number HAVING count(*) > 1
), numbered AS (
    SELECT *,
        _latest AND _id IN (SELECT _id FROM shared_ids) AS _id_shared,
        _latest AND _number IN (SELECT _number FROM shared_numbers) AS _number_shared
    FROM ric
)
SELECT * EXCLUDE (_row, _id, _name, _number, _issued, _until, _registered, _status, _latest,
                  _born, _ric, _id_shared, _number_shared),
    list_filter([
        CASE WHEN person_id IS NULL THEN 'person_id.present' END,
        CASE WHEN _id IS NULL OR _id = '' THEN 'id_number.required' END,
        CASE WHEN _ric IS NOT NULL THEN 'id_number.resident_id' END,
        CASE WHEN _name IS NULL THEN 'name.required' END,
        CASE WHEN _id IS NULL OR _id = '' THEN 'id_number.required' END,
        CASE WHEN _issued IS NULL AND nullif(trim(card_issue_date), '') IS NULL
            THEN 'card_issue_date.required' END,
        CASE WHEN _issued IS NULL AND nullif(trim(card_issue_date), '') IS NOT NULL
            THEN 'card_issue_date.date' END,
        CASE WHEN _until IS NULL AND nullif(trim(card_valid_to), '') IS NOT NULL
            THEN 'card_valid_to.date' END,
        CASE WHEN _until < _issued THEN 'card_valid_to.after_issue' END,
        CASE WHEN length(_id) > 128 THEN 'id_number.max_length' END,
        CASE WHEN _status NOT IN ('正常', '迁出', '注销') THEN 'household_status.known' END,
        CASE WHEN _ric IS NULL AND birth_date <> _born THEN 'birth_date.birth_date_matches' END,
        CASE WHEN _id_shared THEN 'id_number.unique' END,
        CASE WHEN _number IS NULL THEN 'register_no.required' END,
        CASE WHEN _registered IS NULL AND nullif(trim(registered_on), '') IS NULL
            THEN 'registered_on.required' END,
        CASE WHEN _registered IS NULL AND nullif(trim(registered_on), '') IS NOT NULL
            THEN 'registered_on.date' END,
        CASE WHEN length(_number) > 128 THEN 'register_no.max_length' END,
        CASE WHEN _number_shared THEN 'register_no.unique' END
    ], lambda rule: rule IS NOT NULL) AS _govx_rules
FROM numbered
"""


def duckdb_split(path: Path) -> tuple[pa.Table, pa.Table]:
    """The same rules as one DuckDB query over the Parquet file, split on its list of rules."""
    import duckdb

    from exchange.standards.holder_ids import _region_in_use

    con = duckdb.connect()
    places = con.execute(
        "SELECT DISTINCT substr(upper(trim(id_number)), 1, 10) FROM read_parquet(?)", [str(path)]
    ).fetchall()
    known = [
        p
        for (p,) in places
        if p and len(p) == 10 and p.isdigit() and _region_in_use(p[:6], int(p[6:]))
    ]
    con.execute("CREATE TEMP TABLE known_places AS SELECT unnest(?::VARCHAR[]) AS place", [known])
    checksum = " + ".join(
        f"(ascii(substr(_id, {i + 1}, 1)) - 48) * {pow(2, 17 - i, 11)}" for i in range(17)
    )
    formats = "['%Y-%m-%d', '%Y%m%d', '%Y/%m/%d', '%Y.%m.%d']"
    source = "'" + str(path).replace("'", "''") + "'"
    sql = DUCKDB_RULES.replace("read_parquet(?)", f"read_parquet({source})")
    table = con.sql(sql.format(formats=formats, checksum=checksum)).to_arrow_table()
    failed = pc.greater(pc.list_value_length(table.column("_govx_rules")), 0)
    return table.filter(pc.invert(failed)), table.filter(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dirty", type=float, default=0.05)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="govx-bench-quality-"))
    os.environ["GOVX_HOME"] = str(work / "home")
    (table, dirty), gen_s = timed(lambda: license_rows(args.rows, args.dirty))
    path = work / "licenses.parquet"
    pq.write_table(table, path, compression="zstd")
    print(f"generated {table.num_rows:,} rows ({dirty:,} dirty) in {gen_s:.1f} s: {path}")

    from quality.gate import RowGate

    deployment = bench_deployment()
    gate = RowGate(deployment.source("bench_household"), deployment)
    _, warm_s = timed(lambda: gate.split(table.slice(0, 100)))
    print(f"GX context and suite built in {warm_s:.1f} s ({len(gate.suite.rules)} expectations)")

    from exchange.standards.holder_ids import _region_in_use

    _region_in_use.cache_clear()  # both paths look the county table up from cold
    result, gx_s = timed(lambda: gate.split(pq.read_table(path)))
    _region_in_use.cache_clear()
    (passed, held), duck_s = timed(lambda: duckdb_split(path))
    for name, ok, bad, seconds in (
        ("GX gate", result.passed.num_rows, result.quarantined.num_rows, gx_s),
        ("DuckDB SQL", passed.num_rows, held.num_rows, duck_s),
    ):
        print(
            f"{name:<11} {seconds:6.2f} s  {table.num_rows / seconds / 1e6:5.2f}M rows/s  "
            f"passed {ok:,}  held {bad:,}"
        )
    ratio = gx_s / duck_s
    print(f"ratio GX gate / DuckDB: {ratio:.2f}x (target <= 4x)")
    if result.quarantined.num_rows != held.num_rows:
        print("WARNING: the two splits disagree on the number of held rows")
    print(f"({dt.date.today()}; Data Docs and quarantine writing are not part of either time)")


if __name__ == "__main__":
    main()
