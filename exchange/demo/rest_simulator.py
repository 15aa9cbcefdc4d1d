"""A department REST API on a loopback port, with faults on demand, for the tests and the demo.

:func:`start_simulator` serves a list of records (by default the demo's birth medical
certificates, :func:`demo_birth_records`) or whatever a function returns on each request (a
department database that changes meanwhile) from a real HTTP server in a thread — stdlib
``ThreadingHTTPServer``, so it starts in milliseconds — and returns a :class:`Simulator`
(a context manager) with ``.url``, the log of received ``.requests`` and ``.set_faults()``.

``GET {path}`` (default ``/api/v1/birth-certificates``) answers
``{"data": {"items": [...]}, "meta": {"total": N, "offset": O, "next_cursor": "..."}}`` (or the
bare list with ``envelope=False``) and a ``Link: <...>; rel="next"`` header while rows remain.
It pages by whichever parameters a request carries: ``page`` + ``page_size`` (from 1),
``offset`` + ``limit``, ``cursor`` (the opaque ``meta.next_cursor``, with ``limit``), or none (every
record, or ``default_page_size`` rows). ``updated_since`` (an ISO-8601 instant) keeps the records
whose ``updated_at`` is at or after it, as the ``sql`` connector reads at the watermark.

Authentication (``auth=``): ``"basic"`` (``username``/``password``), ``"api_key"`` (``api_key``
in the ``api_key_header`` header) or ``"oauth2"``: ``POST /oauth/token`` with
``grant_type=client_credentials`` and the client id and secret in HTTP basic (or the form)
issues bearer tokens valid ``token_ttl`` seconds; :meth:`Simulator.revoke_tokens` invalidates
them.

Faults (:class:`Faults`, given to :func:`start_simulator` or :meth:`Simulator.set_faults`) apply
to the data endpoint: the next N requests answer 429 with ``Retry-After``, 500/503, 401, wait
longer than a client's timeout, or reset the connection; page K can be served truncated (always);
after K pages the server's page size can change. ``govx demo-simulator`` serves the demo's
birth-records database this way; ``python -m exchange.demo.rest_simulator --port 8765`` serves a
freshly generated in-memory copy.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import dataclasses
import datetime as dt
import decimal
import json
import logging
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

__all__ = [
    "DEFAULT_PATH",
    "Faults",
    "RecordedRequest",
    "Simulator",
    "demo_birth_records",
    "start_simulator",
]

Records = Iterable[Mapping[str, Any]] | Callable[[], Iterable[Mapping[str, Any]]]
"""Records to serve: a fixed collection, or a function read again on every data request."""

log = logging.getLogger(__name__)

DEFAULT_PATH = "/api/v1/birth-certificates"
TOKEN_PATH = "/oauth/token"
AuthScheme = Literal["basic", "api_key", "oauth2"]


@dataclass
class Faults:
    """What goes wrong on the data endpoint; counters count down as the faults are served."""

    rate_limited: int = 0
    """The next N requests answer 429 with ``Retry-After: retry_after``."""
    retry_after: str = "1"
    """Seconds, or an HTTP date (``email.utils.format_datetime(..., usegmt=True)``)."""
    server_errors: int = 0
    """The next N requests answer ``server_error_status``."""
    server_error_status: int = 503
    slow: int = 0
    """The next N requests wait ``slow_seconds`` before they are answered."""
    slow_seconds: float = 0.0
    resets: int = 0
    """The next N requests get a TCP reset instead of an answer."""
    unauthorized: int = 0
    """The next N requests answer 401 whatever their credentials."""
    truncate_page: int | None = None
    """Page K (from 1, counted in the page size asked for) is cut in half, every time."""
    page_size_change: tuple[int, int] | None = None
    """``(K, S)``: once K pages have been served (counted from when the fault was set), every
    page holds S rows whatever the request asks for, as after a server's configuration change:
    page N then starts at row ``(N - 1) * S``."""


@dataclass
class RecordedRequest:
    """One request the simulator received (``at`` is ``time.monotonic()`` on arrival)."""

    at: float
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str] = field(repr=False)
    status: int | None = None
    """The status answered; ``None`` for a reset connection."""


class Simulator:
    """A running department API; use :func:`start_simulator` to make one."""

    def __init__(
        self,
        records: Records,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = DEFAULT_PATH,
        auth: AuthScheme | None = None,
        username: str = "dept",
        password: str = "s3cret-pw",
        api_key: str = "k-123456",
        api_key_header: str = "X-API-Key",
        client_id: str = "govx-client",
        client_secret: str = "client-s3cret",
        token_ttl: float = 3600.0,
        envelope: bool = True,
        default_page_size: int | None = None,
        updated_field: str = "updated_at",
        updated_param: str = "updated_since",
        faults: Faults | None = None,
    ) -> None:
        if auth not in (None, "basic", "api_key", "oauth2"):
            raise ValueError(f"auth must be None, 'basic', 'api_key' or 'oauth2', not {auth!r}")
        self.path = path
        self.auth = auth
        self.username = username
        self.password = password
        self.api_key = api_key
        self.api_key_header = api_key_header
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.envelope = envelope
        self.default_page_size = default_page_size
        self.updated_field = updated_field
        self.updated_param = updated_param
        self.faults = faults or Faults()
        self._pages_served = 0  # since the faults were last set
        self._read: Callable[[], Iterable[Mapping[str, Any]]] | None = None
        self._records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._tokens: dict[str, float] = {}
        self.tokens_issued = 0
        self._server = _Server((host, port), _Handler)
        self._server.simulator = self
        self._thread: threading.Thread | None = None
        self.set_records(records)

    # -- life cycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, without credentials."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Simulator:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"rest-simulator-{self._server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (requests still being answered are abandoned)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests and the demo use ----------------------------------------------------------

    def connection_url(
        self, username: str | None = None, password: str | None = None, **settings: str
    ) -> str:
        """A connection URL for this API, e.g. ``http://dept:pw@127.0.0.1:PORT?auth=basic``."""
        userinfo = ""
        if username is not None or password is not None:
            userinfo = quote(username or "", safe="")
            if password is not None:
                userinfo += ":" + quote(password, safe="")
            userinfo += "@"
        query = f"?{urlencode(settings)}" if settings else ""
        return self.url.replace("http://", f"http://{userinfo}", 1) + query

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def data_requests(self) -> list[RecordedRequest]:
        """The requests to the data endpoint."""
        return [r for r in self.requests if r.path == self.path]

    def set_faults(self, **changes: Any) -> None:
        """Change some fault settings (the names of :class:`Faults`); the rest stay."""
        known = {f.name for f in dataclasses.fields(Faults)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown fault(s) {unknown}; known: {sorted(known)}")
        with self._lock:
            self.faults = dataclasses.replace(self.faults, **changes)
            self._pages_served = 0

    def clear_faults(self) -> None:
        with self._lock:
            self.faults = Faults()
            self._pages_served = 0

    def set_records(self, records: Records) -> None:
        """Replace the records served (a department's data changed), or the function read."""
        if callable(records):
            with self._lock:
                self._read, self._records = records, []
            return
        converted = [_jsonable(record) for record in records]
        with self._lock:
            self._read, self._records = None, converted

    def revoke_tokens(self) -> None:
        """Invalidate every OAuth2 token issued so far (clients get 401 and must fetch anew)."""
        with self._lock:
            self._tokens.clear()

    # -- serving --------------------------------------------------------------------------------

    def _handle(self, handler: _Handler, method: str) -> None:
        arrived = time.monotonic()
        target = urlsplit(handler.path)
        params = dict(parse_qsl(target.query, keep_blank_values=True))
        logged = RecordedRequest(arrived, method, target.path, params, dict(handler.headers))
        with self._lock:
            self._requests.append(logged)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        if method == "POST" and target.path == TOKEN_PATH:
            status, payload, headers = self._token(handler, body)
        elif method == "GET" and target.path == self.path:
            fault = self._take_fault()
            if fault == "resets":
                _reset(handler)
                return
            if fault == "slow":  # then answered normally, if the client still listens
                time.sleep(self.faults.slow_seconds)
                fault = None
            status, payload, headers = self._data(handler, params, fault)
        else:
            status, payload, headers = 404, _json_bytes({"error": "not found"}), {}
        logged.status = status
        _answer(handler, status, payload, headers)

    def _take_fault(self) -> str | None:
        """The counted fault this request gets, if any (one per request, in this order)."""
        with self._lock:
            for name in ("resets", "slow", "rate_limited", "server_errors", "unauthorized"):
                if getattr(self.faults, name):
                    setattr(self.faults, name, getattr(self.faults, name) - 1)
                    return name
        return None

    def _data(
        self, handler: _Handler, params: dict[str, str], fault: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        faults = self.faults
        if fault == "rate_limited":
            return (
                429,
                _json_bytes({"error": "too many requests"}),
                {"Retry-After": faults.retry_after},
            )
        if fault == "server_errors":
            return faults.server_error_status, _json_bytes({"error": "server error"}), {}
        if fault == "unauthorized" or not self._authorised(handler):
            return 401, _json_bytes({"error": "unauthorized"}), {"WWW-Authenticate": "Basic"}
        try:
            rows = self._filtered(params)
            offset, size, page_index = self._window(params, len(rows))
        except ValueError as exc:
            return 400, _json_bytes({"error": str(exc)}), {}
        chunk = rows[offset : offset + size]
        following = offset + len(chunk)
        remaining = following < len(rows) and bool(chunk)
        headers: dict[str, str] = {}
        if remaining:
            kept = {k: v for k, v in params.items() if k not in ("page", "page_size", "cursor")}
            link_query = urlencode({**kept, "offset": following, "limit": size})
            headers["Link"] = f'<{self.url}{self.path}?{link_query}>; rel="next"'
        if self.envelope:
            meta = {
                "total": len(rows),
                "offset": offset,
                "next_cursor": _encode_cursor(following) if remaining else None,
            }
            body = _json_bytes({"data": {"items": chunk}, "meta": meta})
        else:
            body = _json_bytes(chunk)
        if faults.truncate_page is not None and page_index == faults.truncate_page:
            body = body[: len(body) // 2]
        with self._lock:
            self._pages_served += 1
        return 200, body, headers

    def _window(self, params: dict[str, str], total: int) -> tuple[int, int, int]:
        """``(offset, size, page index from 1)`` of the rows a request asks for."""
        default = self.default_page_size or max(total, 1)
        page: int | None = None
        if "cursor" in params:
            offset = _decode_cursor(params["cursor"])
            size = _positive(params, "limit", _positive(params, "page_size", default))
        elif "page" in params:
            page = _positive(params, "page", 1)
            size = _positive(params, "page_size", default)
            offset = (page - 1) * size
        else:
            offset = _natural(params, "offset", 0)
            size = _positive(params, "limit", default)
        page_index = offset // size + 1
        change = self.faults.page_size_change
        with self._lock:
            served = self._pages_served
        if change is not None and served >= change[0]:
            size = change[1]
            if page is not None:
                offset = (page - 1) * size
        return offset, size, page_index

    def _filtered(self, params: dict[str, str]) -> list[dict[str, Any]]:
        with self._lock:
            rows, read = self._records, self._read
        if read is not None:
            rows = [_jsonable(record) for record in read()]
        since_text = params.get(self.updated_param)
        if since_text is None:
            return rows
        since = _instant(since_text)
        if since is None:
            raise ValueError(f"{self.updated_param} is not an ISO-8601 date-time")
        kept = []
        for row in rows:
            value = row.get(self.updated_field)
            instant = _instant(value) if isinstance(value, str) else None
            if instant is not None and instant >= since:
                kept.append(row)
        return kept

    def _authorised(self, handler: _Handler) -> bool:
        if self.auth is None:
            return True
        if self.auth == "api_key":
            return handler.headers.get(self.api_key_header) == self.api_key
        authorization = handler.headers.get("Authorization", "")
        if self.auth == "basic":
            return _basic_credentials(authorization) == (self.username, self.password)
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            expires = self._tokens.get(token)
        return scheme.lower() == "bearer" and expires is not None and time.monotonic() < expires

    def _token(self, handler: _Handler, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        if self.auth != "oauth2":
            return 404, _json_bytes({"error": "not found"}), {}
        form = dict(parse_qsl(body.decode("utf-8", "replace")))
        if form.get("grant_type") != "client_credentials":
            return 400, _json_bytes({"error": "unsupported_grant_type"}), {}
        credentials = _basic_credentials(handler.headers.get("Authorization", "")) or (
            form.get("client_id"),
            form.get("client_secret"),
        )
        if credentials != (self.client_id, self.client_secret):
            return 401, _json_bytes({"error": "invalid_client"}), {}
        token = secrets.token_urlsafe(16)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
            self.tokens_issued += 1
        answer = {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}
        return 200, _json_bytes(answer), {"Cache-Control": "no-store"}


def start_simulator(records: Records | None = None, **settings: Any) -> Simulator:
    """Start a simulator on a free loopback port (use it as a context manager).

    ``settings`` are :class:`Simulator`'s keyword arguments (``auth``, ``path``, ``envelope``,
    ``default_page_size`` ...) and :class:`Faults`' fields (``rate_limited=2``,
    ``truncate_page=3`` ...). ``records`` default to :func:`demo_birth_records`.
    """
    fault_names = {f.name for f in dataclasses.fields(Faults)}
    faults = Faults(**{k: v for k, v in settings.items() if k in fault_names})
    options = {k: v for k, v in settings.items() if k not in fault_names}
    chosen = demo_birth_records() if records is None else records
    return Simulator(chosen, faults=faults, **options).start()


def demo_birth_records(persons: int = 2000, seed: int | None = None) -> list[dict[str, Any]]:
    """The demo's birth medical certificates (禅城区) as JSON-ready dicts, ISO dates as text."""
    from exchange.demo.departments import build_department_rows
    from exchange.demo.systems import DEMO_SEED

    rows = build_department_rows(DEMO_SEED if seed is None else seed, persons)
    return [_jsonable(row) for row in rows["chancheng_birth_db"]]


# ------------------------------------------------------------------------------------------------
# HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    simulator: Simulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client that timed out and left, or a reset we made on purpose: not worth a traceback
        log.debug("rest simulator: error while answering %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def do_GET(self) -> None:
        self.server.simulator._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.simulator._handle(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("rest simulator: " + format, *args)


def _answer(handler: _Handler, status: int, body: bytes, headers: Mapping[str, str]) -> None:
    try:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:  # the client gave up (its timeout was shorter than our delay)
        handler.close_connection = True


def _reset(handler: _Handler) -> None:
    """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""
    connection: socket.socket = handler.connection
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True
    connection.close()


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _positive(params: Mapping[str, str], name: str, default: int) -> int:
    value = _natural(params, name, default)
    if value < 1:
        raise ValueError(f"{name} must be at least 1")
    return value


def _natural(params: Mapping[str, str], name: str, default: int) -> int:
    text = params.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise ValueError(f"{name} must be a whole number")
    return int(text)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, number = text.partition(":")
        if prefix == "o" and number.isdigit():
            return int(number)
    except (binascii.Error, UnicodeDecodeError):
        pass
    raise ValueError("invalid cursor")


def _instant(text: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _jsonable(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _json_value(value) for key, value in record.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    return value


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the demo's birth certificates until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--persons", type=int, default=2000)
    parser.add_argument("--auth", choices=["basic", "api_key", "oauth2"], default=None)
    args = parser.parse_args(argv)
    simulator = Simulator(demo_birth_records(args.persons), port=args.port, auth=args.auth)
    with simulator.start():
        print(f"serving {simulator.url}{simulator.path} (Ctrl-C stops)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
