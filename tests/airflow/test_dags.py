"""The Airflow DAG factory: it parses without errors, builds one DAG per source, and a DAG runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.config import load_deployment
from exchange.demo import connection_env, generate_department_systems
from exchange.state import ExchangeState, RunStatus
from license_store.store import LicenseStore

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.airflow


def test_dagbag_has_one_sync_dag_per_source_and_no_import_errors(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    sources = load_deployment(REPO / "config").sources
    assert set(bag.dag_ids) == {f"sync__{s.id}" for s in sources}
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


def test_sync_dag_runs_end_to_end_with_dag_test(
    airflow_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    systems = generate_department_systems(tmp_path / "departments", persons=300)
    for key, value in connection_env(systems).items():
        monkeypatch.setenv(key, value)

    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).dags["sync__foshan_marriage_registry"]
    dag_run = dag.test()
    assert str(dag_run.state) in {"success", "DagRunState.SUCCESS"}

    with ExchangeState() as state:
        [run] = state.runs("foshan_marriage_registry")
        assert run.status is RunStatus.SUCCEEDED
        assert run.rows_read == run.rows_loaded + run.rows_quarantined > 0
    with LicenseStore() as store:
        assert store.count() == 2 * run.rows_loaded  # both spouses hold the certificate
