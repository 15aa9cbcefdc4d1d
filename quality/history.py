"""What the supervision cards read and remember: each source's run history and its recorded card.

Read side (nothing here writes ``sync_runs``): :func:`source_history` gathers one source's
recent runs, its last successful run and how many of its newest runs failed in a row.

Memory: the ``source_cards`` table (Alembic revision 0005 of the exchange state database) keeps
each source's current card, when it last changed and which alert channels still owe the change.
It shares :data:`exchange.state.metadata`, so the state database's migrations see it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from exchange.state import ExchangeState, RunRecord, RunStatus, metadata, sync_runs

__all__ = ["HELD", "SourceHistory", "source_cards", "source_history"]

HELD = "held"
"""Status of a run whose batch the quality gate held whole (``RunStatus.HELD`` once it exists)."""

FINISHED = ("succeeded", "failed", HELD)
IN_FLIGHT = ("running", "landed")

source_cards = sa.Table(
    "source_cards",
    metadata,
    sa.Column("source_id", sa.String(64), primary_key=True),
    sa.Column("card", sa.String(8), nullable=False),
    sa.Column("previous_card", sa.String(8)),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("alert_due", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("webhook_sent_at", sa.DateTime(timezone=True)),
    sa.Column("email_sent_at", sa.DateTime(timezone=True)),
    sa.Column("alert_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("alert_error", sa.Text),
)


@dataclass(frozen=True)
class SourceHistory:
    """One source's recent runs (newest first) and what the cards need from further back."""

    source_id: str
    runs: tuple[RunRecord, ...]
    last_success: RunRecord | None
    first_started_at: dt.datetime | None

    @property
    def last_run(self) -> RunRecord | None:
        """The newest run, whatever its status."""
        return self.runs[0] if self.runs else None

    @property
    def finished(self) -> tuple[RunRecord, ...]:
        """The runs that ended (succeeded, failed or held), newest first."""
        return tuple(r for r in self.runs if _status(r) in FINISHED)

    @property
    def consecutive_failures(self) -> int:
        """Failed runs in a row, counted back from the newest finished run."""
        count = 0
        for run in self.finished:
            if _status(run) != "failed":
                break
            count += 1
        return count

    @property
    def read_runs(self) -> tuple[RunRecord, ...]:
        """Finished runs that read rows (``rows_read`` recorded), newest first."""
        return tuple(r for r in self.finished if r.rows_read is not None and _status(r) != "failed")


def _status(run: RunRecord) -> str:
    return str(getattr(run.status, "value", run.status))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite drops the zone; we store UTC
        return value.replace(tzinfo=dt.UTC)
    return value


def _record(row: sa.Row) -> RunRecord:
    """A run row as a :class:`RunRecord`; a status this code's ``RunStatus`` lacks stays text."""
    data = dict(row._mapping)
    for key in ("started_at", "landed_at", "finished_at", "licenses_published_at"):
        data[key] = _aware(data[key])
    with contextlib.suppress(ValueError):  # e.g. "held" before RunStatus.HELD exists
        data["status"] = RunStatus(data["status"])
    return RunRecord(**data)


def source_history(state: ExchangeState, source_id: str, limit: int = 21) -> SourceHistory:
    """The source's ``limit`` newest runs, its last successful run and its first run's start."""
    newest = sa.select(sync_runs).where(sync_runs.c.source_id == source_id)
    newest = newest.order_by(sync_runs.c.started_at.desc(), sync_runs.c.run_id.desc())
    with state.engine.connect() as conn:
        runs = tuple(_record(row) for row in conn.execute(newest.limit(limit)))
        last_success = next((r for r in runs if _status(r) == "succeeded"), None)
        if last_success is None:
            row = conn.execute(
                newest.where(sync_runs.c.status == "succeeded").limit(1)
            ).one_or_none()
            last_success = _record(row) if row is not None else None
        first = conn.execute(
            sa.select(sa.func.min(sync_runs.c.started_at)).where(sync_runs.c.source_id == source_id)
        ).scalar_one_or_none()
    return SourceHistory(source_id, runs, last_success, _aware(first))
