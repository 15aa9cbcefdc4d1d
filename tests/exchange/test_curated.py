"""Curated datasets end to end on a real SQLite department table: versions, as-of, deletes, replay.

A small registry (five residents) syncs through the real SQL connector, lake, gate, curated
merge and license library; the tests change the table between runs the way a department does.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from stdnum.cn import ric

from exchange.config import Deployment, load_deployment
from exchange.curated import CuratedDataset
from exchange.state import ExchangeState, RunStatus
from exchange.sync import RunFailed, SyncContext, sync
from license_store.store import LicenseStore

SOURCE = "test_people"
DATASET = "household_registry"
CONFIG = Path(__file__).resolve().parents[2] / "config"


def resident_id(serial: int) -> str:
    first17 = f"11010119800101{serial:03d}"
    return first17 + ric.calc_check_digit(first17 + "0")  # stdnum drops the last character


@pytest.fixture
def deployment() -> Deployment:
    data = load_deployment(CONFIG).model_dump()
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
            # five rows are a tiny batch: one held row must not hold the whole batch here
            "quality": {"max_bad_fraction": 1.0},
            "licenses": [
                {
                    "type": "resident_id_card",
                    "holder_id": "id_number",
                    "holder_name": "name",
                    "number": "id_number",
                    "issue_date": "card_issue_date",
                    "valid_to": "card_valid_to",
                }
            ],
        }
    ]
    return Deployment.model_validate(data)


def change(path: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


def run(deployment: Deployment, full_refresh: bool = False):
    return sync(SOURCE, full_refresh=full_refresh, context=SyncContext(deployment=deployment))


def use_config(deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point ``govx`` at the sample config with this test's source as its only source."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    source = deployment.sources[0].model_dump(mode="json", exclude_defaults=True)
    (config / "sources.yaml").write_text(
        yaml.safe_dump({"sources": [source]}, allow_unicode=True), encoding="utf-8"
    )
    monkeypatch.setenv("GOVX_CONFIG", str(config))


def dataset(state: ExchangeState, deployment: Deployment) -> CuratedDataset:
    return CuratedDataset(DATASET, deployment.sources, state)


def status_of(serial: int) -> str:
    with LicenseStore() as store:
        (card,) = store.licenses_for_holder(resident_id(serial))
        return card.status


def test_every_version_is_kept_and_the_past_can_be_asked(
    deployment: Deployment, registry: Path
) -> None:
    first = run(deployment)
    assert (first.rows_new, first.rows_changed, first.rows_unchanged) == (5, 0, 0)
    time.sleep(0.01)
    before_rename = dt.datetime.now(dt.UTC)
    change(
        registry,
        "UPDATE people SET name = '居民二改', updated_at = '2026-11-02 09:00:00' "
        "WHERE person_id = 2",
    )
    second = run(deployment)
    # the renamed resident is one new version; the row at the old watermark is re-read unchanged
    assert (second.rows_new, second.rows_changed, second.rows_deleted) == (0, 1, 0)
    assert second.rows_unchanged == second.rows_loaded - 1
    assert (second.licenses_inserted, second.licenses_updated) == (0, 1)
    with ExchangeState() as state:
        curated = dataset(state, deployment)
        now = {r["person_id"]: r["name"] for r in curated.rows().to_pylist()}
        then = {r["person_id"]: r["name"] for r in curated.rows(before_rename).to_pylist()}
        history = curated.history("2").to_pylist()
        assert curated.summary() == {"live": 5, "deleted": 0, "versions": 6, "runs": 2}
        assert curated.rows(first.started_at - dt.timedelta(seconds=1)).num_rows == 0
    assert now[2] == "居民二改" and then[2] == "居民2"
    assert {k: v for k, v in now.items() if k != 2} == {k: v for k, v in then.items() if k != 2}
    assert [v["name"] for v in history] == ["居民2", "居民二改"]
    assert [v["_govx_run_id"] for v in history] == [first.run_id, second.run_id]
    assert history[0]["committed_at"] < history[1]["committed_at"]


def test_a_soft_deleted_row_revokes_its_licenses(deployment: Deployment, registry: Path) -> None:
    run(deployment)
    assert status_of(7) == "valid"
    change(
        registry, "UPDATE people SET deleted = '1', updated_at = '2026-11-03' WHERE person_id = 3"
    )
    deleted = run(deployment)
    assert deleted.rows_deleted == 1 and deleted.licenses_updated == 1
    assert status_of(7) == "revoked"  # kept and shown as revoked, not silently dropped
    with ExchangeState() as state:
        curated = dataset(state, deployment)
        assert curated.summary()["live"] == 4 and curated.summary()["deleted"] == 1
        assert 3 not in curated.rows().column("person_id").to_pylist()
    # the department undoes the deletion: the row is live again and so is the card
    change(
        registry, "UPDATE people SET deleted = '0', updated_at = '2026-11-04' WHERE person_id = 3"
    )
    restored = run(deployment)
    assert restored.rows_new == 1 and status_of(7) == "valid"


def test_a_key_snapshot_finds_hard_deletes(deployment: Deployment, registry: Path) -> None:
    run(deployment)
    change(registry, "DELETE FROM people WHERE person_id = 4")
    incremental = run(deployment)
    assert incremental.rows_deleted == 0  # an incremental read cannot see a missing row
    assert status_of(9) == "valid"
    snapshot = run(deployment, full_refresh=True)
    assert snapshot.rows_deleted == 1 and snapshot.rows_new == snapshot.rows_changed == 0
    assert status_of(9) == "revoked"
    with ExchangeState() as state:
        history = dataset(state, deployment).history("4").to_pylist()
    assert [v["_govx_op"] for v in history] == ["upsert", "delete"]
    assert history[1]["name"] == "居民4"  # the deletion keeps the last known content
    again = run(deployment, full_refresh=True)
    assert again.rows_deleted == 0  # deleted once, not on every snapshot


def test_a_snapshot_that_would_wipe_the_dataset_is_refused(
    deployment: Deployment, registry: Path
) -> None:
    first = run(deployment)
    change(registry, "DELETE FROM people WHERE person_id <= 3")  # 3 of 5 > 50%
    with pytest.raises(RunFailed, match="would delete 3 of 5 live rows") as info:
        run(deployment, full_refresh=True)
    assert info.value.terminal
    with ExchangeState() as state:
        failed = state.runs(SOURCE, limit=1)[0]
        assert failed.status is RunStatus.FAILED and "max_delete_fraction" in (failed.error or "")
        assert state.cursor(SOURCE) == first.cursor_after
        assert dataset(state, deployment).summary()["live"] == 5
    assert status_of(3) == "valid"


def test_rows_without_a_primary_key_are_quarantined(deployment: Deployment, registry: Path) -> None:
    change(
        registry,
        "INSERT INTO people VALUES (NULL, ?, '无编号', '2020-05-01', '2040-05-01', '0', "
        "'2026-11-01 09:00:00')",
        resident_id(99),
    )
    first = run(deployment)
    assert (first.rows_loaded, first.rows_quarantined) == (5, 1)
    with ExchangeState() as state:
        assert dataset(state, deployment).summary()["live"] == 5


def test_govx_datasets_lists_and_exports_as_of(
    deployment: Deployment, registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from exchange.cli import app

    use_config(deployment, tmp_path, monkeypatch)
    runner = CliRunner()
    synced = runner.invoke(app, ["sync", SOURCE])
    assert synced.exit_code == 0, synced.output
    time.sleep(0.01)
    between = dt.datetime.now(dt.UTC).isoformat()
    change(registry, "DELETE FROM people WHERE person_id = 5")
    assert runner.invoke(app, ["sync", SOURCE, "--full-refresh"]).exit_code == 0

    listed = runner.invoke(app, ["datasets", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    line = next(x for x in listed.output.splitlines() if x.strip().startswith(DATASET))
    assert line.split()[-4:] == ["4", "1", "6", "2"]  # live, deleted, versions, runs
    before = runner.invoke(app, ["datasets", "list", "--as-of", between], env={"COLUMNS": "200"})
    line = next(x for x in before.output.splitlines() if x.strip().startswith(DATASET))
    assert line.split()[-4:] == ["5", "0", "5", "1"]

    out = tmp_path / "then.parquet"
    exported = runner.invoke(
        app, ["datasets", "export", DATASET, "--out", str(out), "--as-of", between]
    )
    assert exported.exit_code == 0, exported.output
    assert sorted(pq.read_table(out).column("person_id").to_pylist()) == [1, 2, 3, 4, 5]
    assert resident_id(11) not in exported.output  # rows go to the file, not the terminal

    bad = runner.invoke(app, ["datasets", "list", "--as-of", "yesterday"])
    assert bad.exit_code != 0 and "--as-of: not an ISO date" in bad.output
    wrong = runner.invoke(app, ["datasets", "export", "nope", "--out", str(out)])
    assert wrong.exit_code != 0 and "unknown dataset 'nope'" in wrong.output


def with_status(deployment: Deployment, values: dict[str, str]) -> Deployment:
    """The deployment with the card's status read from ``deleted`` through ``values``."""
    data = deployment.model_dump()
    data["sources"][0]["licenses"][0].update(status="deleted", status_values=values)
    return Deployment.model_validate(data)


def test_replay_loads_held_rows_once_the_rule_is_fixed(
    deployment: Deployment, registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from exchange.cli import app
    from exchange.replay import held_batches, replay

    strict = with_status(deployment, {"0": "valid", "1": "revoked"})
    change(registry, "UPDATE people SET deleted = '2' WHERE person_id IN (2, 4)")  # 2: suspended
    first = run(strict)
    assert (first.rows_loaded, first.rows_quarantined) == (3, 2)
    # the department corrects person 4 itself; the normal sync takes the correction
    change(
        registry, "UPDATE people SET deleted = '0', updated_at = '2026-11-05' WHERE person_id = 4"
    )
    fixed = run(strict)
    assert fixed.rows_new == 1

    use_config(deployment, tmp_path, monkeypatch)
    listed = CliRunner().invoke(app, ["quarantine", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.output
    assert first.run_id in listed.output and "deleted: unknown status '2'" in listed.output

    # the exchange learns that '2' means suspended; replay the held rows
    lenient = with_status(deployment, {"0": "valid", "1": "revoked", "2": "suspended"})
    replayed = replay(SOURCE, context=SyncContext(deployment=lenient))
    assert replayed is not None and replayed.status is RunStatus.SUCCEEDED
    # person 4 has newer data since, so only person 2 is replayed
    assert (replayed.rows_read, replayed.rows_loaded, replayed.rows_quarantined) == (1, 1, 0)
    assert {"superseded_rows": 1} in replayed.source_report
    assert replayed.cursor_after == fixed.cursor_after  # the cursor did not move
    assert status_of(5) == "suspended" and status_of(9) == "valid"
    with ExchangeState() as state:
        assert dataset(state, lenient).summary()["live"] == 5
        [batch] = held_batches(state, SOURCE)
        assert batch.run_id == first.run_id and batch.replayed_by == replayed.run_id
    assert replay(SOURCE, context=SyncContext(deployment=lenient)) is None  # replayed once
    with pytest.raises(KeyError, match="no quarantine left to replay"):
        replay(SOURCE, run_ids=[first.run_id], context=SyncContext(deployment=lenient))


def test_quarantine_commands_print_reasons_not_personal_data(
    deployment: Deployment, registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from exchange.cli import app

    change(registry, "UPDATE people SET id_number = '110101198001010030' WHERE person_id = 1")
    use_config(deployment, tmp_path, monkeypatch)
    runner = CliRunner()
    synced = runner.invoke(app, ["sync", SOURCE])
    assert synced.exit_code == 0, synced.output
    with ExchangeState() as state:
        held_run = state.runs(SOURCE, limit=1)[0].run_id
    shown = runner.invoke(app, ["quarantine", "show", SOURCE, held_run], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "id_number: bad check character (1101**********0030)" in shown.output
    assert "110101198001010030" not in shown.output and "居民1" not in shown.output
    assert "1 rows held" in shown.output
    missing = runner.invoke(app, ["quarantine", "show", SOURCE, "no-such-run"])
    assert missing.exit_code != 0 and "held no rows" in missing.output
    nothing = runner.invoke(app, ["quarantine", "replay", SOURCE], env={"COLUMNS": "200"})
    assert nothing.exit_code == 0 and "replay run" in nothing.output
    assert "0 loaded, 1 held again" in nothing.output


def test_a_replay_is_never_held_whole_by_the_batch_threshold(
    deployment: Deployment, registry: Path
) -> None:
    from exchange.replay import replay

    with sqlite3.connect(registry) as conn:  # 25 residents whose IDs fail their check character
        conn.executemany(
            "INSERT INTO people VALUES (?, ?, ?, '2020-05-01', '2040-05-01', '0', ?)",
            [
                (n, resident_id(2 * n + 1)[:-1] + "0", f"居民{n}", f"2026-11-01 09:00:{n:02d}")
                for n in range(10, 35)
                if not resident_id(2 * n + 1).endswith("0")
            ],
        )
    first = run(deployment)  # this source tolerates any share of bad rows
    assert first.status is RunStatus.SUCCEEDED and first.rows_quarantined >= 20
    strict = deployment.model_dump()
    strict["sources"][0]["quality"] = {"max_bad_fraction": 0.1}
    strict = Deployment.model_validate(strict)
    with ExchangeState() as state:
        schema_before = state.accepted_schema(SOURCE)
    replayed = replay(SOURCE, context=SyncContext(deployment=strict))
    # every replayed row fails again: held again row by row, but the run commits
    assert replayed is not None and replayed.status is RunStatus.SUCCEEDED
    assert replayed.rows_quarantined == replayed.rows_read == first.rows_quarantined
    with ExchangeState() as state:
        assert state.accepted_schema(SOURCE) == schema_before  # a replay accepts no schema
        assert state.cursor(SOURCE) == first.cursor_after
