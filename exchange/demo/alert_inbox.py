"""The demo's alert inbox: a loopback webhook that collects the card-change alerts it receives.

The sample deployment points the webhooks of two departments (market regulation, Chancheng health)
at ``http://127.0.0.1:8766/govx/alerts``; ``govx demo`` listens there while it checks the cards, so
the alerts a real department system would receive are shown at the end of the demo. Outside the
demo nothing listens: the monitor logs the failed delivery and retries it on its next check.
"""

from __future__ import annotations

import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["DEMO_ALERT_PORT", "AlertInbox"]

DEMO_ALERT_PORT = 8766
PATH = "/govx/alerts"
MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if self.path != PATH or not 0 < length <= MAX_BODY:
            self.send_error(HTTPStatus.NOT_FOUND if self.path != PATH else HTTPStatus.BAD_REQUEST)
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(HTTPStatus.BAD_REQUEST, "not JSON")
            return
        with self.server.lock:
            self.server.received.append(payload)
        self.send_response(HTTPStatus.NO_CONTENT)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.lock = threading.Lock()
        self.received: list[dict] = []


class AlertInbox:
    """Listen on ``host:port`` (``port=0``: any free port) until the ``with`` block ends.

    Raises ``OSError`` when the port is taken.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = DEMO_ALERT_PORT) -> None:
        self._server = _Server((host, port))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{PATH}"

    @property
    def received(self) -> list[dict]:
        """The JSON bodies received so far, in arrival order."""
        with self._server.lock:
            return list(self._server.received)

    def __enter__(self) -> AlertInbox:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
        self._server.server_close()
