"""The admin dashboard over HTTP (the real app, the synced demo deployment): pages, cards, the
quarantine browser's masking and paging, 404 pages, path traversal, the optional admin token."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from admin_demo import CLEAN_SOURCE, DIRTY_SOURCE, STALE_SOURCE, DemoDeployment
from fastapi.testclient import TestClient

from exchange.admin.access import COOKIE_NAME
from exchange.admin.quarantine import PAGE_SIZE
from exchange.state import ExchangeState
from license_store.api import create_app
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
