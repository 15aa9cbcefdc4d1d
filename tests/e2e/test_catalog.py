"""The resource catalogue: configured datasets with the fields their data really has."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from exchange.catalog import build_catalog
from exchange.cli import app
from exchange.config import Deployment
from exchange.demo import DemoSystem
from exchange.state import ExchangeState
from exchange.sync import SyncContext, sync


def test_catalog_lists_every_dataset_and_the_synced_fields(
    deployment: Deployment, demo_systems: list[DemoSystem]
) -> None:
    sync("gd_business_registry", context=SyncContext(deployment=deployment))
    with ExchangeState() as state:
        entries = {e.id: e for e in build_catalog(deployment, state)}
    assert set(entries) == {s.dataset for s in deployment.sources}
    business = entries["business_registry"]
    assert business.sharing == "unconditional" and business.owner == "广东省市场监督管理局"
    assert business.sources == ["gd_business_registry"]
    names = [f["name"] for f in business.fields]
    assert {"credit_code", "name", "legal_rep", "updated_at"} <= set(names)
    assert entries["household_registry"].fields == []  # not synced yet

    result = CliRunner().invoke(app, ["catalog", "--json"])
    assert result.exit_code == 0, result.output
    listed = {e["id"]: e for e in json.loads(result.output)}
    assert listed["business_registry"]["fields"] == business.fields
    text = CliRunner(env={"COLUMNS": "120"}).invoke(app, ["catalog", "--fields"]).output
    assert "business_registry  商事主体登记信息  无条件共享" in text
    assert "credit_code string" in text
