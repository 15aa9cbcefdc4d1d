"""The overview page's replication card: this node's outbox backlog and its children's packages.

Shown only where replication happens: the deployment is a node (``$GOVX_HOME/node.json``, made by
``govx node init``) or its license store has applied packages from a child node. Elsewhere the
page has no card (:func:`replication_card` returns ``None``). The colour comes from
:func:`exchange.lag.assess`, the same rule as ``govx exchange status`` and ``/metrics``. A card
that cannot be judged (the store is not open or not migrated, the limits or ``node.json`` are
unusable) is grey and says why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from exchange.config import Deployment
from exchange.lag import LagLimits, LagLimitsError, LagVerdict, ReplicationLag, assess
from exchange.lag import replication_lag as read_replication_lag
from exchange.nodes import NodeConfig, NodeError, load_node, node_file
from exchange.standards.holder_ids import mask_ids_in_text
from license_store.errors import LicenseStoreError

if TYPE_CHECKING:
    from license_store.store import LicenseStore

__all__ = ["ChildPosition", "ReplicationCard", "replication_card"]

NEUTRAL = "neutral"


@dataclass(frozen=True)
class ChildPosition:
    """One child node's last package applied here."""

    region: str
    name: str
    last_seq: int
    rows: int
    applied_at: dt.datetime | None
    age_s: float | None


@dataclass(frozen=True)
class ReplicationCard:
    """What the card shows; ``card`` is ``green``/``yellow``/``red``, or ``neutral`` when the
    lag could not be judged (``problem`` says why)."""

    card: str
    node: NodeConfig | None
    lag: ReplicationLag | None
    verdict: LagVerdict | None
    limits: LagLimits | None
    children: tuple[ChildPosition, ...]
    problem: str | None = None

    @property
    def oldest_age_s(self) -> float | None:
        return None if self.lag is None else self.lag.backlog.oldest_age_s(self.lag.read_at)


def _node(home: Path) -> tuple[NodeConfig | None, str | None]:
    if not node_file(home).exists():
        return None, None
    try:
        return load_node(home), None
    except NodeError as error:
        return None, str(error)


def replication_card(
    store: LicenseStore | None,
    home: Path,
    deployment: Deployment,
    now: dt.datetime | None = None,
) -> ReplicationCard | None:
    """The card of this deployment, or ``None`` when it neither is a node nor has applied a
    child's package (or cannot tell, its store being unreadable)."""
    node, node_problem = _node(home)
    is_node = node is not None or node_problem is not None
    lag: ReplicationLag | None = None
    problem = node_problem
    if store is None:
        problem = problem or "the license store is not open"
    else:
        try:
            lag = read_replication_lag(store, now)
        except LicenseStoreError as error:
            problem = problem or mask_ids_in_text(str(error))
    if not is_node and (lag is None or not lag.inbox):
        return None
    verdict = limits = None
    if lag is not None:
        try:
            limits = LagLimits.from_env()
        except LagLimitsError as error:
            problem = problem or str(error)
        else:
            verdict = assess(lag.backlog, limits, lag.read_at)
    regions = deployment.region_by_code
    children = tuple(
        ChildPosition(
            region=position.sender,
            name=regions[position.sender].name if position.sender in regions else "",
            last_seq=position.last_seq,
            rows=position.rows,
            applied_at=position.applied_at,
            age_s=lag.applied_age_s(position),
        )
        for position in (lag.inbox if lag is not None else ())
    )
    card = verdict.level.value if verdict is not None else NEUTRAL
    return ReplicationCard(card, node, lag, verdict, limits, children, problem)
