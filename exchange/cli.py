"""``govx``: the command line of the exchange for data engineers and admins.

Every command runs the same package code the Airflow DAGs and the API run. Settings come from
the environment: ``GOVX_HOME`` (data directory, default ``./var``), ``GOVX_CONFIG`` (deployment
YAML, default ``./config``), ``GOVX_LICENSE_DB_URL`` and ``GOVX_EXCHANGE_DB_URL`` (stores),
``AIRFLOW_CONN_<ID>`` (department connections; ``$GOVX_HOME/.env`` is read too).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.table import Table

from exchange.cli_clients import clients_app
from exchange.cli_exchange import exchange_app
from exchange.cli_lifecycle import lifecycle_app
from exchange.cli_nodes import node_app
from exchange.cli_output import console, err_console
from exchange.cli_output import fail as _fail

if TYPE_CHECKING:
    import datetime as dt

    from exchange.state import RunRecord

app = typer.Typer(
    name="govx",
    help="govexchange: sync department systems into the shared exchange and the electronic "
    "license library, and query it by holder ID.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Check the deployment configuration.", no_args_is_help=True)
db_app = typer.Typer(help="Manage the exchange and license databases.", no_args_is_help=True)
schema_app = typer.Typer(help="Review a source's schema drift.", no_args_is_help=True)
datasets_app = typer.Typer(
    help="Query the curated datasets: now or as the exchange knew them at a past instant.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")
app.add_typer(datasets_app, name="datasets")
quarantine_app = typer.Typer(
    help="Review the rows the quality gate held, and replay them once the cause is fixed.",
    no_args_is_help=True,
)
app.add_typer(quarantine_app, name="quarantine")
keys_app = typer.Typer(
    help="The departments' signing keys (Ed25519) under $GOVX_HOME/keys.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(node_app, name="node")
app.add_typer(exchange_app, name="exchange")
app.add_typer(schema_app, name="schema")
app.add_typer(db_app, name="db")
quality_app = typer.Typer(
    help="Supervision cards: each source's freshness, failures, volume, schema and pass rate.",
    no_args_is_help=True,
)
app.add_typer(quality_app, name="quality")
audit_app = typer.Typer(
    help="Check and read the tamper-evident audit trail of the license library.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")
app.add_typer(lifecycle_app, name="lifecycle")
app.add_typer(clients_app, name="clients")


@app.callback()
def main(
    home: Annotated[
        Path | None,
        typer.Option(
            "--home", help="Data directory (sets GOVX_HOME; default ./var).", show_default=False
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Deployment config directory (sets GOVX_CONFIG; default ./config).",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress to stderr.")
    ] = False,
) -> None:
    """Read settings, load $GOVX_HOME/.env and set up masked logging."""
    from exchange.logs import configure_logging
    from exchange.settings import load_env_file

    if home is not None:
        os.environ["GOVX_HOME"] = str(home.resolve())
    if config is not None:
        os.environ["GOVX_CONFIG"] = str(config.resolve())
    load_env_file()
    configure_logging("INFO" if verbose else "WARNING")


def _deployment():
    from exchange.config import ConfigError, load_deployment

    try:
        return load_deployment()
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@config_app.command("check")
def config_check() -> None:
    """Validate every YAML file of the deployment and summarise it."""
    deployment = _deployment()
    from exchange.settings import config_dir

    table = Table(title=f"Deployment {config_dir()}", show_header=True)
    table.add_column("section")
    table.add_column("entries", justify="right")
    table.add_column("ids")
    for name, items, key in (
        ("regions", deployment.regions, "code"),
        ("departments", deployment.departments, "id"),
        ("license_types", deployment.license_types, "id"),
        ("sources", deployment.sources, "id"),
        ("matters", deployment.matters, "name"),
    ):
        table.add_row(name, str(len(items)), ", ".join(str(getattr(i, key)) for i in items))
    console.print(table)
    console.print("[green]configuration is valid[/]")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply Alembic migrations to the exchange state and license databases."""
    from exchange.db import safe_url
    from exchange.state import ExchangeState
    from license_store.store import LicenseStore

    with ExchangeState() as state:
        state.upgrade()
        console.print(f"exchange state: {safe_url(state.engine.url)} [green]current[/]")
    with LicenseStore() as store:
        store.upgrade()
        console.print(f"license store:  {store.url} [green]current[/]")


@app.command()
def pools(
    create: Annotated[
        bool, typer.Option("--create", help="Create the pools Airflow lacks (slots kept).")
    ] = False,
) -> None:
    """The Airflow pool of each department system; --create adds the missing ones."""
    from exchange.scheduler import create_missing_pools, department_pools

    try:
        needed = department_pools(_deployment())
    except ValueError as error:
        raise _fail(str(error)) from None
    table = Table("pool", "slots", "department", "DAGs whose land task it bounds", box=box.SIMPLE)
    for pool in needed:
        table.add_row(pool.name, str(pool.slots), pool.department, ", ".join(pool.sources))
    console.print(table)
    if create:
        from exchange.scheduler import (
            AirflowCommandFailed,
            use_embedded_airflow_unless_configured,
        )

        use_embedded_airflow_unless_configured()
        try:
            created = create_missing_pools(needed)
        except AirflowCommandFailed as error:
            raise _fail(str(error)) from None
        names = ", ".join(pool.name for pool in created) or "none (all exist; slots kept)"
        console.print(f"created in Airflow: {names}")


def _run_with_progress(source_id: str, full_refresh: bool):
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from exchange.sync import SyncContext, land, publish, publish_licenses

    context = SyncContext(deployment=_deployment())
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} {task.fields[unit]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{source_id}: extract + land", total=None, unit="rows")
        landed = land(
            source_id,
            full_refresh=full_refresh,
            context=context,
            on_rows=lambda n: progress.advance(task, n),
        )
        progress.update(task, total=landed.rows_read, completed=landed.rows_read)
        gate = progress.add_task(
            f"{source_id}: gate + merge", total=landed.rows_read or None, unit="rows"
        )
        publish(landed.run_id, context=context, on_rows=lambda n: progress.advance(gate, n))
        progress.update(gate, completed=landed.rows_read)
        derive = progress.add_task(f"{source_id}: licenses", total=None, unit="written")
        published = publish_licenses(source_id, context=context)
        written = sum((r.licenses_inserted or 0) + (r.licenses_updated or 0) for r in published)
        progress.update(derive, total=written or 1, completed=written)
    return context.get_state().run(landed.run_id)


@app.command()
def sync(
    source_id: Annotated[str, typer.Argument(help="Source id from sources.yaml.")],
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Ignore the saved cursor and read everything.")
    ] = False,
) -> None:
    """Sync one source now: extract, land, gate, merge, commit with the cursor, derive licenses.

    A run that dies before its commit is re-done from the old cursor; licenses a committed run
    still owes are derived first.
    """
    from exchange.sync import RunFailed

    deployment = _deployment()
    if source_id not in deployment.source_by_id:
        raise _fail(
            f"unknown source {source_id!r}; configured: {', '.join(deployment.source_by_id)}"
        )
    try:
        run = _run_with_progress(source_id, full_refresh)
    except RunFailed as exc:
        raise _fail(str(exc)) from None
    console.print(_runs_table([run], title=f"run {run.run_id}"))


WIDE_TERMINAL = 140
NUMBER_COLUMNS = ("read", "loaded", "held", "vers", "new", "upd", "s")


def _cursor_text(cursor: object) -> str:
    """A cursor for the runs table: a files source's list of loaded file hashes as a count."""
    if cursor is None:
        return "-"
    if isinstance(cursor, list):
        return f"{len(cursor):,} files"
    text = str(cursor)
    return text if len(text) <= 32 else text[:31] + "…"


def _status_text(run: RunRecord) -> str:
    """``ok``; ``owed`` when the run committed but its licenses are not derived yet."""
    if run.status.value != "succeeded":
        return run.status.value
    return "ok" if run.licenses_published_at is not None else "owed"


def _runs_table(runs: list, title: str) -> Table:
    """Run records as a table; run ids and cursors only where the terminal is wide enough."""
    wide = console.width >= WIDE_TERMINAL
    columns = ["source", *(["run"] if wide else []), "status", "mode", *NUMBER_COLUMNS]
    columns += ["cursor after"] if wide else []
    table = Table(
        title=title,
        caption="rows read, loaded, held (quarantined); curated row versions written (vers); "
        "licenses new and updated (upd); seconds",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in NUMBER_COLUMNS else "left",
            no_wrap=True,
            min_width=len(column),
        )
    for run in runs:
        versions = (
            None
            if run.rows_new is None
            else run.rows_new + (run.rows_changed or 0) + (run.rows_deleted or 0)
        )
        counts = (
            run.rows_read,
            run.rows_loaded,
            run.rows_quarantined,
            versions,
            run.licenses_inserted,
            run.licenses_updated,
        )
        row = [
            run.source_id,
            *([run.run_id] if wide else []),
            _status_text(run),
            "full" if run.cursor_before is None else "incr",
            *((f"{v:,}" if wide else str(v)) if v is not None else "-" for v in counts),
            f"{run.duration_s:.{1 if wide else 0}f}" if run.duration_s is not None else "-",
        ]
        if wide:
            row.append(_cursor_text(run.cursor_after))
        table.add_row(*row)
    return table


@schema_app.command("accept")
def schema_accept(
    source_id: Annotated[str, typer.Argument(help="Source id from sources.yaml.")],
) -> None:
    """Accept the columns of the source's latest landed run as its schema from now on.

    After a drift held under ``schema_policy: quarantine`` (or failed under ``freeze``, once the
    contract was agreed), the next runs are compared with the accepted columns and load again.
    """
    from exchange.lake import read_manifest
    from exchange.schema_drift import compare_schemas
    from exchange.state import ExchangeState

    with ExchangeState() as state:
        state.upgrade()
        landed = [r for r in state.runs(source_id, limit=50) if r.landing_path]
        if not landed:
            raise _fail(f"source {source_id!r} has no landed run to take the schema from")
        manifest = read_manifest(landed[0].landing_path)
        previous = state.accepted_schema(source_id)
        try:
            state.accept_schema(source_id, manifest.schema)
        except KeyError as exc:
            raise _fail(str(exc).strip("'\"")) from None
    change = compare_schemas(previous, manifest.schema).describe()
    console.print(f"{source_id}: accepted the columns of run {landed[0].run_id} ({change})")


@app.command()
def catalog(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False,
    show_fields: Annotated[
        bool, typer.Option("--fields", help="List every field and its type.")
    ] = False,
) -> None:
    """Show the resource catalogue: datasets, owners, sharing types, update frequency, fields."""
    from dataclasses import asdict

    from exchange.catalog import build_catalog
    from exchange.state import ExchangeState

    deployment = _deployment()
    with ExchangeState() as state:
        state.upgrade()
        entries = build_catalog(deployment, state)
    if as_json:
        console.print_json(json.dumps([asdict(e) for e in entries], ensure_ascii=False))
        return
    sharing = {"unconditional": "无条件共享", "conditional": "有条件共享", "not_shared": "不予共享"}
    console.print(f"[bold]resource catalogue[/] (政务信息资源目录): {len(entries)} datasets")
    for entry in entries:
        console.print(
            f"\n[bold]{entry.id}[/]  {entry.name}  {sharing[entry.sharing]}  "
            f"updated {entry.update_frequency}",
            highlight=False,
        )
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("owner", f"{entry.owner} ({entry.owner_region})")
        grid.add_row("sources", ", ".join(entry.sources) or "none")
        if entry.description:
            grid.add_row("about", entry.description)
        if not entry.fields:
            grid.add_row("fields", "not synced yet")
        elif show_fields:
            grid.add_row("fields", ", ".join(f"{f['name']} {f['type']}" for f in entry.fields))
        else:
            grid.add_row("fields", f"{len(entry.fields)} (--fields lists them)")
        console.print(grid, highlight=False)


def _instant(text: str | None) -> dt.datetime | None:
    """Parse ``--as-of``: an ISO date or date-time; without a zone it is China time (UTC+8)."""
    import datetime as dt

    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _fail(f"--as-of: not an ISO date or date-time: {text!r}") from None
    if len(text) == 10:  # a bare date means the end of that day
        value = value.replace(hour=23, minute=59, second=59, microsecond=999999)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone(dt.timedelta(hours=8)))
    return value


AS_OF_HELP = (
    "What the exchange knew at this instant: YYYY-MM-DD (end of that day) or an ISO date-time; "
    "China time unless a zone is given."
)


@datasets_app.command("list")
def datasets_list(
    as_of: Annotated[str | None, typer.Option("--as-of", help=AS_OF_HELP)] = None,
) -> None:
    """Count each curated dataset's live rows, deleted keys, row versions and committed runs."""
    from exchange.curated import CuratedDataset
    from exchange.state import ExchangeState

    deployment = _deployment()
    instant = _instant(as_of)
    table = Table(
        title="curated datasets" + (f" as of {instant.isoformat()}" if instant else ""),
        box=box.SIMPLE_HEAD,
    )
    for column in ("dataset", "sources", "live", "deleted", "versions", "runs"):
        table.add_column(column, justify="left" if column in ("dataset", "sources") else "right")
    with ExchangeState() as state:
        state.upgrade()
        # the catalogue's datasets, then any received from child nodes that it does not list
        dataset_ids = [entry.id for entry in deployment.datasets]
        dataset_ids += sorted(set(state.received_sources().values()) - set(dataset_ids))
        for dataset_id in dataset_ids:
            curated = CuratedDataset(dataset_id, deployment.sources, state)
            counts = curated.summary(instant)
            table.add_row(
                dataset_id,
                ", ".join(curated.source_ids) or "-",
                *(f"{counts[k]:,}" for k in ("live", "deleted", "versions", "runs")),
            )
    console.print(table)


@datasets_app.command("export")
def datasets_export(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id from datasets.yaml.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="File to write: .parquet or .csv (UTF-8).")
    ],
    as_of: Annotated[str | None, typer.Option("--as-of", help=AS_OF_HELP)] = None,
) -> None:
    """Write a dataset's live rows (now, or as of an instant) to a file.

    The rows hold personal data, so they go to a file, never to the terminal; the bookkeeping
    columns (_govx_key, _govx_op, _govx_run_id, _govx_source_id ...) say where each row came from.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from exchange.curated import CuratedDataset
    from exchange.state import ExchangeState

    deployment = _deployment()
    if dataset_id not in {d.id for d in deployment.datasets}:
        known = ", ".join(d.id for d in deployment.datasets)
        raise _fail(f"unknown dataset {dataset_id!r}; configured: {known}")
    if out.suffix not in (".parquet", ".csv"):
        raise _fail(f"--out: give a .parquet or .csv file, not {out.name!r}")
    with ExchangeState() as state:
        state.upgrade()
        rows = CuratedDataset(dataset_id, deployment.sources, state).rows(_instant(as_of))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        pq.write_table(rows, out, compression="zstd")
    else:
        pacsv.write_csv(rows, out)
    console.print(f"{rows.num_rows:,} rows of {dataset_id} written to {out}")


@quarantine_app.command("list")
def quarantine_list(
    source_id: Annotated[str | None, typer.Argument(help="Only this source.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs.", min=1)] = 30,
) -> None:
    """List the runs that held rows: how many, the most frequent reason, replayed or not."""
    from exchange.lakefs import exists as lake_exists
    from exchange.replay import held_batches, reason_counts
    from exchange.state import ExchangeState

    with ExchangeState() as state:
        state.upgrade()
        batches = held_batches(state, source_id)[:limit]
    if not batches:
        console.print("no quarantined rows")
        return
    table = Table(title="quarantine", box=box.SIMPLE_HEAD)
    for column in ("source", "run", "status", "rows", "replayed by", "most frequent reason"):
        table.add_column(column, justify="right" if column == "rows" else "left")
    for batch in batches:
        reasons = reason_counts(batch.path) if lake_exists(batch.path) else []
        top = f"{reasons[0][0]} (×{reasons[0][1]})" if reasons else "file missing"
        replayed = batch.replayed_by or ("re-read by next sync" if batch.status == "held" else "-")
        table.add_row(batch.source_id, batch.run_id, batch.status, f"{batch.rows:,}", replayed, top)
    console.print(table, highlight=False)


@quarantine_app.command("show")
def quarantine_show(
    source_id: Annotated[str, typer.Argument(help="Source id from sources.yaml.")],
    run_id: Annotated[str, typer.Argument(help="The run that held them (govx quarantine list).")],
    rows: Annotated[int, typer.Option(help="How many held rows to list.", min=0)] = 20,
) -> None:
    """Show why a run held rows: each reason with its count, then rows by primary key.

    Only the primary key and the masked reasons are printed; the held rows themselves (with
    personal data) stay in the quarantine file, whose path is shown.
    """
    from exchange.lake import REASONS_COLUMN
    from exchange.lakefs import read_table as read_lake_table
    from exchange.replay import held_batches, reason_counts
    from exchange.state import ExchangeState

    deployment = _deployment()
    if source_id not in deployment.source_by_id:
        raise _fail(f"unknown source {source_id!r}")
    with ExchangeState() as state:
        state.upgrade()
        batch = next((b for b in held_batches(state, source_id) if b.run_id == run_id), None)
    if batch is None:
        raise _fail(f"run {run_id!r} of {source_id} held no rows (see govx quarantine list)")
    console.print(f"{batch.rows:,} rows held by run {run_id} ({batch.status}): {batch.path}")
    counts = Table(box=box.SIMPLE_HEAD)
    counts.add_column("reason")
    counts.add_column("rows", justify="right")
    for reason, count in reason_counts(batch.path):
        counts.add_row(reason, f"{count:,}")
    console.print(counts, highlight=False)
    if rows:
        key = list(deployment.source_by_id[source_id].primary_key)
        held = read_lake_table(batch.path, columns=[*key, REASONS_COLUMN]).slice(0, rows)
        listing = Table(box=box.SIMPLE_HEAD)
        for column in (*key, "reasons"):
            listing.add_column(column)
        for row in held.to_pylist():
            reasons = "; ".join(row.pop(REASONS_COLUMN) or [])
            listing.add_row(*(str(row[k]) for k in key), reasons)
        console.print(listing, highlight=False)


@quarantine_app.command("replay")
def quarantine_replay(
    source_id: Annotated[str, typer.Argument(help="Source id from sources.yaml.")],
    run: Annotated[
        list[str] | None,
        typer.Option("--run", help="Replay only this run's held rows (repeatable)."),
    ] = None,
) -> None:
    """Run the source's held rows through the gate again as a new run; those that pass load.

    For rows that were held because a rule or reference data was wrong and has been fixed. Rows
    that still fail are held again by the replay run; a row whose key has newer data since is
    dropped, never replayed over it. The cursor does not move.
    """
    from exchange.replay import replay
    from exchange.sync import RunFailed, SyncContext

    deployment = _deployment()
    if source_id not in deployment.source_by_id:
        raise _fail(f"unknown source {source_id!r}")
    try:
        result = replay(source_id, run_ids=run, context=SyncContext(deployment=deployment))
    except KeyError as exc:
        raise _fail(str(exc.args[0])) from None
    except RunFailed as exc:
        raise _fail(str(exc)) from None
    if result is None:
        console.print(f"nothing to replay for {source_id}")
        return
    superseded = next(
        (e["superseded_rows"] for e in result.source_report or [] if "superseded_rows" in e), 0
    )
    console.print(
        f"replay run {result.run_id}: {result.rows_read:,} rows replayed, "
        f"{result.rows_loaded:,} loaded, {result.rows_quarantined:,} held again; "
        f"{superseded:,} dropped because their key has newer data"
    )


CARD_STYLE = {"green": "bold green", "yellow": "bold yellow", "red": "bold red"}


def _cards_table(statuses: list, now: dt.datetime) -> Table:
    """Supervision cards as a table: the card, why (its non-green signals), last run, age."""
    from rich.text import Text

    from quality.cards import format_duration

    table = Table(
        title="supervision cards",
        box=box.SIMPLE_HEAD,
        caption="age: since the last successful run, of the time it may take",
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("source", no_wrap=True)
    table.add_column("card", no_wrap=True)
    table.add_column("why", overflow="fold", min_width=20)
    table.add_column("last run")
    table.add_column("age", justify="right")
    for status in statuses:
        why = Text()
        for signal in status.problems or ():
            if why:
                why.append("\n")
            why.append(f"{signal.kind}: ", style=CARD_STYLE[signal.card.value])
            why.append(signal.reason)
        if not why:
            why.append("all signals green")
        run = status.last_run
        last = "-"
        if run is not None:
            state = str(getattr(run.status, "value", run.status))
            last = f"{state}\n{format_duration((now - run.started_at).total_seconds())} ago"
        age = "-"
        if status.freshness_age_s is not None:
            age = format_duration(status.freshness_age_s)
            if status.overdue_after_s:
                age += f"\nof {format_duration(status.overdue_after_s)}"
        card = Text(status.card.value, style=CARD_STYLE[status.card.value])
        table.add_row(status.source_id, card, why, last, age)
    return table


@quality_app.command("status")
def quality_status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the cards as JSON.")] = False,
) -> None:
    """Show every source's supervision card and why (read-only: records nothing, sends nothing)."""
    import datetime as dt

    from exchange.state import ExchangeState
    from quality.cards import evaluate

    deployment = _deployment()
    now = dt.datetime.now(dt.UTC)
    with ExchangeState() as state:
        state.upgrade()
        statuses = evaluate(deployment, state, now=now)
    if as_json:
        payload = [s.to_json() for s in statuses]
        console.print_json(json.dumps(payload, ensure_ascii=False))
        return
    console.print(_cards_table(statuses, now))


@quality_app.command("check")
def quality_check() -> None:
    """Evaluate the cards, record each change and send its alerts once (what the DAG runs).

    Alerts go to each department's `alerts.webhook` (JSON POST) and `alerts.email` (through
    GOVX_SMTP_URL); a delivery that fails is retried on the next check.
    """
    import datetime as dt

    from exchange.state import ExchangeState
    from quality.monitor import run_check

    deployment = _deployment()
    now = dt.datetime.now(dt.UTC)
    with ExchangeState() as state:
        state.upgrade()
        result = run_check(deployment, state, now)
    console.print(_cards_table(result.statuses, now))
    for change in result.changes:
        before = change.previous.value if change.previous else "new"
        console.print(f"card changed: {change.source_id} {before} -> {change.card.value}")
    for source_id, channel in result.delivery.sent:
        console.print(f"alert sent: {source_id} by {channel}")
    for source_id, _channel, error in result.delivery.failed:
        err_console.print(
            f"[yellow]alert not delivered[/] {source_id}: {error} (retried next check)",
            highlight=False,
        )


def _audit_log():
    """The audit log of the license store (migrated first, like the other commands' stores)."""
    from license_store import LicenseStoreError
    from license_store.audit import AuditLog

    log = AuditLog()
    try:
        log.upgrade()
    except LicenseStoreError as exc:
        log.close()
        raise _fail(str(exc)) from None
    return log


@audit_app.command("verify")
def audit_verify() -> None:
    """Walk the whole audit chain; exit 1 naming the first altered, removed or reordered entry."""
    from license_store import LicenseStoreError

    with _audit_log() as log:
        try:
            result = log.verify()
        except LicenseStoreError as exc:
            raise _fail(str(exc)) from None
    if not result.ok:
        raise _fail(
            f"audit trail broken: {result.problem} ({result.entries} entries before it check out)"
        )
    console.print(
        f"audit trail intact: {result.entries} entries, head {result.head_hash}",
        highlight=False,
        soft_wrap=True,
    )


@audit_app.command("tail")
def audit_tail(
    count: Annotated[int, typer.Option("-n", help="How many of the latest entries.", min=1)] = 20,
) -> None:
    """Show the latest audit entries, newest first (holders masked)."""
    from license_store import LicenseStoreError

    with _audit_log() as log:
        try:
            entries = log.tail(count)
        except LicenseStoreError as exc:
            raise _fail(str(exc)) from None
    if not entries:
        console.print("no audit entries yet")
        return
    for entry in entries:  # one line each: the fields are too many for a table in 80 columns
        console.print(
            f"{entry.seq}  {entry.occurred_at:%Y-%m-%d %H:%M:%S}Z  {entry.client_id} "
            f"{entry.action} {entry.holder_masked}: {entry.result}  "
            f"matter {entry.matter} case {entry.case_id}  "
            f"licenses {', '.join(entry.license_ids) or '-'}  {(entry.entry_hash or '')[:12]}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@keys_app.command("generate")
def keys_generate(
    department: Annotated[
        list[str] | None, typer.Option("--department", help="A department id (repeatable).")
    ] = None,
    all_departments: Annotated[
        bool, typer.Option("--all", help="Every configured department without a key yet.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an existing key (rotation).")
    ] = False,
) -> None:
    """Create departments' Ed25519 key pairs: private key mode 0600, public key beside it.

    The public key (`govx keys export`) is what anyone needs to verify that department's
    licenses offline.
    """
    from license_store.signing import KeyFileError, KeyRing

    deployment = _deployment()
    ring = KeyRing()
    if all_departments:
        wanted = [d.id for d in deployment.departments if d.id not in ring.departments()]
    else:
        wanted = list(department or [])
    if not wanted and not all_departments:
        raise _fail("name a department with --department, or give --all")
    for department_id in wanted:
        if department_id not in deployment.department_by_id:
            raise _fail(f"unknown department {department_id!r}")
        try:
            ring.generate(department_id, overwrite=force)
        except KeyFileError as exc:
            raise _fail(str(exc)) from None
        console.print(f"key generated for {department_id}: {ring.public_path(department_id)}")
    if all_departments and not wanted:
        console.print("every department already has a key")


@keys_app.command("list")
def keys_list() -> None:
    """List the departments' keys: key id (fingerprint), file mode of the private key, paths."""
    import stat

    from license_store.signing import KeyRing, key_id

    ring = KeyRing()
    table = Table(title=f"signing keys in {ring.directory}", box=box.SIMPLE_HEAD)
    for column in ("department", "key id", "private key mode", "public key"):
        table.add_column(column)
    for department_id in ring.departments():
        private = ring.directory / f"{department_id}.ed25519.pem"
        mode = f"{stat.S_IMODE(private.stat().st_mode):o}" if private.exists() else "missing"
        table.add_row(
            department_id,
            key_id(ring.public_key(department_id)),
            mode,
            str(ring.public_path(department_id)),
        )
    console.print(table, highlight=False)


@keys_app.command("export")
def keys_export(
    department_id: Annotated[str, typer.Argument(help="Department id.")],
) -> None:
    """Print a department's public key (PEM) for offline verification of its licenses."""
    from license_store.signing import KeyFileError, KeyRing

    ring = KeyRing()
    try:
        ring.public_key(department_id)
    except KeyFileError as exc:
        raise _fail(str(exc)) from None
    sys.stdout.write(ring.public_path(department_id).read_text(encoding="ascii"))


@app.command()
def runs(
    source_id: Annotated[str | None, typer.Argument(help="Only this source.")] = None,
    limit: Annotated[int, typer.Option(help="How many runs.", min=1)] = 20,
) -> None:
    """Show the run history (newest first), with failures and their reasons."""
    from exchange.state import ExchangeState

    with ExchangeState() as state:
        state.upgrade()
        history = state.runs(source_id, limit=limit)
    if not history:
        console.print("no runs recorded yet")
        return
    console.print(_runs_table(history, title="sync runs"))
    for run in history:
        if run.error:
            err_console.print(f"[red]{run.run_id}[/] {run.source_id}: {run.error}", highlight=False)
        for outcome in run.source_report or []:
            if outcome.get("status") == "rejected":
                err_console.print(
                    f"[yellow]{run.run_id}[/] {run.source_id}: file {outcome['name']} rejected: "
                    f"{outcome['reason']}",
                    highlight=False,
                )


def _admin_lookup(holder_id: str, case: str | None, matter: str | None = None) -> dict:
    """A holder's current licenses read straight from the store by an operator, audited as
    ``cli:<user>`` with the case named; the payload has the intake API's shape."""
    import getpass

    from exchange.standards.holder_ids import InvalidIdentifier, parse_holder_id
    from license_store.audit import AuditLog
    from license_store.intake import license_out
    from license_store.security import valid_case_id
    from license_store.store import LicenseStore

    try:
        holder = parse_holder_id(holder_id, field="holder ID")
    except InvalidIdentifier as exc:
        raise _fail(str(exc)) from None
    if not case or not valid_case_id(case):
        raise _fail(
            "name the case or ticket this read is for with --case (letters, digits, . _ : / -): "
            "every read of personal data is audited"
        )
    wanted: set[str] | None = None
    if matter is not None:
        deployment = _deployment()
        found_matter = next((m for m in deployment.matters if m.code == matter), None)
        if found_matter is None:
            raise _fail(f"unknown matter {matter!r}; see `govx catalog`")
        types = deployment.license_type_by_id
        wanted = {
            types[m.license_type].code for m in found_matter.materials if m.license_type in types
        }
    with LicenseStore() as store:
        store.upgrade()
        found = store.licenses_for_holder(holder.value)
    shown = [item for item in found if wanted is None or item.type_code in wanted]
    with AuditLog() as trail:
        trail.append(
            [
                trail.entry(
                    client_id=f"cli:{getpass.getuser()}"[:64],
                    action="read",
                    holder_id=holder.value,
                    license_ids=[item.license_id for item in shown],
                    matter=matter or "admin-lookup",
                    case_id=case,
                    result="ok",
                )
            ]
        )
    return {
        "holder": {"id": holder.masked, "kind": holder.kind.value},
        "count": len(shown),
        "licenses": [license_out(item).model_dump(mode="json") for item in shown],
    }


def _face_labels() -> dict[str, dict[str, str]]:
    """Face-field labels per license type code, from the catalogue (empty if config is broken)."""
    from exchange.config import ConfigError, load_deployment

    try:
        deployment = load_deployment()
    except ConfigError:
        return {}
    return {t.code: {f.name: f.label for f in t.face_fields} for t in deployment.license_types}


def _print_licenses(payload: dict, unmask: bool) -> None:
    """One block per license: what an intake clerk would read off the certificate."""
    from rich.text import Text

    from exchange.standards import mask_ids_in_text

    def show(text: object) -> str:
        value = "" if text is None else str(text)
        return value if unmask else mask_ids_in_text(value)

    holder = payload["holder"]
    console.print(
        f"[bold]{payload['count']} licenses[/] of {holder['id']} ({holder['kind']} person)",
        highlight=False,
    )
    labels = _face_labels()
    status_style = {"valid": "green", "expired": "yellow", "revoked": "red", "suspended": "red"}
    for lic in payload["licenses"]:
        head = Text.assemble(
            ("\n" + lic["type_name"], "bold"),
            "  ",
            (lic["status"], status_style.get(lic["status"], "")),
            f"  v{lic['version']}",
        )
        console.print(head)
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("identifier", lic["license_id"])
        grid.add_row("number", show(lic["number"]))
        grid.add_row("issuer", f"{lic['issuer']['name']} ({lic['region_code']})")
        valid_from = lic["valid_from"] or lic["issue_date"]
        grid.add_row("valid", f"{valid_from} → {lic['valid_to'] or '长期'}")
        type_labels = labels.get(lic["type_code"], {})
        for name, value in lic["face"].items():
            grid.add_row(type_labels.get(name, name), show(value))
        console.print(grid, highlight=False)


@app.command()
def licenses(
    holder_id: Annotated[
        str, typer.Argument(help="Resident ID number or unified social credit code.")
    ],
    case: Annotated[
        str | None,
        typer.Option(
            "--case",
            help="The case or ticket this read is for (written to the audit trail; required).",
        ),
    ] = None,
    matter: Annotated[
        str | None,
        typer.Option(help="Only the license types this matter needs (a matter code)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the licenses as JSON.")] = False,
    unmask: Annotated[
        bool, typer.Option("--unmask", help="Show ID numbers inside licenses unmasked.")
    ] = False,
) -> None:
    """Show a holder's current licenses (operators; intake systems use the API).

    Reads the license store directly and writes the read to the audit trail as `cli:<user>`
    with the case given, like every read of personal data.
    """
    payload = _admin_lookup(holder_id, case, matter)
    if as_json:
        text = json.dumps(payload, ensure_ascii=False, indent=2)
        if not unmask:
            from exchange.standards import mask_ids_in_text

            text = mask_ids_in_text(text)
        console.print_json(text)
    else:
        _print_licenses(payload, unmask)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int,
        typer.Option(
            help="Worker processes (one per core). With more than one, each has its own "
            "socket (SO_REUSEPORT); SIGHUP restarts them one at a time.",
            min=1,
        ),
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request (paths masked).")] = True,
) -> None:
    """Serve the intake API (OpenAPI docs at /docs) until SIGTERM or Ctrl-C."""
    from exchange.logs import configure_logging, uvicorn_log_config
    from license_store.server import ServerSpec
    from license_store.server import serve as serve_api

    configure_logging()
    spec = ServerSpec(
        host=host,
        port=port,
        access_log=access_log,
        # the access log shows paths, which carry holder IDs: masked
        log_config=uvicorn_log_config(),
    )
    try:
        code = serve_api(spec, workers)
    except (OSError, RuntimeError, ValueError) as error:
        err_console.print(f"[red]govx serve: {error}[/red]")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _reset_demo_home(home: Path) -> None:
    """Start the demo from a clean slate: its stores and lake live under the data directory."""
    import shutil

    for variable in ("GOVX_LICENSE_DB_URL", "GOVX_EXCHANGE_DB_URL", "GOVX_LAKE_DIR"):
        if os.environ.get(variable):
            raise _fail(
                f"govx demo runs on the embedded default and resets it; unset {variable} "
                "(or point GOVX_HOME at a scratch directory)"
            )
    for folder in ("lake", "departments", DEMO_NETWORK_DIR):
        shutil.rmtree(home / folder, ignore_errors=True)
    for pattern in ("licenses.db*", "exchange.db*"):
        for path in home.glob(pattern):
            path.unlink()


@app.command()
def demo(
    persons: Annotated[
        int, typer.Option(help="Residents in the sample household registry.", min=100)
    ] = 12_000,
    airflow: Annotated[
        bool,
        typer.Option(
            "--airflow/--no-airflow",
            help="Run the sync DAGs with `airflow dags test` (default) or directly.",
        ),
    ] = True,
) -> None:
    """Build the sample Guangdong deployment end to end and show what an intake window sees.

    Generates the department systems (fixed seed): two databases, a REST API served on a free
    loopback port while the demo runs, and two drop folders (GB18030 CSV, xlsx). Runs every
    source's sync DAG, simulates a day of changes and syncs again incrementally, then runs an
    intake case over HTTP through LicenseClient: a token, a prefill of 新生儿入户登记 for the
    sample applicant, a certificate verified offline, and her access log. Last, a five-node
    exchange on loopback ports (under $GOVX_HOME/network): the two counties sync, push up the
    tree, and a Chikan mother is looked up at Chancheng, answered by the province.
    """
    from exchange.demo import generate_department_systems, start_department_api
    from exchange.settings import govx_home

    deployment = _deployment()
    home = govx_home()
    started = time.perf_counter()
    console.rule("[bold]govexchange demo")
    console.print(f"data directory: {home}")
    _reset_demo_home(home)
    with console.status("generating department systems ..."):
        systems = generate_department_systems(home / "departments", persons=persons)
    for system in systems:
        console.print(
            f"  {system.source_id:30} {system.rows:>7,} rows  ({system.table}, "
            f"{_DEMO_DELIVERY[system.kind]})"
        )
    with start_department_api(systems) as api:
        console.print(f"  birth-certificate API of the health department: {api.url}")
        _demo_syncs(deployment, systems, api, airflow)
    console.print(
        "  (the API stopped with the demo; `govx demo-simulator` serves it again for `govx sync` "
        "and Airflow)",
        highlight=False,
    )
    _demo_cards(deployment)
    _demo_intake(deployment, systems)
    _demo_network(home / DEMO_NETWORK_DIR)
    console.print(
        f"[green]demo finished in {time.perf_counter() - started:.0f} s.[/] Try: "
        "`govx licenses <ID> --case <TICKET>`, `govx runs`, `govx quality status`, "
        f"`govx serve` (data in {home})."
    )


_DEMO_DELIVERY = {"sql": "database", "rest": "REST API", "files": "drop folder"}


def _write_demo_connections(env: dict[str, str]) -> None:
    """Put the demo's connections in ``$GOVX_HOME/.env`` (kept lines of other keys) and the
    environment."""
    from dotenv import set_key

    from exchange.settings import ENV_FILE_NAME, govx_home

    path = govx_home() / ENV_FILE_NAME
    path.touch()
    for key, value in sorted(env.items()):
        set_key(path, key, value, quote_mode="always")
    os.environ.update(env)


DEMO_OUTAGE_SOURCE = "chancheng_birth_certificates"


def _demo_syncs(deployment, systems: list, api, airflow: bool) -> None:
    """First syncs (Airflow DAGs or ``govx sync``), a day of changes, incremental syncs.

    For the second round the health department's API refuses the exchange's credentials (HTTP
    401, as after an expired API key): that source misses the day's changes (a red card).
    """
    from exchange.demo import connection_env, simulate_changes
    from exchange.state import ExchangeState
    from exchange.sync import RunFailed

    env = connection_env(systems, api_url=api.url)
    _write_demo_connections(env)
    source_ids = [s.id for s in deployment.sources]
    if airflow:
        from exchange.scheduler import airflow_env, migrate_airflow_db, run_dag_test

        airflow_environment = airflow_env(env)
        with console.status("migrating Airflow's metadata database ..."):
            migrate_airflow_db(airflow_environment)
        for source_id in source_ids:
            with console.status(f"airflow dags test sync__{source_id} ..."):
                run_dag_test(f"sync__{source_id}", airflow_environment)
            console.print(f"  [green]✓[/] airflow dags test sync__{source_id}")
    else:
        for source_id in source_ids:
            _run_with_progress(source_id, full_refresh=False)

    console.print("simulating a day of changes in the department systems ...")
    changed = simulate_changes(systems)
    api.set_faults(unauthorized=1_000_000)
    console.print("the health department's API now refuses the exchange's key (HTTP 401) ...")
    for source_id in source_ids:
        try:
            _run_with_progress(source_id, full_refresh=False)
        except RunFailed as exc:
            if source_id != DEMO_OUTAGE_SOURCE:
                raise
            console.print(f"  [red]✗[/] {exc}", highlight=False)
    with ExchangeState() as state:
        state.upgrade()
        history = state.runs(limit=2 * len(source_ids))
    console.print(
        _runs_table(list(reversed(history)), title="sync runs (first full, then incremental)")
    )
    console.print(f"changed rows per source: {changed}")


def _demo_cards(deployment) -> None:
    """The supervision cards after the demo's syncs (``govx quality check``)."""
    import datetime as dt

    from exchange.demo.alert_inbox import DEMO_ALERT_PORT, AlertInbox
    from exchange.state import ExchangeState
    from quality.monitor import run_check

    now = dt.datetime.now(dt.UTC)
    try:
        inbox: AlertInbox | None = AlertInbox(port=DEMO_ALERT_PORT)
    except OSError as exc:
        console.print(f"[yellow]alert inbox not started (port {DEMO_ALERT_PORT}: {exc})[/]")
        inbox = None
    with ExchangeState() as state:
        if inbox is None:
            result = run_check(deployment, state, now)
        else:
            with inbox:
                result = run_check(deployment, state, now)
    console.print(_cards_table(result.statuses, now))
    for alert in inbox.received if inbox is not None else []:
        console.print(
            f"  alert to {alert['department_name']} (webhook): {alert['source_name']} "
            f"{alert['previous_card'] or 'new'} -> {alert['card']}: {'; '.join(alert['reasons'])}",
            highlight=False,
        )


def _demo_intake(deployment, systems: list) -> None:
    """The intake window's case for the sample applicant, over HTTP through LicenseClient."""
    from exchange.demo import sample_applicant
    from exchange.demo.intake import CASE_ID, NEWBORN_MATTER, run_intake_scenario
    from exchange.standards import mask_id

    holder = sample_applicant(systems)
    try:
        result = run_intake_scenario(deployment, holder)
    except Exception as exc:  # the demo says what failed, masked, and fails
        from exchange.standards import mask_ids_in_text

        raise _fail(f"intake scenario failed: {mask_ids_in_text(str(exc))}") from None
    prefill = result.prefill
    matter = next(m for m in deployment.matters if m.code == NEWBORN_MATTER)
    console.rule(
        f"[bold]intake lookup: prefill {matter.name} for {mask_id(holder)} -> 200 "
        f"(case {CASE_ID}, {result.base_url})"
    )
    table = Table(box=box.SIMPLE_HEAD)
    for column in ("material", "from the library", "license", "version", "valid to"):
        table.add_column(column)
    for item in prefill.materials:
        if item.license is not None:
            table.add_row(
                item.name,
                "[green]satisfied[/]",
                item.license.license_id,
                str(item.license.version),
                str(item.license.valid_to or "长期"),
            )
        else:
            table.add_row(item.name, f"[yellow]required[/]: {item.reason_text}", "-", "-", "-")
    console.print(table)
    licensed = sum(1 for m in prefill.materials if m.license_type)
    console.print(
        f"proofs eliminated: [bold]{prefill.proofs_eliminated}[/] of {licensed} certificates "
        f"the matter needs ({prefill.still_required} material(s) still from the applicant)",
        highlight=False,
    )
    verification = result.verified_license
    console.print(
        f"verified offline: {result.verified_type} {verification.license_id} v"
        f"{verification.version} ({verification.status}) with {result.department}'s public key "
        f"-> {'[green]signature valid[/]' if result.offline_valid else '[red]INVALID[/]'}; "
        f"a tampered copy -> {'valid?!' if result.tampered_valid else 'rejected'}",
        highlight=False,
    )
    log = result.access_log
    console.print(f"the holder's access log ({log.count} entries, newest first):")
    for entry in log.entries[:6]:
        console.print(
            f"  {entry.occurred_at:%Y-%m-%d %H:%M:%S}  {entry.client_name or entry.client_id}  "
            f"{entry.action}  {entry.matter_name or entry.matter}  case {entry.case_id}  "
            f"{len(entry.license_ids)} license(s)  {entry.result}",
            highlight=False,
        )


DEMO_NETWORK_DIR = "network"
DEMO_NETWORK_CASE = "ZJ-CK-2026-000001"


def _demo_network(base: Path) -> None:
    """Five nodes on loopback ports (exchange.network): the counties sync and push up the tree,
    then a Chikan mother is looked up at the Chancheng window: county -> city -> province."""
    from exchange.demo.chikan import SCREENING_TYPE_CONFIG
    from exchange.network import CHANCHENG, CHIKAN, NODES, PROVINCE, FiveNodeNetwork
    from exchange.settings import config_dir
    from exchange.standards import mask_ids_in_text

    started = time.perf_counter()
    console.rule("[bold]five-node exchange on loopback ports: province, two cities, two counties")
    network = FiveNodeNetwork(base, config=config_dir(), persons=400, chikan_births=200)
    counties = [CHANCHENG, CHIKAN]
    try:
        with console.status("starting five nodes (govx serve), syncing at the counties ..."):
            network.build().start(wait=False)  # the syncs need no server
            syncs = network.sync_all(counties)
            network.wait_started()
        for sync in syncs:
            console.print(
                f"  [green]✓[/] govx {' '.join(sync.args)} at {sync.region} "
                f"{network.node(sync.region).name}",
                highlight=False,
            )
        with console.status("govx exchange push: the counties, then the cities ..."):
            pushes = network.replicate()
        for push in pushes:
            said = push.stdout.strip().splitlines()
            console.print(
                f"  [green]✓[/] govx exchange push at {push.region}: {said[-1] if said else ''}",
                highlight=False,
                soft_wrap=True,
            )
        screening = SCREENING_TYPE_CONFIG["code"]
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("node", "API", "parent", "licenses", "not shared"):
            numeric = column in ("licenses", "not shared")
            table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
        for region, parent in NODES:
            node = network.node(region)
            table.add_row(
                f"{region} {node.name}",
                node.url,
                parent or "-",
                f"{network.license_count(region):,}",
                f"{network.license_count(region, type_code=screening):,}",
            )
        console.print(table)
        received = ", ".join(
            f"{dataset_id} {live:,} rows (from {', '.join(origins)})"
            for dataset_id, (live, origins) in network.received_datasets(PROVINCE).items()
        )
        console.print(
            f"curated datasets received at {PROVINCE}: {received or 'none'}",
            highlight=False,
            soft_wrap=True,
        )
        _demo_network_lookup(network)
        kept = network.license_count(CHIKAN, type_code=screening)
        elsewhere = sum(
            network.license_count(r, type_code=screening) for r in network.nodes if r != CHIKAN
        )
        console.print(
            f"{SCREENING_TYPE_CONFIG['name']} (not_shared): {kept:,} at {CHIKAN} "
            f"{network.node(CHIKAN).name}, {elsewhere} at the other nodes",
            highlight=False,
            soft_wrap=True,
        )
    except Exception as exc:  # the demo says what failed, masked, and fails
        raise _fail(f"five-node exchange failed: {mask_ids_in_text(str(exc))}") from None
    finally:
        with console.status("stopping the five nodes ..."):
            network.close()
    console.print(
        f"five-node exchange done in {time.perf_counter() - started:.0f} s (nodes stopped; "
        f"their data in {base})",
        highlight=False,
        soft_wrap=True,
    )


def _demo_network_lookup(network) -> None:
    """A Chikan mother's 新生儿入户登记 at the Chancheng window: answered by the province."""
    from exchange.network import CHANCHENG, NEWBORN_MATTER, PROVINCE
    from exchange.standards import mask_id

    holder = next(network.chikan_holders())
    response = network.lookup(CHANCHENG, holder, DEMO_NETWORK_CASE, matter=NEWBORN_MATTER)
    if response.status_code != 200:
        raise RuntimeError(f"the lookup at {CHANCHENG} answered {response.status_code}")
    body = response.json()
    answered = body["answered_by"]
    console.rule(f"[bold]cross-region lookup at the {network.node(CHANCHENG).name} window")
    console.print(
        f"{body['matter']['name']} for {body['holder']['id']} (born in 赤坎区, case "
        f"{DEMO_NETWORK_CASE}) -> {response.status_code}, answered_by {answered} "
        f"{network.node(answered).name}",
        highlight=False,
        soft_wrap=True,
    )
    chain = []
    region: str | None = CHANCHENG
    while region is not None:
        node = network.node(region)
        results = [e.result for e in network.audit_trail(region, holder, DEMO_NETWORK_CASE)]
        chain.append(f"{region} {node.name} ({', '.join(results) or 'not asked'})")
        region = node.parent if results == ["forwarded"] else None
    console.print("forwarded: " + " -> ".join(chain), highlight=False, soft_wrap=True)
    for item in body["licenses"]:
        console.print(
            f"  {item['type_name']} {item['license_id']} v{item['version']} ({item['status']}), "
            f"issued by {item['issuer']['name']}",
            highlight=False,
            soft_wrap=True,
        )
    if answered != PROVINCE or not body["licenses"] or body["holder"]["id"] != mask_id(holder):
        raise RuntimeError(f"the lookup was answered by {answered} with {body['count']} licenses")


@app.command("demo-simulator")
def demo_simulator(
    port: Annotated[int, typer.Option(help="TCP port.")] = 8765,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Serve the demo's birth-certificate REST API until Ctrl-C (after `govx demo`).

    Reads the health department's database under $GOVX_HOME/departments and points the
    connection of chancheng_birth_certificates in $GOVX_HOME/.env at it, so that `govx sync`
    and the Airflow DAGs reach it.
    """
    import contextlib
    import signal

    from exchange.demo import department_api_env, start_department_api
    from exchange.settings import govx_home

    try:
        api = start_department_api(govx_home() / "departments", host=host, port=port)
    except (FileNotFoundError, OSError) as exc:
        raise _fail(str(exc)) from None
    with api:
        _write_demo_connections(department_api_env(api.url))
        console.print(f"serving {api.url}{api.path} (Ctrl-C stops)", highlight=False)
        # Ctrl-C or SIGTERM stops it, even when started with SIGINT ignored (a background job
        # of a non-interactive shell inherits that, and Python then leaves it ignored)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.default_int_handler)
        with contextlib.suppress(KeyboardInterrupt):
            while True:  # timed: SIGINT may land on a server thread, and only a main thread
                time.sleep(0.2)  # back in Python code raises KeyboardInterrupt


def run() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
