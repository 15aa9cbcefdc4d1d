"""Fixtures of the admin dashboard tests: the synced demo deployment (see :mod:`admin_demo`)."""

from __future__ import annotations

import pytest
from admin_demo import DemoDeployment, build_demo_deployment


@pytest.fixture(scope="session")
def demo_deployment(tmp_path_factory: pytest.TempPathFactory) -> DemoDeployment:
    """Built once per session (a few seconds)."""
    return build_demo_deployment(tmp_path_factory.mktemp("admin_demo"))


@pytest.fixture
def demo_env(demo_deployment: DemoDeployment, monkeypatch: pytest.MonkeyPatch) -> DemoDeployment:
    """The test's environment pointed at the synced demo deployment."""
    monkeypatch.setenv("GOVX_HOME", str(demo_deployment.home))
    monkeypatch.setenv("GOVX_CONFIG", str(demo_deployment.config))
    monkeypatch.delenv("GOVX_ADMIN_TOKEN", raising=False)
    return demo_deployment
