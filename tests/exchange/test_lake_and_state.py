"""The lake's landing folders and the exchange state database (runs and cursors), on real files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from exchange.lake import LandingWriter, landed_batches, read_manifest, write_quarantine
from exchange.state import ExchangeState, RunNotLanded, RunStatus

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def batch(start: int, count: int) -> pa.RecordBatch:
    return pa.record_batch(
        [pa.array(range(start, start + count)), pa.array([f"张三{i}" for i in range(count)])],
        schema=SCHEMA,
    )


def test_landing_writes_parts_and_manifest(tmp_path: Path) -> None:
    writer = LandingWriter("src", "run1", SCHEMA, lake=tmp_path, rows_per_file=250)
    for start in range(0, 1000, 100):
        writer.write(batch(start, 100))
    manifest = writer.close(cursor_before=None, cursor_after="2026-11-28T00:00:00")
    folder = tmp_path / "landing" / "src" / "run1"
    assert manifest.rows == 1000
    assert len(manifest.files) == 4  # 300 + 300 + 300 + 100 rows
    assert read_manifest(folder) == manifest
    rows = [r for b in landed_batches(folder, batch_size=64) for r in b.to_pylist()]
    assert [r["id"] for r in rows] == list(range(1000))
    assert rows[5]["name"] == "张三5"
    assert not list((tmp_path / "landing" / "src").glob(".*.tmp"))


def test_empty_run_still_lands_a_schema(tmp_path: Path) -> None:
    manifest = LandingWriter("src", "run0", SCHEMA, lake=tmp_path).close(None, None)
    folder = tmp_path / "landing" / "src" / "run0"
    assert manifest.rows == 0 and len(manifest.files) == 1
    assert list(landed_batches(folder)) == [] or all(
        b.num_rows == 0 for b in landed_batches(folder)
    )


def test_aborted_landing_leaves_nothing(tmp_path: Path) -> None:
    writer = LandingWriter("src", "run2", SCHEMA, lake=tmp_path)
    writer.write(batch(0, 10))
    writer.abort()
    assert not (tmp_path / "landing" / "src" / "run2").exists()
    assert not list((tmp_path / "landing" / "src").iterdir())


def test_unfinished_landing_has_no_manifest(tmp_path: Path) -> None:
    writer = LandingWriter("src", "run3", SCHEMA, lake=tmp_path)
    writer.write(batch(0, 10))  # process "dies" here: never closed
    with pytest.raises(FileNotFoundError):
        read_manifest(tmp_path / "landing" / "src" / "run3")


def test_content_hash_changes_with_content(tmp_path: Path) -> None:
    first = LandingWriter("s", "a", SCHEMA, lake=tmp_path)
    first.write(batch(0, 10))
    second = LandingWriter("s", "b", SCHEMA, lake=tmp_path)
    second.write(batch(1, 10))
    assert first.close(None, 1).sha256 != second.close(None, 1).sha256


def test_quarantine_file(tmp_path: Path) -> None:
    table = pa.table({"id": [1], "_govx_reasons": [["id_number: bad check character (4406**)"]]})
    path = write_quarantine("src", "run1", table, lake=tmp_path)
    assert path == tmp_path / "quarantine" / "src" / "run1" / "rows.parquet"


def test_run_lifecycle_moves_cursor_only_on_success(tmp_path: Path) -> None:
    with ExchangeState(f"sqlite:///{tmp_path / 'state.db'}") as state:
        state.upgrade()
        state.upgrade()  # idempotent
        assert state.cursor("src") is None
        run_id = state.start_run("src", None, full_refresh=True)
        assert state.run(run_id).status is RunStatus.RUNNING
        state.mark_landed(run_id, 10, "2026-11-28T10:00:00", "/lake/x")
        landed = state.run(run_id)
        assert landed.status is RunStatus.LANDED and landed.rows_read == 10
        assert state.cursor("src") is None  # landing alone does not move the cursor
        done = state.finish_run(
            landed,
            rows_loaded=9,
            rows_quarantined=1,
            changes={"new": 9},
            curated_path="/lake/curated/d/src/r.parquet",
            quarantine_path="/lake/quarantine/src/r/rows.parquet",
        )
        assert done.status is RunStatus.SUCCEEDED
        assert (done.rows_new, done.rows_changed, done.rows_deleted) == (9, 0, 0)
        assert state.cursor("src") == "2026-11-28T10:00:00"
        # committing twice is refused: the second attempt finds the run no longer landed
        with pytest.raises(RunNotLanded):
            state.finish_run(
                landed,
                rows_loaded=9,
                rows_quarantined=1,
                changes={},
                curated_path=None,
                quarantine_path=None,
            )
        # its licenses are owed until published
        assert [r.run_id for r in state.pending_license_runs("src")] == [run_id]
        assert [r.run_id for r in state.committed_versions(["src"])] == [run_id]
        state.mark_licenses_published(run_id, inserted=9, updated=0, unchanged=0)
        assert state.pending_license_runs("src") == []
        assert state.run(run_id).licenses_published_at is not None

        failed = state.start_run("src", "2026-11-28T10:00:00", full_refresh=False)
        state.fail_run(failed, "SourceUnavailable: connection refused")
        assert state.cursor("src") == "2026-11-28T10:00:00"
        history = state.runs("src")
        assert [r.run_id for r in history] == [failed, run_id]
        assert history[0].status is RunStatus.FAILED and "refused" in (history[0].error or "")
        assert history[1].duration_s is not None and history[1].duration_s >= 0


@pytest.mark.postgres
def test_state_on_postgres(postgres_url: str) -> None:
    with ExchangeState(postgres_url) as state:
        state.upgrade()
        run_id = state.start_run("src", {"id": 5}, full_refresh=False)
        state.mark_landed(run_id, 3, {"id": 8}, "/lake/y")
        state.finish_run(
            state.run(run_id),
            rows_loaded=3,
            rows_quarantined=0,
            changes={"new": 3},
            curated_path=None,
            quarantine_path=None,
        )
        assert state.cursor("src") == {"id": 8}
