"""Who may open the admin dashboard: an optional shared token (``GOVX_ADMIN_TOKEN``).

Without the variable the dashboard is open to whoever reaches it, so it must sit behind the
deployment's admin network or proxy authentication. With it, a request needs either the header
``Authorization: Bearer <token>`` or the session cookie that ``POST /admin/login`` sets after the
token was typed into the login form. The token travels in a header or a form body, never in a URL,
so it never appears in an access log; the cookie holds an HMAC of the token, not the token.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from fastapi import Request

__all__ = ["COOKIE_NAME", "TOKEN_ENV", "admin_token", "cookie_value", "is_authorised", "token_ok"]

TOKEN_ENV = "GOVX_ADMIN_TOKEN"
COOKIE_NAME = "govx_admin"
_COOKIE_CONTEXT = b"govexchange admin session v1"


def admin_token() -> str | None:
    """The configured token, or ``None`` when the dashboard is not protected by one."""
    return os.environ.get(TOKEN_ENV) or None


def cookie_value(token: str) -> str:
    """What the session cookie holds for ``token`` (an HMAC, so the cookie is not the token)."""
    return hmac.new(token.encode(), _COOKIE_CONTEXT, hashlib.sha256).hexdigest()


def token_ok(given: str, token: str) -> bool:
    """Whether ``given`` is the token (constant-time comparison)."""
    return hmac.compare_digest(given.encode(), token.encode())


def is_authorised(request: Request) -> bool:
    """Whether the request may see the dashboard."""
    token = admin_token()
    if token is None:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token_ok(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE_NAME, "")
    return hmac.compare_digest(cookie.encode(), cookie_value(token).encode())
