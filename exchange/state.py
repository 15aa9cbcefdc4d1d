"""Sync runs and source cursors: the exchange's memory of what it has pulled and how far.

A run goes ``running`` -> ``landed`` (its batch is in the lake) -> ``succeeded`` (committed),
``failed``, or ``held`` (too many rows failed the quality gate: nothing merged, the cursor stays,
the quarantine file is kept for review). Committing is one transaction: the run record, the new
cursor, and the run's curated row versions file and quarantine file (written beforehand under
names nothing reads until this row points at them). A run killed before it is simply re-done
from the old cursor.

License derivation follows the commit: ``licenses_published_at`` stays empty until the run's
row versions are in the license library, and :meth:`ExchangeState.pending_license_runs` lists
the runs still owed (the license upsert is idempotent, so doing one twice writes nothing).
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from exchange.db import begin_write, make_engine
from exchange.migrations import MIGRATIONS

__all__ = ["ExchangeState", "RunNotLanded", "RunRecord", "RunStatus", "metadata", "new_run_id"]

metadata = sa.MetaData()

sync_runs = sa.Table(
    "sync_runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("full_refresh", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("landed_at", sa.DateTime(timezone=True)),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("cursor_before", sa.JSON),
    sa.Column("cursor_after", sa.JSON),
    sa.Column("rows_read", sa.Integer),
    sa.Column("rows_loaded", sa.Integer),
    sa.Column("rows_quarantined", sa.Integer),
    sa.Column("licenses_inserted", sa.Integer),
    sa.Column("licenses_updated", sa.Integer),
    sa.Column("licenses_unchanged", sa.Integer),
    sa.Column("landing_path", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("schema_drift", sa.JSON),
    sa.Column("source_report", sa.JSON),
    sa.Column("curated_path", sa.Text),
    sa.Column("quarantine_path", sa.Text),
    sa.Column("rows_new", sa.Integer),
    sa.Column("rows_changed", sa.Integer),
    sa.Column("rows_deleted", sa.Integer),
    sa.Column("rows_unchanged", sa.Integer),
    sa.Column("licenses_published_at", sa.DateTime(timezone=True)),
    sa.Column("origin", sa.String(6)),  # a run received from a child node: where it committed
    sa.Column("dataset_id", sa.String(64)),  # a received run's dataset
    sa.Index("ix_sync_runs_source_started", "source_id", "started_at"),
)

source_cursors = sa.Table(
    "source_cursors",
    metadata,
    sa.Column("source_id", sa.String(64), primary_key=True),
    sa.Column("cursor_value", sa.JSON),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("accepted_schema", sa.JSON),
)


class RunNotLanded(RuntimeError):
    """A commit found its run no longer ``landed``: another attempt finished it first."""


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    LANDED = "landed"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    HELD = "held"  # the quality gate held the whole batch: nothing merged, the cursor stayed


@dataclass(frozen=True)
class RunRecord:
    """One sync run as recorded."""

    run_id: str
    source_id: str
    status: RunStatus
    full_refresh: bool
    started_at: dt.datetime
    landed_at: dt.datetime | None
    finished_at: dt.datetime | None
    cursor_before: Any
    cursor_after: Any
    rows_read: int | None
    rows_loaded: int | None
    rows_quarantined: int | None
    licenses_inserted: int | None
    licenses_updated: int | None
    licenses_unchanged: int | None
    landing_path: str | None
    error: str | None
    schema_drift: dict | None = None
    source_report: list[dict] | None = None
    curated_path: str | None = None
    quarantine_path: str | None = None
    rows_new: int | None = None
    rows_changed: int | None = None
    rows_deleted: int | None = None
    rows_unchanged: int | None = None
    licenses_published_at: dt.datetime | None = None
    origin: str | None = None
    """For a run received from a child node: the region code of the node that committed it."""
    dataset_id: str | None = None
    """For a received run: its dataset (its source is not configured at this node)."""

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_run_id() -> str:
    """A sortable, unique run id: ``<UTC timestamp>-<random>``."""
    stamp = _now().strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:8]}"


def _record(row: sa.Row) -> RunRecord:
    data = dict(row._mapping)
    for key in ("started_at", "landed_at", "finished_at", "licenses_published_at"):
        value = data[key]
        if value is not None and value.tzinfo is None:  # SQLite drops the zone; we store UTC
            data[key] = value.replace(tzinfo=dt.UTC)
    data["status"] = RunStatus(data["status"])
    return RunRecord(**data)


class ExchangeState:
    """Run records and cursors in the exchange state database (``GOVX_EXCHANGE_DB_URL``)."""

    def __init__(self, url: str | None = None) -> None:
        if url is None:
            from exchange.settings import exchange_db_url

            url = exchange_db_url()
        self.engine = make_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ExchangeState:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def upgrade(self) -> None:
        """Apply the state database's migrations (idempotent)."""
        if not MIGRATIONS.is_current(self.engine):
            MIGRATIONS.upgrade(self.engine)

    def cursor(self, source_id: str) -> Any | None:
        """The saved watermark of a source, or ``None`` if it never synced."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(source_cursors.c.cursor_value).where(
                    source_cursors.c.source_id == source_id
                )
            ).scalar_one_or_none()

    def accepted_schema(self, source_id: str) -> list[dict[str, str]] | None:
        """The columns of the source's last accepted run (``None`` before the first)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(source_cursors.c.accepted_schema).where(
                    source_cursors.c.source_id == source_id
                )
            ).scalar_one_or_none()

    def accept_schema(self, source_id: str, schema: list[dict[str, str]]) -> None:
        """Make ``schema`` the one the source's next runs are compared with."""
        with begin_write(self.engine) as conn:
            accepted = conn.execute(
                source_cursors.update()
                .where(source_cursors.c.source_id == source_id)
                .values(accepted_schema=schema)
            ).rowcount
        if not accepted:
            raise KeyError(f"source {source_id!r} has no successful run yet")

    def start_run(self, source_id: str, cursor_before: Any, full_refresh: bool) -> str:
        run_id = new_run_id()
        with begin_write(self.engine) as conn:
            conn.execute(
                sync_runs.insert().values(
                    run_id=run_id,
                    source_id=source_id,
                    status=RunStatus.RUNNING.value,
                    full_refresh=full_refresh,
                    started_at=_now(),
                    cursor_before=cursor_before,
                )
            )
        return run_id

    def mark_landed(
        self,
        run_id: str,
        rows_read: int,
        cursor_after: Any,
        landing_path: str,
        schema_drift: dict[str, Any] | None = None,
        source_report: list[dict[str, Any]] | None = None,
    ) -> None:
        self._update(
            run_id,
            status=RunStatus.LANDED.value,
            landed_at=_now(),
            rows_read=rows_read,
            cursor_after=cursor_after,
            landing_path=landing_path,
            schema_drift=schema_drift,
            source_report=source_report,
        )

    def finish_run(
        self,
        run: RunRecord,
        *,
        rows_loaded: int,
        rows_quarantined: int,
        changes: Mapping[str, int],
        curated_path: str | None,
        quarantine_path: str | None,
        accepted_schema: list[dict[str, str]] | None = None,
    ) -> RunRecord:
        """Commit a landed run: succeeded, its files part of the lake, its source's cursor moved.

        One transaction. ``changes`` counts the curated row versions (``new``, ``changed``,
        ``deleted``, ``unchanged``); ``curated_path`` and ``quarantine_path`` are the files the
        run wrote (``None`` when it had nothing to write). ``accepted_schema`` (the run's
        columns, when its rows were accepted) becomes the schema the next run is compared with;
        ``None`` keeps the previous one. Refused if the run is no longer ``landed`` (another
        attempt committed or failed it meanwhile).
        """
        now = _now()
        with begin_write(self.engine) as conn:
            committed = conn.execute(
                sync_runs.update()
                .where(
                    sync_runs.c.run_id == run.run_id,
                    sync_runs.c.status == RunStatus.LANDED.value,
                )
                .values(
                    status=RunStatus.SUCCEEDED.value,
                    finished_at=now,
                    rows_loaded=rows_loaded,
                    rows_quarantined=rows_quarantined,
                    rows_new=changes.get("new", 0),
                    rows_changed=changes.get("changed", 0),
                    rows_deleted=changes.get("deleted", 0),
                    rows_unchanged=changes.get("unchanged", 0),
                    curated_path=curated_path,
                    quarantine_path=quarantine_path,
                    error=None,
                )
            ).rowcount
            if not committed:
                raise RunNotLanded(f"run {run.run_id} is no longer landed; nothing committed")
            values = {"cursor_value": run.cursor_after, "run_id": run.run_id, "updated_at": now}
            if accepted_schema is not None:
                values["accepted_schema"] = accepted_schema
            moved = conn.execute(
                source_cursors.update()
                .where(source_cursors.c.source_id == run.source_id)
                .values(**values)
            ).rowcount
            if not moved:
                conn.execute(source_cursors.insert().values(source_id=run.source_id, **values))
        return self.run(run.run_id)

    def hold_run(
        self,
        run: RunRecord,
        *,
        rows_loaded: int,
        rows_quarantined: int,
        quarantine_path: str | None,
        reason: str,
    ) -> RunRecord:
        """End a landed run as ``held``: the gate refused its batch; the cursor does not move.

        One transaction. ``rows_loaded`` counts the rows that passed the gate (none of them is
        merged), ``rows_quarantined`` those that failed it; ``quarantine_path`` keeps the
        failing rows for review. Refused like :meth:`finish_run` if the run is no longer landed.
        """
        with begin_write(self.engine) as conn:
            held = conn.execute(
                sync_runs.update()
                .where(
                    sync_runs.c.run_id == run.run_id,
                    sync_runs.c.status == RunStatus.LANDED.value,
                )
                .values(
                    status=RunStatus.HELD.value,
                    finished_at=_now(),
                    rows_loaded=rows_loaded,
                    rows_quarantined=rows_quarantined,
                    quarantine_path=quarantine_path,
                    error=reason[:4000],
                )
            ).rowcount
            if not held:
                raise RunNotLanded(f"run {run.run_id} is no longer landed; nothing held")
        return self.run(run.run_id)

    def pending_license_runs(self, source_id: str) -> list[RunRecord]:
        """Committed runs of a source whose licenses are not yet published, oldest first."""
        query = (
            sa.select(sync_runs)
            .where(
                sync_runs.c.source_id == source_id,
                sync_runs.c.status == RunStatus.SUCCEEDED.value,
                sync_runs.c.licenses_published_at.is_(None),
            )
            .order_by(sync_runs.c.run_id)
        )
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def mark_licenses_published(
        self, run_id: str, *, inserted: int, updated: int, unchanged: int
    ) -> RunRecord:
        """Record that a committed run's row versions are in the license library."""
        self._update(
            run_id,
            licenses_published_at=_now(),
            error=None,
            licenses_inserted=inserted,
            licenses_updated=updated,
            licenses_unchanged=unchanged,
        )
        return self.run(run_id)

    def committed_versions(
        self, source_ids: Iterable[str], until: dt.datetime | None = None
    ) -> list[RunRecord]:
        """Succeeded runs of the sources that committed a row versions file, in commit order.

        ``until`` keeps only the runs committed at or before that instant (what the exchange
        knew then).
        """
        query = (
            sa.select(sync_runs)
            .where(
                sync_runs.c.source_id.in_(list(source_ids)),
                sync_runs.c.status == RunStatus.SUCCEEDED.value,
                sync_runs.c.curated_path.is_not(None),
            )
            .order_by(sync_runs.c.run_id)
        )
        if until is not None:
            query = query.where(sync_runs.c.finished_at <= until)
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def record_error(self, run_id: str, error: str) -> None:
        """Note why an attempt failed without ending the run (it can be attempted again)."""
        self._update(run_id, error=error[:4000])

    def succeeded_since(self, source_id: str, started_at: dt.datetime) -> bool:
        """Whether a run of the source that started after ``started_at`` has succeeded."""
        query = (
            sa.select(sa.func.count())
            .select_from(sync_runs)
            .where(
                sync_runs.c.source_id == source_id,
                sync_runs.c.status == RunStatus.SUCCEEDED.value,
                sync_runs.c.started_at > started_at,
            )
        )
        with self.engine.connect() as conn:
            return bool(conn.execute(query).scalar_one())

    def fail_run(self, run_id: str, error: str) -> None:
        self._update(run_id, status=RunStatus.FAILED.value, finished_at=_now(), error=error[:4000])

    def _update(self, run_id: str, **values: Any) -> None:
        with begin_write(self.engine) as conn:
            conn.execute(sync_runs.update().where(sync_runs.c.run_id == run_id).values(**values))

    def run(self, run_id: str) -> RunRecord:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(sync_runs).where(sync_runs.c.run_id == run_id)
            ).one_or_none()
        if row is None:
            raise KeyError(f"unknown run {run_id!r}")
        return _record(row)

    def runs(self, source_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The most recent runs first (this node's own runs only, unless ``source_id`` names
        a received source)."""
        query = sa.select(sync_runs).order_by(sync_runs.c.started_at.desc()).limit(limit)
        if source_id is not None:
            query = query.where(sync_runs.c.source_id == source_id)
        else:
            query = query.where(sync_runs.c.origin.is_(None))
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    # -- runs received from child nodes (dataset packages) ------------------------------------

    def received_sources(self, dataset_id: str | None = None) -> dict[str, str]:
        """Sources whose runs this node received from its children: source id -> dataset id
        (only ``dataset_id``'s if given)."""
        query = (
            sa.select(sync_runs.c.source_id, sync_runs.c.dataset_id)
            .where(sync_runs.c.origin.is_not(None))
            .distinct()
        )
        if dataset_id is not None:
            query = query.where(sync_runs.c.dataset_id == dataset_id)
        with self.engine.connect() as conn:
            return {row.source_id: row.dataset_id for row in conn.execute(query)}

    def shareable_runs(self, excluded_datasets: Iterable[str] = ()) -> list[RunRecord]:
        """Committed runs with a row versions file, this node's own and received ones, oldest
        commit first; received runs of ``excluded_datasets`` are left out (an own run's
        dataset comes from the source's configuration: the caller filters those)."""
        query = (
            sa.select(sync_runs)
            .where(
                sync_runs.c.status == RunStatus.SUCCEEDED.value,
                sync_runs.c.curated_path.is_not(None),
            )
            .order_by(sync_runs.c.finished_at, sync_runs.c.run_id)
        )
        excluded = sorted(set(excluded_datasets))
        if excluded:
            query = query.where(
                sa.or_(sync_runs.c.dataset_id.is_(None), sync_runs.c.dataset_id.not_in(excluded))
            )
        with self.engine.connect() as conn:
            return [_record(row) for row in conn.execute(query)]

    def record_received_run(
        self,
        *,
        run_id: str,
        source_id: str,
        dataset_id: str,
        origin: str,
        committed_at: dt.datetime,
        curated_path: str,
        rows: int,
    ) -> bool:
        """Record a run a child node sent up as committed here; False if it was recorded
        before (the same run, source and file: a replayed package).

        Raises ``ValueError`` if the id is taken by another run, or the source is one of this
        node's own (a received run must never mix with a local source's versions).
        """
        now = _now()
        with begin_write(self.engine) as conn:
            found = conn.execute(
                sa.select(
                    sync_runs.c.source_id, sync_runs.c.origin, sync_runs.c.curated_path
                ).where(sync_runs.c.run_id == run_id)
            ).one_or_none()
            if found is not None:
                if (found.source_id, found.origin, found.curated_path) != (
                    source_id,
                    origin,
                    curated_path,
                ):
                    raise ValueError(f"run {run_id} is already recorded here as another run")
                return False
            local = conn.execute(
                sa.select(sa.func.count())
                .select_from(sync_runs)
                .where(sync_runs.c.source_id == source_id, sync_runs.c.origin.is_(None))
            ).scalar_one()
            if local:
                raise ValueError(
                    f"source {source_id} is synced at this node: runs of it from node {origin} "
                    "would mix with its own"
                )
            conn.execute(
                sync_runs.insert().values(
                    run_id=run_id,
                    source_id=source_id,
                    status=RunStatus.SUCCEEDED.value,
                    full_refresh=False,
                    started_at=committed_at,
                    finished_at=now,
                    rows_loaded=rows,
                    curated_path=curated_path,
                    licenses_published_at=now,  # its licenses travel in licenses packages
                    origin=origin,
                    dataset_id=dataset_id,
                )
            )
        return True
