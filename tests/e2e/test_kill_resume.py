"""SIGKILL a real ``govx sync`` process at random points, resume, and compare with a clean run.

A run may die before landing, mid-landing, while merging, around its commit or while its
licenses are derived; started again, the curated dataset and the license store must end row for
row where a clean run ends: nothing lost, nothing duplicated, no version bumped by the crash.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exchange.config import load_deployment
from exchange.curated import CuratedDataset
from exchange.demo import connection_env, generate_department_systems
from exchange.state import ExchangeState

REPO = Path(__file__).resolve().parents[2]
GOVX = str(Path(sys.executable).with_name("govx"))
SOURCE = "gd_household_registry"
TRIALS = 10


def licenses(home: Path) -> list[tuple]:
    with sqlite3.connect(home / "licenses.db") as conn:
        return conn.execute(
            "SELECT type_code, holder_id, number, version, content_hash, license_id, status "
            "FROM licenses ORDER BY type_code, holder_id, number"
        ).fetchall()


def curated(home: Path) -> tuple[list[dict], dict[str, int]]:
    """The live curated rows (run ids aside: they differ between trials) and the counts."""
    sources = load_deployment(REPO / "config").sources
    with ExchangeState(f"sqlite:///{home / 'exchange.db'}") as state:
        dataset = CuratedDataset("household_registry", sources, state, lake=home / "lake")
        rows = dataset.rows().drop_columns(["_govx_run_id"]).to_pylist()
        return rows, dataset.summary()


def run_sync(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GOVX, "sync", SOURCE], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )


def resume(env: dict[str, str]) -> tuple[int, str]:
    """``govx sync`` again after the kill: the same command, run in this process (the killed
    one was a process of its own; the resume only has to start from what it left). Saves
    starting Python and importing Great Expectations ten times."""
    from typer.testing import CliRunner

    from exchange.cli import app

    result = CliRunner().invoke(app, ["sync", SOURCE], env=env)
    return result.exit_code, f"{result.output}{result.exception or ''}"


@pytest.fixture(scope="module")
def department_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("departments")
    systems = generate_department_systems(folder, persons=3000)
    return {**os.environ, "GOVX_CONFIG": str(REPO / "config"), **connection_env(systems)}


def test_killed_syncs_resume_to_the_clean_result(
    department_env: dict[str, str], tmp_path: Path
) -> None:
    clean_home = tmp_path / "clean"
    started = time.monotonic()
    clean = run_sync({**department_env, "GOVX_HOME": str(clean_home)})
    duration = time.monotonic() - started
    assert clean.returncode == 0, clean.stderr[-2000:]
    expected = licenses(clean_home)
    assert len(expected) > 5_000
    expected_rows, expected_counts = curated(clean_home)
    assert expected_counts["live"] == expected_counts["versions"] == len(expected_rows) > 2_500

    rng = random.Random(20161)
    killed = 0
    for trial in range(TRIALS):
        home = tmp_path / f"trial{trial}"
        env = {**department_env, "GOVX_HOME": str(home)}
        process = subprocess.Popen(
            [GOVX, "sync", SOURCE],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.3, duration))  # from start-up to the commit
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed += 1
        process.wait(timeout=60)
        code, said = resume(env)
        assert code == 0, said[-2000:]
        assert licenses(home) == expected, f"trial {trial}: licenses differ from the clean run"
        rows, counts = curated(home)
        assert counts["versions"] == expected_counts["versions"], f"trial {trial}: versions"
        assert rows == expected_rows, f"trial {trial}: curated rows differ from the clean run"
    assert killed >= TRIALS // 2, "most trials must really kill the sync mid-way"
