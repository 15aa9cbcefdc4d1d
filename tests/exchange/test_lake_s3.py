"""The lake on an S3-compatible object store: real syncs with ``GOVX_LAKE_DIR=s3://bucket/prefix``.

``moto`` runs in server mode on a free loopback port (the endpoint the production profile
starts), with a bucket made per test. A small SQLite department table syncs through the real
connector, gate, merge and license library, exactly as in ``test_curated.py``; here every file
the run writes must land in the bucket, every path the exchange state records must be an
``s3://`` URL, and nothing may appear on local disk but DuckDB's scratch space. Without moto
the tests skip with the reason, and fail under ``CI=true``.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from exchange.config import Deployment, load_deployment
from exchange.curated import CuratedDataset
from exchange.state import ExchangeState, RunStatus
from exchange.sync import SyncContext, sync
from tests.exchange.test_curated import resident_id

SOURCE = "test_people"
DATASET = "household_registry"
CONFIG = Path(__file__).resolve().parents[2] / "config"
PREFIX = "lake/node-440000"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"S3 endpoint (moto server) not available: {reason}")
    pytest.skip(f"S3 endpoint (moto server) not available: {reason}")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, for the module's tests."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:  # the `prod` extra is missing
        _unavailable(f"moto[server] not installed ({exc})")
    from tests.servers import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except Exception as exc:
        _unavailable(f"{type(exc).__name__}: {exc}")
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_lake(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """``GOVX_LAKE_DIR`` on a fresh bucket of the moto server: the lake's URL."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "govx-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "govx-test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    import boto3

    bucket = f"govx-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/{PREFIX}"
    monkeypatch.setenv("GOVX_LAKE_DIR", url)
    return url


def objects(lake: str) -> list[str]:
    """Every object under the lake, as keys relative to its root."""
    from exchange.lakefs import filesystem

    fs = filesystem(lake)
    root = lake.split("://", 1)[1]
    return sorted(key[len(root) + 1 :] for key in fs.find(root))


def make_deployment(status_values: dict[str, str] | None = None) -> Deployment:
    data = load_deployment(CONFIG).model_dump()
    mapping: dict[str, object] = {
        "type": "resident_id_card",
        "holder_id": "id_number",
        "holder_name": "name",
        "number": "id_number",
        "issue_date": "card_issue_date",
        "valid_to": "card_valid_to",
    }
    if status_values is not None:
        mapping.update(status="deleted", status_values=status_values)
    data["sources"] = [
        {
            "id": SOURCE,
            "name": "测试人口库",
            "department": "gd_public_security",
            "connector": {"kind": "sql", "options": {"table": "people"}},
            "connection": "test_people_db",
            "dataset": DATASET,
            "primary_key": ["person_id"],
            "cursor": "updated_at",
            "deletes": {
                "soft_delete": {"column": "deleted", "values": ["1"]},
                "key_snapshot": True,
                "max_delete_fraction": 0.5,
            },
            "quality": {"max_bad_fraction": 1.0},
            "licenses": [mapping],
        }
    ]
    return Deployment.model_validate(data)


def change(path: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


def run(deployment: Deployment, full_refresh: bool = False):
    return sync(SOURCE, full_refresh=full_refresh, context=SyncContext(deployment=deployment))


def test_lake_dir_takes_an_s3_url_and_refuses_unknown_schemes(
    monkeypatch: pytest.MonkeyPatch, isolated_govx_home: Path
) -> None:
    from exchange.lakefs import Lake, LakeLocationError
    from exchange.settings import lake_dir

    monkeypatch.setenv("GOVX_LAKE_DIR", "s3://govx-lake/province/")
    assert lake_dir() == "s3://govx-lake/province"
    lake = Lake.of()
    assert not lake.local and not lake.atomic_rename
    assert lake.join("landing", "a", "r1") == "s3://govx-lake/province/landing/a/r1"
    assert lake.scratch == isolated_govx_home / "tmp"  # DuckDB spills to local disk
    assert lake.contains("s3://govx-lake/province/quarantine/a/r1/rows.parquet", "quarantine", "a")
    assert not lake.contains("s3://govx-lake/province/quarantine/a/../b/x", "quarantine", "a")
    assert not lake.contains("/etc/passwd", "quarantine", "a")
    monkeypatch.setenv("GOVX_LAKE_DIR", "file:///srv/lake")
    assert lake_dir() == Path("/srv/lake")
    for wrong in ("gs://bucket/lake", "s3://", "http://example.org/lake"):
        monkeypatch.setenv("GOVX_LAKE_DIR", wrong)
        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            lake_dir()
    with pytest.raises(LakeLocationError, match="unsupported lake URL scheme"):
        Lake.of("gs://bucket/lake")
    monkeypatch.delenv("GOVX_LAKE_DIR")
    assert lake_dir() == isolated_govx_home / "lake"


def test_landing_on_s3_is_finished_by_its_manifest(s3_lake: str) -> None:
    from exchange.lake import LandingWriter, landed_batches, read_manifest, write_quarantine

    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    rows = pa.record_batch([pa.array(range(300)), pa.array(["张三"] * 300)], schema=schema)
    writer = LandingWriter("src", "run1", schema, rows_per_file=100)
    for start in (0, 100, 200):  # a new part every 100 rows
        writer.write(rows.slice(start, 100))
    folder = f"{s3_lake}/landing/src/run1"
    assert writer.final_dir == folder
    with pytest.raises(FileNotFoundError):  # parts are there, the manifest is not: unfinished
        read_manifest(folder)
    manifest = writer.close(None, "c1")
    assert read_manifest(folder) == manifest and len(manifest.files) == 3
    assert [r["id"] for b in landed_batches(folder) for r in b.to_pylist()] == list(range(300))
    aborted = LandingWriter("src", "run2", schema)
    aborted.write(rows)
    aborted.abort()
    held = write_quarantine("src", "run1", pa.table({"id": [1], "_govx_reasons": [["bad"]]}))
    assert held == f"{s3_lake}/quarantine/src/run1/rows.parquet"
    assert objects(s3_lake) == [
        "landing/src/run1/manifest.json",
        "landing/src/run1/part-00000.parquet",
        "landing/src/run1/part-00001.parquet",
        "landing/src/run1/part-00002.parquet",
        "quarantine/src/run1/rows.parquet",
    ]


def test_syncs_land_merge_and_answer_as_of_on_s3(
    s3_lake: str, registry: Path, isolated_govx_home: Path
) -> None:
    deployment = make_deployment()
    first = run(deployment)
    assert (first.rows_new, first.rows_changed) == (5, 0)
    assert first.landing_path == f"{s3_lake}/landing/{SOURCE}/{first.run_id}"
    assert first.curated_path == f"{s3_lake}/curated/{DATASET}/{SOURCE}/{first.run_id}.parquet"
    assert first.licenses_inserted == 5
    time.sleep(0.01)
    before_rename = dt.datetime.now(dt.UTC)
    change(
        registry,
        "UPDATE people SET name = '居民二改', updated_at = '2026-11-02 09:00:00' "
        "WHERE person_id = 2",
    )
    second = run(deployment)
    assert (second.rows_new, second.rows_changed, second.licenses_updated) == (0, 1, 1)
    change(registry, "DELETE FROM people WHERE person_id = 4")
    snapshot = run(deployment, full_refresh=True)  # the landed keys are read back from S3
    assert snapshot.rows_deleted == 1

    with ExchangeState() as state:
        curated = CuratedDataset(DATASET, deployment.sources, state)
        now = {r["person_id"]: r["name"] for r in curated.rows().to_pylist()}
        then = {r["person_id"]: r["name"] for r in curated.rows(before_rename).to_pylist()}
        history = curated.history("2").to_pylist()
        assert curated.summary() == {"live": 4, "deleted": 1, "versions": 7, "runs": 3}
    assert now == {1: "居民1", 2: "居民二改", 3: "居民3", 5: "居民5"}
    assert then == {1: "居民1", 2: "居民2", 3: "居民3", 4: "居民4", 5: "居民5"}
    assert [v["_govx_run_id"] for v in history] == [first.run_id, second.run_id]

    stored = objects(s3_lake)
    for landed in (first, second, snapshot):
        assert f"landing/{SOURCE}/{landed.run_id}/manifest.json" in stored
    assert not [key for key in stored if ".partial" in key or ".tmp" in key]
    # nothing of the lake on local disk: no `s3:` folder, no lake/; only DuckDB's scratch
    assert not (isolated_govx_home / "lake").exists()
    assert not list(Path.cwd().glob("s3:*")) and not (isolated_govx_home / "s3:").exists()
    assert not list((isolated_govx_home / "tmp" / "staging").glob("*"))


def test_quarantine_browse_and_replay_on_s3(
    s3_lake: str, registry: Path, isolated_govx_home: Path
) -> None:
    from exchange.admin.quarantine import held_file, held_files, read_page
    from exchange.replay import held_batches, reason_counts, replay
    from exchange.settings import lake_dir

    strict = make_deployment({"0": "valid", "1": "revoked"})
    change(registry, "UPDATE people SET deleted = '2' WHERE person_id = 2")  # 2: unknown yet
    first = run(strict)
    assert (first.rows_loaded, first.rows_quarantined) == (4, 1)
    assert first.quarantine_path == f"{s3_lake}/quarantine/{SOURCE}/{first.run_id}/rows.parquet"

    with ExchangeState() as state:
        [batch] = held_batches(state, SOURCE)
        assert reason_counts(batch.path) == [("deleted: unknown status '2' (mapped: 0, 1)", 1)]
        [listed] = held_files(strict, state, lake_dir())
        assert listed.path == first.quarantine_path and listed.rows == 1
        page = read_page(
            held_file(strict, state, lake_dir(), SOURCE, first.run_id), strict.sources[0], 1
        )
    assert page.total == 1 and page.reasons == (("deleted: unknown status '2' (mapped: 0, 1)",),)
    assert resident_id(5) not in str(page.rows)  # masked as on a local lake

    lenient = make_deployment({"0": "valid", "1": "revoked", "2": "suspended"})
    replayed = replay(SOURCE, context=SyncContext(deployment=lenient))
    assert replayed is not None and replayed.status is RunStatus.SUCCEEDED
    assert (replayed.rows_read, replayed.rows_loaded, replayed.rows_quarantined) == (1, 1, 0)
    assert replayed.landing_path == f"{s3_lake}/landing/{SOURCE}/{replayed.run_id}"
    with ExchangeState() as state:
        assert CuratedDataset(DATASET, lenient.sources, state).summary()["live"] == 5
        assert held_batches(state, SOURCE)[0].replayed_by == replayed.run_id
    assert not (isolated_govx_home / "lake").exists()


def test_dataset_packages_are_read_from_and_applied_to_s3(
    s3_lake: str, registry: Path, tmp_path: Path
) -> None:
    """A child's row versions file read for its package, applied to a parent's lake on S3."""
    import json

    from exchange.dataset_packages import METADATA_KEY, apply_dataset_package, runs_to_send
    from exchange.lakefs import read_table
    from license_store.store import LicenseStore

    deployment = make_deployment()
    first = run(deployment)
    with ExchangeState() as state:
        assert runs_to_send(state, deployment) == [(first.run_id, 5)]
    table = read_table(first.curated_path or "")
    described = {
        "dataset_id": DATASET,
        "source_id": SOURCE,
        "run_id": first.run_id,
        "committed_at": dt.datetime.now(dt.UTC).isoformat(),
        "origin": "440604",
        "withheld": [],
    }
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(described).encode()})
    parent_lake = s3_lake.rsplit("/", 1)[0] + "/node-440600"
    with (
        ExchangeState(f"sqlite:///{tmp_path / 'parent-exchange.db'}") as parent,
        LicenseStore(f"sqlite:///{tmp_path / 'parent-licenses.db'}") as store,
    ):
        parent.upgrade()
        store.upgrade()
        applied = apply_dataset_package(store, parent, parent_lake, "440604", 1, table)
        assert not applied.duplicate and applied.rows == 5
        path = parent.run(first.run_id).curated_path
        assert path == f"{parent_lake}/curated/{DATASET}/{SOURCE}/{first.run_id}.parquet"
        assert read_table(path).num_rows == 5
        received = CuratedDataset(DATASET, [], parent, parent_lake)
        assert received.summary() == {"live": 5, "deleted": 0, "versions": 5, "runs": 1}
        again = apply_dataset_package(store, parent, parent_lake, "440604", 1, table)
        assert again.duplicate
    assert objects(parent_lake) == [f"curated/{DATASET}/{SOURCE}/{first.run_id}.parquet"]
