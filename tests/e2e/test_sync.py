"""End to end on the embedded default: department systems -> lake -> gate -> licenses -> API.

Real SQLite department databases, a real REST API on a loopback port, real GB18030 CSV and xlsx
drop folders, real Parquet, real license store, the real FastAPI app.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from exchange.config import Deployment
from exchange.curated import CuratedDataset, RunMerge, curated_dir
from exchange.demo import DemoSystem, dirty_rows, sample_applicant, simulate_changes
from exchange.state import ExchangeState, RunStatus
from exchange.sync import RunFailed, SyncContext, land, publish, publish_licenses, sync
from license_store.errors import StoreUnavailable
from license_store.store import LicenseStore
from tests.intake import EVERY_MATTER, intake_client

RAW_ID = re.compile(r"(?<![0-9*])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")


def sync_all(deployment: Deployment) -> dict[str, object]:
    context = SyncContext(deployment=deployment)
    return {s.id: sync(s.id, context=context) for s in deployment.sources}


def test_first_sync_accounts_for_every_row(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    runs = sync_all(deployment)
    rows = {s.source_id: s.rows for s in demo_systems}
    dirty = dirty_rows()
    for source_id, run in runs.items():
        assert run.status is RunStatus.SUCCEEDED
        assert run.rows_read == rows[source_id]
        assert run.rows_read == run.rows_loaded + run.rows_quarantined
        assert run.rows_quarantined == len(dirty.get(source_id, ()))
        assert run.cursor_before is None and run.cursor_after is not None
    household = runs["gd_household_registry"]
    assert household.licenses_inserted == 2 * household.rows_loaded  # ID card + household register
    with ExchangeState() as state:
        assert state.cursor("gd_household_registry") == household.cursor_after


def test_quarantine_keeps_rows_with_masked_reasons(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    run = sync_all(deployment)["gd_household_registry"]
    held = list(
        Path(run.landing_path)
        .parents[2]
        .glob(f"quarantine/gd_household_registry/{run.run_id}/rows.parquet")
    )
    assert len(held) == 1
    table = pq.read_table(held[0])
    assert table.num_rows == run.rows_quarantined
    assert sorted(table.column("person_id").to_pylist()) == sorted(
        dirty_rows()["gd_household_registry"]
    )
    for reasons in table.column("_govx_reasons").to_pylist():
        assert reasons and all(not RAW_ID.search(r) for r in reasons)


def test_sample_applicant_through_the_api(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    sync_all(deployment)
    holder = sample_applicant(demo_systems)
    with LicenseStore() as store, intake_client(store) as (client, headers):
        response = client.get(
            f"/v1/holders/{holder}/licenses", params={"matter": EVERY_MATTER}, headers=headers
        )
    assert response.status_code == 200
    body = response.json()
    types = {lic["type_name"] for lic in body["licenses"]}
    assert {"居民身份证", "居民户口簿", "结婚证", "出生医学证明"} <= types
    assert body["holder"]["id"] != holder and body["holder"]["kind"] == "natural"
    card = next(lic for lic in body["licenses"] if lic["type_name"] == "居民身份证")
    assert card["number"] == holder
    assert card["license_id"].startswith("1.2.156.3005.2.11440000MB2000000Q001.11440000MB2000000Q.")
    assert card["version"] == 1 and card["status"] in {"valid", "expired"}
    assert card["face"]["authority"].endswith("分局")


def test_incremental_sync_reads_only_changes(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    first = sync_all(deployment)
    again = sync_all(deployment)
    kinds = {s.id: s.connector.kind for s in deployment.sources}
    assert sorted(kinds.values()) == ["files", "files", "rest", "sql", "sql"]
    for source_id, run in again.items():
        if kinds[source_id] == "files":  # every dropped file was loaded: nothing new
            assert run.rows_read == 0, source_id
        else:  # only the rows at the watermark are read again, and they change nothing
            assert 1 <= run.rows_read <= 3, source_id
        assert (run.licenses_inserted, run.licenses_updated) == (0, 0), source_id
        assert run.cursor_before == first[source_id].cursor_after
        assert run.cursor_after == first[source_id].cursor_after
    changed = simulate_changes(demo_systems)
    third = sync_all(deployment)
    for source_id, run in third.items():
        at_watermark = again[source_id].rows_read
        assert changed[source_id] <= run.rows_read <= changed[source_id] + at_watermark
        assert run.rows_read == run.rows_loaded + run.rows_quarantined
        assert run.licenses_inserted + run.licenses_updated > 0, source_id
    household = third["gd_household_registry"]
    assert household.licenses_unchanged < household.rows_read * 2


def test_full_refresh_rereads_everything_and_changes_nothing(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    first = sync(deployment.sources[0].id, context=SyncContext(deployment=deployment))
    refresh = sync(
        deployment.sources[0].id, full_refresh=True, context=SyncContext(deployment=deployment)
    )
    assert refresh.cursor_before is None
    assert refresh.rows_read == first.rows_read
    # the curated dataset already holds every row as it is: no new version, nothing to derive
    assert (refresh.rows_new, refresh.rows_changed, refresh.rows_deleted) == (0, 0, 0)
    assert refresh.rows_unchanged == first.rows_new == first.rows_loaded
    assert refresh.curated_path is None
    assert (refresh.licenses_inserted, refresh.licenses_updated) == (0, 0)
    with LicenseStore() as store:
        assert store.count() == first.licenses_inserted


def test_a_run_that_dies_before_committing_is_redone_without_duplicates(
    deployment: Deployment, demo_systems: list[DemoSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    source_id = "foshan_marriage_registry"
    context = SyncContext(deployment=deployment)
    landed = land(source_id, context=context)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise OSError("simulated crash just before the commit")

    with monkeypatch.context() as patch:
        patch.setattr(ExchangeState, "finish_run", crash)
        with pytest.raises(RunFailed, match="simulated crash"):
            publish(landed.run_id, context=context)
    with ExchangeState() as state:
        crashed = state.run(landed.run_id)
        assert crashed.status is RunStatus.LANDED and "simulated crash" in (crashed.error or "")
        assert state.cursor(source_id) is None  # the cursor did not move
        assert state.committed_versions([source_id]) == []
    # the crashed attempt's row versions file exists, but nothing committed points at it
    assert list(curated_dir("marriage_registry", source_id).glob("*.parquet"))
    with LicenseStore() as store:
        store.upgrade()
        assert store.count() == 0  # licenses follow the commit, so none were derived
    redo = sync(source_id, context=SyncContext(deployment=deployment))
    assert redo.rows_read == landed.rows_read
    assert redo.rows_new == redo.rows_loaded
    with LicenseStore() as store:
        assert store.count() == redo.licenses_inserted > 0
    with ExchangeState() as state:
        dataset = CuratedDataset("marriage_registry", deployment.sources, state)
        assert dataset.rows().num_rows == redo.rows_loaded
        assert dataset.summary() == {
            "live": redo.rows_loaded,
            "deleted": 0,
            "versions": redo.rows_loaded,
            "runs": 1,
        }
    with pytest.raises(RunFailed, match="superseded"):
        publish(landed.run_id, context=context)  # the crashed run's batch is stale now


def test_unreachable_source_fails_clearly_and_keeps_the_cursor(
    deployment: Deployment, demo_systems: list[DemoSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    source_id = "foshan_marriage_registry"
    sync(source_id, context=SyncContext(deployment=deployment))
    with ExchangeState() as state:
        cursor = state.cursor(source_id)
    monkeypatch.setenv(
        "AIRFLOW_CONN_FOSHAN_MARRIAGE_DB", "postgres://govx:s3cr3t-pw@127.0.0.1:1/registry"
    )
    with pytest.raises(RunFailed) as info:
        sync(source_id, context=SyncContext(deployment=deployment))
    message = str(info.value)
    assert source_id in message and "s3cr3t-pw" not in message
    with ExchangeState() as state:
        assert state.cursor(source_id) == cursor
        failed = state.runs(source_id, limit=1)[0]
        assert failed.status is RunStatus.FAILED and "s3cr3t-pw" not in (failed.error or "")


def test_missing_connection_says_what_to_set(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_GD_HOUSEHOLD_DB", raising=False)
    with pytest.raises(RunFailed, match="AIRFLOW_CONN_GD_HOUSEHOLD_DB"):
        sync("gd_household_registry", context=SyncContext(deployment=deployment))


def test_logs_never_show_an_unmasked_id(
    deployment: Deployment, demo_systems: list[DemoSystem], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        sync_all(deployment)
        simulate_changes(demo_systems)
        sync_all(deployment)
    assert "quarantined" in caplog.text
    assert not RAW_ID.search(caplog.text)


def test_a_publish_that_failed_transiently_can_be_retried(
    deployment: Deployment, demo_systems: list[DemoSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    context = SyncContext(deployment=deployment)
    landed = land("gd_household_registry", context=context)

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError("no space left on device (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(RunMerge, "finish", full)
        with pytest.raises(RunFailed) as info:
            publish(landed.run_id, context=context)
    assert not info.value.terminal
    with ExchangeState() as state:
        pending = state.run(landed.run_id)
        assert pending.status is RunStatus.LANDED and "no space" in (pending.error or "")
    done = publish(landed.run_id, context=context)  # what the scheduler's retry does
    assert done.status is RunStatus.SUCCEEDED and done.error is None
    assert done.rows_loaded + done.rows_quarantined == landed.rows_read
    again = publish(landed.run_id, context=context)  # a retried task after its commit
    assert again == done


def test_licenses_owed_by_a_committed_run_follow_on_the_next_step(
    deployment: Deployment, demo_systems: list[DemoSystem], monkeypatch: pytest.MonkeyPatch
) -> None:
    source_id = "gd_household_registry"
    context = SyncContext(deployment=deployment)

    def locked(*_args: object, **_kwargs: object) -> None:
        raise StoreUnavailable("the license store is locked (simulated)")

    with monkeypatch.context() as patch:
        patch.setattr(LicenseStore, "upsert", locked)
        with pytest.raises(RunFailed, match="publishing licenses") as info:
            sync(source_id, context=context)
    assert not info.value.terminal
    with ExchangeState() as state:
        committed = state.runs(source_id, limit=1)[0]
        # the run committed (rows merged, cursor moved); its licenses are owed, and it says so
        assert committed.status is RunStatus.SUCCEEDED
        assert committed.licenses_published_at is None and "locked" in (committed.error or "")
        assert state.cursor(source_id) == committed.cursor_after
        assert [r.run_id for r in state.pending_license_runs(source_id)] == [committed.run_id]
    published = publish_licenses(source_id, context=context)
    assert [r.run_id for r in published] == [committed.run_id]
    assert published[0].licenses_inserted == 2 * committed.rows_loaded
    assert published[0].error is None
    assert publish_licenses(source_id, context=context) == []  # nothing owed any more


def test_an_older_landed_run_cannot_overwrite_a_newer_one(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    context = SyncContext(deployment=deployment)
    stale = land("nanhai_real_estate", context=context)
    simulate_changes(demo_systems)
    newer = sync("nanhai_real_estate", full_refresh=True, context=context)
    assert newer.status is RunStatus.SUCCEEDED
    with pytest.raises(RunFailed, match="superseded") as info:
        publish(stale.run_id, context=context)
    assert info.value.terminal
    with ExchangeState() as state:
        assert state.cursor("nanhai_real_estate") == newer.cursor_after
        assert state.run(stale.run_id).status is RunStatus.FAILED


def test_garbage_in_a_department_date_column_is_quarantined_not_fatal(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    import sqlite3

    system = next(s for s in demo_systems if s.source_id == "gd_household_registry")
    with sqlite3.connect(system.url.removeprefix("sqlite:///")) as conn:
        conn.execute("UPDATE persons SET card_issue_date = '待补录' WHERE person_id = 200")
    run = sync("gd_household_registry", context=SyncContext(deployment=deployment))
    assert run.status is RunStatus.SUCCEEDED
    assert run.rows_quarantined == len(dirty_rows()["gd_household_registry"]) + 1
    held = pq.read_table(
        Path(run.landing_path).parents[2]
        / "quarantine"
        / run.source_id
        / run.run_id
        / "rows.parquet"
    ).to_pylist()
    [row] = [r for r in held if r["person_id"] == 200]
    assert row["_govx_reasons"] == ["card_issue_date: not a date: '待补录'"]
