"""Fixtures for end-to-end runs: sample department systems wired to the sync pipeline."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.config import Deployment, load_deployment
from exchange.demo import (
    DemoSystem,
    connection_env,
    generate_department_systems,
    start_department_api,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"
PERSONS = 1500  # small enough for seconds, large enough for every kind of row


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    return load_deployment(CONFIG)


@pytest.fixture
def demo_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[DemoSystem]]:
    """The five sample department systems, their connections in the environment: household and
    marriages in SQLite files, births behind the department's REST API on a loopback port (served
    for the test's duration), business licenses and real estate in drop folders."""
    systems = generate_department_systems(tmp_path / "departments", persons=PERSONS)
    with start_department_api(systems) as api:
        for key, value in connection_env(systems, api_url=api.url).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("GOVX_CONFIG", str(CONFIG))
        yield systems
