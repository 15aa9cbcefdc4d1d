"""Airflow DAG ``quality_monitor``: every source's supervision card, every 15 minutes.

Thin by design: parsing imports nothing heavy and touches no database. The one task ``check``
runs :func:`quality.monitor.check` on the same deployment directory the sync DAGs read — it
evaluates the cards, records each change in the exchange state database and sends each change's
alerts once (a delivery that fails is retried by the next run). ``govx quality check`` runs the
same code.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.sdk import dag, task

CONFIG_DIR = Path(
    os.environ.get("GOVX_CONFIG") or Path(__file__).resolve().parent.parent / "config"
)


@dag(
    dag_id="quality_monitor",
    description="Evaluate every source's supervision card and alert each change once",
    schedule=dt.timedelta(minutes=15),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,  # two checks at once could send a change twice
    tags=["govexchange", "quality"],
    default_args={"retries": 1, "retry_delay": dt.timedelta(minutes=1)},
    doc_md=__doc__,
)
def quality_monitor() -> None:
    @task
    def check() -> dict[str, int]:
        """Cards per colour after the check, e.g. ``{"green": 4, "yellow": 1, "red": 0}``."""
        from exchange.config import load_deployment
        from exchange.state import ExchangeState
        from quality.monitor import check as check_cards

        with ExchangeState() as state:
            state.upgrade()
            statuses = check_cards(load_deployment(CONFIG_DIR), state)
        counts = {"green": 0, "yellow": 0, "red": 0}
        for status in statuses:
            counts[status.card.value] += 1
        return counts

    check()


quality_monitor()
