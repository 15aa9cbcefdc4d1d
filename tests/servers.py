"""Starting a real ``govx serve`` on a free loopback port for the tests that talk HTTP to it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest
import requests

REPO = Path(__file__).resolve().parents[1]
GOVX = str(Path(sys.executable).with_name("govx"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_govx_serve(
    env: dict[str, str], log: IO[str], log_path: Path, timeout_s: float = 60
) -> tuple[str, subprocess.Popen]:
    """Start ``govx serve`` logging to ``log`` and wait until ``/healthz`` answers.

    Returns the base URL and the process; fails the test with the server's log if it dies or
    does not come up within ``timeout_s``.
    """
    port = free_port()
    process = subprocess.Popen(
        [GOVX, "serve", "--port", str(port)],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                return base, process
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"server did not start: {log_path.read_text()}")
        time.sleep(0.2)
