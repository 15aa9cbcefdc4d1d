"""``govx serve``: the intake API as a real uvicorn server on a loopback port."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from stdnum.cn import ric

from license_store.records import LicenseRecord
from license_store.store import LicenseStore
from tests.servers import GOVX, start_govx_serve

REPO = Path(__file__).resolve().parents[1]
HOLDER = "44060420050101123" + ric.calc_check_digit("44060420050101123" + "0")
NEWBORN_MATTER = "11440600MB20125487-XSE-001"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen, dict[str, str]]]:
    home = Path(os.environ["GOVX_HOME"])
    with LicenseStore() as store:
        store.upgrade()
        store.upsert(
            [
                LicenseRecord(
                    type_code="11440000MB2000000Q002",
                    type_name="居民户口簿",
                    issuer_code="11440000MB2000000Q",
                    issuer_name="广东省公安厅",
                    region_code="440000",
                    holder_id=HOLDER,
                    holder_kind="natural",
                    holder_name="陈小明",
                    number="440604000000001",
                    issue_date=dt.date(2005, 1, 20),
                    valid_from=dt.date(2005, 1, 20),
                    valid_to=None,
                    status="valid",
                    face={"relation": "子女"},
                    source_id="test",
                    run_id="r1",
                )
            ]
        )
    added = subprocess.run(
        [GOVX, "clients", "add", "禅城区政务服务中心", "--matter", NEWBORN_MATTER, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    client = json.loads(added.stdout)
    log = (tmp_path / "server.log").open("w")
    base, process = start_govx_serve(
        {**os.environ, "GOVX_HOME": str(home)}, log, tmp_path / "server.log"
    )
    token = requests.post(
        f"{base}/v1/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client["client_id"],
            "client_secret": client["client_secret"],
        },
        timeout=10,
    )
    assert token.status_code == 200, token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}", "X-Case-Id": "C-1"}
    yield base, process, headers
    process.terminate()
    process.wait(timeout=20)
    log.close()


def test_lookup_over_http_and_the_access_log_is_masked(
    server: tuple[str, subprocess.Popen, dict[str, str]], tmp_path: Path
) -> None:
    base, process, headers = server
    read = {"params": {"matter": NEWBORN_MATTER}, "headers": headers, "timeout": 10}
    assert requests.get(f"{base}/v1/holders/{HOLDER}/licenses", timeout=10).status_code == 401
    response = requests.get(f"{base}/v1/holders/{HOLDER}/licenses", **read)
    assert response.status_code == 200
    [licence] = response.json()["licenses"]
    assert licence["type_name"] == "居民户口簿" and licence["number"] == "440604000000001"

    unknown = "11010519491231002X"
    empty = requests.get(f"{base}/v1/holders/{unknown}/licenses", **read)
    assert empty.status_code == 200 and empty.json()["licenses"] == []

    bad = requests.get(f"{base}/v1/holders/{HOLDER[:-1]}0/licenses", **read)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert HOLDER[:-1] not in bad.text

    assert requests.get(f"{base}/openapi.json", timeout=10).json()["paths"]
    process.terminate()
    process.wait(timeout=20)
    log = (tmp_path / "server.log").read_text()
    assert "GET /v1/holders/4406**********" in log  # the access log line is there, masked
    assert HOLDER not in log and unknown not in log
