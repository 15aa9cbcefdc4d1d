"""The node's outbox: packaging its changes for the parent, and delivering them in order.

After each sync (and by ``govx exchange push``) a node plans packages for everything its license
store gained since the last package (:func:`license_store.replication.plan_packages`) and for
each sync run committed since, whose row versions file goes up as a ``dataset`` package
(:mod:`exchange.dataset_packages`); it writes each one into ``$GOVX_HOME/outbox`` signed
with the node's key, and delivers them to the parent's ``POST /v1/exchange/packages`` in
sequence order. A package leaves the outbox only once the
parent acknowledged it (applied now, or before); then it is marked delivered in the store and its
files are deleted.

Nothing is lost on the way: a parent that is down leaves the packages queued, in order, for the
next push; a crash while packaging leaves a plan without files, and the files are made again
from the plan; a parent that says it expects an earlier number (restored from a backup) gets the
packages from that number again, made from their plans.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from exchange.dataset_packages import dataset_package_table, runs_to_send
from exchange.nodes import NodeConfig, outbox_dir
from exchange.packages import Manifest, package_paths, remove_unfinished, write_package
from license_store.replication import (
    OutboxEntry,
    mark_delivered,
    outbox_entries,
    package_rows,
    plan_dataset_packages,
    plan_packages,
    planned_runs,
)

if TYPE_CHECKING:
    import requests

    from exchange.config import Deployment
    from exchange.state import ExchangeState
    from license_store.signing import KeyRing
    from license_store.store import LicenseStore

__all__ = [
    "MANIFEST_HEADER",
    "PARQUET_TYPE",
    "DeliveryError",
    "PushReport",
    "Sender",
    "excluded_types",
    "make_packages",
    "push_node",
    "push_packages",
]

log = logging.getLogger("govexchange.outbox")

PACKAGES_PATH = "/v1/exchange/packages"
MANIFEST_HEADER = "X-Govx-Manifest"
"""The request header that carries the package's manifest (base64url of its JSON)."""
PARQUET_TYPE = "application/vnd.apache.parquet"
DELIVERY_TIMEOUT_S = 300.0


class Sender(Protocol):
    """What delivers a request to the parent node (:class:`exchange.node_client.ParentClient`)."""

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response: ...


class DeliveryError(RuntimeError):
    """The parent refused a package for good, or answered what a push cannot act on."""


@dataclass
class PushReport:
    """What a push did: packages made, delivered (applied or already there), still waiting."""

    made: int = 0
    delivered: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    rows: int = 0
    waiting: int = 0
    stopped: str | None = None  # why the push stopped early (the parent is down, ...)


def excluded_types(deployment: Deployment) -> set[str]:
    """License type codes shared with no one (``sharing: not_shared``): never packaged."""
    return {kind.code for kind in deployment.license_types if kind.sharing == "not_shared"}


@dataclass
class _Packager:
    """Writes planned packages into the outbox, from their plans (again, if a crash lost the
    files): a ``licenses`` package from the store's versions, a ``dataset`` one from its run."""

    store: LicenseStore
    node: NodeConfig
    deployment: Deployment
    state: ExchangeState
    outbox: Path
    key: Any

    def write(self, entry: OutboxEntry) -> Manifest:
        if entry.kind == "dataset":
            table = dataset_package_table(self.state, self.deployment, entry, self.node.region)
        else:
            table = package_rows(self.store, entry, excluded_types=excluded_types(self.deployment))
        return write_package(
            self.outbox,
            sender=self.node.region,
            receiver=entry.receiver,
            seq=entry.seq,
            kind=entry.kind,
            table=table,
            key=self.key,
            now=entry.created_at,
        )


@contextmanager
def _exchange_state(state: ExchangeState | None) -> Iterator[ExchangeState]:
    """The given exchange state, or this deployment's (``GOVX_EXCHANGE_DB_URL``) opened here."""
    if state is not None:
        yield state
        return
    from exchange.state import ExchangeState

    with ExchangeState() as opened:
        opened.upgrade()
        yield opened


def make_packages(
    store: LicenseStore,
    node: NodeConfig,
    deployment: Deployment,
    keyring: KeyRing,
    home: Path,
    *,
    max_rows: int | None = None,
    progress: Callable[[int], None] | None = None,
    state: ExchangeState | None = None,
) -> list[OutboxEntry]:
    """Plan packages for what the store gained (license versions) and for the sync runs
    committed since (``state``, this deployment's exchange state by default), then write every
    undelivered package whose files are missing (new ones, and ones a crash lost). Returns the
    newly planned entries."""
    if node.parent is None:
        return []
    outbox = outbox_dir(home)
    for leftover in remove_unfinished(outbox):
        log.warning("removed %s, left by an interrupted packaging", leftover.name)
    options: dict[str, Any] = {"excluded_types": excluded_types(deployment)}
    if max_rows is not None:
        options["max_rows"] = max_rows
    with _exchange_state(state) as exchange:
        planned = plan_packages(store, node.parent, **options)
        runs = runs_to_send(exchange, deployment, planned_runs(store))
        planned += plan_dataset_packages(store, node.parent, runs)
        packager = _Packager(
            store, node, deployment, exchange, outbox, keyring.private_key(node.key_name)
        )
        for entry in outbox_entries(store, pending_only=True):
            if not package_paths(outbox, node.region, entry.seq)[1].exists():
                manifest = packager.write(entry)
                what = (
                    "row versions of a sync run" if entry.kind == "dataset" else "license versions"
                )
                log.info("packaged %s: %d %s", manifest.name, manifest.rows, what)
                if progress is not None:
                    progress(manifest.rows)
    return planned


def _encoded(manifest_path: Path) -> str:
    return base64.urlsafe_b64encode(manifest_path.read_bytes()).decode("ascii")


def _remove(outbox: Path, sender: str, seq: int) -> None:
    for path in package_paths(outbox, sender, seq):
        path.unlink(missing_ok=True)


def push_packages(
    store: LicenseStore,
    node: NodeConfig,
    deployment: Deployment,
    keyring: KeyRing,
    home: Path,
    parent: Sender,
    *,
    progress: Callable[[int], None] | None = None,
    state: ExchangeState | None = None,
) -> PushReport:
    """Package what is new, then deliver the waiting packages to the parent in order.

    Stops at the first package the parent cannot take now (it is down, or busy): the rest
    stay queued, and :attr:`PushReport.stopped` says why. A package the parent refuses for
    good (its checks fail, or it conflicts with the parent's data) raises
    :class:`DeliveryError`: later packages would only leave a gap behind it.
    """
    report = PushReport()
    if node.parent is None:
        return report
    with _exchange_state(state) as exchange:
        report.made = len(make_packages(store, node, deployment, keyring, home, state=exchange))
        outbox = outbox_dir(home)
        packager = _Packager(
            store, node, deployment, exchange, outbox, keyring.private_key(node.key_name)
        )
        _deliver_all(store, node, packager, parent, report, progress)
    report.waiting = len(outbox_entries(store, pending_only=True))
    return report


def _deliver_all(
    store: LicenseStore,
    node: NodeConfig,
    packager: _Packager,
    parent: Sender,
    report: PushReport,
    progress: Callable[[int], None] | None,
) -> None:
    """Deliver the waiting packages in order (see :func:`push_packages`)."""
    outbox = packager.outbox
    waiting = outbox_entries(store, pending_only=True)
    index = 0
    resent: set[int] = set()
    while index < len(waiting):
        entry = waiting[index]
        data_path, manifest_path = package_paths(outbox, node.region, entry.seq)
        if not manifest_path.exists():
            packager.write(entry)
        outcome, body = _deliver(parent, data_path, manifest_path)
        if outcome == "ok":
            mark_delivered(store, entry.seq)
            _remove(outbox, node.region, entry.seq)
            (report.duplicates if body.get("status") == "duplicate" else report.delivered).append(
                entry.seq
            )
            report.rows += int(body.get("rows", 0))
            if progress is not None:
                progress(entry.rows)
            index += 1
            continue
        if outcome == "gap":
            expected = int(body["expected_seq"])
            if expected > entry.seq:  # the parent has these already: acknowledged
                mark_delivered(store, expected - 1)
                for seq in range(entry.seq, expected):
                    _remove(outbox, node.region, seq)
                waiting = outbox_entries(store, pending_only=True)
                index = 0
                continue
            if expected in resent or expected < 1:
                raise DeliveryError(
                    f"parent {node.parent} keeps asking for package {expected}: giving up"
                )
            resent.add(expected)
            log.warning(
                "parent %s expects package %d (it lost later ones): sending again from there",
                node.parent,
                expected,
            )
            waiting = [e for e in outbox_entries(store) if e.seq >= expected]
            for again in waiting:
                if again.delivered_at is not None:
                    _remove(outbox, node.region, again.seq)
            index = 0
            continue
        report.stopped = str(body.get("detail") or outcome)
        break


def _deliver(parent: Sender, data_path: Path, manifest_path: Path) -> tuple[str, dict[str, Any]]:
    """POST one package: ``("ok", body)``, ``("gap", body)``, or ``("later", body)`` when the
    parent cannot take it now; :class:`DeliveryError` when it refuses it for good."""
    import requests

    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    name = f"{manifest['sender']}-{manifest['seq']:012d}"
    from exchange.node_client import ParentError

    try:
        response = parent.request(
            "POST",
            PACKAGES_PATH,
            data=data_path.read_bytes(),  # bytes: the client sends it again after a 401
            headers={MANIFEST_HEADER: _encoded(manifest_path), "Content-Type": PARQUET_TYPE},
            timeout=DELIVERY_TIMEOUT_S,
        )
    except ParentError as error:  # down, 5xx, or the node's credentials refused
        return "later", {"detail": str(error)}
    except (requests.RequestException, OSError) as error:
        return "later", {"detail": f"parent unreachable ({type(error).__name__})"}
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    if not isinstance(answer, dict):
        answer = {}
    if response.status_code == 200:
        return "ok", answer
    if response.status_code == 409 and answer.get("code") == "sequence_gap":
        return "gap", answer
    if response.status_code in (429, 502, 503, 504) or response.status_code >= 500:
        return "later", {"detail": f"parent answered {response.status_code}"}
    raise DeliveryError(
        f"parent refused package {name} ({response.status_code} "
        f"{answer.get('code', '')}): {answer.get('detail', response.reason)}"
    )


def push_node(home: Path | None = None, deployment: Deployment | None = None) -> PushReport:
    """Push this deployment's outbox to its parent (what the ``exchange_replicate`` DAG runs).

    :class:`exchange.nodes.NodeError` when the deployment is not a node with a parent, or has
    no credentials for it (``govx node connect``).
    """
    from exchange.config import load_deployment
    from exchange.node_client import load_parent_client
    from exchange.nodes import NodeError, load_node
    from exchange.settings import govx_home
    from license_store.signing import KeyRing
    from license_store.store import LicenseStore

    home = home or govx_home()
    node = load_node(home)
    if node.parent is None:
        raise NodeError(f"node {node.region} is the province: it has no parent to push to")
    parent = load_parent_client(home)
    if parent is None:
        raise NodeError(
            f"node {node.region} has no credentials for its parent: run `govx node connect`"
        )
    deployment = deployment or load_deployment()
    with LicenseStore(deployment=deployment) as store, parent:
        store.upgrade()
        return push_packages(store, node, deployment, KeyRing(home / "keys"), home, parent)
