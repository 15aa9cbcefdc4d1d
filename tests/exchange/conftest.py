"""Fixtures shared by the exchange tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.exchange.test_curated import resident_id


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "people.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE people (person_id INTEGER, id_number TEXT, name TEXT, "
            "card_issue_date TEXT, card_valid_to TEXT, deleted TEXT, updated_at TEXT)"
        )
        conn.executemany(
            "INSERT INTO people VALUES (?, ?, ?, '2020-05-01', '2040-05-01', '0', ?)",
            [
                (n, resident_id(2 * n + 1), f"居民{n}", f"2026-11-01 08:00:0{n}")
                for n in range(1, 6)
            ],
        )
    monkeypatch.setenv("AIRFLOW_CONN_TEST_PEOPLE_DB", f"sqlite:///{path}")
    return path
