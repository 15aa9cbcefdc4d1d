"""Cross-region lookup (issue 6): county -> city -> province over real ``govx serve`` processes.

Three nodes on loopback ports, each with its own ``$GOVX_HOME``, SQLite store, clients, token and
audit keys: Chancheng county 440604, Foshan city 440600, Guangdong province 440000. Each child is
made a node and connected with ``govx node init`` and ``govx node connect`` (the CLI in-process,
checking the credentials against the running parent). Licenses live only in the province store,
except one at the county. The deployment is the sample one plus two test license types (one
``not_shared``, one ``unconditional``) and a matter listing them with two ``conditional`` ones.

The parent-down case, the CLI's edges and the parent client's errors run in-process against
closed ports and small stub servers.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import pytest
import requests
import yaml
from fastapi.testclient import TestClient
from stdnum.cn import ric
from typer.testing import CliRunner

from exchange.cli import app as govx
from exchange.config import LicenseType, load_deployment
from exchange.node_client import (
    ParentClient,
    ParentRefused,
    ParentUnavailable,
    credentials_file,
    load_parent_client,
    save_parent_credentials,
)
from exchange.nodes import NodeError, init_node
from license_store.api import create_app
from license_store.audit import AuditEntry, AuditLog, key_file
from license_store.clients import ApiClient, ClientRegistry
from license_store.forward import audit_client_id, crosses_boundary, relay_of
from license_store.records import LicenseRecord
from license_store.store import LicenseStore
from tests.intake import TEST_MATTER, add_client, api_deployment, headers, token
from tests.servers import free_port, start_govx_serve

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def resident(first17: str) -> str:
    return first17 + ric.calc_check_digit(first17 + "0")


HOLDER = resident("44060420050101123")  # licenses at the province only
LOCAL_HOLDER = resident("44060420040202004")  # a license at the county
NOBODY = resident("44060420060303005")  # no license anywhere
MATTER = "TEST-FWD-001"
INTAKE = "intake-chancheng"
TYPES = {  # id: (catalogue code, name, sharing)
    "household_register": ("11440000MB2000000Q002", "居民户口簿", "conditional"),
    "resident_id_card": ("11440000MB2000000Q001", "居民身份证", "conditional"),
    "fwd_secret": ("11440000MB2000000Q004", "测试不共享证照", "not_shared"),
    "fwd_open": ("11440000MB2000000Q005", "测试无条件共享证照", "unconditional"),
}


# -- the three nodes ----------------------------------------------------------------------------


@dataclass
class Node:
    region: str
    home: Path
    url: str = ""
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    log: IO[str] | None = field(default=None, repr=False)

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.home / 'licenses.db'}"

    def audit(self, holder_id: str, case: str | None = None) -> list[AuditEntry]:
        """The node's audit entries about the holder (for ``case``), newest first."""
        with AuditLog(self.db_url, key=key_file(self.home / "audit.key")) as trail:
            entries = trail.for_holder(holder_id)
        return [entry for entry in entries if case is None or entry.case_id == case]

    def log_text(self) -> str:
        assert self.log_path is not None
        return self.log_path.read_text(encoding="utf-8")


@dataclass
class Chain:
    county: Node
    city: Node
    province: Node
    secrets: dict[str, str]  # client id -> secret

    @property
    def nodes(self) -> tuple[Node, Node, Node]:
        return self.county, self.city, self.province

    def token(self, node: Node, client_id: str) -> str:
        response = requests.post(
            f"{node.url}/v1/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": self.secrets[client_id],
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return response.json()["access_token"]

    def lookup(
        self,
        holder_id: str,
        case: str,
        *,
        node: Node | None = None,
        client_id: str = INTAKE,
        extra: dict[str, str] | None = None,
    ) -> requests.Response:
        node = node or self.county
        return requests.get(
            f"{node.url}/v1/holders/{holder_id}/licenses",
            params={"matter": MATTER},
            headers={**headers(self.token(node, client_id), case), **(extra or {})},
            timeout=30,
        )

    def assert_logs_masked(self) -> None:
        for node in self.nodes:
            text = node.log_text()
            for raw in (HOLDER, LOCAL_HOLDER, NOBODY):
                assert raw not in text, f"a raw ID in the log of {node.region}"


def _config(target: Path) -> Path:
    """The sample deployment plus the test types and the matter listing the four."""
    shutil.copytree(REPO / "config", target)
    types_file = target / "license_types.yaml"
    types = yaml.safe_load(types_file.read_text(encoding="utf-8"))
    for type_id in ("fwd_secret", "fwd_open"):
        code, name, sharing = TYPES[type_id]
        types["license_types"].append(
            {
                "id": type_id,
                "code": code,
                "name": name,
                "holder_kind": "natural",
                "issuing_department": "gd_public_security",
                "sharing": sharing,
            }
        )
    types_file.write_text(yaml.safe_dump(types, allow_unicode=True), encoding="utf-8")
    matters_file = target / "matters.yaml"
    matters = yaml.safe_load(matters_file.read_text(encoding="utf-8"))
    matters["matters"].append(
        {
            "code": MATTER,
            "name": "测试跨级查询",
            "department": "gd_public_security",
            "materials": [{"name": TYPES[t][1], "license_type": t} for t in TYPES],
        }
    )
    matters_file.write_text(yaml.safe_dump(matters, allow_unicode=True), encoding="utf-8")
    load_deployment(target)  # valid
    return target


def _record(holder_id: str, type_id: str, number: str, region: str) -> LicenseRecord:
    code, name, _sharing = TYPES[type_id]
    return LicenseRecord(
        type_code=code,
        type_name=name,
        issuer_code="11440000MB2000000Q",
        issuer_name="广东省公安厅",
        region_code=region,
        holder_id=holder_id,
        holder_kind="natural",
        holder_name="陈小明",
        number=number,
        issue_date=dt.date(2020, 1, 20),
        valid_from=dt.date(2020, 1, 20),
        valid_to=None,
        status="valid",
        face={},
        source_id="test",
        run_id="r1",
    )


def _prepare(
    node: Node, records: list[LicenseRecord], clients: list[dict[str, Any]]
) -> dict[str, str]:
    """The node's store with ``records`` and ``clients``; their secrets."""
    node.home.mkdir(parents=True)
    with LicenseStore(node.db_url) as store:
        store.upgrade()
        if records:
            store.upsert(records)
    secrets = {}
    with ClientRegistry(node.db_url) as registry:
        for grants in clients:
            client, secret = registry.add(**grants)
            secrets[client.client_id] = secret
    return secrets


def _cli(node: Node, config: Path, args: list[str], stdin: str | None = None) -> str:
    result = runner.invoke(
        govx, args, input=stdin, env={"GOVX_HOME": str(node.home), "GOVX_CONFIG": str(config)}
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def _serve(node: Node, env: dict[str, str]) -> None:
    node.log_path = node.home.parent / f"{node.region}.log"
    node.log = node.log_path.open("w", encoding="utf-8")
    node.url, node.process = start_govx_serve(
        {**env, "GOVX_HOME": str(node.home)}, node.log, node.log_path
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("chain")
    config = _config(root / "config")
    # each node has its own stores and keys under its own home
    shared = ("GOVX_LICENSE_DB_URL", "GOVX_EXCHANGE_DB_URL", "GOVX_LAKE_DIR")
    keys = ("GOVX_AUDIT_KEY", "GOVX_TOKEN_KEY")
    env = {name: value for name, value in os.environ.items() if name not in shared + keys}
    env["GOVX_CONFIG"] = str(config)
    every_type = list(TYPES)
    province = Node("440000", root / "440000")
    city = Node("440600", root / "440600")
    county = Node("440604", root / "440604")
    secrets: dict[str, str] = {}
    try:
        secrets |= _prepare(
            province,
            [_record(HOLDER, type_id, f"P-{n:03d}", "440000") for n, type_id in enumerate(TYPES)],
            # granted the not_shared type too: the sharing type decides, not the grant
            [
                {
                    "name": "佛山市节点",
                    "kind": "node",
                    "client_id": "node-440600",
                    "region": "440600",
                    "license_types": ["household_register", "fwd_secret"],
                }
            ],
        )
        _cli(province, config, ["node", "init", "--region", "440000"])
        _serve(province, env)

        secrets |= _prepare(
            city,
            [],
            [
                {
                    "name": "禅城区节点",
                    "kind": "node",
                    "client_id": "node-440604",
                    "region": "440604",
                    "license_types": every_type,
                }
            ],
        )
        _cli(city, config, ["node", "init", "--region", "440600", "--parent-url", province.url])
        out = _cli(
            city, config, ["node", "connect", "--client-id", "node-440600"], secrets["node-440600"]
        )
        assert secrets["node-440600"] not in out
        _serve(city, env)

        secrets |= _prepare(
            county,
            [_record(LOCAL_HOLDER, "household_register", "C-001", "440604")],
            # the issuing department's own window: it could see the not_shared type locally
            [
                {
                    "name": "禅城区政务服务中心",
                    "client_id": INTAKE,
                    "department": "gd_public_security",
                    "matters": [MATTER],
                    "license_types": every_type,
                }
            ],
        )
        _cli(county, config, ["node", "init", "--region", "440604", "--parent-url", city.url])
        _cli(
            county,
            config,
            ["node", "connect", "--client-id", "node-440604"],
            secrets["node-440604"],
        )
        _serve(county, env)
        yield Chain(county, city, province, secrets)
    finally:
        for node in (county, city, province):
            if node.process is not None:
                node.process.terminate()
                node.process.wait(timeout=20)
            if node.log is not None:
                node.log.close()


# -- through the chain --------------------------------------------------------------------------


def _types(response: requests.Response) -> set[str]:
    return {item["type_code"] for item in response.json()["licenses"]}


def test_a_lookup_with_no_local_answer_is_answered_by_the_province(chain: Chain) -> None:
    # an intake system cannot claim to act for someone else: the header is ignored
    response = chain.lookup(
        HOLDER, "FWD-CASE-1", extra={"X-Govx-On-Behalf-Of": "440000/intake-forged"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["answered_by"] == "440000"
    assert response.headers["X-Govx-Answered-By"] == "440000"
    assert "X-Govx-Forward-Failed" not in response.headers
    assert body["holder"] == {"id": HOLDER[:4] + "*" * 10 + HOLDER[-4:], "kind": "natural"}
    assert body["count"] == 2
    household, open_type = TYPES["household_register"][0], TYPES["fwd_open"][0]
    assert _types(response) == {household, open_type}
    assert {item["number"] for item in body["licenses"]} == {"P-000", "P-003"}
    returned = sorted(item["license_id"] for item in body["licenses"])

    [at_county] = chain.county.audit(HOLDER, "FWD-CASE-1")
    [at_city] = chain.city.audit(HOLDER, "FWD-CASE-1")
    [at_province] = chain.province.audit(HOLDER, "FWD-CASE-1")
    original = f"440604/{INTAKE}"
    assert (at_county.client_id, at_county.action, at_county.result) == (
        INTAKE,
        "read",
        "forwarded",
    )
    assert (at_city.client_id, at_city.result) == (f"node-440604>{original}", "forwarded")
    assert (at_province.client_id, at_province.result) == (f"node-440600>{original}", "ok")
    for entry in (at_county, at_city, at_province):
        assert entry.matter == MATTER
        assert sorted(entry.license_ids) == returned
        assert entry.holder_masked == body["holder"]["id"]
    for node in chain.nodes:  # every trail still verifies with the new entries
        with AuditLog(node.db_url, key=key_file(node.home / "audit.key")) as trail:
            assert trail.verify().ok

    county_log = chain.county.log_text()
    assert "answered by 440000" in county_log
    assert f"by node-440600>{original}" in chain.province.log_text()
    chain.assert_logs_masked()


def test_a_not_shared_type_never_leaves_the_province(chain: Chain) -> None:
    response = chain.lookup(HOLDER, "FWD-CASE-2")
    assert response.status_code == 200
    secret = TYPES["fwd_secret"][0]
    assert secret not in _types(response)  # the county's window could see it locally
    [at_province] = chain.province.audit(HOLDER, "FWD-CASE-2")
    with LicenseStore(chain.province.db_url) as store:
        held = {item.type_code: item.license_id for item in store.licenses_for_holder(HOLDER)}
    assert held[secret] not in at_province.license_ids  # it did not leave the province
    chain.assert_logs_masked()


def test_a_conditional_type_not_granted_to_the_node_is_not_returned(chain: Chain) -> None:
    # the city's node client at the province is not granted resident_id_card; every other
    # client on the way is
    response = chain.lookup(HOLDER, "FWD-CASE-3")
    assert response.status_code == 200
    assert TYPES["resident_id_card"][0] not in _types(response)
    # an unconditional type crosses although node-440600 is not granted it
    assert TYPES["fwd_open"][0] in _types(response)


def test_a_local_answer_is_not_forwarded(chain: Chain) -> None:
    response = chain.lookup(LOCAL_HOLDER, "FWD-CASE-4")
    assert response.status_code == 200
    body = response.json()
    assert body["answered_by"] == "440604" == response.headers["X-Govx-Answered-By"]
    assert [item["number"] for item in body["licenses"]] == ["C-001"]
    [entry] = chain.county.audit(LOCAL_HOLDER, "FWD-CASE-4")
    assert (entry.client_id, entry.result) == (INTAKE, "ok")
    assert chain.city.audit(LOCAL_HOLDER) == []  # the parent was never asked
    assert chain.province.audit(LOCAL_HOLDER) == []


def test_nobody_has_it_the_province_says_so(chain: Chain) -> None:
    response = chain.lookup(NOBODY, "FWD-CASE-5")
    assert response.status_code == 200
    assert response.json()["licenses"] == []
    assert response.json()["answered_by"] == "440000"
    assert [e.result for e in chain.city.audit(NOBODY, "FWD-CASE-5")] == ["forwarded"]
    assert [e.result for e in chain.province.audit(NOBODY, "FWD-CASE-5")] == ["ok"]


def test_a_lookup_is_not_forwarded_beyond_the_hop_limit(chain: Chain) -> None:
    # the county's node client asks the city itself, as if forwarded three times already
    at_limit = chain.lookup(
        HOLDER, "FWD-CASE-6", node=chain.city, client_id="node-440604", extra={"X-Govx-Hops": "3"}
    )
    assert at_limit.status_code == 200
    assert at_limit.json()["licenses"] == [] and at_limit.json()["answered_by"] == "440600"
    assert at_limit.headers["X-Govx-Forward-Failed"] == "hop limit"
    assert chain.province.audit(HOLDER, "FWD-CASE-6") == []
    [entry] = chain.city.audit(HOLDER, "FWD-CASE-6")
    assert (entry.client_id, entry.result) == ("node-440604", "ok")

    below = chain.lookup(
        HOLDER, "FWD-CASE-7", node=chain.city, client_id="node-440604", extra={"X-Govx-Hops": "2"}
    )
    assert below.json()["answered_by"] == "440000"
    [entry] = chain.province.audit(HOLDER, "FWD-CASE-7")
    assert entry.client_id == "node-440600>440600/node-440604"

    bad = chain.lookup(
        HOLDER, "FWD-CASE-8", node=chain.city, client_id="node-440604", extra={"X-Govx-Hops": "x"}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "X-Govx-Hops"


def test_the_parent_client_caches_its_token_and_fetches_a_new_one_on_401(chain: Chain) -> None:
    client = ParentClient("440000", chain.province.url, "node-440600", chain.secrets["node-440600"])
    fetched = []
    fetch = client._fetch_token
    client._fetch_token = lambda: fetched.append(1) or fetch()  # type: ignore[method-assign]
    with client:
        for case in ("FWD-CASE-9", "FWD-CASE-10"):
            status, body = client.lookup(HOLDER, MATTER, case, "440600/ops-check")
            assert status == 200 and body["answered_by"] == "440000"
        assert len(fetched) == 1
        assert client._token is not None
        client._token = replace(client._token, value="not.a.token")  # as if the key rotated
        status, _body = client.lookup(HOLDER, MATTER, "FWD-CASE-11", "440600/ops-check")
        assert status == 200 and len(fetched) == 2
        response = client.request("GET", "/v1/catalog/license-types")
        assert response.status_code == 200 and len(fetched) == 2
    assert "***" in repr(client) and chain.secrets["node-440600"] not in repr(client)


# -- the parent is down -------------------------------------------------------------------------


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[LicenseStore]:
    with LicenseStore(f"sqlite:///{tmp_path / 'licenses.db'}") as store:
        store.upgrade()
        yield store


@pytest.fixture
def lonely_county(
    isolated_govx_home: Path, sqlite_store: LicenseStore
) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    """A county node (API in-process) whose parent's port has nothing listening."""
    deployment = api_deployment()
    parent_url = f"http://127.0.0.1:{free_port()}"
    init_node(isolated_govx_home, deployment, "440604", parent_url=parent_url)
    save_parent_credentials(isolated_govx_home, "node-440604", "never-used-secret")
    client_id, secret = add_client(sqlite_store)
    with TestClient(create_app(sqlite_store, deployment)) as api:
        yield api, headers(token(api, client_id, secret), "FWD-DOWN-1"), parent_url


def test_parent_down_the_client_gets_the_local_answer_and_why(
    lonely_county: tuple[TestClient, dict[str, str], str],
    sqlite_store: LicenseStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    api, read_headers, parent_url = lonely_county
    started = time.monotonic()
    response = api.get(
        f"/v1/holders/{HOLDER}/licenses", params={"matter": TEST_MATTER}, headers=read_headers
    )
    assert time.monotonic() - started < 5
    assert response.status_code == 200
    assert response.json()["licenses"] == [] and response.json()["count"] == 0
    assert response.json()["answered_by"] == "440604"
    assert response.headers["X-Govx-Answered-By"] == "440604"
    assert response.headers["X-Govx-Forward-Failed"] == "parent unreachable"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(parent_url in text and "cannot connect" in text for text in warnings), warnings
    assert HOLDER not in caplog.text
    with AuditLog(store_url(sqlite_store)) as trail:
        [entry] = trail.for_holder(HOLDER)
    assert (entry.action, entry.result, entry.case_id) == ("read", "error", "FWD-DOWN-1")


def store_url(store: LicenseStore) -> str:
    return store._engine.url.render_as_string(hide_password=False)


# -- the parent client's errors ------------------------------------------------------------------


class _Stub(http.server.BaseHTTPRequestHandler):
    """A parent that hands out tokens, then answers lookups with 503 or not at all."""

    mode = "503"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self._send(200, {"access_token": "t", "token_type": "Bearer", "expires_in": 600})

    def do_GET(self) -> None:
        if self.mode == "slow":
            time.sleep(1.5)
        self._send(503, {"code": "store_unavailable"})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.mark.parametrize("mode", ["503", "slow"])
def test_the_parent_client_names_the_parent_never_the_holder(mode: str) -> None:
    handler = type("Stub", (_Stub,), {"mode": mode})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        client = ParentClient("440600", url, "node-440604", "s3cret-value")
        with client, pytest.raises(ParentUnavailable) as raised:
            client.lookup(HOLDER, MATTER, "C-1", "440604/x", timeout=(1, 0.3))
    finally:
        server.shutdown()
        server.server_close()
    message = str(raised.value)
    assert url in message and "440600" in message
    assert ("answered 503" if mode == "503" else "no answer in time") in message
    assert HOLDER not in message and HOLDER[:6] + "20" not in message
    assert raised.value.transient


def test_the_parent_client_says_when_its_credentials_are_refused(chain: Chain) -> None:
    client = ParentClient("440000", chain.province.url, "node-440600", "wrong-secret")
    with client, pytest.raises(ParentRefused, match="refused client 'node-440600': 401"):
        client.lookup(HOLDER, MATTER, "FWD-CASE-12", "440600/ops-check")
    assert chain.province.audit(HOLDER, "FWD-CASE-12") == []


# -- govx node connect --------------------------------------------------------------------------


def test_connect_stores_the_credentials_privately(isolated_govx_home: Path, tmp_path: Path) -> None:
    home = isolated_govx_home
    assert load_parent_client(home) is None  # not a node
    result = runner.invoke(govx, ["node", "connect", "--client-id", "node-440604"], input="x\n")
    assert result.exit_code == 1 and "not a node yet" in result.stderr

    result = runner.invoke(
        govx, ["node", "init", "--region", "440604", "--parent-url", "http://p:1"]
    )
    assert result.exit_code == 0, result.output
    assert load_parent_client(home) is None  # no credentials yet
    result = runner.invoke(
        govx, ["node", "connect", "--client-id", "node-440604", "--no-check"], input="s3cret-A\n"
    )
    assert result.exit_code == 0, result.output
    assert "s3cret-A" not in result.output and "not checked with parent 440600" in result.stdout
    path = credentials_file(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["client_secret"] == "s3cret-A"

    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret-B\n")
    secret = str(secret_file)
    result = runner.invoke(
        govx,
        ["node", "connect", "--client-id", "node-440604", "--no-check", "--secret-file", secret],
    )
    assert result.exit_code == 0, result.output
    client = load_parent_client(home)
    assert client is not None and (client.parent, client.client_id) == ("440600", "node-440604")
    assert client.base_url == "http://p:1" and "s3cret-B" not in repr(client)
    client.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "client node-440604 at the parent" in runner.invoke(govx, ["node", "status"]).stdout


def test_connect_checks_the_credentials_with_the_parent_first(isolated_govx_home: Path) -> None:
    port = free_port()
    runner.invoke(
        govx, ["node", "init", "--region", "440600", "--parent-url", f"http://127.0.0.1:{port}"]
    )
    result = runner.invoke(govx, ["node", "connect", "--client-id", "node-440600"], input="s3c\n")
    assert result.exit_code == 1
    assert f"parent 440000 at http://127.0.0.1:{port}: cannot connect" in result.stderr
    assert "nothing saved" in result.stderr and "s3c" not in result.output.replace("s3c\n", "")
    assert not credentials_file(isolated_govx_home).exists()


def test_the_province_has_no_parent_to_connect_to(isolated_govx_home: Path) -> None:
    init_node(isolated_govx_home, load_deployment(REPO / "config"), "440000")
    result = runner.invoke(govx, ["node", "connect", "--client-id", "x-node"], input="s\n")
    assert result.exit_code == 1 and "has no parent" in result.stderr
    with pytest.raises(NodeError, match="has no parent"):
        save_parent_credentials(isolated_govx_home, "node-440000", "s")
    assert load_parent_client(isolated_govx_home) is None


# -- the boundary rule and the relay headers ------------------------------------------------------


def _node_client(license_types: tuple[str, ...], kind: str = "node") -> ApiClient:
    now = dt.datetime.now(dt.UTC)
    return ApiClient(
        "node-440604",
        "n",
        kind,
        None,
        "440604",
        (),
        license_types,
        ("licenses:read",),
        None,
        now,
        now,
        None,
    )


@pytest.mark.parametrize(
    ("sharing", "granted", "crosses"),
    [
        ("not_shared", True, False),
        ("conditional", False, False),
        ("conditional", True, True),
        ("unconditional", False, True),
    ],
)
def test_the_sharing_type_decides_what_crosses_a_boundary(
    sharing: str, granted: bool, crosses: bool
) -> None:
    license_type = LicenseType(
        id="fwd_type",
        code="11440000MB2000000Q009",
        name="t",
        holder_kind="natural",
        issuing_department="gd_public_security",
        sharing=sharing,
    )
    assert crosses_boundary(license_type, _node_client(("fwd_type",) if granted else ())) is crosses


def test_only_node_clients_relay_and_the_audit_id_fits_its_column() -> None:
    from license_store.security import Caller

    forged = {"x-govx-on-behalf-of": "440000/intake-x", "x-govx-hops": "1"}
    intake = Caller(_node_client((), kind="intake"), None)  # type: ignore[arg-type]
    assert relay_of(intake, forged) is None
    node = Caller(_node_client(()), None)  # type: ignore[arg-type]
    relay = relay_of(node, forged)
    assert relay is not None and (relay.on_behalf_of, relay.hops) == ("440000/intake-x", 1)
    assert audit_client_id("node-440604", relay) == "node-440604>440000/intake-x"
    long = relay_of(node, {"x-govx-on-behalf-of": "440604/" + "a" * 64})
    cut = audit_client_id("n" * 64, long)
    assert len(cut) == 64 and cut != audit_client_id("n" * 63 + "m", long)
