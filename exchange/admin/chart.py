"""The run-history chart of a source page: rows read per run (bars) and pass rate (line), as SVG.

:func:`run_chart` turns run records into plain shapes (coordinates in SVG user units) that the
template draws; no JavaScript and no chart library, so the page works on an isolated network and
its geometry is tested here. Runs are spaced evenly in start order (oldest left); the first and
last run's dates label the time axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from exchange.admin.timefmt import local_time
from exchange.state import RunRecord

__all__ = ["Bar", "Chart", "Point", "pass_rate", "run_chart"]

WIDTH = 720
HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 56, 56, 16, 40


@dataclass(frozen=True)
class Bar:
    """One run's rows read."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True)
class Point:
    """One run's pass rate."""

    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Chart:
    """Everything the template needs to draw the chart."""

    width: int
    height: int
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int
    max_rows: int
    bars: tuple[Bar, ...]
    points: tuple[Point, ...]
    first_label: str
    last_label: str

    @property
    def polyline(self) -> str:
        """The pass-rate points as an SVG ``points`` attribute."""
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)

    def rows_y(self, fraction: float) -> float:
        return self.plot_bottom - fraction * (self.plot_bottom - self.plot_top)


def pass_rate(run: RunRecord) -> float | None:
    """Loaded / read, or ``None`` when the run read nothing or did not get as far as the gate."""
    if not run.rows_read or run.rows_loaded is None:
        return None
    return run.rows_loaded / run.rows_read


def run_chart(runs: Sequence[RunRecord]) -> Chart | None:
    """The chart of ``runs`` (any order), or ``None`` when there is no run to draw."""
    ordered = sorted(runs, key=lambda run: (run.started_at, run.run_id))
    if not ordered:
        return None
    plot_right, plot_bottom = WIDTH - RIGHT, HEIGHT - BOTTOM
    slot = (plot_right - LEFT) / len(ordered)
    max_rows = max((run.rows_read or 0) for run in ordered) or 1
    height = plot_bottom - TOP
    bars: list[Bar] = []
    points: list[Point] = []
    for index, run in enumerate(ordered):
        centre = LEFT + slot * (index + 0.5)
        rows = run.rows_read or 0
        bar_height = max(height * rows / max_rows, 1.0 if rows else 0.0)
        when = local_time(run.started_at)
        bars.append(
            Bar(
                x=centre - slot * 0.35,
                y=plot_bottom - bar_height,
                width=slot * 0.7,
                height=bar_height,
                title=f"{when} {run.status}: 读取 {rows} 行",
            )
        )
        rate = pass_rate(run)
        if rate is not None:
            points.append(
                Point(
                    x=centre,
                    y=plot_bottom - height * rate,
                    title=f"{when} 通过率 {rate:.1%}",
                )
            )
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        plot_left=LEFT,
        plot_right=plot_right,
        plot_top=TOP,
        plot_bottom=plot_bottom,
        max_rows=max_rows,
        bars=tuple(bars),
        points=tuple(points),
        first_label=local_time(ordered[0].started_at),
        last_label=local_time(ordered[-1].started_at),
    )
