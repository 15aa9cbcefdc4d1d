"""Airflow DAG factory: one ``sync__<source_id>`` DAG per source in the deployment config.

Thin by design: parsing reads only the deployment YAML (no database, no network, no heavy
imports); each task is one call into :mod:`exchange.sync`. ``land`` extracts and lands the batch;
``publish`` gates it, merges it into the curated dataset and commits it with the new cursor;
``licenses`` derives the licenses every committed run still owes. Trigger with
``{"full_refresh": true}`` to re-read a source from the beginning.

A source with ``deletes.snapshot_schedule`` also gets a ``snapshot__<source_id>`` DAG: the same
tasks as a full refresh on that schedule, so keys the source no longer returns are deleted.

``land`` is the only task that reads the department's system: it runs in the system's pool
``dept__<connection>`` (``govx pools --create``), which bounds the extractions all DAGs and
backfills run against one department database at once. One run per DAG at a time
(``max_active_runs=1``); Airflow retries a failed task with exponential backoff, except when the
run failed for a reason retrying cannot fix. Runs are driven by the source's cursor, not by the
data interval: a run of any logical date (scheduled, triggered, backfilled) syncs what changed
since the last committed run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from airflow.sdk import Asset, Param, dag, get_current_context, task

from exchange.config import SourceConfig, load_deployment
from exchange.scheduler import pool_name

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from exchange.sync import SyncContext

CONFIG_DIR = Path(
    os.environ.get("GOVX_CONFIG") or Path(__file__).resolve().parent.parent / "config"
)
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def context() -> SyncContext:
    """The tasks' context: the same deployment directory the DAGs were parsed from."""
    from exchange.sync import SyncContext

    return SyncContext(deployment=load_deployment(CONFIG_DIR))


@contextlib.contextmanager
def failing_fast_when_terminal() -> Iterator[None]:
    """Turn a run failure that retrying cannot fix into a task failure without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from exchange.sync import RunFailed

    try:
        yield
    except RunFailed as exc:
        if exc.terminal:
            raise AirflowFailException(str(exc)) from None
        raise


def build_sync_dag(source: SourceConfig, *, snapshot: bool = False) -> DAG:
    """The DAG that syncs one source (``snapshot``: the scheduled full-refresh key snapshot)."""

    @dag(
        dag_id=f"{'snapshot' if snapshot else 'sync'}__{source.id}",
        description=(
            f"Key snapshot of {source.name}: find rows deleted at the source"
            if snapshot
            else f"Sync {source.name} into the exchange and the license library"
        ),
        schedule=source.deletes.snapshot_schedule if snapshot else source.schedule,
        start_date=START,
        catchup=False,
        max_active_runs=1,
        tags=["govexchange", "snapshot" if snapshot else "sync", source.department],
        params={"full_refresh": Param(snapshot, type="boolean", description="ignore the cursor")},
        default_args={
            "retries": 2,
            "retry_delay": dt.timedelta(seconds=30),
            # Airflow 3 reads a multiplier here: True would be 1.0, a constant delay
            "retry_exponential_backoff": 2.0,  # 30-60 s, then 60-120 s (jittered), at most 10 min
            "max_retry_delay": dt.timedelta(minutes=10),
        },
        doc_md=__doc__,
    )
    def sync_source() -> None:
        @task(pool=pool_name(source.connection))
        def land() -> str:
            from exchange.sync import land as land_run

            full_refresh = bool(get_current_context()["params"].get("full_refresh"))
            with failing_fast_when_terminal():
                return land_run(source.id, full_refresh=full_refresh, context=context()).run_id

        @task(outlets=[Asset(f"govx://dataset/{source.dataset}")])
        def publish(sync_run_id: str) -> dict:
            from exchange.sync import publish as publish_run

            with failing_fast_when_terminal():
                run = publish_run(sync_run_id, context=context())
            return {
                "run_id": run.run_id,
                "rows_read": run.rows_read,
                "rows_loaded": run.rows_loaded,
                "rows_quarantined": run.rows_quarantined,
                "rows_new": run.rows_new,
                "rows_changed": run.rows_changed,
                "rows_deleted": run.rows_deleted,
            }

        @task(outlets=[Asset("govx://licenses")])  # wakes the exchange_replicate DAG
        def licenses(committed: dict) -> dict:
            from exchange.sync import publish_licenses

            with failing_fast_when_terminal():
                runs = publish_licenses(source.id, context=context())
            return {
                "runs": [r.run_id for r in runs],
                "licenses_inserted": sum(r.licenses_inserted or 0 for r in runs),
                "licenses_updated": sum(r.licenses_updated or 0 for r in runs),
            }

        licenses(publish(land()))

    return sync_source()


for _source in load_deployment(CONFIG_DIR).sources:
    globals()[f"sync__{_source.id}"] = build_sync_dag(_source)
    if _source.deletes.snapshot_schedule:
        globals()[f"snapshot__{_source.id}"] = build_sync_dag(_source, snapshot=True)
