"""Supervision cards: a green, yellow or red card per source, from its run history.

Each source gets one :class:`Signal` per check, and its card is the worst of them:

- ``freshness`` — time since the last successful run against the overdue time
  (``monitoring.late_after_minutes``, default twice the period of the dataset's
  ``update_frequency``): yellow after ``warn_fraction`` of it, red once overdue.
- ``failures`` — failed runs in a row: yellow from one, red from ``monitoring.failures_red``.
- ``volume`` — rows read by the newest run against the mean and standard deviation of the
  previous runs of the same kind (full or incremental, up to ``monitoring.volume_history``):
  outside mean ± ``volume_sigma`` σ is yellow.
- ``schema`` — the newest finished run's schema drift: yellow when the columns evolved, red
  when a ``freeze`` contract broke (the run failed with a ``SchemaDriftError``).
- ``quality`` — pass rate (rows loaded / rows read) of the newest run that read rows and of the
  recent window: below ``monitoring.min_pass_rate`` yellow, below ``1 - quality.max_bad_fraction``
  red; a batch held whole by the quality gate (run status ``held``) is red.

Reasons are sentences a supervisor can act on; anything taken from a run's error is masked.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from exchange.config import Deployment, SourceConfig
from exchange.standards import mask_ids_in_text
from exchange.state import ExchangeState, RunRecord
from quality.history import HELD, SourceHistory, source_history

__all__ = ["Card", "Signal", "SourceStatus", "evaluate", "format_duration", "worst"]

FREEZE_FAILURE = "SchemaDriftError: schema drift under policy freeze"

UPDATE_PERIOD = {
    "realtime": dt.timedelta(minutes=15),
    "hourly": dt.timedelta(hours=1),
    "daily": dt.timedelta(days=1),
    "weekly": dt.timedelta(weeks=1),
    "monthly": dt.timedelta(days=31),
    "yearly": dt.timedelta(days=366),
}
"""The period of each catalogue ``update_frequency``; overdue after twice it by default."""


class Card(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {Card.GREEN: 0, Card.YELLOW: 1, Card.RED: 2}


@dataclass(frozen=True)
class Signal:
    """One check's verdict on a source."""

    kind: str  # "freshness" | "failures" | "volume" | "schema" | "quality"
    card: Card
    reason: str


@dataclass(frozen=True)
class SourceStatus:
    """A source's card: the worst of its signals, with what it was judged on."""

    source_id: str
    name: str
    department: str
    dataset: str
    card: Card
    signals: tuple[Signal, ...]
    last_run: RunRecord | None
    last_success_at: dt.datetime | None
    freshness_age_s: float | None
    overdue_after_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The status as JSON-ready data (``govx quality status --json``)."""
        run = self.last_run
        return {
            "source_id": self.source_id,
            "name": self.name,
            "department": self.department,
            "dataset": self.dataset,
            "card": self.card.value,
            "signals": [
                {"kind": s.kind, "card": s.card.value, "reason": s.reason} for s in self.signals
            ],
            "last_run": None
            if run is None
            else {
                "run_id": run.run_id,
                "status": _status(run),
                "started_at": run.started_at.isoformat(),
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                "rows_read": run.rows_read,
                "rows_loaded": run.rows_loaded,
            },
            "last_success_at": self.last_success_at.isoformat() if self.last_success_at else None,
            "freshness_age_s": self.freshness_age_s,
            "overdue_after_s": self.overdue_after_s,
        }

    @property
    def problems(self) -> tuple[Signal, ...]:
        """The signals that are not green, worst first."""
        bad = [s for s in self.signals if s.card is not Card.GREEN]
        return tuple(sorted(bad, key=lambda s: -s.card.rank))


def worst(cards: list[Card] | tuple[Card, ...]) -> Card:
    """The worst card of several (green when there are none)."""
    return max(cards, key=lambda c: c.rank, default=Card.GREEN)


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3 h 10 min``, ``2 d 4 h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def _status(run: RunRecord) -> str:
    return str(getattr(run.status, "value", run.status))


def _first_line(text: str | None, limit: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else "no error recorded"
    line = mask_ids_in_text(line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def overdue_after(deployment: Deployment, source: SourceConfig) -> dt.timedelta:
    """How long a source may go without a successful run before it is overdue."""
    if source.monitoring.late_after_minutes is not None:
        return dt.timedelta(minutes=source.monitoring.late_after_minutes)
    dataset = deployment.dataset_by_id.get(source.dataset)
    period = UPDATE_PERIOD[dataset.update_frequency] if dataset else UPDATE_PERIOD["daily"]
    return 2 * period


def freshness_signal(
    source: SourceConfig, history: SourceHistory, limit: dt.timedelta, now: dt.datetime
) -> Signal:
    warn = limit * source.monitoring.warn_fraction
    overdue = f"overdue after {format_duration(limit.total_seconds())}"
    if history.last_success is not None:
        since = history.last_success.finished_at or history.last_success.started_at
        what = "no successful run for"
    elif history.first_started_at is not None:
        since = history.first_started_at
        what = "no successful run since the first attempt"
    else:
        return Signal("freshness", Card.YELLOW, "never synced: no run recorded yet")
    age = now - since
    ago = format_duration(age.total_seconds())
    text = f"{what} {ago}" if history.last_success else f"{what} {ago} ago"
    if age >= limit:
        return Signal("freshness", Card.RED, f"{text}; {overdue}")
    if age >= warn or history.last_success is None:
        due = format_duration((limit - age).total_seconds())
        return Signal("freshness", Card.YELLOW, f"{text}; {overdue} (in {due})")
    return Signal("freshness", Card.GREEN, f"last success {ago} ago; {overdue}")


def failures_signal(source: SourceConfig, history: SourceHistory) -> Signal:
    failed = history.consecutive_failures
    red_at = source.monitoring.failures_red
    if failed == 0:
        return Signal("failures", Card.GREEN, "newest finished run did not fail")
    last = next(r for r in history.finished if _status(r) == "failed")
    runs = "failed run" if failed == 1 else "failed runs"
    text = f"{failed} {runs} in a row (red at {red_at}); last: {_first_line(last.error)}"
    return Signal("failures", Card.RED if failed >= red_at else Card.YELLOW, text)


def _full_read(run: RunRecord) -> bool:
    return run.full_refresh or run.cursor_before is None


def volume_signal(source: SourceConfig, history: SourceHistory) -> Signal:
    runs = history.read_runs
    if not runs:
        return Signal("volume", Card.GREEN, "no rows read yet")
    newest = runs[0]
    kind = "full" if _full_read(newest) else "incremental"
    past = [r.rows_read for r in runs[1:] if _full_read(r) == _full_read(newest)]
    past = past[: source.monitoring.volume_history]
    if len(past) < 3:
        return Signal(
            "volume",
            Card.GREEN,
            f"rows read {newest.rows_read:,}; {len(past)} earlier {kind} runs "
            "(3 needed to compare)",
        )
    mean = statistics.fmean(past)
    sigma = statistics.pstdev(past)
    k = source.monitoring.volume_sigma
    around = f"{mean:,.0f} ± {k:g}σ (σ={sigma:,.1f}) of the last {len(past)} {kind} runs"
    if abs(newest.rows_read - mean) > k * sigma:
        return Signal("volume", Card.YELLOW, f"rows read {newest.rows_read:,} outside {around}")
    return Signal("volume", Card.GREEN, f"rows read {newest.rows_read:,} within {around}")


def _describe_drift(drift: dict) -> str:
    parts = []
    for key in ("added", "removed"):
        if drift.get(key):
            parts.append(f"{key} " + ", ".join(f"{n} ({t})" for n, t in drift[key].items()))
    if drift.get("retyped"):
        parts.append(
            "retyped " + ", ".join(f"{n} {a} -> {b}" for n, (a, b) in drift["retyped"].items())
        )
    return "; ".join(parts) or "columns changed"


def schema_signal(source: SourceConfig, history: SourceHistory) -> Signal:
    newest = history.finished[0] if history.finished else None
    if newest is None:
        return Signal("schema", Card.GREEN, "no finished run yet")
    if _status(newest) == "failed" and (newest.error or "").startswith(FREEZE_FAILURE):
        detail = mask_ids_in_text(newest.error.removeprefix(FREEZE_FAILURE).lstrip(": "))
        return Signal("schema", Card.RED, f"frozen contract broke in run {newest.run_id}: {detail}")
    if newest.schema_drift:
        change = mask_ids_in_text(_describe_drift(newest.schema_drift))
        policy = source.schema_policy
        return Signal(
            "schema", Card.YELLOW, f"columns changed in run {newest.run_id} ({policy}): {change}"
        )
    return Signal("schema", Card.GREEN, "columns as accepted")


def _rate(loaded: int, read: int) -> str:
    return f"{loaded / read:.2%} ({read - loaded:,} of {read:,} rows quarantined)"


def quality_signal(source: SourceConfig, history: SourceHistory) -> Signal:
    runs = [r for r in history.read_runs if r.rows_read]
    if not runs:
        return Signal("quality", Card.GREEN, "no rows read yet")
    newest = runs[0]
    red_below = 1 - source.quality.max_bad_fraction
    yellow_below = source.monitoring.min_pass_rate
    if _status(newest) == HELD:
        bad = newest.rows_quarantined
        failed = f"{bad:,} of {newest.rows_read:,}" if bad is not None else "too many"
        return Signal(
            "quality",
            Card.RED,
            f"batch of run {newest.run_id} held by the quality gate: {failed} rows failed "
            f"(more than max_bad_fraction {source.quality.max_bad_fraction:.0%})",
        )
    loaded = newest.rows_loaded if newest.rows_loaded is not None else newest.rows_read
    rate = loaded / newest.rows_read
    if rate < red_below:
        return Signal(
            "quality",
            Card.RED,
            f"pass rate {_rate(loaded, newest.rows_read)} in the newest run, "
            f"below {red_below:.0%} (1 - max_bad_fraction)",
        )
    window = [r for r in runs[: source.monitoring.volume_history] if _status(r) != HELD]
    read = sum(r.rows_read for r in window)
    passed = sum(r.rows_loaded if r.rows_loaded is not None else r.rows_read for r in window)
    if rate < yellow_below:
        return Signal(
            "quality",
            Card.YELLOW,
            f"pass rate {_rate(loaded, newest.rows_read)} in the newest run, "
            f"below {yellow_below:.2%}",
        )
    if passed / read < yellow_below:
        return Signal(
            "quality",
            Card.YELLOW,
            f"pass rate {_rate(passed, read)} over the last {len(window)} runs, "
            f"below {yellow_below:.2%}",
        )
    return Signal(
        "quality", Card.GREEN, f"pass rate {_rate(passed, read)} over the last {len(window)} runs"
    )


def evaluate_source(
    deployment: Deployment, source: SourceConfig, state: ExchangeState, now: dt.datetime
) -> SourceStatus:
    """One source's signals and card."""
    history = source_history(state, source.id, limit=2 * (source.monitoring.volume_history + 1))
    limit = overdue_after(deployment, source)
    signals = (
        freshness_signal(source, history, limit, now),
        failures_signal(source, history),
        volume_signal(source, history),
        schema_signal(source, history),
        quality_signal(source, history),
    )
    success = history.last_success
    success_at = (success.finished_at or success.started_at) if success else None
    return SourceStatus(
        source_id=source.id,
        name=source.name,
        department=source.department,
        dataset=source.dataset,
        card=worst([s.card for s in signals]),
        signals=signals,
        last_run=history.last_run,
        last_success_at=success_at,
        freshness_age_s=(now - success_at).total_seconds() if success_at else None,
        overdue_after_s=limit.total_seconds(),
    )


def evaluate(
    deployment: Deployment, state: ExchangeState, now: dt.datetime | None = None
) -> list[SourceStatus]:
    """Every configured source's card, in configuration order (read-only)."""
    now = now or dt.datetime.now(dt.UTC)
    return [evaluate_source(deployment, source, state, now) for source in deployment.sources]
