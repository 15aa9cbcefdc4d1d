"""``govx node init|status`` (:mod:`exchange.nodes`): a node's identity, key and outbox.

Real files under a temporary ``$GOVX_HOME`` (the suite's autouse fixture), the sample deployment,
real Ed25519 keys; the CLI through typer's runner.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from exchange.cli import app
from exchange.config import load_deployment
from exchange.nodes import NodeError, init_node, load_node, node_status
from exchange.packages import write_package
from exchange.settings import govx_home
from license_store.signing import KeyRing, key_id

CONFIG = Path(__file__).resolve().parents[2] / "config"
runner = CliRunner()


def test_a_county_node_knows_its_parent_and_signs_with_its_own_key(tmp_path: Path) -> None:
    node = init_node(
        tmp_path, load_deployment(CONFIG), "440604", parent_url="http://127.0.0.1:8001/"
    )
    expected = ("440604", "禅城区", "county", "440600")
    assert (node.region, node.name, node.level, node.parent) == expected
    assert node.parent_url == "http://127.0.0.1:8001"
    assert load_node(tmp_path) == node
    private = tmp_path / "keys" / "node-440604.ed25519.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert key_id(KeyRing(tmp_path / "keys").public_key("node-440604")) == node.key_id


def test_the_province_has_no_parent(tmp_path: Path) -> None:
    node = init_node(tmp_path, load_deployment(CONFIG), "440000")
    assert (node.level, node.parent, node.parent_url) == ("province", None, None)


@pytest.mark.parametrize(
    ("region", "parent_url", "message"),
    [
        ("4406", None, "six digits"),
        ("441900", "http://x", "not one of the deployment's"),
        ("440604", None, "give --parent-url"),
        ("440000", "http://x", "has no parent"),
        ("440600", "ftp://x", "http"),
    ],
)
def test_bad_requests_are_refused_and_write_nothing(
    tmp_path: Path, region: str, parent_url: str | None, message: str
) -> None:
    with pytest.raises(NodeError, match=message):
        init_node(tmp_path, load_deployment(CONFIG), region, parent_url=parent_url)
    assert not (tmp_path / "node.json").exists()


def test_a_node_cannot_change_region(tmp_path: Path) -> None:
    init_node(tmp_path, load_deployment(CONFIG), "440600", parent_url="http://127.0.0.1:8000")
    with pytest.raises(NodeError, match="already a node"):
        init_node(tmp_path, load_deployment(CONFIG), "440800", parent_url="http://127.0.0.1:8000")


@pytest.mark.parametrize("content", [b"{", b"\xff\xfe", b'{"region": "440604"}', b"[]"])
def test_a_broken_identity_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "node.json").write_bytes(content)
    with pytest.raises(NodeError, match="is not a node identity"):
        load_node(tmp_path)


def test_status_counts_the_packages_waiting_for_the_parent(tmp_path: Path) -> None:
    node = init_node(tmp_path, load_deployment(CONFIG), "440604", parent_url="http://p:1")
    assert node_status(tmp_path).pending == 0
    key = KeyRing(tmp_path / "keys").private_key(node.key_name)
    for seq in (1, 2):
        write_package(
            tmp_path / "outbox",
            sender="440604",
            receiver="440600",
            seq=seq,
            kind="licenses",
            table=pa.table({"n": [seq]}),
            key=key,
        )
    old = time.time() - 120
    os.utime(tmp_path / "outbox" / "440604-000000000001.json", (old, old))
    status = node_status(tmp_path)
    assert status.pending == 2
    assert status.oldest_age_s is not None and 115 <= status.oldest_age_s <= 600


def test_the_cli_inits_and_shows_the_node() -> None:
    result = runner.invoke(app, ["node", "status"])
    assert result.exit_code == 1
    assert "not a node yet" in result.stderr
    result = runner.invoke(
        app, ["node", "init", "--region", "440802", "--parent-url", "http://127.0.0.1:8002"]
    )
    assert result.exit_code == 0, result.output
    assert "node 440802 赤坎区 (county), parent 440800 at http://127.0.0.1:8002" in result.stdout
    result = runner.invoke(app, ["node", "status"])
    assert result.exit_code == 0, result.output
    assert "0 package(s) waiting" in result.stdout
    assert json.loads((govx_home() / "node.json").read_text())["region"] == "440802"
    result = runner.invoke(app, ["node", "init", "--region", "440803", "--parent-url", "http://x"])
    assert result.exit_code == 1
    assert "already a node" in result.stderr
