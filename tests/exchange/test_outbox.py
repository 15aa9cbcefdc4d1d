"""The outbox and the receiving endpoint: a county node pushes to a real city API (uvicorn on a
loopback port, its own store and key ring), with the faults a network and crashes bring."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import uvicorn

from exchange.config import Deployment, load_deployment
from exchange.nodes import NodeConfig, init_node, trust_node
from exchange.outbox import (
    MANIFEST_HEADER,
    DeliveryError,
    make_packages,
    push_packages,
)
from exchange.packages import package_paths, pending_packages
from exchange.standards import parse_holder_id
from license_store import LicenseRecord, LicenseStore
from license_store.clients import ClientRegistry
from license_store.models import license_versions, licenses
from license_store.replication import outbox_entries
from license_store.signing import KeyRing
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
COUNTY, CITY = "440604", "440600"
HOUSEHOLD = "11440000MB2000000Q001"


def _issuer() -> str:
    from stdnum.cn import uscc

    body = "11440604MB2C00012"
    return body + uscc.calc_check_digit(body)


def _resident(n: int) -> str:
    from stdnum.cn import ric

    first17 = f"440604{dt.date(2004, 1, 1) + dt.timedelta(days=n):%Y%m%d}{n % 999 + 1:03d}"
    return first17 + ric.calc_check_digit(first17 + "0")


def record(n: int, **changes: Any) -> LicenseRecord:
    holder = parse_holder_id(_resident(n))
    values: dict[str, Any] = {
        "type_code": HOUSEHOLD,
        "type_name": "居民户口簿",
        "issuer_code": _issuer(),
        "issuer_name": "佛山市公安局禅城分局",
        "region_code": COUNTY,
        "holder_id": holder.value,
        "holder_kind": holder.kind.value,
        "holder_name": f"测试{n}",
        "number": f"HK{n:08d}",
        "issue_date": dt.date(2024, 3, 1),
        "valid_from": dt.date(2024, 3, 1),
        "valid_to": None,
        "status": "valid",
        "face": {"address": f"禅城区祖庙路{n}号"},
        "source_id": "fs_household",
        "run_id": "run-1",
    }
    values.update(changes)
    return LicenseRecord(**values)


class TokenSender:
    """A minimal node client: client-credentials token, then bearer requests to the parent."""

    def __init__(self, base: str, client_id: str, secret: str) -> None:
        self.base, self.client_id, self.secret = base, client_id, secret
        self.session = requests.Session()
        self.token: str | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        if self.token is None:
            answer = self.session.post(
                f"{self.base}/v1/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=(self.client_id, self.secret),
                timeout=10,
            )
            answer.raise_for_status()
            self.token = answer.json()["access_token"]
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {self.token}"}
        return self.session.request(method, f"{self.base}{path}", headers=headers, **kwargs)


class Down:
    """A parent that cannot be reached."""

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        raise requests.ConnectionError("connection refused")


@dataclass
class Pair:
    deployment: Deployment
    child_home: Path
    child: LicenseStore
    node: NodeConfig
    keyring: KeyRing
    parent: LicenseStore
    base: str
    sender: TokenSender

    def push(self, sender: Any = None) -> Any:
        return push_packages(
            self.child,
            self.node,
            self.deployment,
            self.keyring,
            self.child_home,
            sender or self.sender,
        )


def _serve(app: Any) -> tuple[str, uvicorn.Server, threading.Thread]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, log_level=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("uvicorn did not start")
        time.sleep(0.02)
    return f"http://127.0.0.1:{port}", server, thread


@pytest.fixture
def pair(tmp_path: Path, isolated_govx_home: Path) -> Iterator[Pair]:
    from license_store.api import create_app

    deployment = load_deployment(REPO / "config")
    # the city: the API's $GOVX_HOME is the test's
    parent_home = isolated_govx_home
    init_node(parent_home, deployment, CITY, parent_url="http://127.0.0.1:9")
    child_home = tmp_path / "county"
    keyring = KeyRing(child_home / "keys")
    with (
        LicenseStore(f"sqlite:///{tmp_path / 'city.db'}") as parent,
        LicenseStore(
            f"sqlite:///{tmp_path / 'county.db'}", keyring=keyring, deployment=deployment
        ) as child,
    ):
        parent.upgrade()
        child.upgrade()
        app = create_app(parent, deployment)
        base, server, thread = _serve(app)
        node = init_node(child_home, deployment, COUNTY, parent_url=base)
        trust_node(parent_home, COUNTY, keyring.public_path(node.key_name).read_bytes())
        with ClientRegistry(parent._engine.url.render_as_string(hide_password=False)) as reg:
            client, secret = reg.add(name="禅城区节点", kind="node", region=COUNTY)
        try:
            yield Pair(
                deployment,
                child_home,
                child,
                node,
                keyring,
                parent,
                base,
                TokenSender(base, client.client_id, secret),
            )
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def rows(store: LicenseStore, table: sa.Table) -> list[tuple[Any, ...]]:
    names = [c.name for c in table.columns if c.name != "id"]
    with store._engine.connect() as conn:
        found = conn.execute(sa.select(*(table.c[n] for n in names))).all()
    return sorted((tuple(row) for row in found), key=repr)


def test_push_delivers_in_order_and_the_city_holds_the_countys_licenses(pair: Pair) -> None:
    pair.child.upsert([record(n) for n in range(25)])
    pair.child.sign_pending()
    report = pair.push()
    assert report.made == 1 and report.delivered == [1] and report.waiting == 0
    assert report.rows == 25 and report.stopped is None
    assert rows(pair.parent, licenses) == rows(pair.child, licenses)
    assert rows(pair.parent, license_versions) == rows(pair.child, license_versions)
    assert pending_packages(pair.child_home / "outbox") == []  # delivered files are gone

    pair.child.upsert([record(n, holder_name="改名") for n in range(3)])
    report = pair.push()
    assert report.delivered == [2] and report.rows == 3
    assert rows(pair.parent, licenses) == rows(pair.child, licenses)
    assert pair.push().made == 0  # nothing new: nothing sent


def test_a_parent_that_is_down_leaves_packages_queued_in_order(pair: Pair) -> None:
    pair.child.upsert([record(n) for n in range(5)])
    report = pair.push(Down())
    assert report.delivered == [] and report.waiting == 1
    assert "unreachable" in (report.stopped or "")
    pair.child.upsert([record(n) for n in range(5, 9)])
    assert pair.push(Down()).waiting == 2
    outbox = pair.child_home / "outbox"
    assert [p.name for p in pending_packages(outbox)] == [
        f"{COUNTY}-000000000001.json",
        f"{COUNTY}-000000000002.json",
    ]
    report = pair.push()  # the parent is back
    assert report.delivered == [1, 2] and report.waiting == 0
    assert rows(pair.parent, licenses) == rows(pair.child, licenses)


def test_lost_files_and_a_lost_acknowledgement_are_recovered(pair: Pair) -> None:
    pair.child.upsert([record(n) for n in range(6)])
    make_packages(pair.child, pair.node, pair.deployment, pair.keyring, pair.child_home)
    outbox = pair.child_home / "outbox"
    _, manifest = package_paths(outbox, COUNTY, 1)
    # a crash while packaging: the manifest never made it, a temporary file is left
    manifest.unlink()
    (outbox / "junk.parquet.tmp").write_bytes(b"half")
    # delivered, but the acknowledgement was lost: the package goes again and is a duplicate
    report = pair.push()
    assert report.delivered == [1]
    with pair.child._engine.begin() as conn:
        conn.exec_driver_sql("UPDATE exchange_outbox SET delivered_at = NULL")
    report = pair.push()
    assert report.duplicates == [1] and report.waiting == 0
    assert not (outbox / "junk.parquet.tmp").exists()
    assert rows(pair.parent, licenses) == rows(pair.child, licenses)


def test_a_parent_restored_from_a_backup_gets_the_packages_again(pair: Pair) -> None:
    pair.child.upsert([record(n) for n in range(4)])
    pair.push()
    pair.child.upsert([record(n) for n in range(4, 8)])
    pair.push()
    # the city lost everything after package 1
    with pair.parent._engine.begin() as conn:
        conn.exec_driver_sql("UPDATE exchange_inbox SET last_seq = 1")
        for n in range(4, 8):
            conn.execute(licenses.delete().where(licenses.c.number == f"HK{n:08d}"))
    pair.child.upsert([record(n) for n in range(8, 10)])
    report = pair.push()  # sends 3, hears "expected 2", sends 2 and 3
    assert report.delivered == [2, 3]
    assert rows(pair.parent, licenses) == rows(pair.child, licenses)


def _post(pair: Pair, manifest: dict[str, Any], body: bytes) -> requests.Response:
    text = json.dumps(manifest).encode()
    return pair.sender.request(
        "POST",
        "/v1/exchange/packages",
        data=body,
        headers={MANIFEST_HEADER: base64.urlsafe_b64encode(text).decode()},
        timeout=10,
    )


def test_tampered_and_misaddressed_packages_are_refused_with_a_reason(pair: Pair) -> None:
    pair.child.upsert([record(n) for n in range(3)])
    make_packages(pair.child, pair.node, pair.deployment, pair.keyring, pair.child_home)
    data, manifest_path = package_paths(pair.child_home / "outbox", COUNTY, 1)
    manifest = json.loads(manifest_path.read_text())
    body = data.read_bytes()

    changed = bytearray(body)
    changed[len(changed) // 2] ^= 0xFF
    answer = _post(pair, manifest, bytes(changed))
    assert answer.status_code == 422 and answer.json()["field"] == "content"

    forged = {**manifest, "rows": manifest["rows"] + 1}  # the signature no longer holds
    answer = _post(pair, forged, body)
    assert answer.status_code == 422 and answer.json()["field"] == "signature"

    other = {**manifest, "receiver": "440800"}
    answer = _post(pair, other, body)
    assert answer.status_code == 422 and answer.json()["field"] == "receiver"

    gap = {**manifest, "seq": 5}
    answer = _post(pair, gap, body)  # refused before the gap: the signature covers seq
    assert answer.status_code == 422

    answer = pair.sender.request("POST", "/v1/exchange/packages", data=body, timeout=10)
    assert answer.status_code == 422 and answer.json()["field"] == "manifest"
    answer = _post(pair, {**manifest, "sender": "440605"}, body)
    assert answer.status_code == 403 and answer.json()["code"] == "not_the_sender"
    assert rows(pair.parent, licenses) == []

    answer = _post(pair, manifest, body)  # the real one still goes through
    assert answer.status_code == 200 and answer.json()["status"] == "applied"
    again = _post(pair, manifest, body)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"


def test_a_gap_is_refused_with_the_number_expected(pair: Pair) -> None:
    pair.child.upsert([record(n) for n in range(3)])
    make_packages(pair.child, pair.node, pair.deployment, pair.keyring, pair.child_home)
    pair.child.upsert([record(n) for n in range(3, 5)])
    make_packages(pair.child, pair.node, pair.deployment, pair.keyring, pair.child_home)
    data, manifest_path = package_paths(pair.child_home / "outbox", COUNTY, 2)
    answer = _post(pair, json.loads(manifest_path.read_text()), data.read_bytes())
    assert answer.status_code == 409
    assert answer.json()["code"] == "sequence_gap" and answer.json()["expected_seq"] == 1
    assert answer.headers["X-Govx-Expected-Seq"] == "1"
    assert rows(pair.parent, licenses) == []


def test_only_node_clients_of_a_child_may_deliver(pair: Pair) -> None:
    url = pair.parent._engine.url.render_as_string(hide_password=False)
    with ClientRegistry(url) as registry:
        intake, intake_secret = registry.add(name="窗口", kind="intake")
        far, far_secret = registry.add(name="赤坎区节点", kind="node", region="440802")
    pair.child.upsert([record(1)])
    make_packages(pair.child, pair.node, pair.deployment, pair.keyring, pair.child_home)
    data, manifest_path = package_paths(pair.child_home / "outbox", COUNTY, 1)
    manifest = json.loads(manifest_path.read_text())

    pair.sender = TokenSender(pair.base, intake.client_id, intake_secret)
    assert _post(pair, manifest, data.read_bytes()).status_code == 403  # no exchange:push
    pair.sender = TokenSender(pair.base, far.client_id, far_secret)
    answer = _post(pair, {**manifest, "sender": "440802"}, data.read_bytes())
    assert answer.status_code == 403 and answer.json()["code"] == "not_a_child"
    anonymous = requests.post(f"{pair.base}/v1/exchange/packages", data=b"x", timeout=10)
    assert anonymous.status_code == 401


def test_a_refused_package_stops_the_push_with_the_reason(pair: Pair) -> None:
    pair.child.upsert([record(n) for n in range(3)])
    # the city made this county's license itself: the same identifier, other content
    pair.parent.upsert([record(0, holder_name="另一个")])
    with pytest.raises(DeliveryError, match="package_conflict"):
        pair.push()
    assert len(outbox_entries(pair.child, pending_only=True)) == 1


def test_a_delivery_clears_what_a_killed_receiver_left(
    pair: Pair, isolated_govx_home: Path
) -> None:
    import os

    stale = isolated_govx_home / "inbox" / f"{COUNTY}-leftover"
    stale.mkdir(parents=True)
    (stale / f"{COUNTY}-000000000001.parquet").write_bytes(b"half a package")
    os.utime(stale, (time.time() - 7_200, time.time() - 7_200))
    fresh = isolated_govx_home / "inbox" / f"{COUNTY}-in-flight"
    fresh.mkdir()
    pair.child.upsert([record(1)])
    assert pair.push().delivered == [1]
    assert not stale.exists() and fresh.exists()  # a live delivery's folder is never touched
