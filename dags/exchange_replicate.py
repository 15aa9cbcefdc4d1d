"""Airflow DAG ``exchange_replicate``: deliver this node's outbox to its parent node.

Thin by design: parsing imports nothing heavy and touches no database. The one task ``push``
runs :func:`exchange.outbox.push_node`: it packages what the license store gained since the last
package and delivers the waiting packages to the parent's ``POST /v1/exchange/packages`` in
order (``govx exchange push`` runs the same code; ``docs/replication.md``).

It runs when a sync DAG's ``licenses`` task published licenses (the ``govx://licenses`` asset)
and every 5 minutes besides, so a parent that was down gets the queue when it is back. A push
that leaves packages waiting (the parent is down) fails the task, and Airflow retries it; the
packages stay in the outbox, in order. A deployment that is not a node, or is the province, skips.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import Asset, dag, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

LICENSES = Asset("govx://licenses")


@dag(
    dag_id="exchange_replicate",
    description="Deliver the node's replication packages to its parent node",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("*/5 * * * *", timezone="Asia/Shanghai"),
        assets=[LICENSES],
    ),
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["govexchange", "exchange"],
    default_args={
        "retries": 3,
        "retry_delay": dt.timedelta(minutes=1),
        # a multiplier in Airflow 3 (True meant 1.0, a constant delay): 1-2 min, 2-4 min, ...
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=10),
    },
    doc_md=__doc__,
)
def exchange_replicate() -> None:
    @task
    def push() -> dict:
        """Deliver the outbox; what was delivered and what still waits."""
        from airflow.sdk.exceptions import AirflowSkipException

        from exchange.nodes import load_node, node_file
        from exchange.outbox import push_node
        from exchange.settings import govx_home

        home = govx_home()
        if not node_file(home).exists():
            raise AirflowSkipException("this deployment is not an exchange node (govx node init)")
        if load_node(home).parent is None:
            raise AirflowSkipException("this node is the province: it has no parent")
        report = push_node(home)  # no credentials for the parent: fails, saying so
        if report.stopped is not None:
            raise RuntimeError(f"{report.waiting} packages still waiting: {report.stopped}")
        return {
            "delivered": report.delivered,
            "duplicates": report.duplicates,
            "rows": report.rows,
            "waiting": report.waiting,
        }

    push()


exchange_replicate()
