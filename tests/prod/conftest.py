"""The production profile test runs on request only: ``pytest -m prod`` (about four minutes).

It starts a dozen processes (Airflow, two Celery workers, an S3 endpoint, the intake API), so a
plain ``pytest`` skips it and says how to run it.
"""

from __future__ import annotations

import pytest

RUN_WITH = "pytest -m prod (starts the whole production profile, ~4 min; docs/deploy.md)"


def _selected(config: pytest.Config) -> bool:
    expression = (config.getoption("markexpr", default="") or "").replace("(", " ").split()
    return "prod" in expression and "not prod" not in " ".join(expression)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _selected(config):
        return
    for item in items:
        if item.get_closest_marker("prod"):
            item.add_marker(pytest.mark.skip(reason=f"runs on request: {RUN_WITH}"))
