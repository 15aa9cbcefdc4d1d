"""Sync runs: pull a source through its connector, land it, gate and merge it, derive licenses.

A run has three steps, which Airflow runs as three tasks and ``govx sync`` runs back to back:

1. :func:`land` -- extract from the department system (incrementally from the saved cursor, or in
   full) and write the batch to the lake (Parquet + manifest). The cursor does not move yet.
2. :func:`publish` -- read the landed batch, split it through the quality gate, merge the rows
   that passed into the source's curated dataset (:mod:`exchange.curated`: only the row versions
   that changed are written) and keep held rows in the quarantine; then one state transaction
   commits the run: its record, its curated and quarantine files, and the new cursor. If more
   than ``quality.max_bad_fraction`` of the rows fail the gate, the run is ``held`` instead:
   nothing is merged, the cursor stays, the quarantine file is kept for review.
3. :func:`publish_licenses` -- turn every committed run's row versions that the license library
   has not seen yet into licenses (deletions revoke them), oldest run first.

A run that dies before its commit is re-done from the old cursor; one that dies after it has
its licenses derived by the next step that runs for the source. Merging compares content hashes
and the license upsert is idempotent, so no row is lost or duplicated.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from exchange.config import Deployment, SourceConfig, load_deployment
from exchange.lake import LandingWriter, landed_batches, read_manifest, write_quarantine
from exchange.lakefs import join
from exchange.schema_drift import SchemaDrift, SchemaDriftError, compare_schemas
from exchange.standards.holder_ids import mask_ids_in_text
from exchange.state import ExchangeState, RunNotLanded, RunRecord, RunStatus

__all__ = ["RunFailed", "SyncContext", "land", "publish", "publish_licenses", "sync"]

if TYPE_CHECKING:
    from exchange.curated import RunMerge
    from exchange.derive import LicenseDeriver
    from license_store.records import LicenseRecord
    from license_store.store import LicenseStore

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
    from exchange.curated import SnapshotRefused
    from quality.gate import MissingColumns, SuiteError

    return isinstance(
        exc,
        TerminalError | MissingColumns | SuiteError | SchemaDriftError | SnapshotRefused | KeyError,
    )


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


GATE_BATCH_ROWS = 200_000
"""Rows the gate validates at once: GX's cost per validation is mostly per expectation, not
per row, so a landed run is read back in large batches."""


def _gate_into(
    merge: RunMerge,
    run: RunRecord,
    source: SourceConfig,
    deployment: Deployment,
    counts: dict[str, int],
    held: list[pa.Table],
    validations: list[object],
    on_rows: ProgressCallback | None,
) -> None:
    """Split every landed batch: passed rows are staged for the merge, held rows kept aside."""
    from quality.gate import RowGate

    gate = RowGate(source, deployment)
    hold_all = _held_for_drift(run, source)
    for batch in landed_batches(run.landing_path or "", batch_size=GATE_BATCH_ROWS):
        result = gate.hold(batch, hold_all) if hold_all else gate.split(batch)
        counts["loaded"] += result.passed.num_rows
        counts["quarantined"] += result.quarantined.num_rows
        merge.add(result.passed)
        if result.quarantined.num_rows:
            held.append(result.quarantined)
        if result.validation is not None:
            validations.append(result.validation)
        if on_rows:
            on_rows(batch.num_rows)


def _held_batch_reason(source: SourceConfig, rows: int, quarantined: int) -> str | None:
    """Why the gate holds a whole batch: too large a share of its rows failed (``None``: not).

    Batches smaller than ``quality.min_rows_for_threshold`` are never held whole.
    """
    quality = source.quality
    if rows < quality.min_rows_for_threshold or quarantined <= quality.max_bad_fraction * rows:
        return None
    share = quarantined / rows
    # one decimal when whole percents would hide that the share is above the limit (10.4% > 10%)
    shown = f"{share:.0%}" if round(share, 2) > quality.max_bad_fraction else f"{share:.1%}"
    return (
        f"held: {shown} of rows failed the quality gate "
        f"(max_bad_fraction {quality.max_bad_fraction:.0%})"
    )


class BatchHeld(Exception):
    """The gate held a run's whole batch (the run is recorded ``held``)."""


def _build_data_docs(run: RunRecord, validations: list[object], status: str) -> None:
    """Render the run's Data Docs page; a failure to render never fails the run."""
    from quality.docs import build_data_docs

    try:
        build_data_docs(run.source_id, run.run_id, validations, status=status)
    except Exception as exc:
        log.warning(
            "run %s of %s: Data Docs not built: %s", run.run_id, run.source_id, _reason(exc)
        )


def publish(
    run_id: str,
    *,
    context: SyncContext | None = None,
    on_rows: ProgressCallback | None = None,
) -> RunRecord:
    """Gate a landed run, merge it into its curated dataset, and commit it with its cursor.

    Publishing a run that is already committed (a retried task whose first attempt got as far
    as the commit) returns it unchanged.
    """
    from exchange.curated import RunMerge
    from exchange.replay import is_replay

    context = context or SyncContext()
    state = context.get_state()
    run = state.run(run_id)
    if run.status is RunStatus.SUCCEEDED:
        log.info("run %s of %s is already committed", run_id, run.source_id)
        return run
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
    validations: list[object] = []
    merge: RunMerge | None = None
    try:
        landing = run.landing_path or ""  # a local path, or a URL on an object store
        manifest = read_manifest(landing)
        merge = RunMerge(source, run, state.committed_versions([source.id]))
        _gate_into(merge, run, source, deployment, counts, held, validations, on_rows)
        if counts["loaded"] + counts["quarantined"] != manifest.rows:
            raise RuntimeError(
                f"row accounting broken: {manifest.rows} landed, {counts['loaded']} loaded, "
                f"{counts['quarantined']} quarantined"
            )
        replaying = is_replay(run)  # held rows on a second try: whatever still fails is held again
        hold_reason = None
        if not _held_for_drift(run, source) and not replaying:
            hold_reason = _held_batch_reason(source, manifest.rows, counts["quarantined"])
        if hold_reason:
            merge.discard_staging()
            quarantine = write_quarantine(run.source_id, run_id, pa.concat_tables(held))
            state.hold_run(
                run,
                rows_loaded=counts["loaded"],
                rows_quarantined=counts["quarantined"],
                quarantine_path=str(quarantine),
                reason=hold_reason,
            )
            raise BatchHeld(hold_reason)
        merged = merge.finish([join(landing, name) for name in manifest.files])
        quarantine = (
            write_quarantine(run.source_id, run_id, pa.concat_tables(held)) if held else None
        )
        finished = state.finish_run(
            run,
            rows_loaded=counts["loaded"],
            rows_quarantined=counts["quarantined"],
            changes=merged.changes,
            curated_path=str(merged.path) if merged.path else None,
            quarantine_path=str(quarantine) if quarantine else None,
            accepted_schema=None
            if _held_for_drift(run, source) or not manifest.rows or replaying
            else manifest.schema,
        )
    except BatchHeld:
        _build_data_docs(run, validations, RunStatus.HELD.value)
        log.error(
            "run %s of %s: %s; %d of %d rows quarantined in %s, nothing merged, cursor kept",
            run_id,
            run.source_id,
            hold_reason,
            counts["quarantined"],
            manifest.rows,
            quarantine,
        )
        raise RunFailed(run.source_id, run_id, hold_reason or "held", terminal=True) from None
    except RunNotLanded:
        current = state.run(run_id)
        if current.status is RunStatus.SUCCEEDED:
            return current
        raise RunFailed(
            run.source_id, run_id, f"run became {current.status.value} meanwhile", terminal=True
        ) from None
    except Exception as exc:
        if merge is not None:
            merge.discard_staging()
        reason = _reason(exc)
        terminal = _is_terminal(exc)
        if terminal:
            state.fail_run(run_id, reason)
        else:  # the batch stays landed: publishing it again (a retry) may well succeed
            state.record_error(run_id, reason)
        log.error("run %s of %s failed while publishing: %s", run_id, run.source_id, reason)
        raise RunFailed(run.source_id, run_id, reason, terminal=terminal) from None
    _build_data_docs(run, validations, RunStatus.SUCCEEDED.value)
    if quarantine is not None:
        log.warning(
            "run %s of %s quarantined %d rows: %s",
            run_id,
            run.source_id,
            counts["quarantined"],
            quarantine,
        )
    changes = merged.changes
    log.info(
        "run %s of %s committed: %d rows read, %d loaded, %d quarantined; "
        "curated rows %d new, %d changed, %d deleted, %d unchanged",
        run_id,
        run.source_id,
        manifest.rows,
        counts["loaded"],
        counts["quarantined"],
        changes["new"],
        changes["changed"],
        changes["deleted"],
        changes["unchanged"],
    )
    return finished


def _version_records(run: RunRecord, deriver: LicenseDeriver) -> Iterator[LicenseRecord]:
    """The license records of a committed run's row versions; deleted rows revoke theirs."""
    import pyarrow.compute as pc

    from exchange.curated import DELETE, OP, version_batches

    if not run.curated_path:
        return
    for batch in version_batches(run.curated_path):
        deleted = pc.equal(batch.column(OP), DELETE)
        yield from deriver.records(batch.filter(pc.invert(deleted)))
        yield from deriver.records(batch.filter(deleted), revoked=True)


def publish_licenses(source_id: str, *, context: SyncContext | None = None) -> list[RunRecord]:
    """Derive the licenses of every committed run of the source not yet in the library.

    Oldest run first, one store transaction per run; returns the runs it published. A failure
    leaves the run owed (its error says so) and the next call starts from it again.
    """
    from exchange.derive import LicenseDeriver
    from license_store.store import LicenseStore

    context = context or SyncContext()
    state = context.get_state()
    pending = state.pending_license_runs(source_id)
    if not pending:
        return []
    deployment = context.get_deployment()
    source = deployment.source(source_id)
    published: list[RunRecord] = []
    with LicenseStore(context.store_url, deployment=deployment, audit_changes=True) as store:
        store.upgrade()
        for run in pending:
            try:
                deriver = LicenseDeriver(source, deployment, run.run_id)
                result = store.upsert(_version_records(run, deriver))
            except Exception as exc:
                reason = _reason(exc)
                state.record_error(run.run_id, f"licenses not published yet: {reason}")
                log.error("run %s of %s: licenses not published: %s", run.run_id, source_id, reason)
                raise RunFailed(
                    source_id,
                    run.run_id,
                    f"publishing licenses: {reason}",
                    terminal=_is_terminal(exc),
                ) from None
            published.append(
                state.mark_licenses_published(
                    run.run_id,
                    inserted=result.inserted,
                    updated=result.updated,
                    unchanged=result.unchanged,
                )
            )
            log.info(
                "run %s of %s published licenses: %d new, %d updated, %d unchanged",
                run.run_id,
                source_id,
                result.inserted,
                result.updated,
                result.unchanged,
            )
        _sign_published(store, source_id)
        _package_for_parent(store, deployment)
    return published


def _sign_published(store: LicenseStore, source_id: str) -> None:
    """Sign the new versions (license_store.signatures); a failure is retried by the next step."""
    try:
        store.sign_pending()
    except Exception as exc:
        log.error(
            "licenses of %s published but not all signed yet (the next license step signs "
            "them): %s",
            source_id,
            _reason(exc),
        )


def _package_for_parent(store: LicenseStore, deployment: Deployment) -> None:
    """On a node with a parent, package the new versions into the outbox (exchange.outbox);
    a failure is logged and the next push packages them."""
    from exchange.nodes import node_file
    from exchange.settings import govx_home

    home = govx_home()
    if not node_file(home).exists():
        return
    try:
        from exchange.nodes import load_node
        from exchange.outbox import make_packages
        from license_store.signing import KeyRing

        node = load_node(home)
        if node.parent is not None:
            make_packages(store, node, deployment, KeyRing(home / "keys"), home)
    except Exception as exc:
        log.error(
            "new licenses not packaged for the parent yet (the next push does): %s", _reason(exc)
        )


def sync(
    source_id: str,
    *,
    full_refresh: bool = False,
    context: SyncContext | None = None,
    on_rows: ProgressCallback | None = None,
) -> RunRecord:
    """Land, publish and derive the licenses of one run of a source (what ``govx sync`` does).

    Licenses owed by earlier committed runs of the source are published first.
    """
    context = context or SyncContext()
    landed = land(source_id, full_refresh=full_refresh, context=context, on_rows=on_rows)
    publish(landed.run_id, context=context)
    publish_licenses(source_id, context=context)
    return context.get_state().run(landed.run_id)
