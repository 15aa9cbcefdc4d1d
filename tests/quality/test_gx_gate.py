"""The Great Expectations gate end to end: rules, row split, held batches and Data Docs.

A household-like registry in a real SQLite database syncs through the real connector, lake, GX
gate, curated merge and state database; the rows are made dirty the ways departments' rows are.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stdnum.cn import ric
from typer.testing import CliRunner

from exchange.config import Deployment, load_deployment
from exchange.curated import CuratedDataset
from exchange.state import ExchangeState, RunStatus
from exchange.sync import RunFailed, SyncContext, sync
from quality.docs import data_docs_dir
from quality.gate import EXPECTATIONS_COLUMN, REASONS_COLUMN, RowGate
from quality.suite import SuiteError

SOURCE = "test_residents"
DATASET = "household_registry"
CONFIG = Path(__file__).resolve().parents[2] / "config"
COLUMNS = (
    "person_id INTEGER, id_number TEXT, name TEXT, birth_date TEXT, card_issue_date TEXT, "
    "card_valid_to TEXT, household_status TEXT, updated_at TEXT"
)


def resident_id(serial: int, birth: str = "19800101") -> str:
    first17 = f"110101{birth}{serial:03d}"
    return first17 + ric.calc_check_digit(first17 + "0")


def wrong_check(number: str) -> str:
    return number[:-1] + ("0" if number[-1] != "0" else "1")


def clean_row(n: int, updated: str = "2026-11-01 08:00:00") -> tuple:
    return (
        n,
        resident_id(n),
        f"居民{n}",
        "1980-01-01",
        "2020-05-01",
        "2040-05-01",
        "正常",
        updated,
    )


def dirty_rows(start: int, updated: str = "2026-11-01 08:00:00") -> dict[int, tuple]:
    """Rows breaking one rule each, keyed by person_id."""
    rows = {}
    faults = [
        {"id_number": wrong_check(resident_id(start))},  # check character
        {"name": "  "},  # required
        {"card_valid_to": "2019-01-01"},  # ends before issue
        {"card_issue_date": "待补录"},  # not a date
        {"household_status": "待核实"},  # unknown status
        {"birth_date": "1981-02-03"},  # differs from the ID's birth date
        {"id_number": resident_id(1)},  # another person's number
    ]
    names = ["id_number", "name", "birth_date", "card_issue_date", "card_valid_to"]
    names += ["household_status"]
    for offset, fault in enumerate(faults):
        n = start + offset
        row = dict(zip(["person_id", *names, "updated_at"], clean_row(n, updated), strict=True))
        row.update(fault)
        rows[n] = tuple(row[k] for k in ["person_id", *names, "updated_at"])
    return rows


def insert(path: Path, rows: list[tuple]) -> None:
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO residents VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "residents.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"CREATE TABLE residents ({COLUMNS})")
    monkeypatch.setenv("AIRFLOW_CONN_TEST_RESIDENTS_DB", f"sqlite:///{path}")
    return path


def make_deployment(**quality: object) -> Deployment:
    data = load_deployment(CONFIG).model_dump()
    data["sources"] = [
        {
            "id": SOURCE,
            "name": "测试户籍库",
            "department": "gd_public_security",
            "connector": {"kind": "sql", "options": {"table": "residents"}},
            "connection": "test_residents_db",
            "dataset": DATASET,
            "primary_key": ["person_id"],
            "cursor": "updated_at",
            "quality": quality,
            "licenses": [
                {
                    "type": "resident_id_card",
                    "holder_id": "id_number",
                    "holder_name": "name",
                    "number": "id_number",
                    "issue_date": "card_issue_date",
                    "valid_to": "card_valid_to",
                    "status": "household_status",
                    "status_values": {"正常": "valid", "注销": "revoked"},
                    "face": {"birth_date": "birth_date"},
                }
            ],
        }
    ]
    return Deployment.model_validate(data)


@pytest.fixture
def deployment() -> Deployment:
    return make_deployment()


def run(deployment: Deployment):
    return sync(SOURCE, context=SyncContext(deployment=deployment))


def test_every_dirty_row_ends_quarantined_with_its_rule_and_the_counts_add_up(
    deployment: Deployment, registry: Path
) -> None:
    dirty = dirty_rows(200)
    insert(registry, [clean_row(n) for n in range(1, 94)] + list(dirty.values()))
    done = run(deployment)
    assert done.status is RunStatus.SUCCEEDED
    assert done.rows_read == 100 == done.rows_loaded + done.rows_quarantined
    # person 1 and person 206 share a number: both are held (neither can be trusted)
    assert done.rows_quarantined == len(dirty) + 1
    held = pq.read_table(done.quarantine_path).to_pylist()
    by_key = {row["person_id"]: row for row in held}
    assert set(by_key) == set(dirty) | {1}
    expected = {
        200: (
            f"id_number: bad check character (1101**********{wrong_check(resident_id(200))[-4:]})",
            "id_number.resident_id (expect_column_values_to_be_null)",
        ),
        201: ("name: missing", "name.required (expect_column_values_to_not_be_null)"),
        202: (
            "card_valid_to: ends 2019-01-01 before issue date 2020-05-01",
            "card_valid_to.after_issue (expect_column_pair_values_a_to_be_greater_than_b)",
        ),
        203: (
            "card_issue_date: not a date: '待补录'",
            "card_issue_date.date (expect_column_values_to_be_null)",
        ),
        204: (
            "household_status: unknown status '待核实' (mapped: 正常, 注销)",
            "household_status.known (expect_column_values_to_be_in_set)",
        ),
        205: (
            "birth_date: differs from the birth date in id_number "
            f"(1101**********{resident_id(205)[-4:]})",
            "birth_date.birth_date_matches (expect_column_pair_values_to_be_equal)",
        ),
    }
    for key, (reason, rule) in expected.items():
        assert by_key[key][REASONS_COLUMN] == [reason], key
        assert by_key[key][EXPECTATIONS_COLUMN] == [rule], key
    shared = "id_number.unique (expect_column_values_to_be_unique)"
    assert by_key[206][EXPECTATIONS_COLUMN] == by_key[1][EXPECTATIONS_COLUMN] == [shared]
    assert by_key[1][REASONS_COLUMN] == [
        f"id_number: the same number as another person_id in this batch "
        f"(1101**********{resident_id(1)[-4:]})"
    ]
    raw_ids = {row["id_number"] for row in held}
    for row in held:
        assert not any(raw in " ".join(row[REASONS_COLUMN]) for raw in raw_ids)
    with ExchangeState() as state:
        live = CuratedDataset(DATASET, deployment.sources, state).rows()
    assert live.num_rows == 100 - done.rows_quarantined


def test_a_batch_over_the_threshold_is_held_and_the_cursor_stays(
    deployment: Deployment, registry: Path
) -> None:
    insert(registry, [clean_row(n) for n in range(1, 41)])
    first = run(deployment)
    assert (first.rows_loaded, first.rows_quarantined) == (40, 0)
    dirty = dirty_rows(300, updated="2026-11-02 08:00:00")
    newer = [clean_row(n, "2026-11-02 08:00:00") for n in range(41, 61)]
    insert(registry, newer + list(dirty.values()))
    with pytest.raises(RunFailed) as failed:
        run(deployment)
    # 67 rows read: the 40 at the watermark again, 20 new, 7 dirty; 8 held (person 1's number
    # is given to a dirty row too)
    reason = "held: 12% of rows failed the quality gate (max_bad_fraction 10%)"
    assert failed.value.terminal and failed.value.reason == reason
    with ExchangeState() as state:
        held = state.run(failed.value.run_id)
        assert held.status is RunStatus.HELD and held.error == reason
        assert held.rows_read == held.rows_loaded + held.rows_quarantined
        assert held.finished_at is not None and held.curated_path is None
        assert state.cursor(SOURCE) == first.cursor_after
        assert CuratedDataset(DATASET, deployment.sources, state).summary()["live"] == 40
        assert not state.pending_license_runs(SOURCE)
    quarantined = pq.read_table(held.quarantine_path)
    assert quarantined.num_rows == held.rows_quarantined
    # the department fixes its rows: the next run reads the same range again and commits
    with sqlite3.connect(registry) as conn:
        conn.execute("DELETE FROM residents WHERE person_id >= 300")
    fixed = run(deployment)
    assert fixed.status is RunStatus.SUCCEEDED and fixed.rows_quarantined == 0
    assert fixed.rows_new == 20


def test_govx_sync_exits_non_zero_with_the_hold_reason(
    registry: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from exchange.cli import app

    config = tmp_path / "config"
    config.mkdir()
    deployment = make_deployment()
    for name in ("regions", "departments", "license_types", "datasets", "matters"):
        (config / f"{name}.yaml").write_bytes((CONFIG / f"{name}.yaml").read_bytes())
    import yaml

    source = deployment.source(SOURCE).model_dump(mode="json", exclude_defaults=True)
    (config / "sources.yaml").write_text(
        yaml.safe_dump({"sources": [source]}, allow_unicode=True), encoding="utf-8"
    )
    monkeypatch.setenv("GOVX_CONFIG", str(config))
    insert(registry, [clean_row(n) for n in range(1, 21)] + list(dirty_rows(100).values()))
    result = CliRunner().invoke(app, ["sync", SOURCE], env={"COLUMNS": "250"})
    assert result.exit_code != 0
    # 8 of 27 rows: the 7 dirty ones and person 1, whose number a dirty row repeats
    assert "held: 30% of rows failed the quality gate (max_bad_fraction 10%)" in result.output


def test_a_small_batch_is_never_held_whole(deployment: Deployment, registry: Path) -> None:
    insert(registry, [clean_row(1), clean_row(2), dirty_rows(10)[10]])
    done = run(deployment)
    assert done.status is RunStatus.SUCCEEDED
    assert (done.rows_read, done.rows_loaded, done.rows_quarantined) == (3, 2, 1)
    strict = make_deployment(min_rows_for_threshold=1)
    insert(registry, [dirty_rows(20, updated="2026-11-03 00:00:00")[20]])
    with pytest.raises(RunFailed, match="held: 50% of rows"):  # the re-read row and the new one
        run(strict)


def test_data_docs_are_built_per_run_and_never_show_an_id(
    deployment: Deployment, registry: Path
) -> None:
    dirty = dirty_rows(200)
    insert(registry, [clean_row(n) for n in range(1, 94)] + list(dirty.values()))
    done = run(deployment)
    root = data_docs_dir()
    page = root / SOURCE / f"{done.run_id}.html"
    index = (root / "index.html").read_text(encoding="utf-8")
    assert f"{SOURCE}/{done.run_id}.html" in index
    text = page.read_text(encoding="utf-8")
    # GX's page: every rule with its failing share, on the computed columns too
    assert "Unsuccessful Expectations" in text and "govx.ric(id_number)" in text
    assert "govx.birth_date(id_number)" in text and "1 unexpected values found" in text
    with sqlite3.connect(registry) as conn:
        raw = [r[0] for r in conn.execute("SELECT id_number FROM residents")]
        names = [r[0] for r in conn.execute("SELECT name FROM residents") if r[0].strip()]
    for html_file in root.rglob("*.html"):
        content = html_file.read_text(encoding="utf-8")
        leaked = [value for value in raw + names if value in content]
        assert not leaked, f"{html_file.name} shows {len(leaked)} personal values"


def test_extra_expectations_from_yaml_join_the_suite() -> None:
    deployment = make_deployment(
        expectations=[
            {
                "type": "expect_column_values_to_match_regex",
                "kwargs": {"column": "name", "regex": "^居民"},
            }
        ]
    )
    rows = [clean_row(1), clean_row(2)]
    table = pa.Table.from_pylist(
        [
            dict(
                zip(
                    [
                        "person_id",
                        "id_number",
                        "name",
                        "birth_date",
                        "card_issue_date",
                        "card_valid_to",
                        "household_status",
                        "updated_at",
                    ],
                    row,
                    strict=True,
                )
            )
            for row in rows
        ]
    )
    table = table.set_column(2, "name", pa.array(["居民1", "张三"]))
    result = RowGate(deployment.source(SOURCE), deployment).split(table)
    [held] = result.quarantined.to_pylist()
    assert held["person_id"] == 2
    assert held[REASONS_COLUMN] == ["name: fails expect_column_values_to_match_regex"]
    assert held[EXPECTATIONS_COLUMN] == [
        "name.expect_column_values_to_match_regex (expect_column_values_to_match_regex)"
    ]
    table_level = make_deployment(
        expectations=[{"type": "expect_table_row_count_to_be_between", "kwargs": {}}]
    )
    with pytest.raises(SuiteError, match="not a built-in row-level"):
        RowGate(table_level.source(SOURCE), table_level).split(table)


def test_repeated_keys_are_versions_not_duplicates(deployment: Deployment) -> None:
    names = ["person_id", "id_number", "name", "birth_date", "card_issue_date", "card_valid_to"]
    names += ["household_status", "updated_at"]
    older = dict(zip(names, clean_row(1), strict=True))
    newer = older | {"name": "居民一", "updated_at": "2026-11-02 08:00:00"}
    table = pa.Table.from_pylist([older, newer])
    result = RowGate(deployment.source(SOURCE), deployment).split(table)
    assert (result.passed.num_rows, result.quarantined.num_rows) == (2, 0)


def test_a_today_birth_is_valid_and_tomorrow_is_not() -> None:
    from quality.checks import ric_problems

    today = dt.date(2026, 11, 28)
    born_today = resident_id(1, "20261128")
    born_tomorrow = resident_id(1, "20261129")
    problems = ric_problems(pa.array([born_today, born_tomorrow]), today=today).to_pylist()
    assert problems == [None, "future_birth_date"]
