"""Short-lived bearer tokens of the license API: signed JWTs for OAuth2 client credentials.

``POST /v1/oauth/token`` trades a client's id and secret for a token (:meth:`TokenIssuer.issue`);
every other call shows it as ``Authorization: Bearer <token>`` and the API checks it with
:meth:`TokenIssuer.verify`. Tokens are HS256 JWTs (pyjwt) under a key only the API holds:
``GOVX_TOKEN_KEY`` or ``$GOVX_HOME/token.key`` (made on first use, mode 0600; set the variable
when several hosts serve one store). Claims: ``iss``, ``aud``, ``sub`` (the client id), ``scope``,
``iat``, ``exp`` (default 10 minutes), ``jti`` and ``sv`` -- when the client's secret was set, so
that rotating a secret also retires the tokens issued under the old one.

A verified token is cached by its text until it expires, so a busy client costs one HMAC and one
JSON parse per token, not per request.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import jwt

from license_store.clients import ApiClient

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "ISSUER",
    "Claims",
    "InvalidToken",
    "TokenIssuer",
    "token_key",
]

ALGORITHM = "HS256"
ISSUER = "govexchange"
AUDIENCE = "govexchange:license-api"
DEFAULT_TTL = 600
KEY_ENV = "GOVX_TOKEN_KEY"
KEY_FILE_NAME = "token.key"
CACHE_SIZE = 4096
LEEWAY = 5  # seconds of clock skew accepted on exp/iat


class InvalidToken(Exception):
    """The token is missing, malformed, forged, expired or for another audience.

    ``reason`` is a short, stable text for the problem document (never the token itself).
    """

    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.expired = expired


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float
    secret_version: int
    token_id: str


def token_key() -> bytes:
    """The signing key: ``GOVX_TOKEN_KEY``, else ``$GOVX_HOME/token.key`` (created on first use)."""
    configured = os.environ.get(KEY_ENV)
    if configured:
        return configured.encode("utf-8")
    from exchange.settings import govx_home
    from license_store.audit import key_file

    return key_file(govx_home() / KEY_FILE_NAME)


def secret_version(client: ApiClient) -> int:
    """The ``sv`` claim: when the client's current secret was set (microseconds)."""
    return int(client.secret_set_at.timestamp() * 1_000_000)


class TokenIssuer:
    """Issues and verifies the API's bearer tokens under one key and audience."""

    def __init__(
        self,
        key: bytes | None = None,
        *,
        audience: str = AUDIENCE,
        issuer: str = ISSUER,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self._key = key if key is not None else token_key()
        if len(self._key) < 32:
            raise ValueError("the token key must have at least 32 bytes")
        self.audience = audience
        self.issuer = issuer
        self.ttl = ttl
        self._cache: OrderedDict[str, Claims] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self, client: ApiClient, scopes: frozenset[str] | None = None) -> tuple[str, int]:
        """A token for ``client`` with ``scopes`` (default: all it is granted); and its lifetime."""
        granted = frozenset(client.scopes) if scopes is None else scopes & set(client.scopes)
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client.client_id,
            "scope": " ".join(sorted(granted)),
            "iat": now,
            "exp": now + self.ttl,
            "jti": secrets.token_hex(8),
            "sv": secret_version(client),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM), self.ttl

    def verify(self, token: str) -> Claims:
        """The claims of a valid token; :class:`InvalidToken` otherwise."""
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + LEEWAY < now:
                raise InvalidToken("the token has expired", expired=True)
            return cached
        try:
            decoded = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iat", "sub", "aud", "iss", "sv"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("the token has expired", expired=True) from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("the token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("the token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("the token's signature is not valid") from None
        except jwt.MissingRequiredClaimError as error:
            raise InvalidToken(f"the token lacks the {error.claim!r} claim") from None
        except jwt.PyJWTError:
            raise InvalidToken("the token is malformed") from None
        try:
            claims = Claims(
                client_id=str(decoded["sub"]),
                scopes=frozenset(str(decoded.get("scope", "")).split()),
                expires_at=float(decoded["exp"]),
                secret_version=int(decoded["sv"]),
                token_id=str(decoded.get("jti", "")),
            )
        except (TypeError, ValueError):
            raise InvalidToken("the token is malformed") from None
        with self._lock:
            self._cache[token] = claims
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return claims


def expires_at_text(claims: Claims) -> str:
    """The expiry as ISO 8601 UTC (for logs and the CLI)."""
    return dt.datetime.fromtimestamp(claims.expires_at, dt.UTC).isoformat()
