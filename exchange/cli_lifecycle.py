"""``govx lifecycle``: suspend, revoke or reinstate a license, and run the daily expiry by hand.

Each change is a new version of the license (new identifier), signed by its department and
written to the audit trail with the operator (``--actor``) and the case reference (``--reason``).
Holder IDs are shown masked. At a node, only the node's own licenses change here: one issued
below it (replicated up) is refused with the node to run the command at, and the expiry skips
it. See ``docs/lifecycle.md``.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from exchange.cli_output import console
from exchange.cli_output import fail as _fail

if TYPE_CHECKING:
    from license_store.records import License

lifecycle_app = typer.Typer(
    help="Suspend, revoke or reinstate licenses, and expire the ones past their validity. "
    "Every change is a new, signed, audited version.",
    no_args_is_help=True,
)

LicenseIdArg = Annotated[
    str, typer.Argument(help="The license identifier (any of its versions' identifiers).")
]
ReasonOpt = Annotated[
    str,
    typer.Option(
        "--reason",
        help="The case or document reference behind the change (1-64 characters), "
        "written to the audit trail.",
    ),
]
ActorOpt = Annotated[
    str | None,
    typer.Option(
        "--actor",
        help="Who makes the change, for the audit trail (default: $GOVX_ACTOR, else "
        "cli:<login name>).",
        show_default=False,
    ),
]


def _actor(given: str | None) -> str:
    return given or os.environ.get("GOVX_ACTOR") or f"cli:{getpass.getuser()}"


def _change(action: str, license_id: str, reason: str, actor: str | None) -> None:
    from exchange.nodes import NodeError
    from exchange.standards.holder_ids import mask_id
    from license_store.errors import ConflictError, LicenseNotFound, LicenseStoreError
    from license_store.signing import KeyFileError
    from license_store.store import LicenseStore

    try:
        with LicenseStore() as store:
            method: Callable[..., License] = getattr(store, action)
            changed = method(license_id, reason=reason, actor=_actor(actor))
    except ValueError as exc:  # a reason or actor out of bounds
        raise _fail(str(exc), 2) from None
    except (LicenseNotFound, ConflictError, KeyFileError) as exc:  # incl. NotTheIssuingNode
        raise _fail(str(exc)) from None
    except NodeError as exc:
        raise _fail(f"cannot tell which licenses this node issued: {exc}") from None
    except LicenseStoreError as exc:
        raise _fail(f"the license store refused the change: {exc}") from None
    console.print(
        f"license {changed.license_id} (version {changed.version}, holder "
        f"{mask_id(changed.holder_id)}) is now {changed.status}",
        highlight=False,
        soft_wrap=True,
    )


@lifecycle_app.command("suspend")
def suspend(license_id: LicenseIdArg, reason: ReasonOpt, actor: ActorOpt = None) -> None:
    """Suspend a valid license until it is reinstated (a sync does not lift it)."""
    _change("suspend", license_id, reason, actor)


@lifecycle_app.command("revoke")
def revoke(license_id: LicenseIdArg, reason: ReasonOpt, actor: ActorOpt = None) -> None:
    """Revoke a license for good: it can never be reinstated (issue a new one instead)."""
    _change("revoke", license_id, reason, actor)


@lifecycle_app.command("reinstate")
def reinstate(license_id: LicenseIdArg, reason: ReasonOpt, actor: ActorOpt = None) -> None:
    """Lift a suspension: the license is valid again. A revoked license cannot be reinstated."""
    _change("reinstate", license_id, reason, actor)


@lifecycle_app.command("expire")
def expire(
    today: Annotated[
        dt.datetime | None,
        typer.Option(
            "--today",
            formats=["%Y-%m-%d"],
            help="Expire licenses valid to before this date, YYYY-MM-DD (default: today in "
            "Beijing).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Make every license stored as valid but past its validity a new, expired version.

    The ``license_expiry`` Airflow DAG runs this daily; running it twice changes nothing. At a
    node, licenses issued below it are skipped: their issuing node expires them.
    """
    from exchange.nodes import NodeError
    from license_store.errors import LicenseStoreError
    from license_store.signing import KeyFileError
    from license_store.store import LicenseStore

    try:
        with LicenseStore() as store:
            result = store.run_expiry(today.date() if today else None)
    except (LicenseStoreError, KeyFileError) as exc:
        raise _fail(str(exc)) from None
    except NodeError as exc:
        raise _fail(f"cannot tell which licenses this node issued: {exc}") from None
    console.print(result.summary(), highlight=False, soft_wrap=True)
