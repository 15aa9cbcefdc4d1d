"""``govx node``: make this deployment a node of the province–city–county exchange, and show it.

See ``docs/replication.md``. The node's identity lives in ``$GOVX_HOME/node.json``, its signing key
in the key ring as ``node-<region>``, its credentials for its parent in
``$GOVX_HOME/node-credentials.json`` (``govx node connect``, :mod:`exchange.node_client`).
"""

from __future__ import annotations

import sys
from pathlib import Path
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
    from license_store.errors import LicenseStoreError
    from license_store.store import LicenseStore

    try:
        with LicenseStore() as store:
            try:
                store.check_schema()
            except LicenseStoreError:  # no store yet: count the outbox's files
                status = read_status(govx_home())
            else:
                status = read_status(govx_home(), store=store)
    except NodeError as error:
        raise _fail(str(error)) from None
    node = status.node
    console.print(f"node      {node.region} {node.name} ({node.level})", highlight=False)
    parent = f"{node.parent} at {node.parent_url}" if node.parent else "none (province)"
    console.print(f"parent    {parent}", highlight=False)
    console.print(f"key       node-{node.region} ({node.key_id})", highlight=False)
    if node.parent:
        console.print(f"connect   {_credentials_line()}", highlight=False, soft_wrap=True)
    waiting = f"{status.pending} package(s) waiting"
    if status.oldest_age_s is not None:
        waiting += f", the oldest {status.oldest_age_s:,.0f} s old"
    # soft_wrap: a long path must not break the line (scripts and tests read it)
    console.print(f"outbox    {status.outbox}: {waiting}", highlight=False, soft_wrap=True)


def _credentials_line() -> str:
    from exchange.node_client import load_parent_credentials
    from exchange.nodes import NodeError
    from exchange.settings import govx_home

    try:
        credentials = load_parent_credentials(govx_home())
    except NodeError as error:
        return f"credentials unreadable: {error}"
    if credentials is None:
        return "no credentials for the parent: lookups are not forwarded (govx node connect)"
    return f"client {credentials.client_id} at the parent (saved {credentials.saved_at})"


def _read_secret(secret_file: Path | None) -> str:
    """The client secret from ``secret_file``, else stdin (a hidden prompt on a terminal)."""
    if secret_file is not None:
        try:
            return secret_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise _fail(
                f"cannot read the secret file {secret_file}: {type(error).__name__}"
            ) from None
    if sys.stdin.isatty():
        return str(typer.prompt("client secret", hide_input=True)).strip()
    return sys.stdin.readline().strip()


@node_app.command("connect")
def node_connect(
    client_id: Annotated[
        str,
        typer.Option(
            help="This node's client id at its parent (registered there with "
            "`govx clients add --kind node`)."
        ),
    ],
    secret_file: Annotated[
        Path | None,
        typer.Option(help="A file holding the client secret; without it, read from stdin."),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(help="Fetch a token from the parent before saving, to check the secret."),
    ] = True,
) -> None:
    """Store this node's client credentials for its parent (mode 0600), checked first."""
    from exchange.node_client import (
        ParentClient,
        ParentError,
        credentials_file,
        save_parent_credentials,
    )
    from exchange.nodes import NodeError, load_node
    from exchange.settings import govx_home

    home = govx_home()
    try:
        node = load_node(home)
    except NodeError as error:
        raise _fail(str(error)) from None
    if node.parent is None or node.parent_url is None:
        raise _fail(f"node {node.region} is a province: it has no parent to connect to")
    secret = _read_secret(secret_file)
    if not secret:
        raise _fail("no client secret given (--secret-file, or on stdin)")
    if check:
        parent = ParentClient(node.parent, node.parent_url, client_id.strip(), secret)
        try:
            parent.check_credentials()
        except ParentError as error:
            raise _fail(f"{error}; nothing saved (--no-check saves without asking)") from None
        finally:
            parent.close()
    try:
        saved = save_parent_credentials(home, client_id, secret)
    except (NodeError, OSError) as error:
        raise _fail(str(error)) from None
    checked = "accepted by" if check else "not checked with"
    console.print(
        f"credentials of client {saved.client_id} {checked} parent {node.parent} at "
        f"{node.parent_url}, saved in {credentials_file(home)}",
        highlight=False,
        soft_wrap=True,
    )


@node_app.command("trust")
def node_trust(
    region: Annotated[str, typer.Option(help="The child node's region code.")],
    public_key: Annotated[
        Path,
        typer.Option(
            help="The child's public key (PEM), from `govx keys export node-<region>` there."
        ),
    ],
    replace: Annotated[
        bool, typer.Option(help="Replace another key trusted for this child (it rotated).")
    ] = False,
) -> None:
    """Trust a child node's key: its packages are accepted only if signed with it."""
    from exchange.nodes import NodeError, trust_node
    from exchange.settings import govx_home

    try:
        pem = public_key.read_bytes()
    except OSError as error:
        raise _fail(f"cannot read {public_key}: {type(error).__name__}") from None
    try:
        key_id = trust_node(govx_home(), region, pem, replace=replace)
    except NodeError as error:
        raise _fail(str(error)) from None
    console.print(f"packages from node {region} are accepted if signed with key {key_id}")
