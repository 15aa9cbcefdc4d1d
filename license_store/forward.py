"""Cross-region lookup: a node with no answer asks its parent, and what may cross a node boundary.

The intake lookup (:func:`license_store.intake.holder_licenses`) asks here three things:

- **Who is asking** (:func:`relay_of`): a ``node`` client's request may carry
  ``X-Govx-On-Behalf-Of: <region>/<client id>`` (the original client and the node it called) and
  ``X-Govx-Hops`` (forwards so far). Other clients' requests are taken as their own: they cannot
  claim to act for someone else. The audit trail names both (:func:`audit_client_id`).
- **What a node client may receive** (:func:`node_matter_access`): the matter's license types
  that may cross the boundary (:func:`crosses_boundary`) -- the catalogue's sharing type decides,
  not the matter grants, which the first node checked for its own client.
- **What the parent says** (:func:`ask_parent`): when this node is one with a parent and
  credentials for it (:func:`node_link`) and has nothing for the caller, the parent is asked with
  the same holder, matter and case, on behalf of the original client, in a worker thread under
  its own limit (:data:`FORWARD_CONCURRENCY`): a slow parent never takes the thread tokens that
  local reads (``run_in_threadpool``) wait for. A parent that cannot be asked leaves the local
  answer and a reason (:data:`FAILURES`); beyond :data:`MAX_HOPS` forwards nobody is asked.

``docs/replication.md`` ("Cross-region lookup") describes the contract.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from fastapi import FastAPI

from exchange.config import Deployment, LicenseType
from exchange.node_client import (
    CONNECT_TIMEOUT_S,
    HOPS_HEADER,
    ON_BEHALF_OF_HEADER,
    ParentClient,
    ParentRefused,
    ParentUnavailable,
    load_parent_client,
)
from exchange.nodes import NodeConfig, NodeError, load_node, node_file
from license_store.access import MaterialAccess, MatterAccess, UnknownMatter
from license_store.audit import MAX_TEXT
from license_store.clients import ApiClient
from license_store.problems import ProblemError
from license_store.security import Caller

__all__ = [
    "FAILURES",
    "FORWARDED",
    "MAX_HOPS",
    "NodeLink",
    "ParentAnswer",
    "Relay",
    "ask_parent",
    "audit_client_id",
    "crosses_boundary",
    "node_link",
    "node_matter_access",
    "on_behalf_of",
    "relay_of",
]

log = logging.getLogger("govexchange.api")

MAX_HOPS = 3  # a request that has been forwarded this often is not forwarded again
FORWARD_READ_TIMEOUT_S = 3.0  # per remaining hop: the first node waits longest
FORWARD_CONCURRENCY = 32
FORWARDED = "forwarded"  # the audit result of a forwarding node's entry
FAILURES = {
    "unreachable": "parent unreachable",  # no connection, a timeout, a 5xx answer
    "refused": "parent refused",  # the parent refused the node's credentials or the read
    "invalid": "parent answer invalid",  # a 200 whose body is not a lookup's answer
    "hops": "hop limit",  # X-Govx-Hops reached MAX_HOPS
}
_HOPS = re.compile(r"^[0-9]{1,2}$")
_ON_BEHALF_OF = re.compile(r"^[0-9]{6}/[a-z0-9][a-z0-9_.-]{2,63}$")


# -- who is asking ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Relay:
    """The forwarding headers of a node client's request."""

    on_behalf_of: str | None  # "<region>/<client id>" of the original client, if given
    hops: int  # forwards so far (0 when the header is absent)


def _invalid_header(name: str, detail: str) -> ProblemError:
    return ProblemError(422, "invalid_request", "Invalid request", detail, field=name)


def relay_of(caller: Caller, headers: Mapping[str, str]) -> Relay | None:
    """The forwarding headers of the request if the caller is a ``node`` client, else ``None``
    (an intake system's headers of that name are ignored). 422 ``invalid_request`` if one is
    malformed."""
    if caller.client.kind != "node":
        return None
    hops = headers.get(HOPS_HEADER.lower())
    if hops is not None and not _HOPS.match(hops):
        raise _invalid_header(HOPS_HEADER, f"{HOPS_HEADER} must be a number of forwards, 0-99")
    original = headers.get(ON_BEHALF_OF_HEADER.lower())
    if original is not None and not _ON_BEHALF_OF.match(original):
        raise _invalid_header(
            ON_BEHALF_OF_HEADER, f"{ON_BEHALF_OF_HEADER} must be <region code>/<client id>"
        )
    return Relay(original, int(hops) if hops is not None else 0)


def audit_client_id(caller_id: str, relay: Relay | None) -> str:
    """The ``client_id`` of the caller's audit entries: the caller, and after ``>`` the
    original client a node caller acts for (``node-440600>440604/intake-3f9c0a1b2d4e``). Cut to
    the column's 64 characters with a digest of the whole when longer."""
    if relay is None or relay.on_behalf_of is None:
        return caller_id
    joined = f"{caller_id}>{relay.on_behalf_of}"
    if len(joined) <= MAX_TEXT:
        return joined
    digest = hashlib.sha256(joined.encode("utf-8")).hexdigest()[:8]
    return f"{joined[: MAX_TEXT - 9]}~{digest}"


def on_behalf_of(node: NodeConfig, caller_id: str, relay: Relay | None) -> str:
    """``X-Govx-On-Behalf-Of`` of a forward from ``node``: the original client's, passed on
    unchanged, or this node's region and its caller."""
    if relay is not None and relay.on_behalf_of is not None:
        return relay.on_behalf_of
    return f"{node.region}/{caller_id}"


# -- what crosses a boundary --------------------------------------------------------------------


def crosses_boundary(license_type: LicenseType, node_client: ApiClient) -> bool:
    """Whether licenses of ``license_type`` may leave this node for another node, the
    ``node_client``. The catalogue's sharing type decides (the 2016 State Council rules):
    ``not_shared`` never leaves its node, ``conditional`` only to a node granted the type
    (its ``license_types``), ``unconditional`` to any node."""
    if license_type.sharing == "not_shared":
        return False
    if license_type.sharing == "conditional":
        return license_type.id in node_client.license_types
    return True


def node_matter_access(deployment: Deployment, client: ApiClient, matter_code: str) -> MatterAccess:
    """What the node client ``client`` may receive for ``matter_code``: the matter's license
    types that :func:`crosses_boundary`. The matter is the original client's, whose grant the
    first node checked; :class:`UnknownMatter` if the catalogue has no such matter."""
    matter = next((item for item in deployment.matters if item.code == matter_code), None)
    if matter is None:
        raise UnknownMatter("no matter of the catalogue has this code")
    types = deployment.license_type_by_id
    materials = []
    for material in matter.materials:
        license_type = types.get(material.license_type) if material.license_type else None
        shared = license_type is not None and crosses_boundary(license_type, client)
        materials.append(MaterialAccess(material, license_type, shared))
    return MatterAccess(matter, tuple(materials))


# -- this node and its parent -------------------------------------------------------------------


@dataclass
class NodeLink:
    """This deployment as a node: its identity (``None`` when it is not one) and its parent's
    client (``None`` without a parent or credentials: lookups are not forwarded)."""

    node: NodeConfig | None
    parent: ParentClient | None = None
    limiter: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(FORWARD_CONCURRENCY)
    )

    @property
    def region(self) -> str | None:
        """The node's region code (``answered_by``), or ``None``."""
        return self.node.region if self.node is not None else None


def load_link(home: Path) -> NodeLink:
    """The node link of the deployment under ``home``; an unreadable identity or credentials
    file is logged and leaves the API without a node identity."""
    try:
        node = load_node(home) if node_file(home).exists() else None
        parent = load_parent_client(home) if node is not None else None
    except NodeError as error:
        log.error("served without a node identity, lookups are not forwarded: %s", error)
        return NodeLink(None)
    if node is not None and node.parent is not None and parent is None:
        log.warning(
            "node %s has no credentials for its parent %s: lookups are not forwarded "
            "(govx node connect)",
            node.region,
            node.parent,
        )
    elif parent is not None:
        log.info("node %s forwards lookups it has no answer for to %s", node.region, parent.where)
    return NodeLink(node, parent)


def node_link(app: FastAPI) -> NodeLink:
    """The app's node link, read from ``$GOVX_HOME`` on first use (restart the API after
    ``govx node init`` or ``govx node connect``)."""
    link: NodeLink | None = getattr(app.state, "node_link", None)
    if link is None:
        from exchange.settings import govx_home

        link = load_link(govx_home())
        app.state.node_link = link
    return link


# -- asking the parent --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParentAnswer:
    """What the parent answered: its licenses (JSON objects, unchecked) and who answered, or
    why it could not be asked (``failure``, one of :data:`FAILURES`' values)."""

    licenses: list[Any]
    answered_by: str | None
    failure: str | None = None


async def ask_parent(
    link: NodeLink,
    holder_id: str,
    masked: str,
    matter: str,
    case: str,
    original: str,
    hops: int,
) -> ParentAnswer:
    """Ask the parent of ``link`` for the holder's licenses (``masked`` is the holder ID as
    logged), as forward number ``hops + 1`` on behalf of ``original``. Never raises for the
    parent's failures: they are logged (WARNING) and given as ``failure``."""
    parent = link.parent
    assert parent is not None
    sent = hops + 1
    if sent > MAX_HOPS:
        log.warning(
            "holder lookup %s for %s: forwarded %d times already, not forwarded again",
            masked,
            matter,
            hops,
        )
        return ParentAnswer([], link.region, FAILURES["hops"])
    read_timeout = FORWARD_READ_TIMEOUT_S * (MAX_HOPS + 1 - sent)
    call = functools.partial(
        parent.lookup,
        holder_id,
        matter,
        case,
        original,
        hops=sent,
        timeout=(CONNECT_TIMEOUT_S, read_timeout),
    )
    try:
        status, body = await anyio.to_thread.run_sync(call, limiter=link.limiter)
    except ParentUnavailable as error:
        log.warning("holder lookup %s for %s answered locally: %s", masked, matter, error)
        return ParentAnswer([], link.region, FAILURES["unreachable"])
    except ParentRefused as error:
        log.warning("holder lookup %s for %s answered locally: %s", masked, matter, error)
        return ParentAnswer([], link.region, FAILURES["refused"])
    if status != 200:
        log.warning(
            "holder lookup %s for %s answered locally: %s answered %d %s",
            masked,
            matter,
            parent.where,
            status,
            str(body.get("code") or "")[:64],
        )
        return ParentAnswer([], link.region, FAILURES["refused"])
    licenses = body.get("licenses")
    answered_by = body.get("answered_by") or parent.parent
    if not isinstance(licenses, list) or not re.fullmatch(r"[0-9]{6}", str(answered_by)):
        log.warning(
            "holder lookup %s for %s answered locally: %s sent an answer that is not a lookup's",
            masked,
            matter,
            parent.where,
        )
        return ParentAnswer([], link.region, FAILURES["invalid"])
    return ParentAnswer(licenses, str(answered_by))
