"""Schema drift between runs under each policy: evolve, freeze, quarantine.

The business registry's department adds a column (``phone``) to the CSV files it drops; the
files connector reads them as they come, and the source's ``schema_policy`` decides.
"""

from __future__ import annotations

import sqlite3

import pyarrow.parquet as pq
import pytest

from exchange.config import Deployment
from exchange.demo import DemoSystem
from exchange.demo.deliveries import write_drop
from exchange.demo.schema import spec_for
from exchange.lake import quarantine_dir
from exchange.state import ExchangeState, RunStatus
from exchange.sync import RunFailed, SyncContext, sync

SOURCE = "gd_business_registry"


def with_policy(deployment: Deployment, policy: str) -> Deployment:
    data = deployment.model_dump()
    for source in data["sources"]:
        if source["id"] == SOURCE:
            source["schema_policy"] = policy
    return Deployment.model_validate(data)


def drop_rows_with_a_phone(systems: list[DemoSystem], first: int = 1, count: int = 5) -> int:
    """The department drops ``count`` changed enterprises with a new ``phone`` column."""
    system = next(s for s in systems if s.source_id == SOURCE)
    with sqlite3.connect(system.url.removeprefix("sqlite:///")) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT * FROM enterprises WHERE ent_id >= ? AND ent_id <> 13 ORDER BY ent_id LIMIT ?",
            (first, count),
        ).fetchall()
    changed = [{**dict(r), "phone": "0757-8888"} for r in rows]
    write_drop(spec_for(SOURCE), system.drop_dir, changed, f"phone{first}")
    return len(changed)


def test_evolve_loads_and_records_the_drift(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    context = SyncContext(deployment=with_policy(deployment, "evolve"))
    first = sync(SOURCE, context=context)
    assert first.schema_drift is None
    touched = drop_rows_with_a_phone(demo_systems)
    run = sync(SOURCE, context=context)
    assert run.status is RunStatus.SUCCEEDED
    assert run.schema_drift == {"added": {"phone": "string"}, "removed": {}, "retyped": {}}
    assert run.rows_loaded == touched and run.rows_quarantined == 0
    drop_rows_with_a_phone(demo_systems, first=100)
    assert sync(SOURCE, context=context).schema_drift is None  # the new schema is accepted


def test_freeze_fails_before_landing_with_the_diff(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    context = SyncContext(deployment=with_policy(deployment, "freeze"))
    first = sync(SOURCE, context=context)
    drop_rows_with_a_phone(demo_systems)
    with pytest.raises(
        RunFailed, match=r"schema drift under policy freeze: added phone \(string\)"
    ):
        sync(SOURCE, context=context)
    with ExchangeState() as state:
        failed = state.runs(SOURCE, limit=1)[0]
        assert failed.status is RunStatus.FAILED and failed.landing_path is None
        assert state.cursor(SOURCE) == first.cursor_after


def test_quarantine_holds_every_row_of_the_drifted_run(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    context = SyncContext(deployment=with_policy(deployment, "quarantine"))
    sync(SOURCE, context=context)
    drop_rows_with_a_phone(demo_systems)
    run = sync(SOURCE, context=context)
    assert run.status is RunStatus.SUCCEEDED
    assert run.rows_loaded == 0 and run.rows_quarantined == run.rows_read > 0
    held = pq.read_table(quarantine_dir(SOURCE, run.run_id) / "rows.parquet")
    assert held.column("_govx_reasons").to_pylist()[0] == [
        "schema drift under policy quarantine: columns added phone"
    ]
    # the drifted schema was not accepted: the next drop is held too, until someone decides
    drop_rows_with_a_phone(demo_systems, first=100)
    assert sync(SOURCE, context=context).schema_drift is not None


def test_accepting_the_schema_lets_rows_load_again(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    from typer.testing import CliRunner

    from exchange.cli import app

    context = SyncContext(deployment=with_policy(deployment, "quarantine"))
    sync(SOURCE, context=context)
    drop_rows_with_a_phone(demo_systems)
    assert sync(SOURCE, context=context).rows_loaded == 0
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["schema", "accept", SOURCE])
    assert result.exit_code == 0, result.output
    assert "added phone (string)" in result.output
    drop_rows_with_a_phone(demo_systems, first=100)
    again = sync(SOURCE, context=context)
    assert again.schema_drift is None and again.rows_loaded == again.rows_read > 0
