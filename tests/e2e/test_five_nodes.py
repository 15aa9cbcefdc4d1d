"""Five real nodes on loopback ports (issue 6): replication up the tree, with faults, and a
cross-region lookup.

The network is :class:`exchange.network.FiveNodeNetwork`: province 440000, cities 440600 and
440800, counties 440604 and 440802, each its own ``govx serve`` process with its own
``$GOVX_HOME`` and store (SQLite files; a PostgreSQL database per node in the ``postgres`` run).
Department data enters at the node of its department's region by ``govx sync``: Chancheng's
birth certificates at 440604, Chikan's births at 440802 (several thousand, so that their package
is large enough to kill a node in the middle of it) and Foshan's marriages at 440600 (a city's
own licenses travel in the same series of packages as its county's). Chikan's births also carry
a newborn screening report, a license type every node's catalogue marks ``not_shared``.

The module is one scenario, its tests in order, each starting from where the previous one left
the network:

1. the syncs: every node holds only its own sources' licenses;
2. Chikan pushes to Zhanjiang, which is killed (SIGKILL) once the package is received, while it
   checks and applies it; restarted, it gets the package again;
3. Zhanjiang's ``govx exchange package`` is killed between planning the package and writing it;
   packaging again makes it from the plan, and Zhanjiang pushes it to the province;
4. tampered packages (a changed byte, another key's signature, an old package under a new
   number, an old package replayed) are refused with the check named, or acknowledged as a
   duplicate, and change nothing;
5. Foshan's packages are delivered by hand twice and out of order: the gap is refused with the
   number expected, duplicates are acknowledged, and Foshan's push afterwards (it never heard
   the acknowledgements) gets both acknowledged as duplicates;
6. the end state equals a fault-free run's, row by row: every city holds exactly its own
   licenses plus its county's shareable ones, the province exactly the union of all (every
   column but the local ``id``, of ``licenses`` and ``license_versions``);
7. a Chikan holder looked up at Chancheng is answered by the province (county -> city ->
   province, each node's audit trail showing its step);
8. no screening report is in any package any node wrote (their Parquet files, copied from the
   outboxes before delivery), in any other node's store, or in any other node's answer.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import requests
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from exchange.config import load_deployment
from exchange.curated import KEY, CuratedDataset
from exchange.demo.chikan import BIRTH_MATERIAL_MATTER, CHIKAN_SOURCE, SCREENING_TYPE_CONFIG
from exchange.network import (
    CHANCHENG,
    CHIKAN,
    FOSHAN,
    PROVINCE,
    ZHANJIANG,
    FiveNodeNetwork,
)
from exchange.packages import Manifest, package_paths
from exchange.standards import mask_id
from exchange.standards.regions import ancestor_codes
from exchange.state import ExchangeState
from license_store.signing import KeyRing, key_id

CONFIG = Path(__file__).resolve().parents[2] / "config"
PERSONS = 300
CHIKAN_BIRTHS = 2_500  # about 4,800 birth certificates: a package the parent needs a second for
SCREENING = SCREENING_TYPE_CONFIG["code"]
BIRTH_CERTIFICATE = "11440000MB2028233R001"
HEALTH_MATTER = BIRTH_MATERIAL_MATTER["code"]
SCREENING_NUMBER = re.compile(r"ZJXS\d{11}")  # a screening report's number (exchange.demo.chikan)
SYNCED = {  # the sources synced at each node (the province's own would only add rows)
    PROVINCE: (),
    FOSHAN: ("foshan_marriage_registry",),
    ZHANJIANG: (),
    CHANCHENG: ("chancheng_birth_certificates",),
    CHIKAN: (CHIKAN_SOURCE,),
}
TABLES = ("licenses", "license_versions")
WITHHELD = {"screening_no", "screened_on", "screening_result"}  # feed only the screening report


@dataclass
class Scenario:
    """The network and what the tests saw on the way."""

    net: FiveNodeNetwork
    packages: Path  # a copy of every package file any outbox held, by sender
    responses: list[requests.Response] = field(default_factory=list)

    def collect_packages(self) -> None:
        """Copy the finished packages waiting in every outbox (they go once delivered)."""
        for node in self.net.nodes.values():
            if not node.outbox.is_dir():
                continue
            for path in node.outbox.glob(f"{node.region}-*.json"):
                target = self.packages / node.region
                target.mkdir(parents=True, exist_ok=True)
                for part in (path.with_suffix(".parquet"), path):
                    if not (target / part.name).exists():
                        shutil.copy2(part, target / part.name)

    def engine(self, region: str) -> Engine:
        return sa.create_engine(self.net.node(region).db_url, poolclass=NullPool)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    admin_url = None
    if request.param == "postgres":
        admin_url = request.getfixturevalue("_postgres_admin").url.render_as_string(
            hide_password=False
        )
    base = tmp_path_factory.mktemp(f"five-nodes-{request.param}")
    net = FiveNodeNetwork(
        base / "network",
        config=CONFIG,
        postgres_admin_url=admin_url,
        persons=PERSONS,
        chikan_births=CHIKAN_BIRTHS,
    )
    try:
        net.build().start(wait=False)  # the syncs run while the servers start
        net.govx_at(
            (region, ("sync", source_id))
            for region, sources in SYNCED.items()
            for source_id in sources
        )
        net.wait_started()
        yield Scenario(net, base / "packages")
    finally:
        net.close()


# -- helpers ----------------------------------------------------------------------------------


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


class Stores:
    """The nodes' stores as read once; a test that changes them reads again with a new one."""

    def __init__(self, net: FiveNodeNetwork) -> None:
        self.net = net
        self._rows: dict[tuple[str, str], list[tuple[Any, ...]]] = {}

    def rows(self, region: str, table: str = "licenses") -> list[tuple[Any, ...]]:
        if (region, table) not in self._rows:
            self._rows[region, table] = self.net.rows(region, table)
        return self._rows[region, table]

    def column(self, name: str, table: str = "licenses") -> int:
        return self.net.column_names(table).index(name)

    def own(self, region: str, table: str) -> set[tuple[Any, ...]]:
        """The node's rows that came from its own sources."""
        source, mine = self.column("source_id", table), set(SYNCED[region])
        return {row for row in self.rows(region, table) if row[source] in mine}

    def secret_bases(self) -> set[str]:
        """The license bases of every not_shared license anywhere."""
        base, kind = self.column("license_base"), self.column("type_code")
        return {
            row[base]
            for region in self.net.nodes
            for row in self.rows(region)
            if row[kind] == SCREENING
        }

    def shareable(self, rows: Iterable[tuple[Any, ...]], table: str) -> set[tuple[Any, ...]]:
        """``rows`` of ``table`` without those of not_shared licenses."""
        base, secret = self.column("license_base", table), self.secret_bases()
        return {row for row in rows if row[base] not in secret}

    def expected(self, region: str, table: str) -> set[tuple[Any, ...]]:
        """What the node holds after a fault-free run: its own rows, and what its children may
        share of theirs."""
        rows = self.own(region, table)
        for child in self.net.children(region):
            rows |= self.shareable(self.expected(child.region, table), table)
        return rows


def _licenses_of(stores: Stores, region: str, holder: str, type_code: str) -> set[str]:
    license_id, holder_id, kind = (
        stores.column(n) for n in ("license_id", "holder_id", "type_code")
    )
    return {
        row[license_id]
        for row in stores.rows(region)
        if row[holder_id] == holder and row[kind] == type_code
    }


def _package(scenario: Scenario, region: str, seq: int) -> tuple[bytes, dict[str, Any]]:
    data, manifest = package_paths(scenario.net.node(region).outbox, region, seq)
    return data.read_bytes(), json.loads(manifest.read_text(encoding="utf-8"))


def _problem(response: requests.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body.get("code", ""), body.get("field") or ""


def _without(row: dict[str, Any], columns: set[str]) -> dict[str, Any]:
    return {name: value for name, value in row.items() if name not in columns}


def _dataset_rows(
    net: FiveNodeNetwork, region: str, *, own_only: bool = False
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """The live rows of every curated dataset at a node, by (dataset, source, key): its own
    sources' (``own_only``), or with those it received from its children."""
    node = net.node(region)
    deployment = load_deployment(node.config)
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    with ExchangeState(node.db_url) as state:
        dataset_ids = {d.id for d in deployment.datasets} | set(state.received_sources().values())
        for dataset_id in sorted(dataset_ids):
            curated = CuratedDataset(dataset_id, deployment.sources, state, node.home / "lake")
            if own_only:
                curated.received = []
            for row in curated.rows().to_pylist():
                if row.get(KEY) is None:
                    continue
                key = (dataset_id, row["_govx_source_id"], row[KEY])
                found[key] = {k: v for k, v in row.items() if v is not None}
    return found


def _chikan_holder(stores: Stores) -> str:
    """A mother of a Chikan birth of whom no other department knows anything."""
    holder_id, source = stores.column("holder_id"), stores.column("source_id")
    elsewhere = {
        row[holder_id]
        for region in (CHANCHENG, FOSHAN, PROVINCE)
        for row in stores.rows(region)
        if row[source] != CHIKAN_SOURCE
    }
    return next(holder for holder in stores.net.chikan_holders() if holder not in elsewhere)


# -- the scenario -----------------------------------------------------------------------------


def test_department_data_enters_at_the_node_of_its_region(scenario: Scenario) -> None:
    net = scenario.net
    assert net.node(CHANCHENG).sources == ("chancheng_birth_certificates",)
    assert net.node(CHIKAN).sources == (CHIKAN_SOURCE,)
    assert net.node(ZHANJIANG).sources == ()
    assert set(net.node(PROVINCE).sources) == {"gd_household_registry", "gd_business_registry"}
    assert all("nanhai_real_estate" not in node.sources for node in net.nodes.values())
    stores = Stores(net)
    source, type_code = stores.column("source_id"), stores.column("type_code")
    for region, synced in SYNCED.items():
        assert {row[source] for row in stores.rows(region)} == set(synced), region
    chikan = stores.rows(CHIKAN)
    screenings = [row for row in chikan if row[type_code] == SCREENING]
    assert len(screenings) == CHIKAN_BIRTHS
    assert len(chikan) - len(screenings) > 1.8 * CHIKAN_BIRTHS  # mothers' and most fathers'
    scenario.collect_packages()  # the syncs packaged for the parents: licenses, then the run
    made = sorted(scenario.packages.glob("*/*.json"))
    assert [p.name for p in made] == [
        f"{region}-{seq:012d}.json"
        for region in sorted((CHANCHENG, CHIKAN, FOSHAN))
        for seq in (1, 2)
    ]
    kinds = [json.loads(p.read_text(encoding="utf-8"))["kind"] for p in made]
    assert kinds == ["licenses", "dataset"] * 3


def test_a_parent_killed_mid_delivery_gets_the_package_after_restart(scenario: Scenario) -> None:
    net = scenario.net
    stores = Stores(net)
    expected = {t: stores.shareable(stores.rows(CHIKAN, t), t) for t in TABLES}
    data, manifest = _package(scenario, CHIKAN, 1)
    assert manifest["rows"] == len(expected["license_versions"])
    inbox = net.node(ZHANJIANG).inbox

    def received() -> bool:
        if push.poll() is not None:
            pytest.fail(f"the push ended before the parent had the package: {push.communicate()}")
        return any(
            path.stat().st_size == len(data)
            for path in inbox.glob(f"{CHIKAN}-*/{CHIKAN}-000000000001.parquet")
        )

    push = net.popen(CHIKAN, "exchange", "push")
    _wait_for(received, "Zhanjiang to receive Chikan's package")
    net.kill(ZHANJIANG)  # while it checks and applies the package
    stdout, stderr = push.communicate(timeout=60)
    assert push.returncode == 1, stdout + stderr
    assert "2 packages still waiting" in stderr and "440800" in stderr, stderr
    # all or nothing: the transaction died with the server (or had just committed)
    at_kill = net.rows(ZHANJIANG, "licenses")
    assert at_kill in ([], sorted(expected["licenses"]))

    net.restart(ZHANJIANG)
    result = net.push(CHIKAN)
    assert "2 packages delivered to 440800" in result.stdout, result
    if at_kill:
        assert "1 of them already there" in result.stdout, result
    for table in TABLES:
        assert net.rows(ZHANJIANG, table) == sorted(expected[table]), table
    assert list(net.node(CHIKAN).outbox.glob("*.json")) == []


def test_a_child_killed_mid_packaging_packages_again(scenario: Scenario) -> None:
    net = scenario.net
    zhanjiang = net.node(ZHANJIANG)
    _, manifest_path = package_paths(zhanjiang.outbox, ZHANJIANG, 1)
    engine = scenario.engine(ZHANJIANG)
    outbox_rows = sa.text("SELECT count(*) FROM exchange_outbox")

    def planned() -> bool:
        if packaging.poll() is not None:
            pytest.fail(f"packaging ended before it could be killed: {packaging.communicate()}")
        with engine.connect() as conn:
            return bool(conn.execute(outbox_rows).scalar_one())

    try:
        packaging = net.popen(ZHANJIANG, "exchange", "package")
        _wait_for(planned, "Zhanjiang to plan its package")
        assert not manifest_path.exists()  # planned, not written yet: mid-packaging
        packaging.send_signal(signal.SIGKILL)
        packaging.communicate(timeout=30)
        assert packaging.returncode == -signal.SIGKILL
        with engine.connect() as conn:
            kept = conn.execute(outbox_rows).scalar_one()  # the plan is kept
    finally:
        engine.dispose()
    assert kept in (1, 2)  # the licenses package, and maybe already Chikan's run
    assert not manifest_path.exists()  # no finished package: nothing can be sent half-made

    result = net.package(ZHANJIANG)  # makes the lost files again, from the plan
    assert "2 packages written" in result.stdout, result
    assert f"{2 - kept} new, {kept} made again from their plans" in result.stdout, result
    scenario.collect_packages()
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    assert manifest["seq"] == 1 and manifest["kind"] == "licenses"
    assert manifest["rows"] == len(net.rows(ZHANJIANG, "license_versions"))
    run_manifest = json.loads(
        package_paths(zhanjiang.outbox, ZHANJIANG, 2)[1].read_text(encoding="utf-8")
    )
    assert run_manifest["kind"] == "dataset"  # Chikan's run, forwarded
    assert sorted(p.name for p in zhanjiang.outbox.iterdir()) == sorted(
        f"{ZHANJIANG}-{seq:012d}.{suffix}" for seq in (1, 2) for suffix in ("json", "parquet")
    )  # the crash's leftovers are gone

    result = net.push(ZHANJIANG)
    changes = manifest["rows"] + run_manifest["rows"]
    assert f"2 packages delivered to 440000 ({changes:,} changes)" in result.stdout, result
    stores = Stores(net)
    for table in TABLES:
        wanted = stores.own(PROVINCE, table) | set(stores.rows(ZHANJIANG, table))
        assert stores.rows(PROVINCE, table) == sorted(wanted), table


def test_tampered_and_replayed_packages_change_nothing(scenario: Scenario) -> None:
    net = scenario.net
    net.push(CHANCHENG)
    net.package(FOSHAN)  # Foshan's packages 3 and 4: what it applied from Chancheng
    scenario.collect_packages()
    before = {(r, t): net.rows(r, t) for r in (PROVINCE, ZHANJIANG) for t in TABLES}
    data, manifest = _package(scenario, FOSHAN, 1)

    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x01
    answer = net.post_package(FOSHAN, bytes(changed), manifest)
    assert _problem(answer) == (422, "package_rejected", "content"), answer.text
    assert f"package {FOSHAN}-000000000001 refused (content)" in answer.json()["detail"]

    # signed with another node's key (Chancheng's): the province checks Foshan's
    other_key = KeyRing(net.node(CHANCHENG).home / "keys").private_key(f"node-{CHANCHENG}")
    unsigned = Manifest(**{**manifest, "key_id": key_id(other_key.public_key()), "signature": ""})
    forged = {**manifest, "key_id": unsigned.key_id}
    forged["signature"] = base64.b64encode(other_key.sign(unsigned.message())).decode("ascii")
    answer = net.post_package(FOSHAN, data, forged)
    assert _problem(answer) == (422, "package_rejected", "signature"), answer.text
    assert f"package {FOSHAN}-000000000001 refused (signature)" in answer.json()["detail"]

    chikan_data = (scenario.packages / CHIKAN / f"{CHIKAN}-000000000001.parquet").read_bytes()
    chikan_manifest = json.loads(
        (scenario.packages / CHIKAN / f"{CHIKAN}-000000000001.json").read_text(encoding="utf-8")
    )
    renumbered = {**chikan_manifest, "seq": 2}  # an old package as if it were the next one
    answer = net.post_package(CHIKAN, chikan_data, renumbered)
    assert _problem(answer) == (422, "package_rejected", "signature"), answer.text

    replayed = net.post_package(CHIKAN, chikan_data, chikan_manifest)  # an old number
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {
        "status": "duplicate",
        "sender": CHIKAN,
        "seq": 1,
        "kind": "licenses",
        "rows": 0,
        "licenses_changed": 0,
    }
    for (region, table), rows in before.items():
        assert net.rows(region, table) == rows, (region, table)
    # each refusal is in the receiving node's log, with the check that failed
    province_log = net.log_tail(net.node(PROVINCE), 10_000)
    assert (
        f"refused package {FOSHAN}-000000000001: package {FOSHAN}-000000000001 refused (content)"
        in province_log
    )
    assert f"{FOSHAN}-000000000001 refused (signature)" in province_log
    assert f"{CHIKAN}-000000000002 refused (signature)" in net.log_tail(net.node(ZHANJIANG), 10_000)


def test_packages_delivered_twice_and_out_of_order(scenario: Scenario) -> None:
    net = scenario.net
    before = net.rows(PROVINCE, "licenses")
    packages = [_package(scenario, FOSHAN, seq) for seq in (1, 2, 3, 4)]
    first = packages[0]
    assert [m["kind"] for _, m in packages] == ["licenses", "dataset"] * 2

    gap = net.post_package(FOSHAN, *packages[1])
    assert _problem(gap)[:2] == (409, "sequence_gap"), gap.text
    assert gap.json()["expected_seq"] == 1 and gap.headers["X-Govx-Expected-Seq"] == "1"
    assert net.rows(PROVINCE, "licenses") == before

    answers = [net.post_package(FOSHAN, *package) for package in packages for _ in (1, 2)]
    assert [(a.status_code, a.json()["status"], a.json()["seq"]) for a in answers] == [
        (200, status, seq) for seq in (1, 2, 3, 4) for status in ("applied", "duplicate")
    ]
    assert answers[0].json()["rows"] == first[1]["rows"] and answers[1].json()["rows"] == 0
    assert answers[2].json()["rows"] == packages[1][1]["rows"]  # a run's row versions
    after = net.rows(PROVINCE, "licenses")
    assert net.post_package(FOSHAN, *first).json()["status"] == "duplicate"
    assert net.rows(PROVINCE, "licenses") == after

    # Foshan never heard the acknowledgements: its push sends all again, as duplicates
    result = net.push(FOSHAN)
    assert "4 packages delivered to 440000 (0 changes), 4 of them already there" in (
        result.stdout
    ), result
    assert net.rows(PROVINCE, "licenses") == after
    assert list(net.node(FOSHAN).outbox.glob("*.json")) == []  # nothing left to send


def test_the_end_state_equals_a_fault_free_run_row_by_row(scenario: Scenario) -> None:
    net = scenario.net
    stores = Stores(net)
    for table in TABLES:
        for region in (CHANCHENG, CHIKAN):
            assert set(stores.rows(region, table)) == stores.own(region, table), (region, table)
        for region in (FOSHAN, ZHANJIANG, PROVINCE):
            held = stores.rows(region, table)
            assert len(held) == len(set(held)), (region, table)  # no row twice
            assert held == sorted(stores.expected(region, table)), (region, table)
        # the province: the exact union of every node's shareable rows
        union = set().union(*(stores.shareable(stores.rows(r, table), table) for r in net.nodes))
        assert stores.rows(PROVINCE, table) == sorted(union), table
    # the curated datasets: each node holds its own runs and its descendants', the screening
    # columns of Chikan's left behind
    own = {r: _dataset_rows(net, r, own_only=True) for r in net.nodes}
    for region in net.nodes:
        expected = {key: _without(row, WITHHELD) for key, row in own[region].items()}
        for descendant in net.nodes:
            if descendant != region and region in ancestor_codes(descendant):
                expected |= {k: _without(row, WITHHELD) for k, row in own[descendant].items()}
        held = _dataset_rows(net, region)
        if region == CHIKAN:
            expected = own[region]
        assert held.keys() == expected.keys(), region
        # compared row by row, naming only the keys that differ (the rows hold personal data)
        assert [key for key, row in held.items() if row != expected[key]] == [], region
    listed = net.govx(PROVINCE, "datasets", "list").stdout
    assert "chikan_birth_certificates" in listed and f"{CHIKAN_BIRTHS:,}" in listed, listed
    assert len(own[CHIKAN]) == CHIKAN_BIRTHS and set(next(iter(own[CHIKAN].values()))) >= WITHHELD
    counts = {region: net.license_count(region) for region in net.nodes}
    assert counts[PROVINCE] == (
        counts[FOSHAN] + counts[ZHANJIANG] + len(stores.own(PROVINCE, "licenses"))
    )
    assert counts[ZHANJIANG] == counts[CHIKAN] - CHIKAN_BIRTHS  # all but the screenings
    for node in net.nodes.values():
        if node.parent is not None:
            assert list(node.outbox.glob("*.json")) == [], node.region  # nothing waiting


def test_a_chikan_holder_is_found_from_chancheng_through_the_province(
    scenario: Scenario,
) -> None:
    net = scenario.net
    stores = Stores(net)
    holder = _chikan_holder(stores)
    case = "FIVE-NODES-0001"
    response = net.lookup(CHANCHENG, holder, case)
    scenario.responses.append(response)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answered_by"] == PROVINCE == response.headers["X-Govx-Answered-By"]
    assert "X-Govx-Forward-Failed" not in response.headers
    assert body["holder"]["id"] == mask_id(holder) and holder not in response.text
    returned = {item["license_id"] for item in body["licenses"]}
    assert returned == _licenses_of(stores, CHIKAN, holder, BIRTH_CERTIFICATE) != set()
    assert {item["type_code"] for item in body["licenses"]} == {BIRTH_CERTIFICATE}

    [at_county] = net.audit_trail(CHANCHENG, holder, case)
    [at_city] = net.audit_trail(FOSHAN, holder, case)
    [at_province] = net.audit_trail(PROVINCE, holder, case)
    window = net.intake_clients[CHANCHENG][0]
    assert (at_county.client_id, at_county.result) == (window, "forwarded")
    assert (at_city.client_id, at_city.result) == (
        f"node-{CHANCHENG}>{CHANCHENG}/{window}",
        "forwarded",
    )
    assert (at_province.client_id, at_province.result) == (
        f"node-{FOSHAN}>{CHANCHENG}/{window}",
        "ok",
    )
    assert set(at_province.license_ids) == returned
    assert net.audit_trail(ZHANJIANG, holder, case) == []  # the answer came from the province
    assert net.audit_trail(CHIKAN, holder, case) == []


def test_a_not_shared_type_never_leaves_chikan(scenario: Scenario) -> None:
    net = scenario.net
    stores = Stores(net)
    number, kind = stores.column("number"), stores.column("type_code")
    numbers = {row[number] for row in stores.rows(CHIKAN) if row[kind] == SCREENING}
    assert len(numbers) == CHIKAN_BIRTHS
    assert all(SCREENING_NUMBER.fullmatch(n) for n in numbers)
    bases = stores.secret_bases()

    def leaks(text: str) -> set[str]:
        """What of a screening report ``text`` holds: its type code, or a report's number."""
        found = set(SCREENING_NUMBER.findall(text)) & numbers
        return found | ({SCREENING} if SCREENING in text else set())

    # every package any node delivered was copied before delivery, and none holds one
    for child in (CHANCHENG, CHIKAN, FOSHAN, ZHANJIANG):
        parent = net.node(child).parent
        assert parent is not None
        engine = scenario.engine(parent)
        with engine.connect() as conn:
            last = conn.execute(
                sa.text("SELECT last_seq FROM exchange_inbox WHERE sender = :s"), {"s": child}
            ).scalar_one()
        engine.dispose()
        copied = sorted(scenario.packages.glob(f"{child}/{child}-*.parquet"))
        assert [p.name for p in copied] == [
            f"{child}-{seq:012d}.parquet" for seq in range(1, last + 1)
        ]
        for path in copied:
            table = pq.read_table(path)
            manifest = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            if manifest["kind"] == "licenses":
                assert not bases & set(table.column("license_base").to_pylist()), path.name
                for content in table.column("content").to_pylist():
                    assert json.loads(content)["type_code"] != SCREENING, path.name
            else:  # a run of a shared dataset: the screening columns stayed at Chikan
                assert not WITHHELD & set(table.schema.names), path.name
            assert not leaks(json.dumps(table.to_pylist(), default=str)), path.name

    # no other node's store or lake has one
    for region in (CHANCHENG, FOSHAN, ZHANJIANG, PROVINCE):
        assert not any(row[kind] == SCREENING for row in stores.rows(region)), region
        for table in TABLES:
            assert not leaks(json.dumps(stores.rows(region, table), default=str)), region
        for path in (net.node(region).home / "lake" / "curated").rglob("*.parquet"):
            rows = pq.read_table(path).to_pylist()
            assert not leaks(json.dumps(rows, default=str)), (region, path.name)

    # the Chikan health bureau's own window sees it; no other node answers with it
    holder = _chikan_holder(stores)
    local = net.lookup(CHIKAN, holder, "FIVE-NODES-0002", matter=HEALTH_MATTER)
    assert local.json()["answered_by"] == CHIKAN
    assert SCREENING in {item["type_code"] for item in local.json()["licenses"]}
    answered_by = {}
    for region in (CHANCHENG, FOSHAN, ZHANJIANG, PROVINCE):
        response = net.lookup(region, holder, f"FIVE-NODES-{region}", matter=HEALTH_MATTER)
        assert response.status_code == 200, response.text
        scenario.responses.append(response)
        body = response.json()
        answered_by[region] = body["answered_by"]
        assert {item["type_code"] for item in body["licenses"]} == {BIRTH_CERTIFICATE}, region
    assert answered_by == {
        CHANCHENG: PROVINCE,
        FOSHAN: PROVINCE,
        ZHANJIANG: ZHANJIANG,
        PROVINCE: PROVINCE,
    }
    for response in scenario.responses:
        assert not leaks(response.text), response.url
