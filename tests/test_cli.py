"""The ``govx`` command line, run in process with typer's runner against real stores."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exchange.cli import app

REPO = Path(__file__).resolve().parents[1]
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
    code, output = govx("licenses", "110105194912310021")  # the valid check character is X
    assert code == 1
    assert "bad check character" in output
    assert "110105194912310021" not in output


def test_unknown_source() -> None:
    code, output = govx("sync", "nope")
    assert code == 1 and "unknown source 'nope'" in output


def test_demo_without_airflow_shows_the_sample_applicant() -> None:
    code, output = govx("demo", "--no-airflow", "--persons", "400")
    assert code == 0, output
    assert "intake lookup" in output and "-> 200" in output
    for name in ("居民身份证", "居民户口簿", "结婚证", "出生医学证明"):
        assert name in output
    assert not RAW_ID.search(output), "an unmasked ID reached the terminal"
    code, output = govx("runs")
    assert code == 0 and re.search(r"gd_household_registry\s+\S+\s+ok\s+full", output), output


@pytest.mark.parametrize("args", [("db", "upgrade"), ("runs",)])
def test_admin_commands_on_an_empty_home(args: tuple[str, ...]) -> None:
    code, output = govx(*args)
    assert code == 0, output
