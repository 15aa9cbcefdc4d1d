"""Supervision cards on a real SQLite state database: each signal's green, yellow and red."""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path

import pytest

from exchange.config import Deployment, load_deployment
from exchange.state import ExchangeState, sync_runs
from quality.cards import Card, SourceStatus, evaluate, format_duration

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
HOUSEHOLD = "gd_household_registry"  # hourly dataset: overdue after 2 h
_serial = itertools.count()


@pytest.fixture
def state(tmp_path: Path) -> ExchangeState:
    state = ExchangeState(f"sqlite:///{tmp_path / 'exchange.db'}")
    state.upgrade()
    yield state
    state.close()


@pytest.fixture(scope="module")
def deployment() -> Deployment:
    return load_deployment(REPO / "config")


def tuned(deployment: Deployment, source_id: str, **monitoring: object) -> Deployment:
    """The deployment with one source's monitoring settings changed."""
    data = deployment.model_dump()
    for source in data["sources"]:
        if source["id"] == source_id:
            source["monitoring"].update(monitoring)
    return Deployment.model_validate(data)


def add_run(
    state: ExchangeState,
    source_id: str = HOUSEHOLD,
    *,
    ago: dt.timedelta,
    status: str = "succeeded",
    read: int | None = 100,
    loaded: int | None = None,
    full: bool = False,
    error: str | None = None,
    drift: dict | None = None,
) -> str:
    """Record a finished run that started ``ago`` before NOW and took a minute."""
    started = NOW - ago
    run_id = f"{started:%Y%m%dT%H%M%S}-{next(_serial):06d}"
    loaded = read if loaded is None and status == "succeeded" else loaded
    with state.engine.begin() as conn:
        conn.execute(
            sync_runs.insert().values(
                run_id=run_id,
                source_id=source_id,
                status=status,
                full_refresh=False,
                started_at=started,
                finished_at=started + dt.timedelta(minutes=1),
                cursor_before=None if full else {"updated_at": "2026-01-01"},
                rows_read=read,
                rows_loaded=loaded,
                rows_quarantined=None if read is None or loaded is None else read - loaded,
                error=error,
                schema_drift=drift,
            )
        )
    return run_id


def card_of(deployment: Deployment, state: ExchangeState, source_id: str = HOUSEHOLD):
    status = next(s for s in evaluate(deployment, state, now=NOW) if s.source_id == source_id)
    return status, {s.kind: s for s in status.signals}


def test_a_source_synced_recently_is_green_with_every_signal(
    deployment: Deployment, state: ExchangeState
) -> None:
    add_run(state, ago=dt.timedelta(minutes=30), full=True, read=12_000)
    status, signals = card_of(deployment, state)
    assert isinstance(status, SourceStatus)
    assert status.card is Card.GREEN
    assert set(signals) == {"freshness", "failures", "volume", "schema", "quality"}
    assert all(s.card is Card.GREEN for s in signals.values())
    assert signals["freshness"].reason == "last success 29 min ago; overdue after 2 h"
    assert status.freshness_age_s == 29 * 60
    assert status.last_run is not None and status.last_run.rows_read == 12_000
    assert (status.name, status.department, status.dataset) == (
        "广东省人口户籍信息系统",
        "gd_public_security",
        "household_registry",
    )


def test_freshness_turns_yellow_near_overdue_and_red_after(
    deployment: Deployment, state: ExchangeState
) -> None:
    add_run(state, ago=dt.timedelta(hours=1, minutes=46))  # finished 1 h 45 min ago
    status, signals = card_of(deployment, state)
    assert status.card is Card.YELLOW
    assert signals["freshness"].reason == (
        "no successful run for 1 h 45 min; overdue after 2 h (in 15 min)"
    )
    status, signals = card_of(tuned(deployment, HOUSEHOLD, late_after_minutes=90), state)
    assert status.card is Card.RED
    assert signals["freshness"].reason == (
        "no successful run for 1 h 45 min; overdue after 1 h 30 min"
    )


def test_never_synced_source_is_yellow(deployment: Deployment, state: ExchangeState) -> None:
    statuses = evaluate(deployment, state, now=NOW)
    assert [s.source_id for s in statuses] == [s.id for s in deployment.sources]
    assert all(s.card is Card.YELLOW for s in statuses)
    assert statuses[0].signals[0].reason == "never synced: no run recorded yet"
    assert statuses[0].last_run is None and statuses[0].freshness_age_s is None


def test_consecutive_failures_yellow_then_red_with_masked_error(
    deployment: Deployment, state: ExchangeState
) -> None:
    add_run(state, ago=dt.timedelta(minutes=50))
    error = "ConnectionError: refused while reading person 11010519491231002X"
    add_run(state, ago=dt.timedelta(minutes=40), status="failed", read=None, error=error)
    status, signals = card_of(deployment, state)
    assert status.card is Card.YELLOW
    assert signals["failures"].reason.startswith("1 failed run in a row (red at 3); last: ")
    assert "11010519491231002X" not in signals["failures"].reason
    for minutes in (30, 20):
        add_run(state, ago=dt.timedelta(minutes=minutes), status="failed", read=None, error=error)
    status, signals = card_of(deployment, state)
    assert status.card is Card.RED
    assert signals["failures"].card is Card.RED
    assert signals["failures"].reason.startswith("3 failed runs in a row (red at 3)")
    assert signals["freshness"].card is Card.GREEN  # the success 49 min ago still counts


def test_failures_never_succeeded_counts_from_the_first_attempt(
    deployment: Deployment, state: ExchangeState
) -> None:
    add_run(state, ago=dt.timedelta(hours=3, minutes=10), status="failed", read=None)
    status, signals = card_of(deployment, state)
    assert status.card is Card.RED
    assert signals["freshness"].reason == (
        "no successful run since the first attempt 3 h 10 min ago; overdue after 2 h"
    )
    assert status.last_success_at is None


def test_volume_outside_three_sigma_of_the_history_is_yellow(
    deployment: Deployment, state: ExchangeState
) -> None:
    add_run(state, ago=dt.timedelta(days=2), full=True, read=12_000)
    reads = [110, 130, 120, 112, 128, 120, 115, 125, 120, 120]
    for i, read in enumerate(reads):
        add_run(state, ago=dt.timedelta(hours=20 - i), read=read)
    status, signals = card_of(deployment, state)
    assert signals["volume"].card is Card.GREEN
    assert signals["volume"].reason.startswith("rows read 120 within 120 ± 3σ (σ=")
    add_run(state, ago=dt.timedelta(minutes=10), read=4)
    status, signals = card_of(deployment, state)
    assert status.card is Card.YELLOW
    assert signals["volume"].reason == (
        "rows read 4 outside 120 ± 3σ (σ=6.1) of the last 10 incremental runs"
    )


def test_volume_needs_three_runs_of_the_same_kind(
    deployment: Deployment, state: ExchangeState
) -> None:
    add_run(state, ago=dt.timedelta(hours=3), full=True, read=12_000)
    add_run(state, ago=dt.timedelta(minutes=10), read=117)
    _, signals = card_of(deployment, state)
    assert signals["volume"].card is Card.GREEN
    assert signals["volume"].reason == (
        "rows read 117; 0 earlier incremental runs (3 needed to compare)"
    )


def test_schema_evolved_is_yellow_and_a_broken_frozen_contract_red(
    deployment: Deployment, state: ExchangeState
) -> None:
    drift = {"added": {"nickname": "string"}, "removed": {}, "retyped": {}}
    run_id = add_run(state, ago=dt.timedelta(minutes=20), drift=drift)
    status, signals = card_of(deployment, state)
    assert status.card is Card.YELLOW
    assert signals["schema"].reason == (
        f"columns changed in run {run_id} (evolve): added nickname (string)"
    )
    error = "SchemaDriftError: schema drift under policy freeze: removed id_number (string)"
    run_id = add_run(state, ago=dt.timedelta(minutes=10), status="failed", read=None, error=error)
    status, signals = card_of(deployment, state)
    assert status.card is Card.RED
    assert signals["schema"].reason == (
        f"frozen contract broke in run {run_id}: removed id_number (string)"
    )


def test_pass_rate_below_min_is_yellow_below_max_bad_fraction_red_and_held_red(
    deployment: Deployment, state: ExchangeState
) -> None:
    add_run(state, ago=dt.timedelta(minutes=30), read=1000, loaded=940)
    status, signals = card_of(deployment, state)
    assert status.card is Card.YELLOW
    assert signals["quality"].reason == (
        "pass rate 94.00% (60 of 1,000 rows quarantined) in the newest run, below 95.00%"
    )
    add_run(state, ago=dt.timedelta(minutes=20), read=1000, loaded=850)
    status, signals = card_of(deployment, state)
    assert status.card is Card.RED
    assert signals["quality"].reason == (
        "pass rate 85.00% (150 of 1,000 rows quarantined) in the newest run, "
        "below 90% (1 - max_bad_fraction)"
    )
    run_id = add_run(state, ago=dt.timedelta(minutes=10), status="held", read=200, loaded=0)
    status, signals = card_of(deployment, state)
    assert status.card is Card.RED
    assert signals["quality"].reason == (
        f"batch of run {run_id} held by the quality gate: 200 of 200 rows failed "
        "(more than max_bad_fraction 10%)"
    )
    assert status.last_run is not None and status.last_run.status == "held"
    assert signals["failures"].card is Card.GREEN  # a held batch is not a failed run


def test_a_dirty_run_keeps_the_window_below_a_strict_threshold(
    deployment: Deployment, state: ExchangeState
) -> None:
    strict = tuned(deployment, HOUSEHOLD, min_pass_rate=1.0)
    add_run(state, ago=dt.timedelta(minutes=30), full=True, read=2000, loaded=1999)
    add_run(state, ago=dt.timedelta(minutes=10), read=30)
    status, signals = card_of(strict, state)
    assert status.card is Card.YELLOW
    assert signals["quality"].reason == (
        "pass rate 99.95% (1 of 2,030 rows quarantined) over the last 2 runs, below 100.00%"
    )
    assert card_of(deployment, state)[0].card is Card.GREEN


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5 s"), (720, "12 min"), (3600, "1 h"), (11_400, "3 h 10 min"), (187_200, "2 d 4 h")],
)
def test_durations_read_like_a_person_wrote_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
