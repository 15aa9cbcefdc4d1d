"""Lifecycle at nodes: a node changes only the licenses it issued; one that came up from a child
node is changed at the child, and the change comes up by replication (docs/lifecycle.md).

A county 440604 and its city 440600, each a real SQLite store with its own data directory
(``node.json``, key ring); the county's versions reach the city through the real package rows
and :func:`apply_package`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from exchange.cli import app
from exchange.nodes import ChildNodes, child_nodes, init_node, trust_node
from license_store import LicenseStore
from license_store.audit import AuditLog
from license_store.models import license_versions, licenses
from license_store.replication import apply_package, mark_delivered, package_rows, plan_packages
from license_store.signing import KeyRing
from license_store.store import NotTheIssuingNode

COUNTY, CITY, PROVINCE = "440604", "440600", "440000"
TODAY = dt.date(2026, 11, 28)
PAST = dt.date(2026, 11, 1)  # a valid_to before TODAY
runner = CliRunner(env={"COLUMNS": "200"})


@dataclass
class Node:
    region: str
    home: Path
    url: str
    store: LicenseStore


@dataclass
class Tree:
    county: Node
    city: Node

    def replicate(self) -> int:
        """Send the county's new versions to the city as packages; how many were applied."""
        entries = plan_packages(self.county.store, CITY)
        for entry in entries:
            rows = package_rows(self.county.store, entry)
            assert not apply_package(self.city.store, COUNTY, entry.seq, rows).duplicate
            mark_delivered(self.county.store, entry.seq)
        return len(entries)


def _node(tmp_path: Path, region: str, deployment: Any, parent_url: str | None) -> Node:
    home = tmp_path / region
    init_node(home, deployment, region, parent_url=parent_url)
    url = f"sqlite:///{home / 'licenses.db'}"
    store = LicenseStore(
        url,
        keyring=KeyRing(home / "keys"),
        deployment=deployment,
        today=lambda: TODAY,
        home=home,
    )
    store.upgrade()
    return Node(region, home, url, store)


@pytest.fixture
def tree(tmp_path: Path, deployment: Any) -> Iterator[Tree]:
    """County 440604 under city 440600; the city trusts the county's node key."""
    county = _node(tmp_path, COUNTY, deployment, "https://440600.exchange.example:8443")
    city = _node(tmp_path, CITY, deployment, "https://440000.exchange.example:8443")
    county_key = KeyRing(county.home / "keys").public_path(f"node-{COUNTY}").read_bytes()
    trust_node(city.home, COUNTY, county_key)
    try:
        yield Tree(county, city)
    finally:
        county.store.close()
        city.store.close()


def city_record(make_record: Any, n: int, **changes: Any) -> Any:
    """A license the city issues itself (佛山市公安局, region 440600)."""
    return make_record(
        n,
        region_code=CITY,
        issuer_code="11440600MB20125487",
        issuer_name="佛山市公安局",
        **changes,
    )


def nanhai_record(make_record: Any, n: int, **changes: Any) -> Any:
    """A license of 南海区 440605, which has no node: the city syncs its departments itself."""
    return make_record(
        n,
        region_code="440605",
        issuer_code="11440605MB20188227",
        issuer_name="佛山市南海区自然资源局",
        **changes,
    )


def publish(node: Node, *records: Any) -> list[str]:
    """Upsert and sign ``records`` at ``node``; their license ids."""
    node.store.upsert(list(records))
    node.store.sign_pending()
    return [node.store.licenses_for_holder(r.holder_id)[0].license_id for r in records]


def rows(store: LicenseStore, table: sa.Table) -> list[tuple[Any, ...]]:
    with store._engine.connect() as conn:
        return sorted(tuple(row) for row in conn.execute(sa.select(table)))


# -- which licenses came up from a child ---------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "children", "region_code", "expected"),
    [
        (CITY, {COUNTY}, COUNTY, COUNTY),  # the trusted county's own license
        (CITY, {COUNTY}, CITY, None),  # the city's own
        (CITY, {COUNTY}, "440605", None),  # Nanhai has no node: the city issues its licenses
        (CITY, {COUNTY}, PROVINCE, None),  # not below the city
        (CITY, {COUNTY}, "440802", None),  # another city's county
        (PROVINCE, {CITY}, COUNTY, CITY),  # a county license came up through its city
        (PROVINCE, {CITY}, CITY, CITY),
        (PROVINCE, {CITY}, "440802", None),  # Zhanjiang is not a trusted child here
        (PROVINCE, {CITY}, "450100", None),  # another province
        (COUNTY, set(), COUNTY, None),
    ],
)
def test_replicated_from_follows_the_region_tree_to_a_trusted_child(
    node: str, children: set[str], region_code: str, expected: str | None
) -> None:
    assert ChildNodes(node, frozenset(children)).replicated_from(region_code) == expected


def test_child_nodes_are_the_trusted_keys_of_children(tree: Tree, tmp_path: Path) -> None:
    assert child_nodes(tree.city.home) == ChildNodes(CITY, frozenset({COUNTY}))
    assert child_nodes(tree.county.home) == ChildNodes(COUNTY, frozenset())
    assert child_nodes(tmp_path / "not-a-node") is None


# -- suspend, revoke, reinstate ------------------------------------------------------------------


def test_revoke_at_the_city_of_a_county_license_is_refused_and_writes_nothing(
    tree: Tree, make_record: Any
) -> None:
    record = make_record(0)
    [license_id] = publish(tree.county, record)
    tree.replicate()
    before = {table.name: rows(tree.city.store, table) for table in (licenses, license_versions)}

    for action in ("revoke", "suspend"):
        with pytest.raises(NotTheIssuingNode) as refused:
            getattr(tree.city.store, action)(license_id, reason="COURT-2026-118", actor="op")
        message = str(refused.value)
        assert f"license {license_id} was issued at node {COUNTY}" in message
        assert f"reached node {CITY} by replication" in message
        assert message.endswith(f"run it at node {COUNTY}")
        assert record.holder_id not in message and record.holder_name not in message
        assert (refused.value.code, refused.value.via) == ("not_the_issuing_node", COUNTY)

    after = {table.name: rows(tree.city.store, table) for table in (licenses, license_versions)}
    assert after == before
    assert AuditLog(tree.city.url).for_holder(record.holder_id) == []
    assert tree.city.store.get(license_id).status == "valid"


def test_the_city_changes_its_own_licenses_and_those_of_a_region_without_a_node(
    tree: Tree, make_record: Any
) -> None:
    own, nanhai = city_record(make_record, 1), nanhai_record(make_record, 2)
    own_id, nanhai_id = publish(tree.city, own, nanhai)
    revoked = tree.city.store.revoke(own_id, reason="COURT-2026-118", actor="op")
    assert (revoked.status, revoked.version) == ("revoked", 2)
    suspended = tree.city.store.suspend(nanhai_id, reason="CASE-2026-7", actor="op")
    assert (suspended.status, suspended.version) == ("suspended", 2)
    reinstated = tree.city.store.reinstate(nanhai_id, reason="CASE-2026-8", actor="op")
    assert (reinstated.status, reinstated.version) == ("valid", 3)
    [entry, *_] = AuditLog(tree.city.url).for_holder(own.holder_id)
    assert (entry.matter, entry.license_ids) == ("lifecycle", (revoked.license_id,))


def test_a_deployment_that_is_not_a_node_changes_any_license(
    tree: Tree, make_record: Any, deployment: Any, tmp_path: Path
) -> None:
    """The city's database opened by a deployment without node.json: today's behaviour."""
    [license_id] = publish(tree.county, make_record(0))
    tree.replicate()
    plain = tmp_path / "plain"
    with LicenseStore(
        tree.city.url,
        keyring=KeyRing(plain / "keys"),
        deployment=deployment,
        today=lambda: TODAY,
        home=plain,
    ) as store:
        assert store.child_nodes() is None
        revoked = store.revoke(license_id, reason="COURT-2026-118", actor="op")
        assert (revoked.status, revoked.version) == ("revoked", 2)
        result = store.run_expiry(TODAY)
        assert (result.expired, result.skipped) == (0, 0)


def test_the_province_names_the_county_and_the_city_it_came_through(
    tmp_path: Path, deployment: Any, make_record: Any
) -> None:
    province = _node(tmp_path, PROVINCE, deployment, None)
    city_home = tmp_path / "city-keys"
    init_node(city_home, deployment, CITY, parent_url="https://440000.exchange.example:8443")
    city_key = KeyRing(city_home / "keys").public_path(f"node-{CITY}").read_bytes()
    trust_node(province.home, CITY, city_key)
    # a county license as the city's package brings it (the province's store, filled directly)
    province.store.upsert([make_record(0)])
    license_id = province.store.licenses_for_holder(make_record(0).holder_id)[0].license_id
    with pytest.raises(NotTheIssuingNode) as refused:
        province.store.reinstate(license_id, reason="CASE-1", actor="op")
    assert str(refused.value) == (
        f"license {license_id} was issued in region {COUNTY}, below node {CITY}, and reached "
        f"node {PROVINCE} by replication: lifecycle changes are made at the issuing node and "
        f"come up from there; run it at node {COUNTY} (or node {CITY}, if {COUNTY} has no "
        "node of its own)"
    )
    province.store.close()


# -- expiry -------------------------------------------------------------------------------------


def test_expiry_at_the_city_skips_the_countys_licenses_which_come_up_expired(
    tree: Tree, make_record: Any
) -> None:
    county_due, county_later = make_record(0, valid_to=PAST), make_record(1, valid_to=PAST)
    county_ids = publish(tree.county, county_due, county_later)
    tree.replicate()
    own_due = city_record(make_record, 2, valid_to=PAST)
    nanhai_due = nanhai_record(make_record, 3, valid_to=PAST)
    publish(tree.city, own_due, nanhai_due)

    result = tree.city.store.run_expiry(TODAY)
    assert (result.expired, result.skipped, result.skipped_by_child) == (2, 2, {COUNTY: 2})
    assert result.summary() == (
        "2 licenses expired; 2 skipped, issued below this node (node 440604: 2): their issuing "
        "node expires them and the change comes up by replication"
    )
    for license_id in county_ids:  # not written, but read as expired already
        current = tree.city.store.get(license_id)
        assert (current.version, current.status) == (1, "expired")
        assert len(tree.city.store.versions(license_id)) == 1
    for record in (own_due, nanhai_due):
        current = tree.city.store.licenses_for_holder(record.holder_id)[0]
        assert (current.version, current.status) == (2, "expired")
    assert tree.city.store.run_expiry(TODAY).expired == 0  # idempotent, still skipping

    # the county changes one license before its expiry runs (without the guard, the city's own
    # expired version 2 would clash with this one), then expires both
    moved = make_record(1, valid_to=PAST, face={"address": "禅城区新地址", "relation": "户主"})
    tree.county.store.upsert([moved])
    assert tree.county.store.run_expiry(TODAY).expired == 2
    tree.county.store.sign_pending()
    assert tree.replicate() == 1
    due_now = tree.city.store.get(county_ids[0])
    later_now = tree.city.store.get(county_ids[1])
    assert (due_now.version, due_now.status) == (2, "expired")
    assert (later_now.version, later_now.status, later_now.face["address"]) == (
        3,
        "expired",
        "禅城区新地址",
    )
    assert [v.run_id for v in tree.city.store.versions(county_ids[1])] == [
        "run-1",
        "run-1",
        "expiry:2026-11-28",
    ]


def test_the_countys_revocation_comes_up_and_the_city_shows_it(
    tree: Tree, make_record: Any
) -> None:
    record = make_record(0)
    [license_id] = publish(tree.county, record)
    tree.replicate()
    with pytest.raises(NotTheIssuingNode):
        tree.city.store.revoke(license_id, reason="COURT-2026-118", actor="op")

    revoked = tree.county.store.revoke(license_id, reason="COURT-2026-118", actor="op")
    assert tree.replicate() == 1
    at_city = tree.city.store.get(license_id)
    assert (at_city.license_id, at_city.version, at_city.status) == (
        revoked.license_id,
        2,
        "revoked",
    )
    assert (
        rows(tree.city.store, license_versions)[-1][1:]
        == rows(tree.county.store, license_versions)[-1][1:]
    )


# -- the commands --------------------------------------------------------------------------------


@pytest.fixture
def city_cli(tree: Tree, monkeypatch: pytest.MonkeyPatch) -> Tree:
    """``govx`` run at the city: its data directory, store and the sample configuration."""
    monkeypatch.setenv("GOVX_HOME", str(tree.city.home))
    monkeypatch.setenv("GOVX_LICENSE_DB_URL", tree.city.url)
    monkeypatch.setenv("GOVX_CONFIG", str(Path(__file__).resolve().parents[2] / "config"))
    return tree


def test_govx_lifecycle_at_the_city_refuses_a_county_license_in_one_line(
    city_cli: Tree, make_record: Any
) -> None:
    record = make_record(0, valid_to=PAST)
    [license_id] = publish(city_cli.county, record)
    city_cli.replicate()
    own = city_record(make_record, 1, valid_to=PAST)
    [own_id] = publish(city_cli.city, own)

    result = runner.invoke(app, ["lifecycle", "revoke", license_id, "--reason", "COURT-1"])
    assert result.exit_code == 1
    line = " ".join(result.output.split())
    assert line.startswith(f"error: license {license_id} was issued at node {COUNTY}")
    assert line.endswith(f"run it at node {COUNTY}")
    assert record.holder_id not in result.output and record.holder_name not in result.output
    assert city_cli.city.store.get(license_id).version == 1

    result = runner.invoke(app, ["lifecycle", "expire", "--today", "2026-11-28"])
    assert result.exit_code == 0, result.output
    assert " ".join(result.output.split()).startswith(
        "1 licenses expired; 1 skipped, issued below this node (node 440604: 1)"
    )
    assert city_cli.city.store.get(own_id).status == "expired"
    assert city_cli.city.store.get(license_id).version == 1

    (city_cli.city.home / "node.json").write_text("{not json", encoding="utf-8")
    result = runner.invoke(app, ["lifecycle", "suspend", own_id, "--reason", "CASE-2"])
    assert result.exit_code == 1
    assert "cannot tell which licenses this node issued" in result.output
