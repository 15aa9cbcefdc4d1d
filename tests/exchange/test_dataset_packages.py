"""Dataset packages: a county's curated runs travel to a real city API and join its datasets.

The county syncs a real SQLite department table (SQL connector, lake, gate, curated merge,
licenses) under its own ``GOVX_HOME``; the city is a uvicorn server on a loopback port with its
own store, exchange state and lake. The county's sync packages its runs into its outbox, a push
delivers them, and the city's curated dataset then holds the county's rows, version by version.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stdnum.cn import ric

from exchange.config import Deployment, load_deployment
from exchange.curated import CuratedDataset
from exchange.dataset_packages import METADATA_KEY, dataset_package_table, runs_to_send
from exchange.nodes import NodeConfig, init_node, trust_node
from exchange.outbox import MANIFEST_HEADER, PARQUET_TYPE, PushReport, push_packages
from exchange.packages import package_paths, pending_packages, write_package
from exchange.state import ExchangeState
from exchange.sync import SyncContext, sync
from license_store import LicenseStore
from license_store.clients import ClientRegistry
from license_store.replication import outbox_entries
from license_store.signing import KeyRing
from tests.exchange.test_outbox import Down, TokenSender, _serve

REPO = Path(__file__).resolve().parents[2]
COUNTY, CITY = "440604", "440600"
PEOPLE, SCREENING = "test_people", "test_screening"
HOUSEHOLD, PRIVATE = "household_registry", "test_screening_reports"


def resident_id(serial: int) -> str:
    first17 = f"44060419800101{serial:03d}"
    return first17 + ric.calc_check_digit(first17 + "0")


def _source(source_id: str, dataset: str, table: str, connection: str) -> dict[str, Any]:
    return {
        "id": source_id,
        "name": f"测试 {table}",
        "department": "chancheng_health",
        "connector": {"kind": "sql", "options": {"table": table}},
        "connection": connection,
        "dataset": dataset,
        "primary_key": ["person_id"],
        "cursor": "updated_at",
        "deletes": {"soft_delete": {"column": "deleted", "values": ["1"]}},
        "quality": {"max_bad_fraction": 1.0},
    }


def county_deployment() -> Deployment:
    data = load_deployment(REPO / "config").model_dump()
    data["datasets"] = [
        *data["datasets"],
        {
            "id": PRIVATE,
            "name": "测试筛查报告",
            "department": "chancheng_health",
            "sharing": "not_shared",
            "update_frequency": "daily",
        },
    ]
    data["sources"] = [
        _source(PEOPLE, HOUSEHOLD, "people", "test_people_db"),
        _source(SCREENING, PRIVATE, "screening", "test_people_db"),
    ]
    return Deployment.model_validate(data)


def change(path: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


@dataclass
class Pair:
    deployment: Deployment
    county_home: Path
    county_state: ExchangeState
    county: LicenseStore
    node: NodeConfig
    keyring: KeyRing
    city_home: Path
    city_state: ExchangeState
    city: LicenseStore
    sender: TokenSender
    department: Path

    @contextlib.contextmanager
    def at_county(self) -> Iterator[None]:
        """Run as the county's process would: its GOVX_HOME (lake, node, outbox)."""
        os.environ["GOVX_HOME"] = str(self.county_home)
        try:
            yield
        finally:
            os.environ["GOVX_HOME"] = str(self.city_home)

    def sync(self, source_id: str = PEOPLE) -> Any:
        context = SyncContext(
            deployment=self.deployment,
            state=self.county_state,
            store_url=self.county._engine.url.render_as_string(hide_password=False),
        )
        with self.at_county():
            return sync(source_id, context=context)

    def push(self, sender: Any = None) -> PushReport:
        return push_packages(
            self.county,
            self.node,
            self.deployment,
            self.keyring,
            self.county_home,
            sender or self.sender,
            state=self.county_state,
        )

    def dataset(self, state: ExchangeState, lake: Path) -> list[dict[str, Any]]:
        return CuratedDataset(HOUSEHOLD, [], state, lake).rows().to_pylist()

    def county_rows(self) -> list[dict[str, Any]]:
        sources = self.deployment.sources
        return (
            CuratedDataset(HOUSEHOLD, sources, self.county_state, self.county_home / "lake")
            .rows()
            .to_pylist()
        )


@pytest.fixture
def pair(
    tmp_path: Path, isolated_govx_home: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pair]:
    from license_store.api import create_app

    department = tmp_path / "department.db"
    with sqlite3.connect(department) as conn:
        for table in ("people", "screening"):
            conn.execute(
                f"CREATE TABLE {table} (person_id INTEGER, id_number TEXT, name TEXT, "
                "deleted TEXT, updated_at TEXT)"
            )
        conn.executemany(
            "INSERT INTO people VALUES (?, ?, ?, '0', ?)",
            [(n, resident_id(n), f"居民{n}", f"2026-11-01 08:00:0{n}") for n in range(1, 7)],
        )
        conn.execute(
            "INSERT INTO screening VALUES (1, ?, '受检者', '0', '2026-11-01')", [resident_id(1)]
        )
    monkeypatch.setenv("AIRFLOW_CONN_TEST_PEOPLE_DB", f"sqlite:///{department}")

    deployment = county_deployment()
    city_home = isolated_govx_home  # the city API reads $GOVX_HOME
    init_node(city_home, deployment, CITY, parent_url="http://127.0.0.1:9")
    county_home = tmp_path / "county"
    keyring = KeyRing(county_home / "keys")
    with (
        LicenseStore(f"sqlite:///{tmp_path / 'city.db'}") as city,
        LicenseStore(
            f"sqlite:///{county_home / 'licenses.db'}", keyring=keyring, deployment=deployment
        ) as county,
        ExchangeState(f"sqlite:///{county_home / 'exchange.db'}") as county_state,
        ExchangeState(f"sqlite:///{city_home / 'exchange.db'}") as city_state,
    ):
        for opened in (city, county, county_state, city_state):
            opened.upgrade()
        base, server, thread = _serve(create_app(city, deployment))
        node = init_node(county_home, deployment, COUNTY, parent_url=base)
        trust_node(city_home, COUNTY, keyring.public_path(node.key_name).read_bytes())
        with ClientRegistry(city._engine.url.render_as_string(hide_password=False)) as reg:
            client, secret = reg.add(name="禅城区节点", kind="node", region=COUNTY)
        try:
            yield Pair(
                deployment,
                county_home,
                county_state,
                county,
                node,
                keyring,
                city_home,
                city_state,
                city,
                TokenSender(base, client.client_id, secret),
                department,
            )
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def manifests(outbox: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text(encoding="utf-8")) for path in pending_packages(outbox)]


def test_a_countys_runs_join_the_citys_dataset_version_by_version(pair: Pair) -> None:
    first = pair.sync()
    # the sync packaged its run for the city (exchange.sync, after the licenses step)
    assert [m["kind"] for m in manifests(pair.county_home / "outbox")] == ["dataset"]
    report = pair.push()
    assert report.waiting == 0 and report.delivered == [1] and report.rows == 6
    city_lake = pair.city_home / "lake"
    assert pair.dataset(pair.city_state, city_lake) == pair.county_rows()
    assert len(pair.county_rows()) == 6

    received = pair.city_state.run(first.run_id)
    assert (received.origin, received.dataset_id, received.source_id) == (COUNTY, HOUSEHOLD, PEOPLE)
    assert received.curated_path == str(
        city_lake / "curated" / HOUSEHOLD / PEOPLE / f"{first.run_id}.parquet"
    )
    assert pair.city_state.runs() == []  # the city's own runs: it synced none
    assert pair.city_state.pending_license_runs(PEOPLE) == []  # its licenses came as licenses

    change(
        pair.department,
        "UPDATE people SET name = '居民二改', updated_at = '2026-11-02' WHERE person_id = 2",
    )
    change(
        pair.department,
        "UPDATE people SET deleted = '1', updated_at = '2026-11-02' WHERE person_id = 5",
    )
    second = pair.sync()
    assert (second.rows_changed, second.rows_deleted) == (1, 1)
    report = pair.push()
    assert report.delivered == [2] and report.rows == 2
    city_rows = pair.dataset(pair.city_state, city_lake)
    assert city_rows == pair.county_rows()
    assert {r["person_id"]: r["name"] for r in city_rows}[2] == "居民二改"
    assert 5 not in {r["person_id"] for r in city_rows}
    history = CuratedDataset(HOUSEHOLD, [], pair.city_state, city_lake).history("2").to_pylist()
    assert [h["name"] for h in history] == ["居民2", "居民二改"]


def test_not_shared_datasets_never_leave_the_county(pair: Pair) -> None:
    pair.sync(PEOPLE)
    screening = pair.sync(SCREENING)
    assert screening.rows_new == 1 and screening.curated_path
    pair.push(Down())  # packaged, not delivered: look inside every package file
    for path in pending_packages(pair.county_home / "outbox"):
        table = pq.read_table(path.with_suffix(".parquet"))
        described = (table.schema.metadata or {}).get(METADATA_KEY, b"{}")
        assert json.loads(described).get("run_id") != screening.run_id
        assert SCREENING not in table.to_pandas().to_string()
    assert screening.run_id not in {e.run_id for e in outbox_entries(pair.county)}
    pair.push()
    assert PRIVATE not in pair.city_state.received_sources().values()
    assert not (pair.city_home / "lake" / "curated" / PRIVATE).exists()


def _post(pair: Pair, manifest_path: Path) -> Any:
    return pair.sender.request(
        "POST",
        "/v1/exchange/packages",
        data=manifest_path.with_suffix(".parquet").read_bytes(),
        headers={
            MANIFEST_HEADER: base64.urlsafe_b64encode(manifest_path.read_bytes()).decode(),
            "Content-Type": PARQUET_TYPE,
        },
        timeout=30,
    )


def test_a_replayed_dataset_package_changes_nothing(pair: Pair) -> None:
    pair.sync()
    pair.push(Down())
    pair.sync()  # nothing new: no run, no package
    change(
        pair.department,
        "UPDATE people SET name = '居民三改', updated_at = '2026-11-03' WHERE person_id = 3",
    )
    pair.sync()
    pair.push(Down())
    first, second = pending_packages(pair.county_home / "outbox")
    saved = [(p.read_bytes(), p.with_suffix(".parquet").read_bytes()) for p in (first, second)]
    assert _post(pair, second).json()["code"] == "sequence_gap"  # out of order: refused
    assert pair.push().delivered == [1, 2]
    lake = pair.city_home / "lake"
    before = pair.dataset(pair.city_state, lake)
    summary = CuratedDataset(HOUSEHOLD, [], pair.city_state, lake).summary()
    for path, (manifest, data) in zip((first, second), saved, strict=True):
        path.write_bytes(manifest)
        path.with_suffix(".parquet").write_bytes(data)
        answer = _post(pair, path)
        assert answer.status_code == 200 and answer.json()["status"] == "duplicate"
    assert pair.dataset(pair.city_state, lake) == before
    assert CuratedDataset(HOUSEHOLD, [], pair.city_state, lake).summary() == summary
    assert summary == {"live": 6, "deleted": 0, "versions": 7, "runs": 2}


def _forged(pair: Pair, seq: int, table: pa.Table, **described: Any) -> Path:
    """A package signed with the county's real key whose dataset metadata says ``described``."""
    metadata = json.loads(table.schema.metadata[METADATA_KEY])
    metadata.update(described)
    forged = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata).encode()})
    outbox = pair.county_home / "forged"
    for path in package_paths(outbox, COUNTY, seq):
        path.unlink(missing_ok=True)
    write_package(
        outbox,
        sender=COUNTY,
        receiver=CITY,
        seq=seq,
        kind="dataset",
        table=forged,
        key=pair.keyring.private_key(pair.node.key_name),
    )
    return package_paths(outbox, COUNTY, seq)[1]


@pytest.mark.parametrize(
    ("described", "reason"),
    [
        ({"dataset_id": "../../../etc"}, "dataset_id is missing or malformed"),
        ({"source_id": "a/b"}, "source_id is missing or malformed"),
        ({"run_id": "x"}, "run_id is missing or malformed"),
        ({"origin": "440802"}, "not node 440604 or below it"),
        ({"committed_at": "yesterday"}, "committed_at is not an ISO date-time"),
    ],
)
def test_a_package_with_forged_metadata_is_refused_whole(
    pair: Pair, described: dict[str, Any], reason: str
) -> None:
    run = pair.sync()
    entry = next(e for e in outbox_entries(pair.county) if e.kind == "dataset")
    table = dataset_package_table(pair.county_state, pair.deployment, entry, COUNTY)
    answer = _post(pair, _forged(pair, 1, table, **described))
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["code"] == "package_rejected" and body["field"] == "content"
    assert reason in body["detail"]
    assert resident_id(1) not in answer.text
    assert pair.city_state.received_sources() == {}
    with pytest.raises(KeyError):
        pair.city_state.run(run.run_id)
    assert not (pair.city_home / "lake" / "curated").exists()


def test_rows_of_another_run_or_a_source_of_the_city_are_refused(pair: Pair) -> None:
    run = pair.sync()
    entry = next(e for e in outbox_entries(pair.county) if e.kind == "dataset")
    table = dataset_package_table(pair.county_state, pair.deployment, entry, COUNTY)
    # rows relabelled as another run: refused, not mixed in
    other = "20261101T000000000000Z-0000abcd"
    answer = _post(pair, _forged(pair, 1, table, run_id=other))
    assert answer.status_code == 422 and "rows of another run" in answer.json()["detail"]
    # the city syncs a source of that name itself: the county's run would mix with it
    started = pair.city_state.start_run(PEOPLE, None, False)
    pair.city_state.fail_run(started, "a run of the city's own")
    answer = _post(pair, _forged(pair, 1, table))
    assert answer.status_code == 409 and answer.json()["code"] == "package_conflict"
    assert "synced at this node" in answer.json()["detail"]
    with pytest.raises(KeyError):
        pair.city_state.run(run.run_id)


def test_the_city_forwards_its_countys_runs_with_their_origin(pair: Pair) -> None:
    run = pair.sync()
    pair.push()
    # the city's own packaging: the received run goes on to the province, origin kept
    planned = runs_to_send(pair.city_state, pair.deployment)
    assert [run_id for run_id, _ in planned] == [run.run_id]
    from license_store.replication import OutboxEntry

    entry = OutboxEntry(
        1, "440000", 0, 0, planned[0][1], dt.datetime.now(dt.UTC), None, "dataset", run.run_id
    )
    table = dataset_package_table(pair.city_state, pair.deployment, entry, CITY)
    described = json.loads(table.schema.metadata[METADATA_KEY])
    assert described["origin"] == COUNTY and described["run_id"] == run.run_id
    assert dt.datetime.fromisoformat(described["committed_at"]) == run.finished_at


def test_columns_feeding_only_a_not_shared_license_type_are_withheld() -> None:
    from exchange.config import SourceConfig
    from exchange.dataset_packages import withheld_columns
    from exchange.demo.chikan import CHIKAN_SOURCE_CONFIG, SCREENING_TYPE_CONFIG

    data = load_deployment(REPO / "config").model_dump()
    data["license_types"] = [*data["license_types"], SCREENING_TYPE_CONFIG]
    deployment = Deployment.model_validate(data)
    source = SourceConfig.model_validate(CHIKAN_SOURCE_CONFIG)
    # the mother's ID and name feed the shared birth certificate too: they go
    assert withheld_columns(source, deployment) == {
        "screening_no",
        "screened_on",
        "screening_result",
    }
    data["license_types"] = [
        {**t, "sharing": "conditional"} if t["code"] == SCREENING_TYPE_CONFIG["code"] else t
        for t in data["license_types"]
    ]
    assert withheld_columns(source, Deployment.model_validate(data)) == set()
