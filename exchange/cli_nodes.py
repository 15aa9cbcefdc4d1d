"""``govx node``: make this deployment a node of the province–city–county exchange, and show it.

See ``docs/replication.md``. The node's identity lives in ``$GOVX_HOME/node.json``, its signing key
in the key ring as ``node-<region>``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from exchange.cli_output import console
from exchange.cli_output import fail as _fail

node_app = typer.Typer(
    help="This deployment as a node of the exchange: its region, parent and outbox.",
    no_args_is_help=True,
)


@node_app.command("init")
def node_init(
    region: Annotated[
        str, typer.Option(help="The node's GB/T 2260 region code, one of config/regions.yaml.")
    ],
    parent_url: Annotated[
        str | None,
        typer.Option(
            help="The parent node's API (county -> city -> province); none for a province."
        ),
    ] = None,
) -> None:
    """Make this deployment the node of --region: write its identity, create its signing key."""
    from exchange.config import ConfigError, load_deployment
    from exchange.nodes import NodeError, init_node
    from exchange.settings import govx_home
    from license_store.signing import KeyFileError

    try:
        node = init_node(govx_home(), load_deployment(), region, parent_url=parent_url)
    except (ConfigError, NodeError, KeyFileError) as error:
        raise _fail(str(error)) from None
    parent = f"parent {node.parent} at {node.parent_url}" if node.parent else "no parent"
    console.print(
        f"node {node.region} {node.name} ({node.level}), {parent}; signing key {node.key_id}",
        highlight=False,
    )


@node_app.command("status")
def node_status() -> None:
    """Show this node, its parent and the packages waiting in its outbox."""
    from exchange.nodes import NodeError
    from exchange.nodes import node_status as read_status
    from exchange.settings import govx_home

    try:
        status = read_status(govx_home())
    except NodeError as error:
        raise _fail(str(error)) from None
    node = status.node
    console.print(f"node      {node.region} {node.name} ({node.level})", highlight=False)
    parent = f"{node.parent} at {node.parent_url}" if node.parent else "none (province)"
    console.print(f"parent    {parent}", highlight=False)
    console.print(f"key       node-{node.region} ({node.key_id})", highlight=False)
    waiting = f"{status.pending} package(s) waiting"
    if status.oldest_age_s is not None:
        waiting += f", the oldest {status.oldest_age_s:,.0f} s old"
    console.print(f"outbox    {status.outbox}: {waiting}", highlight=False)
