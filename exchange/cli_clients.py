"""``govx clients``: register the systems that call the license API, and manage their secrets.

An intake system gets a client id and a secret (shown once) and trades them for short-lived
tokens at ``POST /v1/oauth/token``. Its grants -- matters, license types, scopes -- are checked
against the deployment's catalogue when it is added. See ``docs/intake-api.md``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from exchange.cli_output import console
from exchange.cli_output import fail as _fail

clients_app = typer.Typer(
    help="API clients (intake systems, holder portals, nodes, monitors) and their grants.",
    no_args_is_help=True,
)


def _registry():  # -> ClientRegistry (imported lazily: keeps `govx --help` fast)
    from license_store.clients import ClientRegistry
    from license_store.store import LicenseStore

    with LicenseStore() as store:
        store.upgrade()  # the clients table comes with the store's migrations
    return ClientRegistry()


def _deployment():  # -> Deployment
    from exchange.config import ConfigError, load_deployment

    try:
        return load_deployment()
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _check_grants(
    deployment,
    matters: list[str],
    license_types: list[str],
    department: str | None,
    region: str | None,
) -> None:
    known_matters = {m.code for m in deployment.matters}
    for code in matters:
        if code not in known_matters:
            raise _fail(f"unknown matter {code!r}; see `govx catalog` for the matter codes")
    for type_id in license_types:
        if type_id not in deployment.license_type_by_id:
            known = ", ".join(sorted(deployment.license_type_by_id))
            raise _fail(f"unknown license type {type_id!r}; license types are {known}")
    if department is not None and department not in deployment.department_by_id:
        raise _fail(f"unknown department {department!r}")
    if region is not None and region not in {r.code for r in deployment.regions}:
        raise _fail(f"unknown region {region!r}")


def _matters_types(deployment, matters: list[str]) -> list[str]:
    """Every license type the matters list as materials (the default grant)."""
    wanted = set(matters)
    types: list[str] = []
    for matter in deployment.matters:
        if matter.code in wanted:
            for material in matter.materials:
                if material.license_type and material.license_type not in types:
                    types.append(material.license_type)
    return types


@clients_app.command("add")
def clients_add(
    name: Annotated[str, typer.Argument(help="The system's name, e.g. 佛山市禅城区政务服务中心.")],
    kind: Annotated[
        str, typer.Option(help="intake, portal (holder access logs), node or monitor.")
    ] = "intake",
    matter: Annotated[
        list[str] | None,
        typer.Option("--matter", help="A matter code the client handles (repeatable)."),
    ] = None,
    license_type: Annotated[
        list[str] | None,
        typer.Option(
            "--license-type",
            help="A license type id it may receive (repeatable; default: every type its "
            "matters list).",
        ),
    ] = None,
    department: Annotated[str | None, typer.Option(help="The operating department's id.")] = None,
    region: Annotated[str | None, typer.Option(help="Its GB/T 2260 region code.")] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope (repeatable; default: the kind's scopes)."),
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(help="Requests per second per API worker (default: none).")
    ] = None,
    client_id: Annotated[
        str | None, typer.Option(help="The client id (default: <kind>-<random>).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Register a client and print its id and secret. The secret is shown only now: store it
    in the client's secret manager; `govx clients rotate` issues a new one."""
    from license_store.clients import ClientError
    from license_store.errors import ConflictError

    deployment = _deployment()
    matters = list(matter or [])
    types = list(license_type or []) or _matters_types(deployment, matters)
    _check_grants(deployment, matters, types, department, region)
    registry = _registry()
    try:
        client, secret = registry.add(
            name=name,
            kind=kind,
            department=department,
            region=region,
            matters=matters,
            license_types=types,
            scopes=scope or None,
            rate_limit=rate_limit,
            client_id=client_id,
        )
    except (ClientError, ConflictError) as exc:
        raise _fail(str(exc)) from None
    finally:
        registry.close()
    if as_json:
        print(json.dumps({**client.as_dict(), "client_secret": secret}, ensure_ascii=False))
        return
    console.print(f"client [bold]{client.client_id}[/] added ({client.kind}: {client.name})")
    console.print(f"client secret (shown once): [bold]{secret}[/]", soft_wrap=True)
    console.print(f"scopes: {' '.join(client.scopes)}; matters: {', '.join(client.matters) or '-'}")


@clients_app.command("list")
def clients_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the clients, their grants and whether they are revoked (never their secrets)."""
    registry = _registry()
    try:
        clients = registry.list()
    finally:
        registry.close()
    if as_json:
        print(json.dumps([c.as_dict() for c in clients], ensure_ascii=False, indent=2))
        return
    table = Table(box=box.SIMPLE_HEAD)
    for column in (
        "client",
        "kind",
        "name",
        "matters",
        "license types",
        "scopes",
        "limit",
        "state",
    ):
        table.add_column(column)
    for client in clients:
        table.add_row(
            client.client_id,
            client.kind,
            client.name,
            "\n".join(client.matters) or "-",
            "\n".join(client.license_types) or "-",
            "\n".join(client.scopes),
            f"{client.rate_limit:g}/s" if client.rate_limit else "-",
            "active" if client.active else f"revoked {client.revoked_at:%Y-%m-%d %H:%M}",
        )
    console.print(table if clients else "no clients yet: `govx clients add NAME --matter CODE`")


@clients_app.command("revoke")
def clients_revoke(
    client_id: Annotated[str, typer.Argument(help="The client to revoke.")],
) -> None:
    """Revoke a client: its secret stops working and its tokens are refused within seconds."""
    from license_store.clients import UnknownClient

    registry = _registry()
    try:
        registry.revoke(client_id)
    except UnknownClient as exc:
        raise _fail(str(exc)) from None
    finally:
        registry.close()
    console.print(f"client {client_id} revoked")


@clients_app.command("rotate")
def clients_rotate(
    client_id: Annotated[str, typer.Argument(help="The client whose secret to replace.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Give a client a new secret (printed once); the old secret and its tokens stop working."""
    from license_store.clients import ClientError

    registry = _registry()
    try:
        secret = registry.rotate(client_id)
    except ClientError as exc:
        raise _fail(str(exc)) from None
    finally:
        registry.close()
    if as_json:
        print(json.dumps({"client_id": client_id, "client_secret": secret}))
        return
    console.print(f"new secret for {client_id} (shown once): [bold]{secret}[/]", soft_wrap=True)
