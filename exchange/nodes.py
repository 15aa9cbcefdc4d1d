"""This deployment as a node of the province–city–county exchange: who it is, where its parent is.

A node is one govexchange deployment identified by its GB/T 2260 region code. Counties send their
changes to their city, cities to the province (``docs/replication.md``). ``govx node init`` writes
the node's identity to ``$GOVX_HOME/node.json`` and gives it an Ed25519 key, under the key ring
of ``docs/signatures.md`` as ``node-<region>``; it signs the node's packages. ``govx node status``
reads it back with the outbox: packages waiting for the parent, the oldest's age.
:func:`child_nodes` tells which licenses a node holds only as replicas of its children's
(``docs/lifecycle.md``: lifecycle changes are made at the issuing node).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cryptography.exceptions import UnsupportedAlgorithm

from exchange.config import Deployment
from exchange.packages import pending_packages
from exchange.standards.regions import parent_code, region_level, validate_region_code

if TYPE_CHECKING:
    from license_store.store import LicenseStore

__all__ = [
    "ChildNodes",
    "NodeConfig",
    "NodeError",
    "NodeStatus",
    "child_nodes",
    "init_node",
    "load_node",
    "node_status",
    "trust_node",
]

NODE_FILE = "node.json"


class NodeError(RuntimeError):
    """This deployment cannot be (or is not yet) a node as asked; the message says why."""


@dataclass(frozen=True)
class NodeConfig:
    """The node's identity (``$GOVX_HOME/node.json``)."""

    region: str
    name: str
    level: str
    parent: str | None  # the parent node's region code; None for the province
    parent_url: str | None  # its API, e.g. https://440600.exchange.example:8443
    key_id: str
    created_at: str

    @property
    def key_name(self) -> str:
        """The node's key in the key ring."""
        return f"node-{self.region}"


@dataclass(frozen=True)
class NodeStatus:
    """The node and its outbox."""

    node: NodeConfig
    outbox: Path
    pending: int
    oldest_age_s: float | None


@dataclass(frozen=True)
class ChildNodes:
    """A node and the child nodes it trusts (``govx node trust``), which send it their licenses.

    A license's ``region_code`` is its issuing department's region. A license of a region that
    lies under a trusted child (or is that child's own) was issued below this node and reached
    it by replication; any other license was issued here.
    """

    region: str
    children: frozenset[str]

    def replicated_from(self, region_code: str) -> str | None:
        """The trusted child node a license of ``region_code`` came up through, or ``None``
        when the license is this node's own: its region is this node's, under no trusted
        child (a region without a node of its own, whose data this node syncs), or not under
        this node at all."""
        try:
            code, parent = region_code, parent_code(region_code)
        except ValueError:
            return None
        while parent is not None and parent != self.region:
            code, parent = parent, parent_code(parent)
        if parent == self.region and code in self.children:
            return code
        return None


def child_nodes(home: Path) -> ChildNodes | None:
    """The node under ``home`` and its trusted children, or ``None`` when the deployment is not
    a node (no ``node.json``: then every license it holds is its own). :class:`NodeError` if
    the identity is unreadable."""
    if not node_file(home).exists():
        return None
    node = load_node(home)
    children: set[str] = set()
    for path in (home / "keys").glob("node-*.pub.pem"):
        region = path.name.removeprefix("node-").removesuffix(".pub.pem")
        try:
            if parent_code(region) == node.region:
                children.add(region)
        except ValueError:
            continue  # not a node key's name
    return ChildNodes(node.region, frozenset(children))


def node_file(home: Path) -> Path:
    """Where the node's identity lives under the data directory ``home``."""
    return home / NODE_FILE


def outbox_dir(home: Path) -> Path:
    """The node's outbox of packages for its parent."""
    return home / "outbox"


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeError(f"the parent URL must be http(s)://host[:port], got {url!r}")
    return url.rstrip("/")


def init_node(
    home: Path,
    deployment: Deployment,
    region: str,
    *,
    parent_url: str | None = None,
    keys_dir: Path | None = None,
    now: dt.datetime | None = None,
) -> NodeConfig:
    """Make this deployment the node of ``region``: its identity file and its key.

    The region must be one of the deployment's; a county or a city needs its parent's URL, the
    province has none. An existing node identity is never overwritten.
    """
    from license_store.signing import KeyRing, key_id

    try:
        region = validate_region_code(region)
    except ValueError as error:
        raise NodeError(str(error)) from None
    regions = deployment.region_by_code
    if region not in regions:
        raise NodeError(f"region {region} is not one of the deployment's (config/regions.yaml)")
    path = node_file(home)
    if path.exists():
        raise NodeError(f"this deployment is already a node ({path}); it cannot change region")
    parent = parent_code(region)
    if parent is None and parent_url is not None:
        raise NodeError(f"{region} is a province: it has no parent to send packages to")
    if parent is not None:
        if parent_url is None:
            raise NodeError(f"node {region} sends its packages to {parent}: give --parent-url")
        parent_url = _check_url(parent_url)
    ring = KeyRing(keys_dir if keys_dir is not None else home / "keys")
    name = f"node-{region}"
    public = ring.public_key(name) if name in ring.departments() else ring.generate(name)
    node = NodeConfig(
        region=region,
        name=regions[region].name,
        level=region_level(region).value,
        parent=parent,
        parent_url=parent_url,
        key_id=key_id(public),
        created_at=(now or dt.datetime.now(dt.UTC)).isoformat(),
    )
    home.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(asdict(node), ensure_ascii=False, indent=2) + "\n", "utf-8")
    os.replace(partial, path)
    return node


def load_node(home: Path) -> NodeConfig:
    """The node's identity; :class:`NodeError` if there is none or it is unreadable."""
    path = node_file(home)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NodeError(
            f"this deployment is not a node yet ({path}): run `govx node init`"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NodeError(f"{path} is not a node identity ({type(error).__name__})") from None
    fields = set(NodeConfig.__dataclass_fields__)
    if not isinstance(data, dict) or set(data) != fields:
        raise NodeError(f"{path} is not a node identity (fields {', '.join(sorted(fields))})")
    return NodeConfig(**data)


def trust_node(home: Path, region: str, public_pem: bytes, *, replace: bool = False) -> str:
    """Trust ``public_pem`` as the packages key of child node ``region``; returns its key id.

    The key lands in the key ring as ``node-<region>.pub.pem`` (public only). The region must be
    a child of this node; a different key already trusted for it is replaced only with
    ``replace`` (a child that rotated its key).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from license_store.signing import KeyRing, key_id

    node = load_node(home)
    try:
        region = validate_region_code(region)
    except ValueError as error:
        raise NodeError(str(error)) from None
    if parent_code(region) != node.region:
        raise NodeError(f"node {region} is not a child of this node ({node.region})")
    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise NodeError("not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise NodeError("not an Ed25519 public key (node keys are Ed25519)")
    ring = KeyRing(home / "keys")
    path = ring.public_path(f"node-{region}")
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if path.exists() and path.read_bytes() != pem and not replace:
        raise NodeError(
            f"node {region} already has another trusted key ({path}); replacing it needs --replace"
        )
    ring.directory.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(pem)
    os.replace(partial, path)
    return key_id(key)


def node_status(
    home: Path, now: dt.datetime | None = None, store: LicenseStore | None = None
) -> NodeStatus:
    """The node and what waits in its outbox: from the store's plan of packages when ``store``
    is given (packages not acknowledged by the parent), else from the outbox's files."""
    node = load_node(home)
    outbox = outbox_dir(home)
    if store is not None:
        from license_store.replication import backlog

        waiting = backlog(store)
        return NodeStatus(node, outbox, waiting.packages, waiting.oldest_age_s(now))
    files = pending_packages(outbox, node.region)
    oldest = None
    if files:
        written = min(path.stat().st_mtime for path in files)
        oldest = max(0.0, (now or dt.datetime.now(dt.UTC)).timestamp() - written)
    return NodeStatus(node, outbox, len(files), oldest)
