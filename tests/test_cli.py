"""The ``govx`` command line, run in process with typer's runner against real stores."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exchange.cli import app
from exchange.state import ExchangeState, RunStatus

REPO = Path(__file__).resolve().parents[1]
GOVX = str(Path(sys.executable).with_name("govx"))
RAW_ID = re.compile(r"(?<![0-9*])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
runner = CliRunner(env={"COLUMNS": "200"})


def govx(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--config", str(REPO / "config"), *args])
    return result.exit_code, result.output


def test_help_lists_every_command() -> None:
    code, output = govx("--help")
    assert code == 0
    for command in ("demo", "sync", "licenses", "serve", "config", "runs", "db"):
        assert command in output


def test_every_command_is_documented() -> None:
    docs = (REPO / "README.md").read_text(encoding="utf-8") + "".join(
        p.read_text(encoding="utf-8") for p in (REPO / "docs").glob("*.md")
    )
    for command in app.registered_commands:
        name = command.name or command.callback.__name__
        assert f"govx {name}" in docs, f"`govx {name}` is not documented"
    for group in app.registered_groups:
        for command in group.typer_instance.registered_commands:
            name = command.name or command.callback.__name__
            assert f"govx {group.name} {name}" in docs, (
                f"`govx {group.name} {name}` is not documented"
            )


def test_config_check_passes_on_the_sample() -> None:
    code, output = govx("config", "check")
    assert code == 0, output
    assert "configuration is valid" in output


def test_config_check_reports_file_and_path(tmp_path: Path) -> None:
    broken = tmp_path / "config"
    shutil.copytree(REPO / "config", broken)
    text = (broken / "sources.yaml").read_text(encoding="utf-8")
    (broken / "sources.yaml").write_text(
        text.replace("cursor: updated_at", "cursor: [1, 2]", 1), encoding="utf-8"
    )
    result = runner.invoke(app, ["--config", str(broken), "config", "check"])
    assert result.exit_code == 1
    assert "sources.yaml: sources[0].cursor" in result.output


def test_invalid_holder_id_is_refused_masked() -> None:
    code, output = govx("licenses", "110105194912310021", "--case", "T-1")  # X is valid
    assert code == 1
    assert "bad check character" in output
    assert "110105194912310021" not in output


def test_unknown_source() -> None:
    code, output = govx("sync", "nope")
    assert code == 1 and "unknown source 'nope'" in output


def test_demo_without_airflow_shows_the_sample_applicant(isolated_govx_home: Path) -> None:
    code, output = govx("demo", "--no-airflow", "--persons", "400")
    assert code == 0, output
    assert "intake lookup: prefill 新生儿入户登记" in output and "-> 200" in output
    for name in ("居民身份证", "居民户口簿", "结婚证", "出生医学证明"):
        assert name in output
    # the intake case over HTTP through LicenseClient: every certificate from the library, one
    # verified offline, and the holder's access log shows the window's reads
    assert "proofs eliminated: 4 of 4 certificates" in output, output
    assert "signature valid; a tampered copy -> rejected" in output, output
    assert re.search(r"新生儿入户窗口\s+prefill\s+新生儿入户登记\s+case FS-CC-2026-000001", output)
    assert re.search(
        r"birth-certificate API of the health department: http://127\.0\.0\.1:\d+", output
    )
    assert not RAW_ID.search(output), "an unmasked ID reached the terminal"
    assert re.search(r"chancheng_birth_certificates\s+red\s+failures: 1 failed", output), output
    assert re.search(r"gd_business_registry\s+yellow\s+quality: pass rate", output), output
    # the two departments' webhooks point at the demo's alert inbox: one alert per card change
    assert re.search(r"alert to 广东省市场监督管理局 \(webhook\): \S+ new -> yellow", output)
    assert re.search(r"alert to 佛山市禅城区卫生健康局 \(webhook\): \S+ new -> red", output), output
    # the last step: five nodes on loopback ports; a Chikan mother found from Chancheng
    assert "five-node exchange on loopback ports" in output
    for node, parent in (("440604", "440600"), ("440802", "440800"), ("440800", "440000")):
        assert f"govx exchange push at {node}: 2 packages delivered to {parent}" in output
    assert re.search(
        r"curated datasets received at 440000: .*chikan_birth_certificates 200 rows "
        r"\(from 440802\)",
        output,
    ), output
    assert re.search(r"440000 广东省\s+http://127\.0\.0\.1:\d+\s+-\s+\d", output), output
    assert re.search(r"440802 赤坎区\s+\S+\s+440800\s+577\s+200", output), output
    assert re.search(
        r"新生儿入户登记 for 4408\*{10}[0-9X]{4} \(born in 赤坎区, case ZJ-CK-2026-000001\) "
        r"-> 200, answered_by 440000 广东省",
        output,
    ), output
    assert (
        "forwarded: 440604 禅城区 (forwarded) -> 440600 佛山市 (forwarded) -> 440000 广东省 (ok)"
        in output
    )
    assert re.search(
        r"出生医学证明 1\.2\.156\.3005\.2\.11440000MB2028233R001\.11440802MB2025096E\.\S+ v1 "
        r"\(valid\), issued by 湛江市赤坎区卫生健康局",
        output,
    ), output
    assert "新生儿疾病筛查报告 (not_shared): 200 at 440802 赤坎区, 0 at the other nodes" in output
    assert re.search(r"five-node exchange done in \d+ s \(nodes stopped", output)
    code, output = govx("runs")
    assert code == 0 and re.search(r"gd_household_registry\s+\S+\s+ok\s+full", output), output
    with ExchangeState() as state:  # every kind of source: a full run, then an incremental one
        for source in (
            "gd_household_registry",
            "chancheng_birth_certificates",
            "nanhai_real_estate",
        ):
            incremental, full = state.runs(source)
            assert full.status is RunStatus.SUCCEEDED, source
            assert full.cursor_before is None and incremental.cursor_before is not None, source
            if source == "chancheng_birth_certificates":  # its API refused the key in round two
                assert incremental.status is RunStatus.FAILED and "HTTP 401" in incremental.error
            else:
                assert incremental.status is RunStatus.SUCCEEDED, source
    env = (isolated_govx_home / ".env").read_text(encoding="utf-8")
    assert "AIRFLOW_CONN_GD_BUSINESS_DROP='file:///" in env
    assert "AIRFLOW_CONN_CHANCHENG_BIRTH_API='http://127.0.0.1:" in env

    simulator = subprocess.Popen(  # serves the demo's birth records again, for `govx sync`
        [GOVX, "demo-simulator", "--port", "0"],
        env={**os.environ, "COLUMNS": "200"},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = simulator.stdout.readline()
        assert re.match(r"serving http://127\.0\.0\.1:\d+/api/v1/birth-certificates", line), (
            line + simulator.stderr.read()
        )
        url = line.split()[1].removesuffix("/api/v1/birth-certificates")
        env = (isolated_govx_home / ".env").read_text(encoding="utf-8")
        assert f"AIRFLOW_CONN_CHANCHENG_BIRTH_API='{url}'" in env
        os.environ.pop("AIRFLOW_CONN_CHANCHENG_BIRTH_API")  # the demo's own API is gone
        code, output = govx("sync", "chancheng_birth_certificates")
        assert code == 0, output
        with ExchangeState() as state:
            [latest, *_] = state.runs("chancheng_birth_certificates")
        assert latest.status is RunStatus.SUCCEEDED and latest.rows_read >= 1  # at the watermark
    finally:
        simulator.send_signal(signal.SIGINT)
        assert simulator.wait(timeout=10) == 0


@pytest.mark.postgres
def test_db_upgrade_brings_both_postgresql_databases_to_head(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The production profile's ``govx db upgrade``: the exchange state and the license store
    on PostgreSQL (one database here, each with its own version table), both at the code's head,
    and again without a change."""
    from sqlalchemy import create_engine

    from exchange.migrations import MIGRATIONS
    from license_store.migrations import current_revision, head_revision

    monkeypatch.setenv("GOVX_EXCHANGE_DB_URL", postgres_url)
    monkeypatch.setenv("GOVX_LICENSE_DB_URL", postgres_url)
    engine = create_engine(postgres_url)
    try:
        assert MIGRATIONS.current_revision(engine) is None
        assert current_revision(postgres_url) is None
        for _ in range(2):  # the second run finds both current
            code, output = govx("db", "upgrade")
            assert code == 0, output
            assert MIGRATIONS.current_revision(engine) == MIGRATIONS.head_revision()
            assert current_revision(postgres_url) == head_revision()
            assert output.count("current") == 2 and "postgresql" in output, output
    finally:
        engine.dispose()


@pytest.mark.parametrize("args", [("db", "upgrade"), ("runs",)])
def test_admin_commands_on_an_empty_home(args: tuple[str, ...]) -> None:
    code, output = govx(*args)
    assert code == 0, output
