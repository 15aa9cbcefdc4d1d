"""The quarantine: review what the quality gate held, and replay it once the cause is fixed.

Every committed run that held rows points at its quarantine file
(``lake/quarantine/<source>/<run_id>/rows.parquet``: the source's columns plus the masked reasons).
After a department corrects its data at the source, its next sync simply reads the corrected rows;
replay is for the other case — a rule was wrong, or the exchange's reference data (a region code,
a status value) was missing — where the rows as they were delivered should now pass.

:func:`replay` gathers the held rows of a source's committed runs that were not replayed yet and
runs them as a new sync run of that source (its own landing, gate, merge, commit and licenses);
rows that pass now are merged, rows that still fail are held again, by the replay run. The cursor
does not move. A held row whose key has since received a newer version (the department fixed it
and it was synced normally) is dropped rather than replayed, so old data never overwrites new.
Runs whose whole batch was held by the quality threshold are not replayed: their cursor did not
move, so the source's next sync reads those rows again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

from exchange.lakefs import Location, read_table
from exchange.state import ExchangeState, RunRecord, RunStatus, sync_runs

__all__ = ["HeldBatch", "held_batches", "is_replay", "reason_counts", "replay"]

log = logging.getLogger("govexchange.replay")

ORIGIN = "_govx_origin_run_id"
REPLAY_OF = "replay_of"


@dataclass(frozen=True)
class HeldBatch:
    """One run's quarantined rows."""

    source_id: str
    run_id: str
    status: str
    rows: int
    path: str
    finished_at: dt.datetime | None
    replayed_by: str | None


def is_replay(run: RunRecord) -> bool:
    """Whether a run replays quarantined rows (its source report names the runs it replays)."""
    return any(REPLAY_OF in entry for entry in run.source_report or [] if isinstance(entry, dict))


def _replays(state: ExchangeState, source_id: str | None) -> dict[str, str]:
    """``held run id -> succeeded replay run id`` for the source (or all sources)."""
    query = sa.select(sync_runs.c.run_id, sync_runs.c.source_report).where(
        sync_runs.c.status == RunStatus.SUCCEEDED.value,
        sync_runs.c.source_report.is_not(None),
    )
    if source_id is not None:
        query = query.where(sync_runs.c.source_id == source_id)
    replayed: dict[str, str] = {}
    with state.engine.connect() as conn:
        for run_id, report in conn.execute(query):
            for entry in report or []:
                if isinstance(entry, dict) and REPLAY_OF in entry:
                    replayed[entry[REPLAY_OF]] = run_id
    return replayed


def held_batches(state: ExchangeState, source_id: str | None = None) -> list[HeldBatch]:
    """Every run with a quarantine file, newest first, with the replay that took it (if any)."""
    query = (
        sa.select(
            sync_runs.c.source_id,
            sync_runs.c.run_id,
            sync_runs.c.status,
            sync_runs.c.rows_quarantined,
            sync_runs.c.quarantine_path,
            sync_runs.c.finished_at,
        )
        .where(sync_runs.c.quarantine_path.is_not(None))
        .order_by(sync_runs.c.run_id.desc())
    )
    if source_id is not None:
        query = query.where(sync_runs.c.source_id == source_id)
    replayed = _replays(state, source_id)
    with state.engine.connect() as conn:
        return [
            HeldBatch(
                source_id=row.source_id,
                run_id=row.run_id,
                status=row.status,
                rows=row.rows_quarantined or 0,
                path=row.quarantine_path,
                finished_at=row.finished_at,
                replayed_by=replayed.get(row.run_id),
            )
            for row in conn.execute(query)
        ]


def reason_counts(path: Location) -> list[tuple[str, int]]:
    """How many held rows give each (already masked) reason, most frequent first.

    ``path`` is a recorded quarantine file: a local path or a URL on the lake's object store.
    """
    from exchange.lake import REASONS_COLUMN

    reasons = read_table(path, columns=[REASONS_COLUMN]).column(REASONS_COLUMN)
    counts = Counter(reason for row in reasons.to_pylist() for reason in row or [])
    return counts.most_common()


def _held_rows(batches: list[HeldBatch]) -> pa.Table:
    tables = []
    for batch in sorted(batches, key=lambda b: b.run_id):
        table = read_table(batch.path)
        table = table.drop_columns([c for c in table.column_names if c.startswith("_govx_")])
        origin = pa.array([batch.run_id] * table.num_rows, type=pa.string())
        tables.append(table.append_column(ORIGIN, origin))
    return pa.concat_tables(tables, promote_options="permissive")


def replay(
    source_id: str,
    *,
    run_ids: list[str] | None = None,
    context: object | None = None,
) -> RunRecord | None:
    """Replay the source's held rows not replayed yet (or only those of ``run_ids``).

    Returns the replay run (``None`` when there was nothing to replay). Raises ``KeyError`` for a
    run id that has no replayable quarantine, and :class:`exchange.sync.RunFailed` as a sync does.
    """
    from exchange.curated import superseded_rows
    from exchange.lake import LandingWriter
    from exchange.sync import SyncContext, publish, publish_licenses

    context = context if isinstance(context, SyncContext) else SyncContext()
    state = context.get_state()
    source = context.get_deployment().source(source_id)
    candidates = [
        b
        for b in held_batches(state, source_id)
        if b.status == RunStatus.SUCCEEDED.value and b.replayed_by is None
    ]
    if run_ids is not None:
        known = {b.run_id for b in candidates}
        missing = [r for r in run_ids if r not in known]
        if missing:
            raise KeyError(
                f"no quarantine left to replay for run(s) {', '.join(missing)} of {source_id} "
                "(unknown, already replayed, or a held batch that the next sync re-reads)"
            )
        candidates = [b for b in candidates if b.run_id in run_ids]
    if not candidates:
        return None
    table = _held_rows(candidates)
    newer = superseded_rows(table, source, state.committed_versions([source_id]), ORIGIN)
    superseded = pc.sum(newer).as_py() or 0
    table = table.filter(pc.invert(newer)).drop_columns([ORIGIN])
    cursor = state.cursor(source_id)
    run_id = state.start_run(source_id, cursor, full_refresh=False)
    writer = LandingWriter(source_id, run_id, table.schema)
    for batch in table.to_batches(max_chunksize=10_000):
        writer.write(batch)
    writer.close(cursor, cursor)
    report: list[dict] = [{REPLAY_OF: b.run_id, "rows": b.rows} for b in candidates]
    report.append({"superseded_rows": superseded})
    state.mark_landed(run_id, writer.rows, cursor, str(writer.final_dir), source_report=report)
    log.info(
        "run %s replays %d held rows of %s from %d runs (%d dropped: their key has newer data)",
        run_id,
        writer.rows,
        source_id,
        len(candidates),
        superseded,
    )
    publish(run_id, context=context)
    publish_licenses(source_id, context=context)
    return state.run(run_id)
