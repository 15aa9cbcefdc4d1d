"""Airflow DAG factory: one ``sync__<source_id>`` DAG per source in the deployment config.

Thin by design: parsing reads only the deployment YAML (no database, no network, no heavy
imports); each task is one call into :mod:`exchange.sync`. ``land`` extracts and lands the batch,
``publish`` gates it, upserts the licenses and advances the cursor. Trigger with
``{"full_refresh": true}`` to re-read a source from the beginning.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from airflow.sdk import Asset, Param, dag, get_current_context, task

from exchange.config import SourceConfig, load_deployment

CONFIG_DIR = Path(
    os.environ.get("GOVX_CONFIG") or Path(__file__).resolve().parent.parent / "config"
)
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def build_sync_dag(source: SourceConfig):
    """The DAG that syncs one source."""

    @dag(
        dag_id=f"sync__{source.id}",
        description=f"Sync {source.name} into the exchange and the license library",
        schedule=source.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["govexchange", "sync", source.department],
        params={"full_refresh": Param(False, type="boolean", description="ignore the cursor")},
        default_args={
            "retries": 2,
            "retry_delay": dt.timedelta(seconds=30),
            "retry_exponential_backoff": True,
            "max_retry_delay": dt.timedelta(minutes=10),
        },
        doc_md=__doc__,
    )
    def sync_source() -> None:
        @task
        def land() -> str:
            from airflow.sdk.exceptions import AirflowFailException

            from exchange.sync import RunFailed
            from exchange.sync import land as land_run

            full_refresh = bool(get_current_context()["params"].get("full_refresh"))
            try:
                return land_run(source.id, full_refresh=full_refresh).run_id
            except RunFailed as exc:
                from connectors.errors import TerminalError

                if isinstance(exc.__cause__, TerminalError):
                    raise AirflowFailException(str(exc)) from exc  # retrying will not help
                raise

        @task(outlets=[Asset(f"govx://dataset/{source.dataset}")])
        def publish(sync_run_id: str) -> dict:
            from exchange.sync import publish as publish_run

            run = publish_run(sync_run_id)
            return {
                "run_id": run.run_id,
                "rows_read": run.rows_read,
                "rows_loaded": run.rows_loaded,
                "rows_quarantined": run.rows_quarantined,
                "licenses_inserted": run.licenses_inserted,
                "licenses_updated": run.licenses_updated,
            }

        publish(land())

    return sync_source()


for _source in load_deployment(CONFIG_DIR).sources:
    globals()[f"sync__{_source.id}"] = build_sync_dag(_source)
