"""The Airflow DAG factory: it parses without errors, builds one DAG per source, and a DAG runs."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from exchange.config import load_deployment
from exchange.demo import (
    connection_env,
    generate_department_systems,
    simulate_changes,
    start_department_api,
)
from exchange.state import ExchangeState, RunStatus
from license_store.store import LicenseStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.airflow


def test_dagbag_has_one_sync_dag_per_source_and_no_import_errors(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    sources = load_deployment(REPO / "config").sources
    snapshots = {f"snapshot__{s.id}" for s in sources if s.deletes.snapshot_schedule}
    assert snapshots == {"snapshot__gd_household_registry"}
    others = {"quality_monitor", "license_expiry", "exchange_replicate"}
    assert set(bag.dag_ids) == {f"sync__{s.id}" for s in sources} | snapshots | others
    snapshot = bag.dags["snapshot__gd_household_registry"]
    assert snapshot.params["full_refresh"] is True
    assert [t.task_id for t in snapshot.topological_sort()] == ["land", "publish", "licenses"]
    for source in sources:
        dag = bag.dags[f"sync__{source.id}"]
        assert [t.task_id for t in dag.topological_sort()] == ["land", "publish", "licenses"]
        assert dag.max_active_runs == 1
        assert dag.params["full_refresh"] is False
        assert source.department in dag.tags


def test_dag_file_does_no_io_beyond_reading_the_config() -> None:
    text = (REPO / "dags" / "govx_sync.py").read_text(encoding="utf-8")
    top_level_imports = [
        line for line in text.splitlines() if line.startswith(("import ", "from "))
    ]
    heavy = ("pyarrow", "sqlalchemy", "duckdb", "pandas", "great_expectations", "license_store")
    assert not [line for line in top_level_imports if any(h in line for h in heavy)]


def test_every_sync_dag_runs_end_to_end_with_dag_test(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All five sample systems through their DAGs: SQLite databases, the REST API on a loopback
    port, the CSV and xlsx drop folders; then a day of changes, synced incrementally."""
    systems = generate_department_systems(tmp_path / "departments", persons=300)
    rows = {s.source_id: s.rows for s in systems}

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    with start_department_api(systems) as api:
        for key, value in connection_env(systems, api_url=api.url).items():
            monkeypatch.setenv(key, value)
        for source_id in rows:
            dag_run = bag.dags[f"sync__{source_id}"].test()
            assert str(dag_run.state) in {"success", "DagRunState.SUCCESS"}, source_id
        changed = simulate_changes(systems)
        for source_id in rows:
            dag_run = bag.dags[f"sync__{source_id}"].test()
            assert str(dag_run.state) in {"success", "DagRunState.SUCCESS"}, source_id

    inserted = 0
    with ExchangeState() as state:
        for source_id, count in rows.items():
            incremental, full = state.runs(source_id)
            assert full.status is incremental.status is RunStatus.SUCCEEDED, source_id
            assert full.cursor_before is None and incremental.cursor_before is not None
            assert full.rows_read == count == full.rows_loaded + full.rows_quarantined
            assert changed[source_id] <= incremental.rows_read <= changed[source_id] + 3
            assert incremental.licenses_inserted + incremental.licenses_updated > 0, source_id
            inserted += full.licenses_inserted + incremental.licenses_inserted
        marriages = state.runs("foshan_marriage_registry")[-1]
    assert marriages.licenses_inserted == 2 * marriages.rows_loaded  # both spouses
    with LicenseStore() as store:
        assert store.count() == inserted

    # a resident removed from the registry: the weekly snapshot DAG finds it and revokes the cards
    household = next(s for s in systems if s.source_id == "gd_household_registry")
    with sqlite3.connect(household.url.removeprefix("sqlite:///")) as conn:
        (holder,) = conn.execute("SELECT id_number FROM persons WHERE person_id = 1").fetchone()
        conn.execute("DELETE FROM persons WHERE person_id = 1")
    dag_run = bag.dags["snapshot__gd_household_registry"].test()
    assert str(dag_run.state) in {"success", "DagRunState.SUCCESS"}
    with ExchangeState() as state:
        snapshot = state.runs("gd_household_registry", limit=1)[0]
    assert snapshot.full_refresh and snapshot.rows_deleted == 1
    assert snapshot.licenses_published_at is not None
    with LicenseStore() as store:
        held = store.licenses_for_holder(holder)
    household_types = {"居民身份证", "居民户口簿"}
    cards = {c.type_name: c.status for c in held if c.type_name in household_types}
    assert cards == {"居民身份证": "revoked", "居民户口簿": "revoked"}
    assert all(c.status == "valid" for c in held if c.type_name not in household_types)
