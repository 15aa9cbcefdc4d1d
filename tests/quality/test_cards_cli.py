"""``govx quality status`` and ``govx quality check`` on the embedded state database."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner

from exchange.cli import app
from exchange.state import ExchangeState, sync_runs
from quality.history import source_cards

REPO = Path(__file__).resolve().parents[2]
RAW_ID = "11010519491231002X"
runner = CliRunner(env={"COLUMNS": "200"})


def govx(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--config", str(REPO / "config"), *args])
    return result.exit_code, result.output


def record_runs() -> None:
    """The household registry synced 10 min ago; the business registry failing for 4 h."""
    now = dt.datetime.now(dt.UTC)
    with ExchangeState() as state:
        state.upgrade()
        with state.engine.begin() as conn:
            for i, (source_id, status, ago, error) in enumerate(
                [
                    ("gd_household_registry", "succeeded", 10, None),
                    ("gd_business_registry", "failed", 240, f"ConnectionError: row {RAW_ID}"),
                ]
            ):
                started = now - dt.timedelta(minutes=ago)
                conn.execute(
                    sync_runs.insert().values(
                        run_id=f"run-{i}",
                        source_id=source_id,
                        status=status,
                        full_refresh=False,
                        started_at=started,
                        finished_at=started + dt.timedelta(minutes=1),
                        rows_read=100 if status == "succeeded" else None,
                        rows_loaded=100 if status == "succeeded" else None,
                        error=error,
                    )
                )


def test_status_prints_each_sources_card_and_why() -> None:
    record_runs()
    code, output = govx("quality", "status")
    assert code == 0, output
    lines = {line.split()[0]: line for line in output.splitlines() if line.strip()}
    assert "green" in lines["gd_household_registry"]
    assert "all signals green" in lines["gd_household_registry"]
    assert "red" in lines["gd_business_registry"]
    assert "no successful run since the first attempt 4 h" in output
    assert "1 failed run in a row (red at 3)" in output
    assert RAW_ID not in output
    assert "never synced: no run recorded yet" in lines["nanhai_real_estate"]
    with ExchangeState() as state, state.engine.connect() as conn:
        assert conn.execute(source_cards.select()).all() == []  # status records nothing


def test_status_json_has_every_source_and_signal() -> None:
    record_runs()
    code, output = govx("quality", "status", "--json")
    assert code == 0, output
    statuses = {s["source_id"]: s for s in json.loads(output)}
    assert set(statuses) == {
        "gd_household_registry",
        "foshan_marriage_registry",
        "chancheng_birth_certificates",
        "gd_business_registry",
        "nanhai_real_estate",
    }
    business = statuses["gd_business_registry"]
    assert business["card"] == "red" and business["last_run"]["status"] == "failed"
    assert [s["kind"] for s in business["signals"]] == [
        "freshness",
        "failures",
        "volume",
        "schema",
        "quality",
    ]
    household = statuses["gd_household_registry"]
    assert (
        household["card"] == "green" and 530 < household["freshness_age_s"] < 600
    )  # finished 9 min ago
    assert household["overdue_after_s"] == 7200


def test_check_records_the_changes_once() -> None:
    record_runs()
    code, output = govx("quality", "check")
    assert code == 0, output
    assert "card changed: gd_business_registry new -> red" in output
    assert "card changed: gd_household_registry" not in output  # a first green is the baseline
    code, output = govx("quality", "check")
    assert code == 0 and "card changed" not in output
    with ExchangeState() as state, state.engine.connect() as conn:
        cards = dict(
            conn.execute(
                source_cards.select().with_only_columns(
                    source_cards.c.source_id, source_cards.c.card
                )
            ).all()
        )
    assert cards["gd_business_registry"] == "red" and cards["gd_household_registry"] == "green"
