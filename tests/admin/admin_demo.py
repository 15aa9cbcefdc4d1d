"""The demo deployment of the admin dashboard tests: five sample systems, synced twice.

The sample systems at a small size, the business registry made dirty by its department (a third
of the first delivery's credit codes and every code of the second delivery get a wrong check
character, so its newest run has a failing pass rate: red card), two real syncs of every source
with a day of changes between them (so each source page has a chart with two runs), and then the
marriage registry made stale by moving its runs 40 hours into the past (its dataset is updated
daily: overdue after 48 hours, yellow from 80% of that).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from pytest import MonkeyPatch

from exchange.config import Deployment, load_deployment
from exchange.db import begin_write
from exchange.demo import (
    DemoSystem,
    connection_env,
    generate_department_systems,
    simulate_changes,
    start_department_api,
)
from exchange.demo.deliveries import DROP_ENCODING
from exchange.state import ExchangeState, sync_runs
from exchange.sync import RunFailed, SyncContext, sync

CONFIG = Path(__file__).resolve().parents[2] / "config"
PERSONS = 1500
STALE_SOURCE = "foshan_marriage_registry"
DIRTY_SOURCE = "gd_business_registry"
CLEAN_SOURCE = "gd_household_registry"  # four dirty rows of 1,500: a green card
STALE_BY = dt.timedelta(hours=40)


@dataclass(frozen=True)
class DemoDeployment:
    """Where the synced demo lives."""

    home: Path
    config: Path
    systems: tuple[DemoSystem, ...]


def break_credit_codes(path: Path, every: int) -> int:
    """Give every ``every``-th row of a business CSV delivery a wrong check character."""
    text = path.read_bytes().decode(DROP_ENCODING)
    rows = list(csv.reader(io.StringIO(text)))
    column = rows[0].index("credit_code")
    broken = 0
    for index, row in enumerate(rows[1:]):
        if index % every == 0:
            code = row[column]
            row[column] = code[:-1] + ("0" if code[-1] != "0" else "1")
            broken += 1
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    path.write_bytes(buffer.getvalue().encode(DROP_ENCODING))
    return broken


def _drop_files(system: DemoSystem) -> set[Path]:
    assert system.drop_dir is not None
    return set(system.drop_dir.glob("*.csv"))


def backdate_runs(source_id: str, by: dt.timedelta) -> None:
    """Move every recorded time of a source's runs ``by`` into the past."""
    columns = ("started_at", "landed_at", "finished_at", "licenses_published_at")
    with ExchangeState() as state, begin_write(state.engine) as conn:
        rows = conn.execute(
            sa.select(sync_runs.c.run_id, *(sync_runs.c[name] for name in columns)).where(
                sync_runs.c.source_id == source_id
            )
        ).all()
        for row in rows:
            values = {name: row._mapping[name] - by for name in columns if row._mapping[name]}
            conn.execute(
                sync_runs.update().where(sync_runs.c.run_id == row.run_id).values(**values)
            )


def sync_every_source(deployment: Deployment, context: SyncContext) -> None:
    """One ``govx sync`` of each source; the quality gate may hold the dirty source's batch."""
    for source in deployment.sources:
        try:
            sync(source.id, context=context)
        except RunFailed:
            if source.id != DIRTY_SOURCE:
                raise


def build_demo_deployment(root: Path) -> DemoDeployment:
    """Generate, dirty, sync twice and backdate the demo deployment under ``root``."""
    home = root / "govx_home"
    systems = generate_department_systems(root / "departments", persons=PERSONS)
    business = next(s for s in systems if s.source_id == DIRTY_SOURCE)
    [first_delivery] = _drop_files(business)
    assert break_credit_codes(first_delivery, every=3) > 0
    deployment = load_deployment(CONFIG)
    with MonkeyPatch.context() as env, start_department_api(systems) as api:
        env.setenv("GOVX_HOME", str(home))
        env.setenv("GOVX_CONFIG", str(CONFIG))
        for name in ("GOVX_LICENSE_DB_URL", "GOVX_EXCHANGE_DB_URL", "GOVX_LAKE_DIR"):
            env.delenv(name, raising=False)
        for key, value in connection_env(systems, api_url=api.url).items():
            env.setenv(key, value)
        context = SyncContext(deployment=deployment)
        sync_every_source(deployment, context)
        simulate_changes(systems)
        [second_delivery] = _drop_files(business) - {first_delivery}
        assert break_credit_codes(second_delivery, every=1) > 0
        sync_every_source(deployment, context)
        backdate_runs(STALE_SOURCE, STALE_BY)
    return DemoDeployment(home=home, config=CONFIG, systems=tuple(systems))
