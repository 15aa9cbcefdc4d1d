"""Who is calling, and may they: bearer tokens, scopes, rate limits and case references.

Every route but ``/healthz``, ``/readyz`` and the token endpoint depends on :func:`require`
with a scope. The dependency answers, as problem documents:

- 401 ``missing_token`` / ``invalid_token`` / ``token_expired`` (with ``WWW-Authenticate``):
  no bearer token, a forged, malformed, wrong-audience or expired one, a token of a revoked
  client or one issued before the client's secret was rotated;
- 403 ``insufficient_scope``: the client is not granted the scope the route needs;
- 429 ``rate_limited`` (with ``Retry-After``): the client is over its requests per second.

Reads of personal data also need a case reference (``X-Case-Id``, :func:`case_id`), which goes
into the audit trail with the matter.
"""

from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Header, Request
from fastapi.concurrency import run_in_threadpool

from license_store.clients import ApiClient, ClientCache
from license_store.problems import ProblemError
from license_store.tokens import Claims, InvalidToken, TokenIssuer, secret_version

__all__ = [
    "CASE_ID_PATTERN",
    "Caller",
    "RateLimiter",
    "authorize",
    "case_id",
    "checked_case_id",
    "header_parameters",
    "require",
    "valid_case_id",
]

CASE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$"
_CASE_ID = re.compile(CASE_ID_PATTERN)
AUTHORIZATION_DOC = "`Bearer <token>` from `POST /v1/oauth/token`"
CASE_ID_DOC = (
    "the intake case this read is for (办件编号), 1-64 characters: letters, digits and "
    ". _ : / -; written to the audit trail"
)
CASE_ID_EXAMPLE = "FS-2026-000123"
_BEARER = re.compile(r"^Bearer ([A-Za-z0-9_.~+/=-]{1,4096})$", re.IGNORECASE)


def valid_case_id(text: str) -> bool:
    """Whether ``text`` is a well-formed case reference (:data:`CASE_ID_PATTERN`)."""
    return _CASE_ID.match(text) is not None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its client record and its token's claims."""

    client: ApiClient
    claims: Claims

    @property
    def client_id(self) -> str:
        """The client's id (as written to the audit trail)."""
        return self.client.client_id


def _unauthorized(code: str, detail: str) -> ProblemError:
    error = "invalid_request" if code == "missing_token" else "invalid_token"
    return ProblemError(
        401,
        code,
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": f'Bearer realm="govexchange", error="{error}"'},
    )


class RateLimiter:
    """A token bucket per client, in this process: ``rate`` requests/s, bursts of ``rate``
    (at least 1). With several API workers each has its own buckets, so the effective limit is
    the workers times the client's ``rate_limit``; size it that way."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, last time)

    def wait_time(self, client_id: str, rate: float) -> float:
        """0 if the request may go now (and it is counted), else seconds until it may."""
        capacity = max(1.0, rate)
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(client_id, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * rate)
            if tokens >= 1.0:
                self._buckets[client_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client_id] = (tokens, now)
            return (1.0 - tokens) / rate


async def _authenticate(request: Request, authorization: str | None) -> Caller:
    if not authorization:
        raise _unauthorized("missing_token", "this call needs an 'Authorization: Bearer' token")
    matched = _BEARER.match(authorization.strip())
    if matched is None:
        raise _unauthorized("invalid_token", "the Authorization header is not 'Bearer <token>'")
    tokens: TokenIssuer = request.app.state.tokens
    try:
        claims = tokens.verify(matched.group(1))
    except InvalidToken as error:
        code = "token_expired" if error.expired else "invalid_token"
        raise _unauthorized(code, error.reason) from None
    clients: ClientCache = request.app.state.clients
    known, client = clients.fresh(claims.client_id)
    if not known:  # a database read: off the event loop
        client = await run_in_threadpool(clients.get, claims.client_id)
    if client is None or not client.active:
        raise _unauthorized("invalid_token", "the token's client is unknown or revoked")
    if claims.secret_version != secret_version(client):
        raise _unauthorized("invalid_token", "the client's secret was rotated after this token")
    return Caller(client, claims)


async def authorize(request: Request, scope: str, authorization: str | None) -> Caller:
    """The caller of ``request`` (its ``Authorization`` header value given), authenticated,
    granted ``scope`` and within its rate; a :class:`ProblemError` (401/403/429) otherwise."""
    caller = await _authenticate(request, authorization)
    if scope not in caller.claims.scopes or scope not in caller.client.scopes:
        raise ProblemError(
            403,
            "insufficient_scope",
            "Forbidden",
            f"this call needs the {scope!r} scope, which the client is not granted",
        )
    rate = caller.client.rate_limit
    if rate is not None:
        limiter: RateLimiter = request.app.state.rate_limiter
        wait = limiter.wait_time(caller.client_id, rate)
        if wait > 0:
            raise ProblemError(
                429,
                "rate_limited",
                "Too many requests",
                f"the client is over its rate limit of {rate:g} requests/s",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
    request.state.client_id = caller.client_id
    return caller


def require(scope: str) -> object:
    """A dependency: the :class:`Caller`, authenticated, granted ``scope`` and within its rate."""

    async def dependency(
        request: Request,
        authorization: Annotated[str | None, Header(description=AUTHORIZATION_DOC)] = None,
    ) -> Caller:
        return await authorize(request, scope, authorization)

    return Depends(dependency)


async def case_id(
    x_case_id: Annotated[
        str | None,
        Header(alias="X-Case-Id", description=CASE_ID_DOC, examples=[CASE_ID_EXAMPLE]),
    ] = None,
) -> str:
    """The request's case reference (HTTP 422 ``invalid_case_id`` when missing or malformed)."""
    return checked_case_id(x_case_id)


def checked_case_id(x_case_id: str | None) -> str:
    """``x_case_id`` (the ``X-Case-Id`` header) if well formed; HTTP 422 ``invalid_case_id``
    when missing or malformed."""
    if x_case_id is None or not x_case_id.strip():
        raise ProblemError(
            422,
            "invalid_case_id",
            "Invalid case id",
            "reads of personal data need an X-Case-Id header naming the case",
            field="X-Case-Id",
        )
    if not _CASE_ID.match(x_case_id):
        raise ProblemError(
            422,
            "invalid_case_id",
            "Invalid case id",
            "X-Case-Id must be 1-64 characters: letters, digits and . _ : / -",
            field="X-Case-Id",
        )
    return x_case_id


def header_parameters() -> list[dict[str, Any]]:
    """OpenAPI parameters for ``Authorization`` and ``X-Case-Id``, as :func:`require` and
    :func:`case_id` document them, for a route that reads the headers itself."""
    return [
        _optional_header("authorization", AUTHORIZATION_DOC),
        _optional_header("X-Case-Id", CASE_ID_DOC, CASE_ID_EXAMPLE),
    ]


def _optional_header(name: str, description: str, example: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": description,
        "title": name.title() if name.islower() else name,
    }
    if example is not None:
        schema["examples"] = [example]
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": schema,
        "description": description,
    }
