"""What a province's operators ask of the sync DAGs, on a real Airflow metadata database.

* every ``land`` task (the only one that reads a department system) runs in its system's pool,
  ``govx pools --create`` creates the missing pools and leaves an operator's resized one alone;
* one run per DAG at a time, no catch-up runs on unpausing;
* a backfill of a date range (Airflow's own ``_create_backfill``, what ``airflow backfill create``
  calls) queues one run per schedule interval, one at a time;
* failed tasks are retried with a delay that grows exponentially (Airflow's own formula), and a
  run failure that retrying cannot fix fails the task at once.
"""

from __future__ import annotations

import datetime as dt
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exchange.cli import app
from exchange.config import load_deployment
from exchange.scheduler import create_missing_pools, department_pools, pool_name
from exchange.sync import RunFailed

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.airflow


@pytest.fixture(scope="module")
def bag(airflow_db: Path):
    from airflow.dag_processing.dagbag import DagBag

    found = DagBag(dag_folder=str(REPO / "dags" / "govx_sync.py"))
    assert found.import_errors == {}
    return found


def test_land_runs_in_its_department_systems_pool_and_the_pools_are_created(bag) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.pool import Pool

    deployment = load_deployment(REPO / "config")
    pools = department_pools(deployment)
    assert [p.name for p in pools] == sorted(pool_name(s.connection) for s in deployment.sources)
    assert all(p.slots == 1 for p in pools)
    for source in deployment.sources:
        for dag_id in (f"sync__{source.id}", f"snapshot__{source.id}"):
            if dag_id not in bag.dags:
                continue
            dag = bag.dags[dag_id]
            assert dag.get_task("land").pool == f"dept__{source.connection}", dag_id
            assert {dag.get_task(t).pool for t in ("publish", "licenses")} == {"default_pool"}
    household = next(p for p in pools if p.connection == "gd_household_db")
    assert household.sources == ("sync__gd_household_registry", "snapshot__gd_household_registry")

    # Airflow warns about (and never schedules) tasks in a pool it does not know
    checked = DagBag(dag_folder=str(REPO / "dags" / "govx_sync.py"), known_pools={"default_pool"})
    assert {w.dag_id for w in checked.dag_warnings} == set(checked.dag_ids)

    runner = CliRunner(env={"COLUMNS": "200"})
    first = runner.invoke(app, ["--config", str(REPO / "config"), "pools", "--create"])
    assert first.exit_code == 0, first.output
    assert "created in Airflow: dept__" in first.output
    assert {p.name for p in pools} <= {p.pool for p in Pool.get_pools()}
    checked = DagBag(
        dag_folder=str(REPO / "dags" / "govx_sync.py"),
        known_pools={p.pool for p in Pool.get_pools()},
    )
    assert checked.dag_warnings == set()

    Pool.create_or_update_pool(household.name, 3, "resized by an operator", False)
    assert create_missing_pools(pools) == []  # nothing created, nothing changed
    again = runner.invoke(app, ["--config", str(REPO / "config"), "pools", "--create"])
    assert "created in Airflow: none" in again.output
    assert Pool.get_pool(household.name).slots == 3


def test_one_run_at_a_time_and_no_catch_up(bag) -> None:
    for dag in bag.dags.values():
        assert dag.max_active_runs == 1, dag.dag_id
        assert not dag.catchup, dag.dag_id  # unpausing starts no run per missed interval


def test_a_backfill_queues_one_run_per_interval(bag) -> None:
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import sync_bag_to_db
    from airflow.models.backfill import _create_backfill
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    DagBundlesManager().sync_bundles_to_db()  # what the DAG processor does before parsing
    sync_bag_to_db(bag, "dags-folder", None)
    dag_id = "sync__foshan_marriage_registry"  # @daily
    backfill = _create_backfill(
        dag_id=dag_id,
        from_date=dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        to_date=dt.datetime(2026, 3, 3, tzinfo=dt.UTC),
        max_active_runs=1,
        reverse=False,
        dag_run_conf={"full_refresh": False},
        triggering_user_name="ops-test",
    )
    assert backfill.max_active_runs == 1
    with create_session() as session:
        runs = session.scalars(
            select(DagRun).where(DagRun.backfill_id == backfill.id).order_by(DagRun.logical_date)
        ).all()
        assert [r.logical_date.date() for r in runs] == [
            dt.date(2026, 3, 1),
            dt.date(2026, 3, 2),
            dt.date(2026, 3, 3),
        ]
        assert {str(r.run_type) for r in runs} <= {"backfill", "DagRunType.BACKFILL_JOB"}
        assert all(r.conf == {"full_refresh": False} for r in runs)
        assert all(str(r.state) in {"queued", "DagRunState.QUEUED"} for r in runs)


def _airflow_retry_delay(task, try_number: int) -> float:
    """Seconds Airflow's scheduler waits before retry ``try_number`` + 1 of ``task``
    (``TaskInstance.next_retry_datetime``, its own formula with its jitter)."""
    from airflow.models.taskinstance import TaskInstance

    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    instance = types.SimpleNamespace(
        retry_delay_override=None,
        task=task,
        try_number=try_number,
        dag_id=task.dag_id,
        task_id=task.task_id,
        logical_date=end,
        end_date=end,
        log=None,
    )
    return (TaskInstance.next_retry_datetime(instance) - end).total_seconds()


def test_failed_tasks_are_retried_with_exponential_backoff(bag) -> None:
    for dag_id in ("sync__gd_household_registry", "snapshot__gd_household_registry"):
        for task in bag.dags[dag_id].tasks:
            assert task.retries == 2
            first, second = (_airflow_retry_delay(task, n) for n in (1, 2))
            assert 30 <= first < 60 and 60 <= second < 120, (task.task_id, first, second)
            assert _airflow_retry_delay(task, 9) == 600  # max_retry_delay


def test_a_terminal_run_failure_fails_the_task_without_retries() -> None:
    import importlib.util

    from airflow.sdk.exceptions import AirflowFailException

    spec = importlib.util.spec_from_file_location("govx_sync", REPO / "dags" / "govx_sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    terminal = RunFailed("s", "r1", "missing table", terminal=True)
    with (
        pytest.raises(AirflowFailException, match="missing table"),
        module.failing_fast_when_terminal(),
    ):
        raise terminal
    transient = RunFailed("s", "r1", "connection lost")
    with pytest.raises(RunFailed), module.failing_fast_when_terminal():  # Airflow retries it
        raise transient
