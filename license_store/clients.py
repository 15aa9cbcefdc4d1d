"""The systems allowed to call the license API, and their grants (OAuth2 client credentials).

A client is an intake system (一窗受理 front desk software), a holder-facing portal, an exchange
node or a monitor. Each has a ``client_id`` and a secret; the secret is shown once, when it is
made (:meth:`ClientRegistry.add`, :meth:`ClientRegistry.rotate`), and stored only as an scrypt
hash. A client's **grants** say what it may read at all:

- ``matters``: matter codes of the catalogue it handles (``config/matters.yaml``);
- ``license_types``: license type ids it may receive (``config/license_types.yaml``);
- ``scopes``: what kind of calls it may make (:data:`SCOPES`).

A read for a matter returns only the license types that the matter lists as materials **and**
that the client is granted (:mod:`license_store.access`). Revoking a client stops its tokens at
once (the API re-reads the client, see :class:`ClientCache`). ``govx clients`` is the terminal
front end.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from sqlalchemy import select, update
from sqlalchemy.engine import Row

from exchange.db import begin_write, safe_url
from license_store.database import create_store_engine, translate_errors
from license_store.errors import ConflictError, LicenseStoreError
from license_store.models import api_clients

__all__ = [
    "DEFAULT_SCOPES",
    "KINDS",
    "SCOPES",
    "ApiClient",
    "ClientCache",
    "ClientError",
    "ClientRegistry",
    "UnknownClient",
    "hash_secret",
    "secret_matches",
]

KINDS = ("intake", "portal", "node", "monitor")
SCOPES: dict[str, str] = {
    "licenses:read": "a holder's licenses for a matter, prefill, a license and its verification",
    "catalog:read": "the license-type and matter catalogues",
    "access-log:read": "a holder's access log (for the holder-facing portal)",
    "metrics:read": "the Prometheus metrics",
    "exchange:push": "deliver replication packages (exchange nodes)",
}
DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {
    "intake": ("licenses:read", "catalog:read"),
    "portal": ("access-log:read", "catalog:read"),
    "node": ("exchange:push", "licenses:read", "catalog:read"),
    "monitor": ("metrics:read",),
}
CLIENT_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,63}$")
SECRET_BYTES = 32
# scrypt at 16 MiB, ~50 ms: only the token endpoint pays it, once per token.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_MAXMEM = 64 * 1024 * 1024


class ClientError(LicenseStoreError):
    """A client could not be added or changed as asked (the message says why)."""


class UnknownClient(ClientError):
    """No client has this id."""


@dataclass(frozen=True, slots=True)
class ApiClient:
    """A registered caller of the API and its grants (never its secret)."""

    client_id: str
    name: str
    kind: str
    department: str | None
    region: str | None
    matters: tuple[str, ...]
    license_types: tuple[str, ...]
    scopes: tuple[str, ...]
    rate_limit: float | None
    created_at: dt.datetime
    secret_set_at: dt.datetime
    revoked_at: dt.datetime | None

    @property
    def active(self) -> bool:
        """False once revoked."""
        return self.revoked_at is None

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly (for ``govx clients list --json``)."""
        return {
            "client_id": self.client_id,
            "name": self.name,
            "kind": self.kind,
            "department": self.department,
            "region": self.region,
            "matters": list(self.matters),
            "license_types": list(self.license_types),
            "scopes": list(self.scopes),
            "rate_limit": self.rate_limit,
            "created_at": self.created_at.isoformat(),
            "secret_set_at": self.secret_set_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_secret(secret: str) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``secret`` (salted, memory-hard)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        secret.encode("utf-8"),
        salt=salt,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=SCRYPT_MAXMEM,
        dklen=32,
    )
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored`` (constant-time compare); False for junk."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            secret.encode("utf-8"),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            maxmem=SCRYPT_MAXMEM,
            dklen=32,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, _unb64(digest))


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _client_from_row(row: Row[Any]) -> ApiClient:
    created = _utc(row.created_at)
    secret_set = _utc(row.secret_set_at)
    assert created is not None and secret_set is not None
    return ApiClient(
        client_id=row.client_id,
        name=row.name,
        kind=row.kind,
        department=row.department,
        region=row.region,
        matters=tuple(row.matters),
        license_types=tuple(row.license_types),
        scopes=tuple(row.scopes),
        rate_limit=row.rate_limit,
        created_at=created,
        secret_set_at=secret_set,
        revoked_at=_utc(row.revoked_at),
    )


def _unique(values: Iterable[str], what: str) -> list[str]:
    out: list[str] = []
    for value in values:
        text = str(value).strip()
        if not text:
            raise ClientError(f"an empty {what} was given")
        if text not in out:
            out.append(text)
    return out


class ClientRegistry:
    """The ``api_clients`` table of the license store's database, reached by URL.

    ``url`` defaults to :func:`exchange.settings.license_db_url`; the schema comes with the
    license store's migrations (``LicenseStore.upgrade()``).
    """

    def __init__(self, url: str | None = None) -> None:
        if url is None:
            from exchange.settings import license_db_url

            url = license_db_url()
        self.url = safe_url(url)
        with translate_errors(self.url):
            self._engine = create_store_engine(url)

    def __repr__(self) -> str:
        return f"ClientRegistry({self.url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool."""
        self._engine.dispose()

    def add(
        self,
        *,
        name: str,
        kind: str = "intake",
        department: str | None = None,
        region: str | None = None,
        matters: Sequence[str] = (),
        license_types: Sequence[str] = (),
        scopes: Sequence[str] | None = None,
        rate_limit: float | None = None,
        client_id: str | None = None,
    ) -> tuple[ApiClient, str]:
        """Register a client; returns it and its secret (shown this once, stored hashed).

        ``scopes`` default to the kind's (:data:`DEFAULT_SCOPES`); ``client_id`` to one made
        from the kind and random letters. Grants are checked here for shape only; ``govx
        clients add`` checks them against the deployment's catalogue.
        """
        if kind not in KINDS:
            raise ClientError(f"client kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not name.strip():
            raise ClientError("a client needs a name")
        chosen_scopes = _unique(DEFAULT_SCOPES[kind] if scopes is None else scopes, "scope")
        unknown = [scope for scope in chosen_scopes if scope not in SCOPES]
        if unknown:
            raise ClientError(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
        if rate_limit is not None and not rate_limit > 0:
            raise ClientError(f"rate limit must be > 0 requests/s, got {rate_limit}")
        if region is not None and not re.fullmatch(r"\d{6}", region):
            raise ClientError(f"region must be a 6-digit GB/T 2260 code, got {region!r}")
        client_id = client_id or f"{kind}-{secrets.token_hex(6)}"
        if not CLIENT_ID.fullmatch(client_id):
            raise ClientError(
                f"client id {client_id!r} must be 3-64 characters: lower-case letters, digits, "
                "'_', '.', '-'"
            )
        secret = secrets.token_urlsafe(SECRET_BYTES)
        now = dt.datetime.now(dt.UTC)
        row = {
            "client_id": client_id,
            "name": name.strip(),
            "kind": kind,
            "department": department,
            "region": region,
            "matters": _unique(matters, "matter"),
            "license_types": _unique(license_types, "license type"),
            "scopes": chosen_scopes,
            "rate_limit": rate_limit,
            "secret_hash": hash_secret(secret),
            "secret_set_at": now,
            "created_at": now,
            "revoked_at": None,
        }
        with translate_errors(self.url), begin_write(self._engine) as conn:
            exists = conn.execute(
                select(api_clients.c.client_id).where(api_clients.c.client_id == client_id)
            ).first()
            if exists is not None:
                raise ConflictError(f"a client {client_id!r} exists already")
            conn.execute(api_clients.insert().values(**row))
        return self.get(client_id), secret

    def get(self, client_id: str) -> ApiClient:
        """The client, revoked or not; :class:`UnknownClient` if there is none."""
        with translate_errors(self.url), self._engine.connect() as conn:
            row = conn.execute(
                select(api_clients).where(api_clients.c.client_id == client_id)
            ).first()
        if row is None:
            raise UnknownClient(f"no client {client_id!r}")
        return _client_from_row(row)

    def list(self, *, include_revoked: bool = True) -> list[ApiClient]:
        """Every client by id."""
        query = select(api_clients).order_by(api_clients.c.client_id)
        if not include_revoked:
            query = query.where(api_clients.c.revoked_at.is_(None))
        with translate_errors(self.url), self._engine.connect() as conn:
            return [_client_from_row(row) for row in conn.execute(query)]

    def revoke(self, client_id: str) -> ApiClient:
        """Revoke the client: its secret and its tokens stop working. Revoking twice is a no-op."""
        with translate_errors(self.url), begin_write(self._engine) as conn:
            result = conn.execute(
                update(api_clients)
                .where(api_clients.c.client_id == client_id)
                .where(api_clients.c.revoked_at.is_(None))
                .values(revoked_at=dt.datetime.now(dt.UTC))
            )
        if result.rowcount == 0:
            self.get(client_id)  # UnknownClient, or revoked already
        return self.get(client_id)

    def rotate(self, client_id: str) -> str:
        """A new secret for the client (returned once); the old one stops working, and so do
        tokens issued before the rotation."""
        client = self.get(client_id)
        if not client.active:
            raise ClientError(f"client {client_id!r} is revoked; add a new client instead")
        secret = secrets.token_urlsafe(SECRET_BYTES)
        with translate_errors(self.url), begin_write(self._engine) as conn:
            conn.execute(
                update(api_clients)
                .where(api_clients.c.client_id == client_id)
                .values(secret_hash=hash_secret(secret), secret_set_at=dt.datetime.now(dt.UTC))
            )
        return secret

    def authenticate(self, client_id: str, secret: str) -> ApiClient | None:
        """The active client whose id and secret these are, else None (no reason given: the
        token endpoint answers every failure alike)."""
        with translate_errors(self.url), self._engine.connect() as conn:
            row = conn.execute(
                select(api_clients).where(api_clients.c.client_id == client_id)
            ).first()
        if row is None:
            # Spend the same time as a real check: no timing oracle on which ids exist.
            secret_matches(secret, _dummy_hash())
            return None
        if not secret_matches(secret, row.secret_hash) or row.revoked_at is not None:
            return None
        return _client_from_row(row)


@functools.cache
def _dummy_hash() -> str:
    return hash_secret(secrets.token_urlsafe(SECRET_BYTES))


class ClientCache:
    """Clients by id for the API, re-read after ``ttl`` seconds: a revocation or rotation takes
    effect within ``ttl`` without a database read per request."""

    def __init__(self, registry: ClientRegistry, ttl: float = 5.0) -> None:
        self.registry = registry
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, ApiClient | None]] = {}

    def fresh(self, client_id: str) -> tuple[bool, ApiClient | None]:
        """``(True, client or None)`` if the cache knows the id and is fresh, else ``(False,
        None)``: lets an event loop avoid a database read in the common case."""
        cached = self._entries.get(client_id)
        if cached is not None and time.monotonic() - cached[0] < self.ttl:
            return True, cached[1]
        return False, None

    def get(self, client_id: str) -> ApiClient | None:
        """The client, or None if unknown (read from the database when not cached fresh)."""
        now = time.monotonic()
        cached = self._entries.get(client_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            client: ApiClient | None = self.registry.get(client_id)
        except UnknownClient:
            client = None
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[client_id] = (now, client)
        return client
