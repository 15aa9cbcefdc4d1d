"""The source page's chart geometry and the quarantine browser's masking, without a server."""

from __future__ import annotations

import datetime as dt

import pytest
from stdnum.cn import ric

from exchange.admin.chart import pass_rate, run_chart
from exchange.admin.quarantine import masked_cell, valid_run_id
from exchange.admin.timefmt import age_text, local_time
from exchange.state import RunRecord, RunStatus

T0 = dt.datetime(2026, 11, 28, 1, 0, tzinfo=dt.UTC)
RESIDENT = "44060419900101123" + ric.calc_check_digit("44060419900101123" + "0")


def run(minutes: int, status: RunStatus, read: int | None, loaded: int | None) -> RunRecord:
    return RunRecord(
        run_id=f"r{minutes:04d}",
        source_id="s",
        status=status,
        full_refresh=False,
        started_at=T0 + dt.timedelta(minutes=minutes),
        landed_at=None,
        finished_at=None,
        cursor_before=None,
        cursor_after=None,
        rows_read=read,
        rows_loaded=loaded,
        rows_quarantined=None if read is None or loaded is None else read - loaded,
        licenses_inserted=None,
        licenses_updated=None,
        licenses_unchanged=None,
        landing_path=None,
        error=None,
    )


def test_chart_draws_every_run_oldest_first_and_a_point_per_gated_run() -> None:
    runs = [
        run(60, RunStatus.SUCCEEDED, 50, 25),
        run(0, RunStatus.SUCCEEDED, 100, 100),
        run(30, RunStatus.FAILED, None, None),
    ]
    chart = run_chart(runs)
    assert chart is not None
    first, failed, last = chart.bars
    assert first.x < failed.x < last.x  # in start order, whatever order they came in
    assert first.height == pytest.approx(chart.plot_bottom - chart.plot_top)
    assert last.height == pytest.approx(first.height / 2)
    assert failed.height == 0
    assert all(bar.y + bar.height == pytest.approx(chart.plot_bottom) for bar in chart.bars)
    top, half = chart.points  # the failed run never reached the gate: no pass rate
    assert top.y == pytest.approx(chart.plot_top)
    assert half.y == pytest.approx((chart.plot_top + chart.plot_bottom) / 2)
    assert chart.polyline == f"{top.x:.1f},{top.y:.1f} {half.x:.1f},{half.y:.1f}"
    assert chart.first_label == "2026-11-28 09:00" and chart.last_label == "2026-11-28 10:00"
    assert run_chart([]) is None
    assert pass_rate(run(0, RunStatus.SUCCEEDED, 0, 0)) is None


def test_cells_are_masked_and_bounded() -> None:
    assert RESIDENT not in masked_cell(f"holder {RESIDENT} moved")
    assert masked_cell(RESIDENT) == RESIDENT[:4] + "*" * 10 + RESIDENT[-4:]
    assert masked_cell(None) == ""
    assert masked_cell(dt.date(2024, 1, 2)) == "2024-01-02"
    assert masked_cell("张三丰", lambda text: text[:1] + "**") == "张**"
    assert len(masked_cell("x" * 500)) == 80


def test_run_ids_and_time_texts() -> None:
    assert valid_run_id("20261128T183103886615Z-2791dc57")
    for bad in ("", "..", "../x", "a/b", "x" * 65, ".hidden", "a\x00b", "run\n"):
        assert not valid_run_id(bad), bad
    assert local_time(dt.datetime(2026, 1, 1, 16, 30)) == "2026-01-02 00:30"  # naive = UTC
    assert local_time(None) == "—"
    assert age_text(None) == "—" and age_text(42) == "42 秒" and age_text(7200) == "2.0 小时"
    assert age_text(3 * 86400) == "3.0 天"
