"""A PostgreSQL department database whose connection is killed mid-stream (pg_terminate_backend):
the run extracts again and succeeds; when every attempt is killed it fails clearly, cursor kept."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import exchange.sync
from exchange.config import Deployment
from exchange.demo import connection_env, generate_department_systems
from exchange.state import ExchangeState, RunStatus
from exchange.sync import RunFailed, SyncContext, land

pytestmark = pytest.mark.postgres
SOURCE = "gd_household_registry"
PERSONS = 5_000


def small_batches(deployment: Deployment) -> Deployment:
    data = deployment.model_dump()
    for source in data["sources"]:
        if source["id"] == SOURCE:
            source["connector"]["options"]["batch_size"] = 200
            # round trip per batch (server-side cursor), so the kill lands mid-stream; the COPY
            # fast path has its own connection-loss test in tests/connectors
            source["connector"]["options"]["fast_path"] = "off"
    return Deployment.model_validate(data)


@pytest.fixture
def postgres_source(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> sa.Engine:
    systems = generate_department_systems(
        databases={"gd_household_db": postgres_url}, persons=PERSONS
    )
    for key, value in connection_env(systems).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(exchange.sync, "RETRY_BASE_DELAY_S", 0.01)
    engine = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def terminator(engine: sa.Engine, kills: int):
    """A progress callback that kills the extracting backend after the first batch, ``kills``×."""
    state = {"kills": 0, "batches": 0}

    def on_rows(rows: int) -> None:
        if rows <= 0:  # a retry rolls the progress back
            state["batches"] = 0
            return
        state["batches"] += 1
        if state["batches"] == 1 and state["kills"] < kills:
            with engine.connect() as conn:
                killed = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalar_one()
            assert killed >= 1, "no extracting backend found to terminate"
            state["kills"] += 1

    return on_rows


def test_a_killed_connection_is_retried(
    deployment: Deployment, postgres_source: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    context = SyncContext(deployment=small_batches(deployment))
    run = land(SOURCE, context=context, on_rows=terminator(postgres_source, kills=1))
    assert "attempt 1 failed" in caplog.text  # the kill really broke the stream
    assert run.status is RunStatus.LANDED
    assert run.rows_read == PERSONS  # every row, once, despite the lost connection


def test_when_every_attempt_is_killed_the_run_fails_and_keeps_its_cursor(
    deployment: Deployment, postgres_source: sa.Engine
) -> None:
    context = SyncContext(deployment=small_batches(deployment))
    with pytest.raises(RunFailed, match="after 3 attempts") as info:
        land(SOURCE, context=context, on_rows=terminator(postgres_source, kills=99))
    assert not info.value.terminal
    with ExchangeState() as state:
        assert state.cursor(SOURCE) is None
        assert state.runs(SOURCE, limit=1)[0].status is RunStatus.FAILED
