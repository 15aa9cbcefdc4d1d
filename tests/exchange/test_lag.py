"""The replication lag rule (:mod:`exchange.lag`) and its gauges at ``GET /metrics``.

The rule on hand-made backlogs (thresholds, summaries, limits from the environment, unusable
values); the gauges on real stores: a city that applied a county's packages and has its own
packages waiting for the province (SQLite, and PostgreSQL for the city), a fresh store, a store
whose exchange tables are missing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exchange.lag import (
    ALERT_AGE_ENV,
    ALERT_PACKAGES_ENV,
    WARN_AGE_ENV,
    WARN_PACKAGES_ENV,
    LagLimits,
    LagLimitsError,
    assess,
)
from license_store import LicenseStore
from license_store import migrations as store_migrations
from license_store.metrics import exchange_gauges
from license_store.replication import Backlog
from tests.admin.replication_nodes import COUNTY, backdate_outbox, city_with_backlog
from tests.intake import intake_client

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 28, 10, 0, tzinfo=dt.UTC)
ENV_VARS = (WARN_PACKAGES_ENV, WARN_AGE_ENV, ALERT_PACKAGES_ENV, ALERT_AGE_ENV)


def waiting(packages: int, rows: int = 0, age_s: float = 0.0, delivered_s: float | None = None):
    oldest = NOW - dt.timedelta(seconds=age_s) if packages else None
    delivered = NOW - dt.timedelta(seconds=delivered_s) if delivered_s is not None else None
    return Backlog(packages, rows, oldest, delivered)


# -- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packages", "age_s", "level"),
    [
        (0, 0, "green"),
        (1, 10, "green"),
        (9, 899, "green"),
        (10, 1, "yellow"),  # yellow at 10 packages
        (1, 900, "yellow"),  # or 15 min
        (99, 3599, "yellow"),
        (100, 0, "red"),  # red at 100 packages
        (1, 3600, "red"),  # or an hour
    ],
)
def test_the_default_limits(packages: int, age_s: float, level: str) -> None:
    verdict = assess(waiting(packages, packages, age_s), LagLimits(), NOW)
    assert verdict.level == level
    assert verdict.rank == {"green": 0, "yellow": 1, "red": 2}[level]


def test_the_summary_says_what_waits_and_which_limit_it_crossed() -> None:
    limits = LagLimits()
    yellow = assess(waiting(3, 1204, 17 * 60), limits, NOW)
    assert yellow.summary == (
        "3 packages (1,204 changes) waiting, the oldest for 17 min; "
        "yellow from 10 packages or 15 min"
    )
    red = assess(waiting(120, 2_400_000, 2 * 3600 + 600), limits, NOW)
    assert red.summary == (
        "120 packages (2,400,000 changes) waiting, the oldest for 2 h 10 min; "
        "red from 100 packages or 1 h"
    )
    one = assess(waiting(1, 1, 42), limits, NOW)
    assert (one.level, one.summary) == (
        "green",
        "1 package (1 change) waiting, the oldest for 42 s",
    )
    assert assess(waiting(0), limits, NOW).summary == "nothing waiting"
    delivered = assess(waiting(0, delivered_s=300), limits, NOW)
    assert delivered.summary == "nothing waiting; last delivery 5 min ago"
    just_planned = Backlog(1, 5, dt.datetime.now(dt.UTC), None)
    assert assess(just_planned, limits).level == "green"  # now defaults to the clock


def test_limits_come_from_the_environment() -> None:
    assert LagLimits.from_env({}) == LagLimits(10, 900.0, 100, 3600.0)
    assert LagLimits.from_env({WARN_PACKAGES_ENV: " ", ALERT_AGE_ENV: ""}) == LagLimits()
    env = {
        WARN_PACKAGES_ENV: "2",
        WARN_AGE_ENV: "60",
        ALERT_PACKAGES_ENV: "5",
        ALERT_AGE_ENV: "90.5",
    }
    limits = LagLimits.from_env(env)
    assert limits == LagLimits(2, 60.0, 5, 90.5)
    assert assess(waiting(2, 2, 1), limits, NOW).level == "yellow"
    assert assess(waiting(1, 1, 91), limits, NOW).summary.endswith("red from 5 packages or 1 min")


def test_limits_are_read_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    assert LagLimits.from_env() == LagLimits()
    monkeypatch.setenv(ALERT_PACKAGES_ENV, "1000")
    assert LagLimits.from_env().alert_packages == 1000


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        (WARN_PACKAGES_ENV, "ten", "whole number"),
        (WARN_PACKAGES_ENV, "1.5", "whole number"),
        (ALERT_PACKAGES_ENV, "0", "at least 1"),
        (WARN_AGE_ENV, "15m", "number of seconds"),
        (WARN_AGE_ENV, "nan", "above 0"),
        (ALERT_AGE_ENV, "-5", "above 0"),
        (ALERT_AGE_ENV, "inf", "above 0"),
    ],
)
def test_an_unusable_value_names_its_variable(name: str, value: str, says: str) -> None:
    with pytest.raises(LagLimitsError, match=says) as raised:
        LagLimits.from_env({name: value})
    assert str(raised.value).startswith(name) and repr(value.strip()) in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_a_yellow_limit_above_the_red_one_is_refused() -> None:
    with pytest.raises(LagLimitsError) as raised:
        LagLimits.from_env({WARN_PACKAGES_ENV: "200"})
    assert WARN_PACKAGES_ENV in str(raised.value) and ALERT_PACKAGES_ENV in str(raised.value)
    with pytest.raises(LagLimitsError, match=WARN_AGE_ENV):
        LagLimits.from_env({ALERT_AGE_ENV: "600"})  # below the default yellow 900 s
    with pytest.raises(LagLimitsError, match="yellow limit is above"):
        LagLimits(warn_packages=5, alert_packages=4)
    with pytest.raises(LagLimitsError, match="warn_age_s"):
        LagLimits(warn_age_s=0)


# -- the gauges at /metrics -------------------------------------------------------------------


def scrape(store: LicenseStore) -> tuple[str, dict[str, list]]:
    """``GET /metrics`` of the API on ``store``: the text and the samples by metric name."""
    with intake_client(store) as (client, headers):
        response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return response.text, samples


def value(samples: dict[str, list], name: str) -> float:
    [sample] = samples[name]
    return sample.value


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def city(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LicenseStore]:
    """The city's store (SQLite, then PostgreSQL), migrated."""
    url = f"sqlite:///{tmp_path / 'city.db'}"
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
    with LicenseStore(url) as store:
        store.upgrade()
        yield store


@pytest.fixture
def county(tmp_path: Path) -> Iterator[LicenseStore]:
    with LicenseStore(f"sqlite:///{tmp_path / 'county.db'}") as store:
        store.upgrade()
        yield store


def test_metrics_show_the_outbox_backlog_the_inbox_and_the_lag_level(
    county: LicenseStore, city: LicenseStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = city_with_backlog(county, city)
    backdate_outbox(city, dt.timedelta(minutes=20))
    text, samples = scrape(city)
    assert value(samples, "govx_exchange_outbox_packages") == expected["waiting"] == 2
    assert value(samples, "govx_exchange_outbox_rows") == expected["waiting_rows"] == 3
    assert 20 * 60 <= value(samples, "govx_exchange_outbox_oldest_age_seconds") < 30 * 60
    [last_seq] = samples["govx_exchange_inbox_last_seq"]
    assert (last_seq.labels, last_seq.value) == ({"sender": COUNTY}, expected["child_last_seq"])
    [applied] = samples["govx_exchange_inbox_last_applied_age_seconds"]
    assert applied.labels == {"sender": COUNTY} and 0 <= applied.value < 120
    assert value(samples, "govx_exchange_lag_level") == 1  # yellow: waiting 20 min
    for holder_id in expected["holder_ids"]:
        assert holder_id not in text

    monkeypatch.setenv(ALERT_AGE_ENV, "1000")
    assert value(scrape(city)[1], "govx_exchange_lag_level") == 2


def test_metrics_of_a_store_that_replicates_nothing(tmp_path: Path) -> None:
    with LicenseStore(f"sqlite:///{tmp_path / 'alone.db'}") as store:
        store.upgrade()
        _, samples = scrape(store)
    assert value(samples, "govx_exchange_outbox_packages") == 0
    assert value(samples, "govx_exchange_outbox_oldest_age_seconds") == 0
    assert value(samples, "govx_exchange_lag_level") == 0
    assert "govx_exchange_inbox_last_seq" not in samples  # no child has sent anything


def test_metrics_render_without_the_gauges_when_the_exchange_tables_are_missing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    store_migrations.upgrade(url, "0004")  # before the exchange tables
    with LicenseStore(url) as store:
        text, samples = scrape(store)
    assert "govx_http_requests_total" in samples
    assert "govx_exchange" not in text


def test_unusable_limits_leave_out_only_the_lag_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(WARN_AGE_ENV, "soon")
    with LicenseStore(f"sqlite:///{tmp_path / 'alone.db'}") as store:
        store.upgrade()
        with caplog.at_level(logging.WARNING, logger="govexchange.metrics"):
            _, samples = scrape(store)
    assert "govx_exchange_outbox_packages" in samples
    assert "govx_exchange_lag_level" not in samples
    assert WARN_AGE_ENV in caplog.text


def test_the_limits_and_the_gauges_are_documented(tmp_path: Path) -> None:
    monitoring = (REPO / "docs" / "monitoring.md").read_text(encoding="utf-8")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ENV_VARS:
        assert f"`{name}`" in monitoring and f"`{name}`" in readme, name
    with LicenseStore(f"sqlite:///{tmp_path / 'alone.db'}") as store:
        store.upgrade()
        names = [family.name for family in exchange_gauges(store)]
    assert len(names) == 6
    for name in names:
        assert f"`{name}`" in monitoring, f"{name} is not in docs/monitoring.md"
