"""The admin dashboard over HTTP (the real app, the synced demo deployment): pages, cards, the
quarantine browser's masking and paging, 404 pages, path traversal, the optional admin token; the
replication card on a node of its own (a city that applied a county's packages, real stores)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from admin_demo import CLEAN_SOURCE, CONFIG, DIRTY_SOURCE, STALE_SOURCE, DemoDeployment
from fastapi.testclient import TestClient
from replication_nodes import CITY, COUNTY, backdate_outbox, city_with_backlog

from exchange.admin.access import COOKIE_NAME
from exchange.admin.quarantine import PAGE_SIZE
from exchange.config import load_deployment
from exchange.lag import ALERT_AGE_ENV, WARN_AGE_ENV, WARN_PACKAGES_ENV
from exchange.nodes import init_node
from exchange.state import ExchangeState
from license_store.api import create_app
from license_store.store import LicenseStore
from quality.gate import REASONS_COLUMN

RAW_ID = re.compile(r"(?<![0-9*])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
EXTERNAL = re.compile(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)


@pytest.fixture
def client(demo_env: DemoDeployment) -> TestClient:
    with TestClient(create_app()) as client:
        yield client


def row_of(html: str, source_id: str) -> str:
    row = re.search(rf'<tr data-source="{source_id}">(.*?)</tr>', html, re.S)
    assert row, f"no row for {source_id}"
    return row.group(1)


def card_of(html: str, source_id: str) -> str:
    return re.search(r'class="card card-(\w+)" data-card="\1"', row_of(html, source_id)).group(1)


def held_runs(source_id: str) -> list:
    with ExchangeState() as state:
        return [r for r in state.runs(source_id, limit=50) if r.quarantine_path]


def test_overview_shows_every_source_with_its_card(client: TestClient) -> None:
    response = client.get("/admin")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert '<html lang="zh-CN">' in html
    for source_id in (CLEAN_SOURCE, STALE_SOURCE, DIRTY_SOURCE):
        assert f'href="/admin/sources/{source_id}"' in html
    assert card_of(html, CLEAN_SOURCE) == "green"
    assert card_of(html, STALE_SOURCE) == "yellow"
    assert card_of(html, DIRTY_SOURCE) == "red"
    # each card says why: the stale source's freshness, the dirty source's pass rate
    assert '<li data-signal="freshness" data-card="yellow">' in row_of(html, STALE_SOURCE)
    assert '<li data-signal="quality" data-card="red">' in row_of(html, DIRTY_SOURCE)
    assert "<li " not in row_of(html, CLEAN_SOURCE)
    assert "1.7 天" in row_of(html, STALE_SOURCE)  # its freshness age (40 hours)
    assert client.get("/admin/").status_code == 200


def test_pages_load_nothing_from_the_network(client: TestClient) -> None:
    [first] = held_runs(CLEAN_SOURCE)
    for path in (
        "/admin",
        f"/admin/sources/{CLEAN_SOURCE}",
        "/admin/quarantine",
        f"/admin/quarantine/{CLEAN_SOURCE}/{first.run_id}",
        "/admin/data-docs/",
        "/admin/login",
    ):
        response = client.get(path)
        html = response.text
        assert not EXTERNAL.search(html), path
        assert "<script" not in html and "@import" not in html, path
        policy = response.headers["content-security-policy"]
        assert policy.startswith(("default-src 'none'", "default-src 'self'")), path
        assert "http" not in policy and "*" not in policy, path


def test_source_page_has_the_run_history_and_the_chart(client: TestClient) -> None:
    with ExchangeState() as state:
        runs = state.runs(CLEAN_SOURCE, limit=100)
    response = client.get(f"/admin/sources/{CLEAN_SOURCE}")
    assert response.status_code == 200
    html = response.text
    assert html.count('<rect class="bar"') == len(runs) == 2
    assert '<polyline class="pass-rate" points="' in html
    assert html.count('class="pass-rate-point"') == 2
    for run in runs:
        assert f'<tr data-run="{run.run_id}">' in html
    quarantined = next(r for r in runs if r.quarantine_path)
    assert f'href="/admin/quarantine/{CLEAN_SOURCE}/{quarantined.run_id}"' in html


def test_unknown_source_or_run_is_a_404_page(client: TestClient) -> None:
    [run] = held_runs(CLEAN_SOURCE)
    for path in (
        "/admin/sources/no_such_source",
        "/admin/quarantine/no_such_source/" + run.run_id,
        f"/admin/quarantine/{CLEAN_SOURCE}/20200101T000000000000Z-00000000",
        f"/admin/quarantine/{DIRTY_SOURCE}/{run.run_id}",  # a run of another source
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert 'data-code="not_found"' in response.text


def test_an_error_page_never_repeats_an_id(client: TestClient) -> None:
    [run] = held_runs(CLEAN_SOURCE)
    table = pq.read_table(run.quarantine_path)
    resident = table.column("id_number")[0].as_py()
    for path in (f"/admin/sources/{resident}", f"/admin/quarantine/{resident}/{resident}"):
        response = client.get(path)
        assert response.status_code == 404
        assert resident not in response.text and resident[:4] + "*" in response.text


def test_path_traversal_never_reaches_the_lake(client: TestClient) -> None:
    [run] = held_runs(CLEAN_SOURCE)
    for path in (
        f"/admin/quarantine/{CLEAN_SOURCE}/..%2F..%2F..%2Fexchange.db",
        f"/admin/quarantine/..%2Fquarantine%2F{CLEAN_SOURCE}/{run.run_id}",
        f"/admin/quarantine/{CLEAN_SOURCE}/{run.run_id}%2F..%2F..%2F..",
        "/admin/sources/..%2F..%2Fexchange.db",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert "SQLite format" not in response.text and "PAR1" not in response.text


def test_quarantine_list_counts_the_held_rows(client: TestClient) -> None:
    html = client.get("/admin/quarantine").text
    expected = held_runs(CLEAN_SOURCE) + held_runs(DIRTY_SOURCE)
    assert len(expected) == 3  # household: one run; business: both deliveries
    for run in expected:
        link = f'href="/admin/quarantine/{run.source_id}/{run.run_id}"'
        assert link in html
        row = re.search(rf"{re.escape(link)}.*?</tr>", html, re.S).group(0)
        held = pq.ParquetFile(run.quarantine_path).metadata.num_rows
        assert f'<td class="num">{held}</td>' in row


def test_held_rows_are_shown_masked_with_their_reasons(client: TestClient) -> None:
    [run] = held_runs(CLEAN_SOURCE)
    table = pq.read_table(run.quarantine_path)
    html = client.get(f"/admin/quarantine/{CLEAN_SOURCE}/{run.run_id}").text
    assert html.count("<tr>") == 1 + table.num_rows  # header + held rows
    assert not RAW_ID.search(html)
    for row in table.to_pylist():
        assert row["id_number"] not in html
        assert len(row["name"]) >= 2 and row["name"] not in html
        assert row["name"][0] + "*" in html
        assert row["address"] not in html
        assert str(row["birth_date"]) not in html
        for reason in row[REASONS_COLUMN]:
            assert reason[:30].replace("'", "&#39;") in html


def test_held_rows_page_through(client: TestClient) -> None:
    run = max(held_runs(DIRTY_SOURCE), key=lambda r: r.rows_quarantined)
    held = pq.ParquetFile(run.quarantine_path).metadata.num_rows
    assert PAGE_SIZE < held <= 2 * PAGE_SIZE
    base = f"/admin/quarantine/{DIRTY_SOURCE}/{run.run_id}"
    first = client.get(base).text
    second = client.get(f"{base}?page=2").text
    assert first.count("<tr>") == 1 + PAGE_SIZE
    assert second.count("<tr>") == 1 + held - PAGE_SIZE
    assert 'href="?page=2"' in first and 'href="?page=1"' in second
    assert client.get(f"{base}?page=99").text.count("<tr>") == second.count("<tr>")
    assert client.get(f"{base}?page=0").status_code == 422
    for html in (first, second):
        assert not RAW_ID.search(html)
        assert not re.search(r"(?<![0-9A-Za-z*])[0-9]{8}[0-9A-Z]{10}(?![0-9A-Za-z])", html)


def test_data_docs_missing_then_served_read_only(
    demo_env: DemoDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from exchange.admin.pages import data_docs_root

    home = tmp_path / "docs_home"
    monkeypatch.setenv("GOVX_HOME", str(home))
    with TestClient(create_app()) as client:
        missing = client.get("/admin/data-docs/")
        assert missing.status_code == 404 and "尚未生成" in missing.text
        root = data_docs_root()
        assert root == home / "quality" / "data_docs"
        (root / "validations").mkdir(parents=True)
        (root / "index.html").write_text(
            '<html><head><script src="https://cdn.example/x.js"></script></head>'
            "<body>expectation suites</body></html>"
        )
        (root / "validations" / "run.html").write_text("<html>one validation</html>")
        (home / "secret.txt").write_text("outside the docs")
        index = client.get("/admin/data-docs/")
        assert "expectation suites" in index.text
        # a renderer's CDN links are not followed: the browser may load from this server only
        policy = index.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "http" not in policy and "*" not in policy
        assert client.get("/admin/data-docs", follow_redirects=False).status_code == 307
        assert "one validation" in client.get("/admin/data-docs/validations/run.html").text
        assert "expectation suites" in client.get("/admin/data-docs/validations/../").text
        for path in (
            "/admin/data-docs/..%2F..%2Fsecret.txt",
            "/admin/data-docs/%2E%2E/%2E%2E/secret.txt",
            "/admin/data-docs/nothing.html",
        ):
            response = client.get(path)
            assert response.status_code == 404, path
            assert "outside the docs" not in response.text
        assert client.post("/admin/data-docs/index.html").status_code == 405


def test_state_not_migrated_is_a_clear_page(
    demo_env: DemoDeployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOVX_HOME", str(tmp_path / "empty_home"))
    with TestClient(create_app()) as client:
        response = client.get("/admin")
    assert response.status_code == 503
    assert "govx db upgrade" in response.text


def test_the_admin_token_guards_every_page(
    demo_env: DemoDeployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "s3cret-admin-token"
    monkeypatch.setenv("GOVX_ADMIN_TOKEN", token)
    with TestClient(create_app()) as client:
        for path in ("/admin", f"/admin/sources/{CLEAN_SOURCE}", "/admin/quarantine"):
            refused = client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert 'action="/admin/login"' in refused.text
        refused = client.get("/admin/data-docs/")
        assert refused.status_code == 401
        wrong = client.get("/admin", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        bearer = client.get("/admin", headers={"Authorization": f"Bearer {token}"})
        assert bearer.status_code == 200 and "data-card" in bearer.text

        failed = client.post("/admin/login", data={"token": "nope", "next": "/admin"})
        assert failed.status_code == 401 and COOKIE_NAME not in failed.headers.get("set-cookie", "")
        signed_in = client.post(
            "/admin/login",
            data={"token": token, "next": "/admin/quarantine"},
            follow_redirects=False,
        )
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/admin/quarantine"
        cookie = signed_in.headers["set-cookie"]
        assert token not in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
        assert client.get("/admin/quarantine").status_code == 200  # the cookie now
        elsewhere = client.post(
            "/admin/login",
            data={"token": token, "next": "//evil.example/"},
            follow_redirects=False,
        )
        assert elsewhere.headers["location"] == "/admin"
        assert client.get("/healthz").status_code == 200  # the intake API needs no admin token


def test_the_intake_api_is_unchanged(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(path.startswith("/admin") for path in paths)
    assert "/v1/holders/{holder_id}/licenses" in paths
    unknown = client.get("/no/such/page")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")


# -- the replication card -----------------------------------------------------------------------


def test_no_replication_card_outside_a_node(client: TestClient) -> None:
    assert 'id="replication"' not in client.get("/admin").text


@pytest.fixture
def node_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty deployment (migrated exchange state, no runs) in its own ``GOVX_HOME``."""
    home = tmp_path / "node_home"
    monkeypatch.setenv("GOVX_HOME", str(home))
    monkeypatch.setenv("GOVX_CONFIG", str(CONFIG))
    monkeypatch.delenv("GOVX_ADMIN_TOKEN", raising=False)
    for name in (WARN_PACKAGES_ENV, WARN_AGE_ENV, ALERT_AGE_ENV):
        monkeypatch.delenv(name, raising=False)
    with ExchangeState() as state:
        state.upgrade()
    return home


@pytest.fixture
def city_store(node_home: Path, tmp_path: Path) -> Iterator[tuple[LicenseStore, dict]]:
    """The city's store, with the county's packages applied and two of its own waiting."""
    with (
        LicenseStore(f"sqlite:///{tmp_path / 'county.db'}") as county,
        LicenseStore(f"sqlite:///{node_home / 'licenses.db'}") as city,
    ):
        county.upgrade()
        city.upgrade()
        yield city, city_with_backlog(county, city)


def replication_section(html: str) -> str:
    found = re.search(r'<section id="replication".*?</section>', html, re.S)
    assert found, "no replication card"
    return found.group(0)


def card_colour(section: str) -> str:
    return re.search(r'class="card card-(\w+)" data-card="\1"', section).group(1)


def test_a_city_node_shows_its_backlog_and_its_county(
    node_home: Path, city_store: tuple[LicenseStore, dict]
) -> None:
    city, expected = city_store
    init_node(node_home, load_deployment(CONFIG), CITY, parent_url="http://127.0.0.1:9/")
    backdate_outbox(city, dt.timedelta(hours=2))  # the province has been down for two hours
    with TestClient(create_app(city)) as client:
        html = client.get("/admin").text
    section = replication_section(html)
    assert card_colour(section) == "red"
    assert "佛山市 440600，上级节点 440000" in section
    assert (
        "2 packages (3 changes) waiting, the oldest for 2 h; red from 100 packages or 1 h"
        in section
    )
    outbox = re.search(r'<table id="outbox">.*?</table>', section, re.S).group(0)
    assert re.findall(r'<td class="num">(\d+)</td>', outbox) == ["2", "3"]
    assert "2.0 小时" in outbox
    child = re.search(rf'<tr data-child="{COUNTY}">(.*?)</tr>', section, re.S).group(1)
    assert "禅城区 440604" in child
    numbers = re.findall(r'<td class="num">(\d+)</td>', child)
    assert numbers == [str(expected["child_last_seq"]), "5"]  # its last package, versions in all
    assert "秒前" in child  # applied moments ago
    assert not RAW_ID.search(html)


def test_the_card_colour_follows_the_limits_from_the_environment(
    node_home: Path, city_store: tuple[LicenseStore, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    city, _ = city_store
    init_node(node_home, load_deployment(CONFIG), CITY, parent_url="http://127.0.0.1:9/")
    with TestClient(create_app(city)) as client:
        assert card_colour(replication_section(client.get("/admin").text)) == "green"
        monkeypatch.setenv(WARN_PACKAGES_ENV, "2")
        section = replication_section(client.get("/admin").text)
        assert card_colour(section) == "yellow"
        assert "yellow from 2 packages or 15 min" in section
        assert "黄牌：2 个包" in section
        monkeypatch.setenv(WARN_AGE_ENV, "soon")
        section = replication_section(client.get("/admin").text)
    assert card_colour(section) == "neutral"
    assert WARN_AGE_ENV in section and "&#39;soon&#39;" in section


def test_a_store_with_a_childs_packages_shows_the_card_without_node_json(
    city_store: tuple[LicenseStore, dict],
) -> None:
    city, _ = city_store
    with TestClient(create_app(city)) as client:
        section = replication_section(client.get("/admin").text)
    assert "本部署不是节点" in section
    assert f'<tr data-child="{COUNTY}">' in section


def test_a_node_whose_store_is_not_migrated_gets_a_grey_card(node_home: Path) -> None:
    init_node(node_home, load_deployment(CONFIG), COUNTY, parent_url="http://127.0.0.1:9/")
    with TestClient(create_app()) as client:  # opens $GOVX_HOME/licenses.db: empty
        response = client.get("/admin")
    assert response.status_code == 200
    section = replication_section(response.text)
    assert card_colour(section) == "neutral"
    assert "schema" in section and 'id="outbox"' not in section
