"""A department that drops GB18030 CSV files: synced exactly once, bad files reported, not fatal."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

from exchange.config import Deployment
from exchange.demo import DemoSystem
from exchange.state import ExchangeState, RunStatus
from exchange.sync import SyncContext, sync
from license_store.store import LicenseStore

SOURCE = "gd_business_registry"


def write_drop(path: Path, rows: list[dict], encoding: str = "gb18030") -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))


@pytest.fixture
def enterprises(demo_systems: list[DemoSystem]) -> list[dict]:
    """The business registry's rows, read from the department's own database."""
    system = next(s for s in demo_systems if s.source_id == SOURCE)
    with sqlite3.connect(system.url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM enterprises ORDER BY ent_id")]


def test_the_sample_drop_folder_holds_gb18030_csv(demo_systems: list[DemoSystem]) -> None:
    system = next(s for s in demo_systems if s.source_id == SOURCE)
    [drop] = system.drop_dir.iterdir()
    text = drop.read_bytes().decode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        drop.read_bytes().decode("utf-8")
    header, *lines = text.splitlines()
    assert header.startswith("ent_id,credit_code,name,") and len(lines) == system.rows
    assert ",存续," in text and "有限公司" in text


def test_csv_drops_load_once_and_bad_files_are_reported(
    deployment: Deployment,
    enterprises: list[dict],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    monkeypatch.setenv("AIRFLOW_CONN_GD_BUSINESS_DROP", drop.as_uri())
    context = SyncContext(deployment=deployment)

    half, last = len(enterprises) // 2, len(enterprises) - 20
    write_drop(drop / "2024-12-01.csv", enterprises[:half])
    write_drop(drop / "2024-12-02.csv", enterprises[half:last], encoding="utf-8-sig")
    (drop / "broken.csv").write_bytes(b"credit_code,name\n" + b"\xff\xfe\x81" * 3)
    first = sync(SOURCE, context=context)
    assert first.status is RunStatus.SUCCEEDED
    assert first.rows_read == last == first.rows_loaded + first.rows_quarantined
    report = {f["name"]: f for f in first.source_report}
    assert report["2024-12-01.csv"]["status"] == "loaded"
    assert report["broken.csv"]["status"] == "rejected"
    with LicenseStore() as store:
        loaded = store.count()
    assert loaded == first.rows_loaded

    (drop / "2024-12-01-again.csv").write_bytes((drop / "2024-12-01.csv").read_bytes())
    again = sync(SOURCE, context=context)
    assert again.rows_read == 0  # a renamed copy is the same content: not loaded twice
    write_drop(drop / "2024-12-03.csv", enterprises[last:])
    third = sync(SOURCE, context=context)
    assert third.rows_read == 20
    with ExchangeState() as state, LicenseStore() as store:
        assert store.count() == loaded + third.rows_loaded
        assert state.run(third.run_id).source_report is not None
