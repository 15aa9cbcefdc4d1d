"""The intake API as operators run it: JSON logs, and a restart no intake system notices.

A real ``govx serve --workers 2`` with ``GOVX_LOG_FORMAT=json`` on a SQLite store. Intake
systems keep reading a holder's licenses through :class:`LicenseClient` (keep-alive connections,
its retries turned off, so any refused, reset or failed request is a failure here) while the
supervisor gets SIGHUP and replaces both workers one at a time. Then SIGTERM, and every line the
server wrote must be a JSON object with its fields, the holder's ID masked in all of them.
(``tests/license_store/test_server.py`` restarts under a fresh connection per request.)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from stdnum.cn import ric

from exchange.standards.holder_ids import mask_id
from license_store.client import LicenseClient
from license_store.records import LicenseRecord
from license_store.store import LicenseStore
from tests.intake import NEWBORN_MATTER, add_client
from tests.servers import GOVX, REPO, free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT")

HOLDER = "44060420050101123" + ric.calc_check_digit("44060420050101123" + "0")
RAW_ID = re.compile(r"(?<![0-9*])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")
SERVING = re.compile(r"API worker (\d+) serving")
READERS = 4


def _records(log: Path) -> list[dict]:
    """Every line of the log parsed as JSON (fails on a line that is not)."""
    records = []
    for number, line in enumerate(log.read_text(encoding="utf-8").splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} of the server's output is not JSON: {line!r}")
    return records


def _serving(log: Path) -> list[int]:
    text = log.read_text(encoding="utf-8", errors="replace")
    return [int(pid) for pid in SERVING.findall(text)]


def _wait_for(condition, what: str, timeout_s: float = 90.0):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)
    return found


def _store_with_a_holder() -> tuple[str, str]:
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
                    number="440604000000002",
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
        return add_client(store, matters=[NEWBORN_MATTER], license_types=["household_register"])


def test_sighup_restarts_the_workers_while_intake_reads_and_every_log_line_is_json(
    tmp_path: Path,
) -> None:
    client_id, secret = _store_with_a_holder()
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "GOVX_LOG_FORMAT": "json", "GOVX_CONFIG": str(REPO / "config")}
    with log.open("wb") as out:
        server = subprocess.Popen(
            [GOVX, "serve", "--workers", "2", "--port", str(port)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    answered = [0] * READERS
    failures: list[str] = []
    stop = threading.Event()

    def read(index: int) -> None:
        with LicenseClient(base, client_id, secret, retries=0) as api:
            while not stop.is_set():
                try:
                    found = api.holder_licenses(HOLDER, matter=NEWBORN_MATTER, case_id="OPS-1")
                    assert found.count == 1
                    answered[index] += 1
                except Exception as error:  # every kind of failure counts
                    failures.append(f"{type(error).__name__}: {error}")

    try:
        first = _wait_for(lambda: len(_serving(log)) >= 2 and _serving(log), "two workers", 120)
        readers = [threading.Thread(target=read, args=(i,)) for i in range(READERS)]
        for reader in readers:
            reader.start()
        _wait_for(lambda: all(answered), "every reader's first answer")
        os.kill(server.pid, signal.SIGHUP)
        _wait_for(lambda: len(set(_serving(log)) - set(first)) >= 2, "two new workers", 120)
        at_switch = sum(answered)
        _wait_for(lambda: sum(answered) > at_switch + 10, "answers from the new workers")
        stop.set()
        for reader in readers:
            reader.join(timeout=30)
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
    finally:
        stop.set()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    assert failures == [], f"{len(failures)} of {sum(answered)} reads failed: {failures[:3]}"
    assert sum(answered) > 20

    records = _records(log)
    assert all({"ts", "level", "logger", "message", "pid"} <= r.keys() for r in records)
    assert all(dt.datetime.fromisoformat(r["ts"]).utcoffset() == dt.timedelta(0) for r in records)
    messages = [r["message"] for r in records]
    assert any("restarting the API workers one at a time" in m for m in messages)
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    lookups = [r for r in access if "/licenses" in r.get("path", "")]
    assert len(lookups) >= sum(answered) - 5  # a few may still be in a worker's buffer
    assert {r["method"] for r in lookups} == {"GET"} and {r["status"] for r in lookups} == {200}
    assert all(mask_id(HOLDER) in r["path"] for r in lookups)
    assert any(r["logger"] == "govexchange.api" for r in records)  # the workers' own lines
    text = log.read_text(encoding="utf-8")
    assert HOLDER not in text and not RAW_ID.findall(text)


def test_an_unknown_log_format_logs_as_text_and_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [GOVX, "--config", str(REPO / "config"), "db", "upgrade"],
        env={**os.environ, "GOVX_LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "GOVX_LOG_FORMAT='xml' is not one of text, json; logging as text" in result.stderr
