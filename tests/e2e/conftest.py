"""Fixtures for end-to-end runs: sample department systems wired to the sync pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.config import Deployment, load_deployment
from exchange.demo import DemoSystem, connection_env, generate_department_systems

CONFIG = Path(__file__).resolve().parents[2] / "config"
PERSONS = 1500  # small enough for seconds, large enough for every kind of row


@pytest.fixture(scope="session")
def deployment() -> Deployment:
    return load_deployment(CONFIG)


@pytest.fixture
def demo_systems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[DemoSystem]:
    """The five sample department systems as SQLite files, their connections in the environment."""
    systems = generate_department_systems(tmp_path / "departments", persons=PERSONS)
    for key, value in connection_env(systems).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GOVX_CONFIG", str(CONFIG))
    return systems
