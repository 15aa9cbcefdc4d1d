"""The ``rest`` connector: read a department's JSON REST API page by page, incrementally.

The connection (``AIRFLOW_CONN_<ID>``) is ``http(s)://[user:password@]host[:port][/base]``; its
query parameters, if any, choose the authentication (the ``auth`` option, when given, wins)::

    http://host/base                                   no authentication
    http://user:password@host/base                     HTTP basic
    http://:KEY@host/base?auth=api_key&header=X-API-Key  API key in a header (the key = password)
    http://CLIENT_ID:SECRET@host/base?auth=oauth2&token_path=/oauth/token[&scope=read]
                                                       OAuth2 client credentials

Options (the ``connector.options`` block of a source)::

    path: /api/v1/birth-certificates   # appended to the connection URL's base path
    records_path: data.items           # dotted path to the list of records; empty: the body
    params: {region: "440604"}         # static query parameters
    pagination:                        # one of (default: {type: none}, a single request):
      {type: page, page_param: page, size_param: page_size, page_size: 100, start: 1}
      {type: offset, offset_param: offset, limit_param: limit, limit: 100}
      {type: cursor, cursor_param: cursor, next_cursor_path: next_cursor}   # token in the body
      {type: link}                     # RFC 8288 ``Link: <...>; rel="next"`` header
    incremental: {param: updated_since, field: updated_at}   # field defaults to the cursor
    auth: {type: api_key, header: X-API-Key}   # or basic, oauth2 (token_path, scope), none
    schema: {record_id: int64, birth_date: date, updated_at: timestamp}
    timeout: {connect: 10, read: 60}   # seconds; a single number sets both
    max_retries: 5                     # retries after the first attempt
    backoff: 0.5                       # base seconds of the exponential backoff ...
    backoff_cap: 30                    # ... and its cap
    max_retry_after: 120               # a longer Retry-After gives up at once (transient)
    rate_limit: 10                     # at most this many requests per second, per source
    batch_size: 5000                   # rows per Arrow record batch (overrides the request)

Reading. Pages are fetched one at a time and never all kept: at most one page plus one batch of
records is in memory. The first page is fetched by :meth:`RestConnector.extract`, because the
Arrow schema must be known before iteration. Pagination ends on an empty page or when there is
no next cursor / link. Offset pagination advances by the number of rows actually returned;
page pagination follows a server that changes its page size mid-run (when pages grow it steps
back to the first page it may have skipped, and an empty last page is confirmed by reading the
page before it once more). Records are de-duplicated by the source's primary key within a run:
a repeated, identical record is dropped; a changed one replaces the copy not yet yielded, or
(when that was already yielded) is yielded again so that the last seen version wins downstream.
Only the key and a short digest of every record yielded are remembered.

Incremental runs send the saved cursor as ``incremental.param`` (never on a full refresh);
``cursor_after`` is the record with the greatest ``incremental.field``: ISO-8601 strings are
compared as instants (an offset is converted to UTC, a naive value is taken as UTC), numbers
as numbers, other text as text. The value is returned exactly as the API sent it.

Arrow. Every column is ``string`` unless declared in ``schema`` (``int64``, ``float64``,
``string``, ``date``, ``timestamp`` — naive, UTC when the value has an offset — or ``bool``), so
the schema can never change between batches: numbers and booleans become their JSON text, and
objects and arrays JSON strings. The columns are the fields of the first page's records, then
the declared fields, the primary key and the cursor field; a field that first appears on a
later page is dropped with a warning (declare it under ``schema`` to keep it). An empty source
has the declared fields, the primary key and the cursor field.

HTTP outcomes are translated in one place, :class:`_HttpClient`. Connection errors, timeouts, 408,
429 and 5xx are retried with exponential backoff and full jitter, or after the ``Retry-After``
the server asks for; after ``max_retries`` they become :class:`SourceUnavailable`. A 401 with
OAuth2 fetches a new token once; 401/403 then are :class:`SourceAuthError`, 404 is
:class:`SourceSchemaError` (wrong path), a redirect (never followed: credentials stay with the
configured host) or a non-http(s) URL is :class:`SourceConfigError`, other 4xx
:class:`SourceQueryError`, and an invalid or truncated
body :class:`SourceDataError` (naming the page and the byte offset, never a record value).
Messages show URLs without credentials or query strings. The retry loop is hand-written
rather than tenacity's: ``Retry-After``, the token refresh and the translation of every
outcome are one readable loop, and its ``sleep``, clock and random source are injectable.
"""

from __future__ import annotations

import codecs
import datetime as dt
import email.utils
import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Annotated, Any, Literal, TypeVar, get_args
from urllib.parse import parse_qsl, unquote, urljoin, urlsplit, urlunsplit

import pyarrow as pa
import requests
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    StrictInt,
    ValidationError,
    field_validator,
)
from requests.auth import AuthBase, HTTPBasicAuth

from connectors.base import Connector, ExtractRequest
from connectors.errors import (
    ConnectorError,
    ConnectorOptionError,
    SourceAuthError,
    SourceConfigError,
    SourceDataError,
    SourceQueryError,
    SourceSchemaError,
    SourceUnavailable,
)
from connectors.registry import register
from exchange.db import safe_url

__all__ = [
    "RestConnector",
    "RestExtraction",
    "RestOptions",
    "backoff_delay",
    "retry_after_seconds",
]

log = logging.getLogger(__name__)

OptionsT = TypeVar("OptionsT", bound=BaseModel)
Sleep = Callable[[float], None]
Clock = Callable[[], float]

USER_AGENT = "govexchange-rest/0.1"
CONNECTION_QUERY_KEYS = ("auth", "header", "token_path", "scope")
RETRYABLE_STATUSES = frozenset({408, 429})
TOKEN_EXPIRY_MARGIN = 30.0  # seconds before expiry at which a cached token is renewed
ARROW_TYPES: Mapping[str, pa.DataType] = {
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "bool": pa.bool_(),
}
FieldType = Literal["int64", "float64", "string", "date", "timestamp", "bool"]


# --------------------------------------------------------------------------------------------
# Options


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PagePagination(_Options):
    """``?page=N&page_size=S``, pages numbered from ``start``."""

    type: Literal["page"]
    page_param: str = Field(default="page", min_length=1)
    size_param: str = Field(default="page_size", min_length=1)
    page_size: StrictInt = Field(default=100, gt=0)
    start: StrictInt = Field(default=1, ge=0)


class OffsetPagination(_Options):
    """``?offset=N&limit=L``; the offset advances by the rows actually returned."""

    type: Literal["offset"]
    offset_param: str = Field(default="offset", min_length=1)
    limit_param: str = Field(default="limit", min_length=1)
    limit: StrictInt = Field(default=100, gt=0)


class CursorPagination(_Options):
    """``?cursor=TOKEN`` with the next token at ``next_cursor_path`` in the body."""

    type: Literal["cursor"]
    cursor_param: str = Field(default="cursor", min_length=1)
    next_cursor_path: str = Field(default="next_cursor", min_length=1)


class LinkPagination(_Options):
    """The ``Link: <url>; rel="next"`` response header (RFC 8288, formerly RFC 5988)."""

    type: Literal["link"]


class NoPagination(_Options):
    """One request returns every record."""

    type: Literal["none"] = "none"


Pagination = Annotated[
    PagePagination | OffsetPagination | CursorPagination | LinkPagination | NoPagination,
    Field(discriminator="type"),
]


class BasicAuthOption(_Options):
    type: Literal["basic"]


class ApiKeyAuthOption(_Options):
    type: Literal["api_key"]
    header: str = Field(default="X-API-Key", min_length=1)


class OAuth2AuthOption(_Options):
    type: Literal["oauth2"]
    token_path: str = Field(default="/oauth/token", min_length=1)
    scope: str | None = None


class NoAuthOption(_Options):
    type: Literal["none"]


AuthOption = Annotated[
    BasicAuthOption | ApiKeyAuthOption | OAuth2AuthOption | NoAuthOption,
    Field(discriminator="type"),
]


class IncrementalOptions(_Options):
    param: str = Field(min_length=1)
    field: str | None = Field(default=None, min_length=1)


class TimeoutOptions(_Options):
    connect: PositiveFloat = 10.0
    read: PositiveFloat = 60.0


class RestOptions(_Options):
    """The options of the ``rest`` connector, as written in YAML (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    path: str = ""
    records_path: str = ""
    params: dict[str, str | StrictInt | float | bool] = Field(default_factory=dict)
    pagination: Pagination = NoPagination()
    incremental: IncrementalOptions | None = None
    auth: AuthOption | None = None
    schema_: dict[str, FieldType] = Field(default_factory=dict, alias="schema")
    timeout: TimeoutOptions = TimeoutOptions()
    max_retries: StrictInt = Field(default=5, ge=0, le=50)
    backoff: PositiveFloat = 0.5
    backoff_cap: PositiveFloat = 30.0
    max_retry_after: PositiveFloat = 120.0
    rate_limit: PositiveFloat | None = None
    batch_size: StrictInt | None = Field(default=None, gt=0)

    @field_validator("timeout", mode="before")
    @classmethod
    def _one_number_for_both(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"connect": value, "read": value}
        return value


# --------------------------------------------------------------------------------------------
# The connector


@register("rest")
class RestConnector(Connector):
    """Reads the records of one JSON REST endpoint.

    ``sleep``, ``clock`` (monotonic seconds) and ``rng`` (``random.random``-like) are there for
    tests: they let a test see the backoff it asked for without waiting for it.
    """

    def __init__(
        self,
        request: ExtractRequest,
        *,
        session: requests.Session | None = None,
        sleep: Sleep = time.sleep,
        clock: Clock = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(request)
        self.options = self.parse_options(RestOptions)
        self.batch_size = self.resolve_batch_size(self.options.batch_size)
        self.cursor_field = _cursor_field(request, self.options)
        self.connection = _parse_connection(request)
        self.auth = _auth_plan(request.source_id, self.connection, self.options.auth)
        self._session = session
        self._sleep = sleep
        self._clock = clock
        self._rng = rng

    def parse_options(self, model: type[OptionsT]) -> OptionsT:
        """As :meth:`Connector.parse_options`, with nested option names (``pagination.limit``)
        and, for an unknown one, the options of its own block."""
        try:
            return model.model_validate(dict(self.request.options))
        except ValidationError as exc:
            raise _option_error(self.request.source_id, model, exc) from None

    def extract(self) -> RestExtraction:
        """Fetch the first page (to learn the columns) and return the not yet read batches."""
        client = _HttpClient(
            self.request.source_id,
            self.connection,
            self.auth,
            self.options,
            session=self._session,
            sleep=self._sleep,
            clock=self._clock,
            rng=self._rng,
        )
        try:
            reader = _PageReader(self.request, self.options, self.connection, client)
            first = reader.first_page()
            schema = _schema_for(self.request, self.options, self.cursor_field, first.records)
        except BaseException:
            client.close()
            raise
        return RestExtraction(
            self.request, self.cursor_field, reader, first, schema, self.batch_size
        )


class RestExtraction:
    """The batches of one ``rest`` read; iterate once. The HTTP session closes when reading ends."""

    def __init__(
        self,
        request: ExtractRequest,
        cursor_field: str | None,
        reader: _PageReader,
        first: _Page,
        schema: pa.Schema,
        batch_size: int,
    ) -> None:
        self._request = request
        self._reader = reader
        self._first: _Page | None = first
        self._schema = schema
        self._batch_size = batch_size
        self._converter = _ArrowConverter(request.source_id, schema)
        self._dedup = _Deduplicator(request.source_id, request.primary_key)
        self._cursor = _CursorMax(request.source_id, cursor_field)
        self._rows_read = 0
        self._started = False

    @property
    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def rows_read(self) -> int:
        return self._rows_read

    @property
    def cursor_after(self) -> Any | None:
        return self._request.since if self._cursor.value is None else self._cursor.value

    @property
    def duplicates_dropped(self) -> int:
        """Repeated, identical records that were not yielded again."""
        return self._dedup.dropped

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        if self._started:
            raise RuntimeError("an extraction can be read once; call extract() again")
        self._started = True
        return self._batches()

    def _batches(self) -> Iterator[pa.RecordBatch]:
        first, self._first = self._first, None
        assert first is not None
        try:
            for page in self._reader.pages_from(first):
                for record in page.records:
                    self._cursor.observe(record, page.where)
                    page.new += self._dedup.add(record, page.where)
                while self._dedup.pending >= self._batch_size:
                    yield self._batch(self._batch_size)
            while self._dedup.pending:
                yield self._batch(self._batch_size)
        finally:
            self._reader.close()
        if self._dedup.dropped:
            log.info(
                "source %r: %d repeated records dropped",
                self._request.source_id,
                self._dedup.dropped,
            )

    def _batch(self, size: int) -> pa.RecordBatch:
        records = self._dedup.take(size)
        batch = self._converter.batch(records)
        self._rows_read += batch.num_rows
        return batch


# --------------------------------------------------------------------------------------------
# Connection and authentication


@dataclass(frozen=True)
class _Connection:
    """The connection URL taken apart; ``base`` has neither credentials nor query."""

    origin: str  # scheme://host[:port]
    base: str  # origin + base path, no trailing slash
    username: str | None = field(repr=False)
    password: str | None = field(repr=False)
    settings: Mapping[str, str]  # the query parameters (auth, header, token_path, scope)

    def url_for(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base}/{path.lstrip('/')}" if path.strip("/") else self.base

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password,) if s)


def _parse_connection(request: ExtractRequest) -> _Connection:
    source_id = request.source_id
    try:
        parts = urlsplit(request.url)
        _ = parts.port  # raises ValueError for a port that is not a number below 65536
    except ValueError:
        raise SourceConfigError(
            source_id, "the connection URL is not a valid http(s) URL (check host and port)"
        ) from None
    if parts.scheme.lower() not in ("http", "https"):
        shown = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise SourceConfigError(
            source_id,
            f"the rest connector needs an http:// or https:// connection URL (got {shown})",
        )
    if not parts.hostname:
        raise SourceConfigError(source_id, "the connection URL names no host")
    settings = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(settings) - set(CONNECTION_QUERY_KEYS))
    if unknown:
        raise SourceConfigError(
            source_id,
            f"unknown query parameter(s) in the connection URL: {', '.join(unknown)} "
            f"(known: {', '.join(CONNECTION_QUERY_KEYS)}; put API parameters in the "
            f"connector option 'params')",
        )
    host = parts.netloc.rpartition("@")[2]
    origin = f"{parts.scheme.lower()}://{host}"
    return _Connection(
        origin=origin,
        base=origin + parts.path.rstrip("/"),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        settings=settings,
    )


@dataclass(frozen=True)
class _AuthPlan:
    scheme: Literal["none", "basic", "api_key", "oauth2"]
    header: str = "X-API-Key"
    token_url: str = ""
    scope: str | None = None


def _auth_plan(source_id: str, conn: _Connection, option: AuthOption | None) -> _AuthPlan:
    if option is None:
        scheme = conn.settings.get("auth") or (
            "basic" if conn.username or conn.password else "none"
        )
        header = conn.settings.get("header") or "X-API-Key"
        token_path = conn.settings.get("token_path") or "/oauth/token"
        scope = conn.settings.get("scope") or None
    else:
        scheme = option.type
        header = getattr(option, "header", "X-API-Key")
        token_path = getattr(option, "token_path", "/oauth/token")
        scope = getattr(option, "scope", None)
    if scheme not in ("none", "basic", "api_key", "oauth2"):
        raise SourceConfigError(
            source_id,
            f"unknown auth scheme {scheme!r} in the connection URL "
            f"(known: none, basic, api_key, oauth2)",
        )
    if scheme == "basic" and conn.username is None:
        raise SourceConfigError(source_id, "basic auth needs user:password@ in the connection URL")
    if scheme == "api_key" and not conn.password:
        raise SourceConfigError(
            source_id, "api_key auth needs the key as the password of the connection URL (:KEY@)"
        )
    if scheme == "oauth2" and not (conn.username and conn.password):
        raise SourceConfigError(
            source_id,
            "oauth2 auth needs CLIENT_ID:CLIENT_SECRET@ in the connection URL",
        )
    return _AuthPlan(
        scheme=scheme,  # type: ignore[arg-type]
        header=header,
        token_url=conn.url_for(token_path) if scheme == "oauth2" else "",
        scope=scope,
    )


class _HeaderAuth(AuthBase):
    def __init__(self, header: str, value: str) -> None:
        self.header = header
        self.value = value

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        r.headers[self.header] = self.value
        return r


# --------------------------------------------------------------------------------------------
# HTTP: retries, rate limit, tokens and the translation of every outcome


def retry_after_seconds(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date), or ``None``."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(retry: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**(retry-1))]``."""
    return rng() * min(cap, base * 2 ** (retry - 1))


class _RateLimiter:
    """A token bucket of capacity one: requests are spaced at least ``1 / rate`` seconds apart."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._lock = threading.Lock()
        self._next: float | None = None

    def wait(self, clock: Clock, sleep: Sleep) -> None:
        with self._lock:  # reserve a slot, then sleep outside the lock
            now = clock()
            slot = now if self._next is None else max(now, self._next)
            self._next = slot + 1.0 / self.rate
        if slot > now:
            sleep(slot - now)


_limiters: dict[str, _RateLimiter] = {}
_limiters_lock = threading.Lock()


def _limiter_for(source_id: str, rate: float) -> _RateLimiter:
    """One limiter per source and process, shared by concurrent runs of that source."""
    with _limiters_lock:
        limiter = _limiters.get(source_id)
        if limiter is None or limiter.rate != rate:
            limiter = _limiters[source_id] = _RateLimiter(rate)
        return limiter


def _display(url: str) -> str:
    """A URL as it may be shown: no credentials, no query string (then :func:`safe_url`)."""
    parts = urlsplit(url)
    return safe_url(urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", "")))


def _transport_failure(exc: requests.RequestException) -> str:
    """Name a transport error by its classes only; its message may quote the URL."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.Timeout):
        return "read timeout"
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    innermost = ""
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if type(current).__module__ == "builtins":
            innermost = type(current).__name__
        reason = getattr(current, "reason", None)
        linked = [*current.args, reason, current.__cause__, current.__context__]
        todo.extend(item for item in linked if isinstance(item, BaseException))
    kind = "connection error" if isinstance(exc, requests.ConnectionError) else type(exc).__name__
    return f"{kind} ({innermost})" if innermost else kind


class _HttpClient:
    """Sends requests for one source: rate limit, auth, retries, and one translation of errors."""

    def __init__(
        self,
        source_id: str,
        conn: _Connection,
        plan: _AuthPlan,
        options: RestOptions,
        *,
        session: requests.Session | None,
        sleep: Sleep,
        clock: Clock,
        rng: Callable[[], float],
    ) -> None:
        self.source_id = source_id
        self.conn = conn
        self.plan = plan
        self.options = options
        self._own_session = session is None
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._limiter = _limiter_for(source_id, options.rate_limit) if options.rate_limit else None
        self._token: str | None = None
        self._token_expires = 0.0

    def close(self) -> None:
        if self._own_session:
            self.session.close()

    # -- the one loop every request goes through ------------------------------------------

    def send(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        auth: AuthBase | None = None,
        use_source_auth: bool = True,
    ) -> requests.Response:
        """The response once it is not worth retrying (2xx or a final 4xx).

        Raises :class:`SourceUnavailable` when retries run out, and the terminal errors for
        redirects, TLS and invalid URLs. 4xx responses are returned for the caller to map.
        """
        options = self.options
        attempts = 0
        refreshed = False
        while True:
            attempts += 1
            if self._limiter is not None:
                self._limiter.wait(self._clock, self._sleep)
            request_auth = self._source_auth() if use_source_auth else auth
            retry_after: float | None = None
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    data=data,
                    auth=request_auth,
                    timeout=(options.timeout.connect, options.timeout.read),
                    allow_redirects=False,
                )
            except requests.exceptions.SSLError:
                raise SourceConfigError(
                    self.source_id, f"{what}: the TLS handshake failed (certificate or protocol)"
                ) from None
            except (requests.exceptions.InvalidURL, requests.exceptions.MissingSchema):
                raise SourceConfigError(self.source_id, f"{what}: invalid URL") from None
            except requests.RequestException as exc:
                failure = _transport_failure(exc)
            else:
                status = response.status_code
                if 300 <= status < 400:
                    location = _display(urljoin(url, response.headers.get("Location", "")))
                    raise SourceConfigError(
                        self.source_id,
                        f"{what}: the source redirects (HTTP {status}) to {location}; point the "
                        f"connection URL or the option 'path' at the final location",
                    )
                if (
                    status == 401
                    and use_source_auth
                    and self.plan.scheme == "oauth2"
                    and not refreshed
                ):
                    log.info("source %r: %s: HTTP 401, fetching a new token", self.source_id, what)
                    self._token = None
                    refreshed = True
                    attempts -= 1
                    continue
                if status < 400 or not (status in RETRYABLE_STATUSES or status >= 500):
                    return response
                failure = f"HTTP {status}"
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                response.close()
            if attempts > options.max_retries:
                raise SourceUnavailable(
                    self.source_id,
                    f"{what}: {failure} after {attempts} attempt{'s' if attempts > 1 else ''}",
                )
            if retry_after is not None and retry_after > options.max_retry_after:
                raise SourceUnavailable(
                    self.source_id,
                    f"{what}: {failure}; the source asks to retry after {retry_after:.0f} s "
                    f"(more than max_retry_after, {options.max_retry_after:g} s)",
                )
            delay = (
                retry_after
                if retry_after is not None
                else backoff_delay(attempts, options.backoff, options.backoff_cap, self._rng)
            )
            log.warning(
                "source %r: %s: %s; retry %d of %d in %.2f s",
                self.source_id,
                what,
                failure,
                attempts,
                options.max_retries,
                delay,
            )
            self._sleep(delay)

    # -- authentication ---------------------------------------------------------------------

    def _source_auth(self) -> AuthBase | None:
        plan, conn = self.plan, self.conn
        if plan.scheme == "basic":
            return HTTPBasicAuth(conn.username or "", conn.password or "")
        if plan.scheme == "api_key":
            return _HeaderAuth(plan.header, conn.password or "")
        if plan.scheme == "oauth2":
            return _HeaderAuth("Authorization", f"Bearer {self._access_token()}")
        return None

    def _access_token(self) -> str:
        if self._token is not None and self._clock() < self._token_expires:
            return self._token
        what = f"POST {_display(self.plan.token_url)} (OAuth2 token)"
        data = {"grant_type": "client_credentials"}
        if self.plan.scope:
            data["scope"] = self.plan.scope
        response = self.send(
            "POST",
            self.plan.token_url,
            what=what,
            data=data,
            auth=HTTPBasicAuth(self.conn.username or "", self.conn.password or ""),
            use_source_auth=False,
        )
        status = response.status_code
        if status in (400, 401, 403):
            raise SourceAuthError(
                self.source_id,
                f"{what}: the token endpoint refused the client credentials (HTTP {status}"
                f"{self._error_detail(response)})",
            )
        if status == 404:
            raise SourceConfigError(
                self.source_id, f"{what}: no token endpoint there (HTTP 404); check token_path"
            )
        if status >= 400:
            raise SourceAuthError(self.source_id, f"{what}: HTTP {status}")
        try:
            body = response.json()
            token = body["access_token"]
            expires_in = float(body.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise SourceAuthError(
                self.source_id, f"{what}: the answer has no access_token"
            ) from None
        if not isinstance(token, str) or not token:
            raise SourceAuthError(self.source_id, f"{what}: the answer has no access_token")
        margin = min(TOKEN_EXPIRY_MARGIN, expires_in / 10)
        self._token = token
        self._token_expires = self._clock() + expires_in - margin
        return token

    # -- messages -----------------------------------------------------------------------------

    def _error_detail(self, response: requests.Response) -> str:
        """``: <message>`` from a JSON error body (error / message / detail), secrets hidden."""
        try:
            body = response.json()
        except ValueError:
            return ""
        if not isinstance(body, dict):
            return ""
        for key in ("error_description", "message", "detail", "error"):
            value = body.get(key)
            if isinstance(value, str) and value.strip():
                return f": {self.redact(value.strip())[:200]}"
        return ""

    def redact(self, text: str) -> str:
        for secret in (*self.conn.secrets(), self._token or ""):
            if secret:
                text = text.replace(secret, "***")
        return text

    def status_error(self, response: requests.Response, what: str) -> ConnectorError:
        """The error for a final 4xx answer to a data request."""
        status = response.status_code
        detail = self._error_detail(response)
        if status in (401, 403):
            refused = "refused our credentials" if status == 401 else "forbids this request"
            return SourceAuthError(self.source_id, f"{what}: the source {refused} (HTTP {status})")
        if status == 404:
            return SourceSchemaError(
                self.source_id,
                f"{what}: not found (HTTP 404); check the option 'path' and the connection URL's "
                f"base path",
            )
        return SourceQueryError(
            self.source_id, f"{what}: the source rejected the request (HTTP {status}{detail})"
        )


# --------------------------------------------------------------------------------------------
# Pages


@dataclass
class _PageRequest:
    url: str
    params: dict[str, Any] | None
    where: str  # "page 3", "offset 200" ... for messages
    number: int  # 1 for the first request of the run
    page: int = 0  # page pagination: the page number asked for (offset: the offset)
    probe: bool = False  # page pagination: re-reading the page before an empty one


@dataclass
class _Page:
    request: _PageRequest
    records: list[dict[str, Any]]
    body: Any = field(repr=False)
    response: requests.Response = field(repr=False)
    new: int = 0  # records whose key was not seen before in this run (set by the extraction)

    @property
    def where(self) -> str:
        return self.request.where


class _PageReader:
    """Walks the pages of one endpoint, one request at a time."""

    def __init__(
        self,
        request: ExtractRequest,
        options: RestOptions,
        conn: _Connection,
        client: _HttpClient,
    ) -> None:
        self.source_id = request.source_id
        self.options = options
        self.client = client
        self.url = conn.url_for(options.path)
        self.origin = conn.origin
        params = {name: _param_text(value) for name, value in options.params.items()}
        if options.incremental is not None and request.since is not None:
            params[options.incremental.param] = _param_text(request.since)
        self.params = params
        self.pagination = options.pagination
        # page pagination's state
        self._size = (
            options.pagination.page_size if isinstance(self.pagination, PagePagination) else 0
        )
        self._frontier = 0  # rows known read, contiguously from the first
        self._backed_up_at: set[int] = set()
        self._probed: set[int] = set()

    def close(self) -> None:
        self.client.close()

    def first_page(self) -> _Page:
        return self._fetch(self._first_request())

    def pages_from(self, first: _Page) -> Iterator[_Page]:
        """``first``, then every following page; only the current page is held."""
        page = first
        del first
        while True:
            yield page
            following = self._next_request(page)
            if following is None:
                return
            page = self._fetch(following)

    # -- requests -------------------------------------------------------------------------

    def _first_request(self) -> _PageRequest:
        p = self.pagination
        if isinstance(p, PagePagination):
            return self._page_request(p.start, 1)
        if isinstance(p, OffsetPagination):
            return self._offset_request(0, 1)
        if isinstance(p, CursorPagination | LinkPagination):
            return _PageRequest(self.url, dict(self.params), "page 1", 1)
        return _PageRequest(self.url, dict(self.params), "the response", 1)

    def _page_request(self, page: int, number: int, probe: bool = False) -> _PageRequest:
        p = self.pagination
        assert isinstance(p, PagePagination)
        params = {**self.params, p.page_param: page, p.size_param: p.page_size}
        return _PageRequest(self.url, params, f"page {page}", number, page=page, probe=probe)

    def _offset_request(self, offset: int, number: int) -> _PageRequest:
        p = self.pagination
        assert isinstance(p, OffsetPagination)
        params = {**self.params, p.offset_param: offset, p.limit_param: p.limit}
        return _PageRequest(self.url, params, f"offset {offset}", number, page=offset)

    def _next_request(self, page: _Page) -> _PageRequest | None:
        p, asked = self.pagination, page.request
        number = asked.number + 1
        if isinstance(p, PagePagination):
            following = self._next_page_number(page)
            if following is None:
                return None
            page_number, probe = following
            return self._page_request(page_number, number, probe)
        count = len(page.records)
        if count == 0:
            return None
        if isinstance(p, OffsetPagination):
            return self._offset_request(asked.page + count, number)
        if isinstance(p, CursorPagination):
            token = _lookup(page.body, p.next_cursor_path)
            if token is None or token == "":
                return None
            if not isinstance(token, str | int):
                raise SourceDataError(
                    self.source_id,
                    f"{asked.where}: the next cursor at {p.next_cursor_path!r} is "
                    f"{_json_kind(token)}, not a string",
                )
            if asked.params and asked.params.get(p.cursor_param) == token:
                raise SourceDataError(
                    self.source_id,
                    f"{asked.where}: the source returned the same next cursor again "
                    f"(pagination would never end)",
                )
            params = {**self.params, p.cursor_param: token}
            return _PageRequest(self.url, params, f"page {number}", number)
        if isinstance(p, LinkPagination):
            link = page.response.links.get("next", {}).get("url")
            if not link:
                return None
            target = urljoin(page.response.url, link)
            parts = urlsplit(target)
            if f"{parts.scheme}://{parts.netloc}".lower() != self.origin.lower():
                raise SourceDataError(
                    self.source_id,
                    f"{asked.where}: the next link points to another host "
                    f"({_display(target)}); credentials are only sent to {self.origin}",
                )
            if target == page.response.url:
                raise SourceDataError(
                    self.source_id,
                    f"{asked.where}: the next link points to the same page "
                    f"(pagination would never end)",
                )
            return _PageRequest(target, None, f"page {number}", number)
        return None

    def _next_page_number(self, page: _Page) -> tuple[int, bool] | None:
        """The next page to ask for (and whether it is a probe), following a server whose page
        size changes; ``None`` at the end.

        A smaller page is followed by the next page number: it may repeat rows (they are
        de-duplicated) but skips none. A bigger page means the server's pages grew and rows
        between the ones read and this page may have been skipped: step back, once per page,
        to the page that holds the first row not yet read. An empty page ends the run unless
        the page before it, read again once, holds rows not seen before (the pages grew so
        much that the page asked for is past the end).
        """
        p = self.pagination
        assert isinstance(p, PagePagination)
        count, asked = len(page.records), page.request.page
        if page.request.probe and page.new == 0:
            return None
        if count == 0:
            if asked > p.start and asked - 1 not in self._probed:
                self._probed.add(asked - 1)
                return asked - 1, True
            return None
        grew = count > self._size
        self._size = count
        if grew and asked != p.start and asked not in self._backed_up_at:
            self._backed_up_at.add(asked)
            back = p.start + self._frontier // count
            if back < asked:
                log.info(
                    "source %r: page %d holds %d rows (more than before): re-reading from page %d",
                    self.source_id,
                    asked,
                    count,
                    back,
                )
                return back, False
        self._frontier += page.new
        return asked + 1, False

    # -- one page -------------------------------------------------------------------------

    def _fetch(self, request: _PageRequest) -> _Page:
        what = f"GET {_display(request.url)} ({request.where})"
        response = self.client.send("GET", request.url, what=what, params=request.params)
        if response.status_code >= 400:
            raise self.client.status_error(response, what)
        body = self._json_body(response, what)
        records = _records_at(self.source_id, body, self.options.records_path, what)
        return _Page(request, records, body, response)

    def _json_body(self, response: requests.Response, what: str) -> Any:
        raw = response.content
        bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SourceDataError(
                self.source_id,
                f"{what}: the body is not UTF-8 (invalid byte at offset {exc.start + bom})",
            ) from None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            offset = bom + len(text[: exc.pos].encode("utf-8"))
            truncated = offset >= len(raw) - 1 or exc.msg.startswith("Unterminated")
            hint = "; the body looks truncated" if truncated else ""
            raise SourceDataError(
                self.source_id,
                f"{what}: the body is not valid JSON ({exc.msg} at byte {offset} of "
                f"{len(raw)}{hint})",
            ) from None


def _records_at(source_id: str, body: Any, path: str, what: str) -> list[dict[str, Any]]:
    node = body
    for part in path.split(".") if path else ():
        if not isinstance(node, dict) or part not in node:
            found = (
                f"keys: {', '.join(list(node)[:10])}"
                if isinstance(node, dict)
                else _json_kind(node)
            )
            raise SourceDataError(
                source_id,
                f"{what}: the body has no {path!r} (missing at {part!r}; found {found}); "
                f"check the option 'records_path'",
            )
        node = node[part]
    if not isinstance(node, list):
        shown = repr(path) if path else "the body"
        raise SourceDataError(
            source_id,
            f"{what}: {shown} is {_json_kind(node)}, not a list of records; "
            f"check the option 'records_path'",
        )
    for index, record in enumerate(node):
        if not isinstance(record, dict):
            raise SourceDataError(
                source_id, f"{what}: record {index} is {_json_kind(record)}, not a JSON object"
            )
    return node


def _lookup(body: Any, path: str) -> Any:
    node = body
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


# --------------------------------------------------------------------------------------------
# Records: identity, cursor, Arrow


def _record_key(record: Mapping[str, Any], primary_key: Sequence[str]) -> tuple[Any, ...]:
    return tuple(_key_part(record.get(name)) for name in primary_key)


def _key_part(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float):
        return (type(value).__name__, value)
    return ("json", json.dumps(value, sort_keys=True, ensure_ascii=False))


def _digest(record: Mapping[str, Any]) -> bytes:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()


class _Deduplicator:
    """Records waiting to become a batch, de-duplicated by primary key (the last seen wins).

    Remembers the key and a 12-byte digest of every record yielded, not the record.
    """

    def __init__(self, source_id: str, primary_key: Sequence[str]) -> None:
        self.source_id = source_id
        self.primary_key = tuple(primary_key)
        self._pending: dict[Any, tuple[dict[str, Any], str, bytes]] = {}
        self._yielded: dict[tuple[Any, ...], bytes] = {}
        self._counter = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._pending)

    def add(self, record: dict[str, Any], where: str) -> bool:
        """Queue a record; ``True`` when its key was not seen before in this run."""
        if not self.primary_key:
            self._counter += 1
            self._pending[self._counter] = (record, where, b"")
            return True
        missing = [name for name in self.primary_key if record.get(name) is None]
        if missing:
            raise SourceDataError(
                self.source_id,
                f"{where}: a record has no value for primary key field {missing[0]!r}",
            )
        key = _record_key(record, self.primary_key)
        digest = _digest(record)
        held = self._pending.get(key)
        if held is not None:
            if held[2] == digest:
                self.dropped += 1
                return False
            del self._pending[key]  # changed while we paged: the newer copy goes last
        elif self._yielded.get(key) == digest:
            self.dropped += 1
            return False
        self._pending[key] = (record, where, digest)
        return held is None and key not in self._yielded

    def take(self, size: int) -> list[tuple[dict[str, Any], str]]:
        keys = list(islice(self._pending, size))
        taken = [self._pending.pop(key) for key in keys]
        if self.primary_key:
            for key, (_, _, digest) in zip(keys, taken, strict=True):
                self._yielded[key] = digest
        return [(record, where) for record, where, _ in taken]


class _CursorMax:
    """The greatest cursor value seen, compared as instants, numbers or text."""

    def __init__(self, source_id: str, field_name: str | None) -> None:
        self.source_id = source_id
        self.field = field_name
        self.value: Any = None
        self._key: tuple[int, Any] | None = None

    def observe(self, record: Mapping[str, Any], where: str) -> None:
        if self.field is None:
            return
        value = record.get(self.field)
        if value is None:
            return
        key = _cursor_key(value)
        if key is None:
            raise SourceDataError(
                self.source_id,
                f"{where}: cursor field {self.field!r} holds {_json_kind(value)}; "
                f"it must be a timestamp, a number or text",
            )
        if self._key is not None and key[0] != self._key[0]:
            kinds = {0: "numbers", 1: "ISO-8601 timestamps", 2: "text"}
            raise SourceDataError(
                self.source_id,
                f"{where}: cursor field {self.field!r} mixes {kinds[self._key[0]]} and "
                f"{kinds[key[0]]}; its values cannot be ordered",
            )
        if self._key is None or key[1] > self._key[1]:
            self._key = key
            self.value = value


def _cursor_key(value: Any) -> tuple[int, Any] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        instant = _parse_instant(value)
        return (1, instant) if instant is not None else (2, value)
    return None


def _parse_instant(text: str) -> dt.datetime | None:
    """An ISO-8601 date or date-time as a naive UTC datetime, or ``None``."""
    if not re.match(r"^\d{4}-?\d{2}-?\d{2}", text.strip()):
        return None
    try:
        parsed = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _schema_for(
    request: ExtractRequest,
    options: RestOptions,
    cursor_field: str | None,
    first_records: Sequence[Mapping[str, Any]],
) -> pa.Schema:
    names: dict[str, None] = {}
    for record in first_records:
        names.update(dict.fromkeys(record))
    names.update(dict.fromkeys(options.schema_))
    names.update(dict.fromkeys(request.primary_key))
    if cursor_field:
        names[cursor_field] = None
    declared = options.schema_
    return pa.schema(
        [pa.field(name, ARROW_TYPES[declared.get(name, "string")], nullable=True) for name in names]
    )


def _as_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _as_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        return int(value)
    raise ValueError("not a whole number")


def _as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(value)
    raise ValueError("not a number")


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise ValueError("not a boolean")


def _as_date(value: Any) -> dt.date:
    if isinstance(value, str):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            return dt.datetime.fromisoformat(text).date()
    raise ValueError("not an ISO-8601 date")


def _as_timestamp(value: Any) -> dt.datetime:
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value.strip())
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
        return parsed
    raise ValueError("not an ISO-8601 timestamp")


_CONVERTERS: Mapping[str, Callable[[Any], Any]] = {
    "string": _as_string,
    "int64": _as_int,
    "float64": _as_float,
    "bool": _as_bool,
    "date": _as_date,
    "timestamp": _as_timestamp,
}
_TYPE_NAMES = {str(arrow_type): name for name, arrow_type in ARROW_TYPES.items()}


class _ArrowConverter:
    """Records to record batches of one fixed schema."""

    def __init__(self, source_id: str, schema: pa.Schema) -> None:
        self.source_id = source_id
        self.schema = schema
        self.names = frozenset(schema.names)
        self._warned: set[str] = set()

    def batch(self, records: Sequence[tuple[Mapping[str, Any], str]]) -> pa.RecordBatch:
        self._warn_about_new_fields(records)
        arrays = [self._column(f, records) for f in self.schema]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _column(
        self, arrow_field: pa.Field, records: Sequence[tuple[Mapping[str, Any], str]]
    ) -> pa.Array:
        type_name = _TYPE_NAMES[str(arrow_field.type)]
        convert = _CONVERTERS[type_name]
        values = []
        for record, where in records:
            value = record.get(arrow_field.name)
            if value is None:
                values.append(None)
                continue
            try:
                values.append(convert(value))
            except (ValueError, TypeError, OverflowError):
                raise SourceDataError(
                    self.source_id,
                    f"{where}: field {arrow_field.name!r} holds {_json_kind(value)} that is not "
                    f"a valid {type_name} (declared in the option 'schema')",
                ) from None
        try:
            return pa.array(values, type=arrow_field.type)
        except (pa.ArrowException, OverflowError) as exc:
            raise SourceDataError(
                self.source_id,
                f"field {arrow_field.name!r}: cannot build a {type_name} column "
                f"({type(exc).__name__})",
            ) from None

    def _warn_about_new_fields(self, records: Sequence[tuple[Mapping[str, Any], str]]) -> None:
        for record, where in records:
            for name in record:
                if name not in self.names and name not in self._warned:
                    self._warned.add(name)
                    log.warning(
                        "source %r: field %r first appears on %s, after the columns were fixed "
                        "by the first page; it is dropped (declare it in the connector option "
                        "'schema' to keep it)",
                        self.source_id,
                        name,
                        where,
                    )


# --------------------------------------------------------------------------------------------
# Option checks


def _cursor_field(request: ExtractRequest, options: RestOptions) -> str | None:
    if options.incremental is not None:
        name = options.incremental.field or request.cursor_column
        if not name:
            raise ConnectorOptionError(
                request.source_id,
                "incremental.field",
                "required: name the record field that grows with every change "
                "(or set the source's cursor)",
            )
        return name
    return request.cursor_column


def _option_error(source_id: str, model: type[BaseModel], exc: ValidationError) -> ConnectorError:
    """The first validation problem as a :class:`ConnectorOptionError` with a dotted option name.

    Discriminator tags that pydantic puts in the location (``pagination.page.page_sise``) are
    left out, and an unknown option lists the options of its own block.
    """
    errors = exc.errors(include_url=False)
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo
    *parents, last = [str(part) for part in first["loc"]] or ["(options)"]
    current: Any = model  # a model, the members of a tagged union, or None once off the models
    shown: list[str] = []
    for part in parents:
        if isinstance(current, list):
            tagged = next((m for m in current if part in _literal_values(m)), None)
            if tagged is not None:
                current = tagged
                continue
        shown.append(part)
        info = _field_info(current, part) if isinstance(current, type) else None
        members = _models_in(info.annotation) if info is not None else []
        current = members[0] if len(members) == 1 else (members or None)
    option = ".".join([*shown, last])
    if first["type"] == "extra_forbidden" and isinstance(current, type):
        known = ", ".join(sorted(i.alias or name for name, i in current.model_fields.items()))
        where = "" if shown else " for the rest connector"
        reason = f"unknown option{where} (known: {known})"
    else:
        reason = first["msg"].removeprefix("Value error, ")
    return ConnectorOptionError(source_id, option, reason)


def _field_info(model: type[BaseModel], name: str) -> Any:
    return model.model_fields.get(name) or next(
        (info for info in model.model_fields.values() if info.alias == name), None
    )


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _literal_values(model: type[BaseModel]) -> tuple[Any, ...]:
    field_info = model.model_fields.get("type")
    return get_args(field_info.annotation) if field_info is not None else ()
