"""Airflow DAG ``license_expiry``: every day, licenses past their validity become expired versions.

Thin by design: parsing imports nothing heavy and touches no database. The one task ``expire``
runs :meth:`license_store.LicenseStore.run_expiry` for the run's logical date (a Beijing date):
each license stored as valid whose ``valid_to`` is before it gets a new version with status
``expired``, signed by its department and audited (matter ``expiry``, case the date). Re-running
a day changes nothing. At a node, licenses issued below it (replicated up from a child node)
are skipped and counted: their issuing node expires them, and the expired version comes up by
replication. ``govx lifecycle expire --today YYYY-MM-DD`` runs the same code.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.sdk import dag, task

CONFIG_DIR = Path(
    os.environ.get("GOVX_CONFIG") or Path(__file__).resolve().parent.parent / "config"
)
BEIJING = dt.timezone(dt.timedelta(hours=8))


@dag(
    dag_id="license_expiry",
    description="Make licenses past their validity new, signed, audited expired versions",
    schedule="5 0 * * *",  # 00:05 ...
    start_date=dt.datetime(2026, 1, 1, tzinfo=BEIJING),  # ... Beijing time, daily
    catchup=False,
    max_active_runs=1,
    tags=["govexchange", "licenses"],
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=5)},
    doc_md=__doc__,
)
def license_expiry() -> None:
    @task
    def expire(logical_date: dt.datetime | None = None) -> dict[str, int]:
        """How many licenses became expired versions for the run's Beijing date, and how many
        were skipped as issued below this node."""
        import logging

        from exchange.config import load_deployment
        from license_store.store import LicenseStore

        moment = logical_date or dt.datetime.now(dt.UTC)
        today = moment.astimezone(BEIJING).date()
        with LicenseStore(deployment=load_deployment(CONFIG_DIR)) as store:
            store.upgrade()
            result = store.run_expiry(today)
        logging.getLogger("govexchange.license_expiry").info("%s", result.summary())
        return {"expired": result.expired, "skipped": result.skipped}

    expire()


license_expiry()
