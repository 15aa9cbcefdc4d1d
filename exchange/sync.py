"""Sync runs: pull a source through its connector, land it, gate it, publish its licenses.

A run has two steps, which Airflow runs as two tasks and ``govx sync`` runs back to back:

1. :func:`land` -- extract from the department system (incrementally from the saved cursor, or in
   full) and write the batch to the lake (Parquet + manifest). The cursor does not move yet.
2. :func:`publish` -- read the landed batch, split it through the quality gate, upsert the
   licenses in one store transaction, keep held rows in the quarantine, then mark the run
   succeeded and advance the cursor in one state transaction.

A run that dies anywhere is re-done from the old cursor; re-publishing unchanged content writes
nothing (the store compares content hashes), so no row is lost or duplicated.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from exchange.config import Deployment, SourceConfig, load_deployment
from exchange.lake import LandingWriter, landed_batches, read_manifest, write_quarantine
from exchange.schema_drift import SchemaDrift, SchemaDriftError, compare_schemas
from exchange.standards.holder_ids import mask_ids_in_text
from exchange.state import ExchangeState, RunRecord, RunStatus

__all__ = ["RunFailed", "SyncContext", "land", "publish", "sync"]

log = logging.getLogger("govexchange.sync")

ProgressCallback = Callable[[int], None]


class RunFailed(RuntimeError):
    """A sync run failed; the message says which source, which run and why (IDs masked).

    ``terminal`` is true when retrying cannot help (bad credentials, a missing table or column,
    a superseded run); a scheduler retries the others. The original exception is not chained:
    driver messages may quote row values, and this message is the masked account of it.
    """

    def __init__(
        self, source_id: str, run_id: str | None, reason: str, *, terminal: bool = False
    ) -> None:
        self.source_id = source_id
        self.run_id = run_id
        self.reason = reason
        self.terminal = terminal
        where = f"source {source_id}" + (f", run {run_id}" if run_id else "")
        super().__init__(f"{where}: {reason}")


def _is_terminal(exc: BaseException) -> bool:
    from connectors.errors import TerminalError
    from quality.gate import MissingColumns

    return isinstance(exc, TerminalError | MissingColumns | SchemaDriftError | KeyError)


@dataclass
class SyncContext:
    """What a run needs; each part defaults to the deployment's configured one."""

    deployment: Deployment | None = None
    state: ExchangeState | None = None
    store_url: str | None = None

    def get_deployment(self) -> Deployment:
        if self.deployment is None:
            self.deployment = load_deployment()
        return self.deployment

    def get_state(self) -> ExchangeState:
        if self.state is None:
            self.state = ExchangeState()
            self.state.upgrade()
        return self.state


RETRY_BASE_DELAY_S = 1.0
RETRY_MAX_DELAY_S = 60.0


def _retry_delay(attempt: int) -> float:
    """Exponential backoff with full jitter: a random delay up to ``base * 2**(attempt-1)``."""
    return random.uniform(0, min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** (attempt - 1)))


def _reason(exc: BaseException) -> str:
    return mask_ids_in_text(f"{type(exc).__name__}: {exc}")


def land(
    source_id: str,
    *,
    full_refresh: bool = False,
    context: SyncContext | None = None,
    on_rows: ProgressCallback | None = None,
) -> RunRecord:
    """Extract a source and land the batch in the lake; returns the run, status ``landed``."""
    from connectors.base import ExtractRequest
    from connectors.registry import connector_class
    from exchange.connections import resolve_connection

    context = context or SyncContext()
    source = context.get_deployment().source(source_id)
    state = context.get_state()
    since = None if full_refresh else state.cursor(source_id)
    run_id = state.start_run(source_id, since, full_refresh)
    log.info(
        "run %s of %s started (%s)",
        run_id,
        source_id,
        "full refresh" if since is None else "incremental",
    )
    attempt = 0
    while True:
        attempt += 1
        writer: LandingWriter | None = None
        try:
            connection = resolve_connection(source.connection)
            request = ExtractRequest(
                source_id=source_id,
                options=source.connector.options,
                url=connection.url,
                primary_key=source.primary_key,
                cursor_column=source.cursor,
                since=since,
            )
            extraction = connector_class(source.connector.kind)(request).extract()
            writer = LandingWriter(source_id, run_id, extraction.schema)
            for batch in extraction:
                writer.write(batch)
                if on_rows:
                    on_rows(batch.num_rows)
            drift = _check_drift(source, run_id, state, extraction.schema, writer.rows)
            cursor_after = extraction.cursor_after
            writer.close(since, cursor_after)
            state.mark_landed(
                run_id,
                writer.rows,
                cursor_after,
                str(writer.final_dir),
                schema_drift=drift.to_json() if drift.changed else None,
                source_report=_source_report(extraction, run_id, source_id),
            )
            break
        except Exception as exc:
            if writer is not None:
                writer.abort()
            reason = _reason(exc)
            terminal = _is_terminal(exc)
            if not terminal and attempt <= source.retries:
                delay = _retry_delay(attempt)
                log.warning(
                    "run %s of %s: attempt %d failed (%s); extracting again in %.1f s",
                    run_id,
                    source_id,
                    attempt,
                    reason,
                    delay,
                )
                if on_rows:
                    on_rows(-writer.rows if writer is not None else 0)
                time.sleep(delay)
                continue
            if attempt > 1:
                reason = f"{reason} (after {attempt} attempts)"
            state.fail_run(run_id, reason)
            log.error("run %s of %s failed while landing: %s", run_id, source_id, reason)
            raise RunFailed(source_id, run_id, reason, terminal=terminal) from None
    log.info("run %s of %s landed %d rows", run_id, source_id, writer.rows)
    return state.run(run_id)


def _source_report(extraction: object, run_id: str, source_id: str) -> list[dict] | None:
    """What the connector says about the run beyond its rows: today, each dropped file's fate."""
    files = getattr(extraction, "files", None)
    if files is None:
        return None
    report = [dataclasses.asdict(outcome) for outcome in files]
    for outcome in report:
        if outcome["status"] == "rejected":
            log.warning(
                "run %s of %s rejected file %s: %s",
                run_id,
                source_id,
                outcome["name"],
                outcome["reason"],
            )
    return report


def _check_drift(
    source: SourceConfig, run_id: str, state: ExchangeState, schema: pa.Schema, rows: int
) -> SchemaDrift:
    """Compare a run's columns with the accepted ones; ``freeze`` raises before anything lands.

    A run without rows says nothing about the source's columns (a files source with no new
    file, say), so it never counts as drift.
    """
    if not rows:
        return SchemaDrift()
    drift = compare_schemas(state.accepted_schema(source.id), schema)
    if drift.changed:
        if source.schema_policy == "freeze":
            raise SchemaDriftError(f"schema drift under policy freeze: {drift.describe()}")
        log.warning(
            "run %s of %s: schema drift (policy %s): %s",
            run_id,
            source.id,
            source.schema_policy,
            drift.describe(),
        )
    return drift


def _held_for_drift(run: RunRecord, source: SourceConfig) -> str | None:
    """The reason to hold every row of a run whose columns drifted under ``quarantine``."""
    if not run.schema_drift or source.schema_policy != "quarantine":
        return None
    drift = run.schema_drift
    added, removed, retyped = (drift.get(k) or {} for k in ("added", "removed", "retyped"))
    return "schema drift under policy quarantine: columns " + "; ".join(
        part
        for part in (
            f"added {', '.join(added)}" if added else "",
            f"removed {', '.join(removed)}" if removed else "",
            f"retyped {', '.join(retyped)}" if retyped else "",
        )
        if part
    )


def _gated_records(
    run: RunRecord,
    source: SourceConfig,
    deployment: Deployment,
    counts: dict[str, int],
    held: list[pa.Table],
    on_rows: ProgressCallback | None,
) -> Iterator:
    from exchange.derive import LicenseDeriver
    from quality.gate import RowGate

    gate = RowGate(source, deployment)
    deriver = LicenseDeriver(source, deployment, run.run_id)
    hold_all = _held_for_drift(run, source)
    for batch in landed_batches(Path(run.landing_path or "")):
        result = gate.hold(batch, hold_all) if hold_all else gate.split(batch)
        counts["loaded"] += result.passed.num_rows
        counts["quarantined"] += result.quarantined.num_rows
        if result.quarantined.num_rows:
            held.append(result.quarantined)
        yield from deriver.records(result.passed)
        if on_rows:
            on_rows(batch.num_rows)


def publish(
    run_id: str,
    *,
    context: SyncContext | None = None,
    on_rows: ProgressCallback | None = None,
) -> RunRecord:
    """Gate a landed run, upsert its licenses, quarantine held rows, advance the cursor."""
    from license_store.store import LicenseStore

    context = context or SyncContext()
    state = context.get_state()
    run = state.run(run_id)
    if run.status is not RunStatus.LANDED:
        raise RunFailed(
            run.source_id, run_id, f"cannot publish a run that is {run.status.value}", terminal=True
        )
    if state.succeeded_since(run.source_id, run.started_at):
        reason = "superseded: a newer run of this source has already been published"
        state.fail_run(run_id, reason)
        raise RunFailed(run.source_id, run_id, reason, terminal=True)
    deployment = context.get_deployment()
    source = deployment.source(run.source_id)
    counts = {"loaded": 0, "quarantined": 0}
    held: list[pa.Table] = []
    try:
        manifest = read_manifest(Path(run.landing_path or ""))
        with LicenseStore(context.store_url) as store:
            store.upgrade()
            result = store.upsert(_gated_records(run, source, deployment, counts, held, on_rows))
        if counts["loaded"] + counts["quarantined"] != manifest.rows:
            raise RuntimeError(
                f"row accounting broken: {manifest.rows} landed, {counts['loaded']} loaded, "
                f"{counts['quarantined']} quarantined"
            )
        if held:
            path = write_quarantine(run.source_id, run_id, pa.concat_tables(held))
            log.warning(
                "run %s of %s quarantined %d rows: %s",
                run_id,
                run.source_id,
                counts["quarantined"],
                path,
            )
        finished = state.finish_run(
            run,
            rows_loaded=counts["loaded"],
            rows_quarantined=counts["quarantined"],
            inserted=result.inserted,
            updated=result.updated,
            unchanged=result.unchanged,
            accepted_schema=None
            if _held_for_drift(run, source) or not manifest.rows
            else manifest.schema,
        )
    except Exception as exc:
        reason = _reason(exc)
        terminal = _is_terminal(exc)
        if terminal:
            state.fail_run(run_id, reason)
        else:  # the batch stays landed: publishing it again (a retry) may well succeed
            state.record_error(run_id, reason)
        log.error("run %s of %s failed while publishing: %s", run_id, run.source_id, reason)
        raise RunFailed(run.source_id, run_id, reason, terminal=terminal) from None
    log.info(
        "run %s of %s succeeded: %d rows read, %d loaded, %d quarantined; "
        "licenses %d new, %d updated, %d unchanged",
        run_id,
        run.source_id,
        manifest.rows,
        counts["loaded"],
        counts["quarantined"],
        result.inserted,
        result.updated,
        result.unchanged,
    )
    return finished


def sync(
    source_id: str,
    *,
    full_refresh: bool = False,
    context: SyncContext | None = None,
    on_rows: ProgressCallback | None = None,
) -> RunRecord:
    """Land and publish one run of a source (what ``govx sync`` does)."""
    context = context or SyncContext()
    landed = land(source_id, full_refresh=full_refresh, context=context, on_rows=on_rows)
    return publish(landed.run_id, context=context)
