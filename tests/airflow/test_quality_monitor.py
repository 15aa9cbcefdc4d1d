"""The ``quality_monitor`` DAG: thin, scheduled, and its check records the cards (dag.test())."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa

from exchange.state import ExchangeState, sync_runs
from quality.history import source_cards

REPO = Path(__file__).resolve().parents[2]
DAG_FILE = REPO / "dags" / "quality_monitor.py"
pytestmark = pytest.mark.airflow


def test_dag_file_imports_nothing_heavy_at_top_level() -> None:
    text = DAG_FILE.read_text(encoding="utf-8")
    top_level = [line for line in text.splitlines() if line.startswith(("import ", "from "))]
    heavy = ("sqlalchemy", "requests", "smtplib", "pyarrow", "quality", "exchange")
    assert not [line for line in top_level if any(h in line for h in heavy)]


def test_quality_monitor_runs_every_15_minutes_and_records_the_cards(airflow_db: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    dag = bag.dags["quality_monitor"]
    assert [t.task_id for t in dag.topological_sort()] == ["check"]
    assert dag.max_active_runs == 1
    assert dag.schedule == dt.timedelta(minutes=15)

    now = dt.datetime.now(dt.UTC)
    with ExchangeState() as state:  # the test's own $GOVX_HOME/exchange.db
        state.upgrade()
        with state.engine.begin() as conn:
            conn.execute(
                sync_runs.insert().values(
                    run_id="run-1",
                    source_id="gd_household_registry",
                    status="succeeded",
                    full_refresh=False,
                    started_at=now - dt.timedelta(minutes=20),
                    finished_at=now - dt.timedelta(minutes=19),
                    rows_read=12_000,
                    rows_loaded=12_000,
                )
            )
    dag_run = dag.test()
    assert str(dag_run.state) in {"success", "DagRunState.SUCCESS"}
    with ExchangeState() as state, state.engine.connect() as conn:
        cards = dict(conn.execute(sa.select(source_cards.c.source_id, source_cards.c.card)).all())
    assert cards["gd_household_registry"] == "green"
    assert cards["nanhai_real_estate"] == "yellow"  # never synced
    assert len(cards) == 5
