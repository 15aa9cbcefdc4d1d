"""``govx exchange``: package this node's changes, deliver them to the parent, show the lag.

See ``docs/replication.md``. The node must have been made one (``govx node init``) and, to push,
connected to its parent (``govx node connect``).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from exchange.cli_output import console
from exchange.cli_output import fail as _fail

if TYPE_CHECKING:
    from pathlib import Path

    from exchange.config import Deployment
    from exchange.nodes import NodeConfig
    from license_store.store import LicenseStore

exchange_app = typer.Typer(
    help="Replicate this node's license changes to its parent node, and show the lag.",
    no_args_is_help=True,
)


def _node_setup() -> tuple[Path, NodeConfig, Deployment, LicenseStore]:
    """The data directory, the node, the deployment and the (migrated) store; or exit 1."""
    from exchange.config import ConfigError, load_deployment
    from exchange.nodes import NodeError, load_node
    from exchange.settings import govx_home
    from license_store.errors import LicenseStoreError
    from license_store.store import LicenseStore

    home = govx_home()
    try:
        node = load_node(home)
        deployment = load_deployment()
        store = LicenseStore(deployment=deployment)
        store.check_schema()
    except (NodeError, ConfigError, LicenseStoreError) as error:
        raise _fail(str(error)) from None
    return home, node, deployment, store


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7_200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3_600:.1f} h"


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@exchange_app.command("package")
def exchange_package(
    max_rows: Annotated[
        int | None,
        typer.Option(min=1, help="License versions per package at most (default 200,000)."),
    ] = None,
) -> None:
    """Package what the license store gained since the last package, into the outbox.

    Syncs do this after each run; this command is for catching up by hand. It also makes again
    the files of waiting packages that a crash lost.
    """
    from exchange.outbox import make_packages
    from license_store.errors import LicenseStoreError
    from license_store.signing import KeyFileError, KeyRing

    home, node, deployment, store = _node_setup()
    if node.parent is None:
        raise _fail(f"node {node.region} is the province: it has no parent to package for")
    written: list[int] = []

    def wrote(rows: int) -> None:
        written.append(rows)
        progress.advance(task, rows)

    with store, _progress() as progress:
        task = progress.add_task("packaging", total=None)
        try:
            planned = make_packages(
                store,
                node,
                deployment,
                KeyRing(home / "keys"),
                home,
                max_rows=max_rows,
                progress=wrote,
            )
        except (LicenseStoreError, KeyFileError, OSError) as error:
            raise _fail(str(error)) from None
    again = len(written) - len(planned)
    line = (
        f"{len(written)} packages written ({sum(written):,} changes) for "
        f"{node.parent}: {len(planned)} new"
    )
    if again > 0:
        line += f", {again} made again from their plans (a crash had lost their files)"
    console.print(line, highlight=False)


@exchange_app.command("push")
def exchange_push() -> None:
    """Package what is new and deliver the waiting packages to the parent, in order.

    Exits 1 when packages are left waiting (the parent is down or refuses them): they stay in
    the outbox, in order, for the next push.
    """
    from exchange.node_client import load_parent_client
    from exchange.nodes import NodeError
    from exchange.outbox import DeliveryError, push_packages
    from license_store.errors import LicenseStoreError
    from license_store.replication import backlog
    from license_store.signing import KeyFileError, KeyRing

    home, node, deployment, store = _node_setup()
    if node.parent is None:
        raise _fail(f"node {node.region} is the province: it has no parent to push to")
    try:
        parent = load_parent_client(home)
    except NodeError as error:
        raise _fail(str(error)) from None
    if parent is None:
        raise _fail(
            f"node {node.region} has no credentials for its parent {node.parent}: "
            "run `govx node connect`"
        )
    with store, _progress() as progress:
        waiting = backlog(store)
        task = progress.add_task(f"to {node.parent}", total=waiting.rows or None)
        try:
            report = push_packages(
                store,
                node,
                deployment,
                KeyRing(home / "keys"),
                home,
                parent,
                progress=lambda rows: progress.advance(task, rows),
            )
        except (DeliveryError, LicenseStoreError, KeyFileError, OSError) as error:
            raise _fail(str(error)) from None
    sent = len(report.delivered) + len(report.duplicates)
    line = f"{sent} packages delivered to {node.parent} ({report.rows:,} changes)"
    if report.duplicates:
        line += f", {len(report.duplicates)} of them already there"
    console.print(line, highlight=False)
    if report.stopped is not None:
        raise _fail(f"{report.waiting} packages still waiting: {report.stopped}")


def _status_rows(store: LicenseStore) -> dict[str, Any]:
    from exchange.lag import LagLimits, assess
    from license_store.replication import backlog, inbox_positions

    waiting = backlog(store)
    return {
        "backlog": waiting,
        "verdict": assess(waiting, LagLimits.from_env()),
        "inbox": inbox_positions(store),
    }


@exchange_app.command("status")
def exchange_status() -> None:
    """Show the replication lag, and the last package applied from each child.

    The lag is the packages waiting for the parent and the oldest's age: green, yellow or red
    against the limits of docs/monitoring.md.
    """
    from license_store.errors import LicenseStoreError

    _home, node, _deployment, store = _node_setup()
    with store:
        try:
            status = _status_rows(store)
        except (LicenseStoreError, ValueError) as error:
            raise _fail(str(error)) from None
    now = dt.datetime.now(dt.UTC)
    waiting, verdict = status["backlog"], status["verdict"]
    colour = {"green": "green", "yellow": "yellow", "red": "red"}[verdict.level]
    parent = f"parent {node.parent}" if node.parent else "the province: no parent"
    console.print(f"node {node.region} {node.name}, {parent}", highlight=False)
    if node.parent is not None:
        last = waiting.last_delivered_at
        delivered = _age((now - last).total_seconds()) + " ago" if last else "never"
        console.print(
            f"[{colour}]{verdict.level}[/]: {verdict.summary}; last delivery {delivered}",
            highlight=False,
        )
    if status["inbox"]:
        table = Table(title="from child nodes", box=box.SIMPLE_HEAD, pad_edge=False)
        for column in ("child", "last package", "versions", "applied"):
            table.add_column(column, justify="right" if column != "child" else "left")
        for position in status["inbox"]:
            applied = position.applied_at
            table.add_row(
                position.sender,
                f"{position.last_seq:,}",
                f"{position.rows:,}",
                _age((now - applied).total_seconds()) + " ago" if applied else "-",
            )
        console.print(table)
