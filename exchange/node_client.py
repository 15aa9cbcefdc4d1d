"""This node's HTTP client to its parent node: credentials, tokens, lookups and other calls.

A county or a city node calls its parent's license API as a registered ``node`` client (OAuth2
client credentials, ``docs/intake-api.md``). ``govx node connect`` stores the credentials in
``$GOVX_HOME/node-credentials.json`` (mode 0600); :func:`load_parent_client` reads them with the
node's identity (``$GOVX_HOME/node.json``, :mod:`exchange.nodes`) and returns a
:class:`ParentClient`, or ``None`` when the node has no parent or no credentials yet.

:class:`ParentClient` is :class:`license_store.client.LicenseClient`'s token handling (fetched on
first use, cached until shortly before it expires, re-fetched once when the parent answers 401)
over its own transport: no automatic retries (a forwarded lookup has an intake window waiting),
a connection pool sized for concurrent forwards, and a timeout per call. Errors::

    ParentError                 .transient
    ├── ParentUnavailable       True    no connection, a timeout, or a 5xx answer
    └── ParentRefused           False   the parent refused the node's credentials

Their messages name the parent (region and URL), never a path or an ID number.

The headers of a forwarded lookup (``docs/replication.md``, "Cross-region lookup"):
``X-Govx-On-Behalf-Of: <region>/<client id>`` names the original client and the node it called,
``X-Govx-Hops`` counts the forwards so far; the answer says who answered in
``X-Govx-Answered-By`` (and ``answered_by`` in the body), and a node that could not ask its
parent says why in ``X-Govx-Forward-Failed``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from exchange.nodes import NodeConfig, NodeError, load_node, node_file
from license_store.client import LicenseApiError, LicenseClient, ServerError

__all__ = [
    "ANSWERED_BY_HEADER",
    "CREDENTIALS_FILE",
    "FORWARD_FAILED_HEADER",
    "HOPS_HEADER",
    "ON_BEHALF_OF_HEADER",
    "ParentClient",
    "ParentCredentials",
    "ParentError",
    "ParentRefused",
    "ParentUnavailable",
    "credentials_file",
    "load_parent_client",
    "load_parent_credentials",
    "save_parent_credentials",
]

log = logging.getLogger("govexchange.node")

CREDENTIALS_FILE = "node-credentials.json"
ON_BEHALF_OF_HEADER = "X-Govx-On-Behalf-Of"
HOPS_HEADER = "X-Govx-Hops"
ANSWERED_BY_HEADER = "X-Govx-Answered-By"
FORWARD_FAILED_HEADER = "X-Govx-Forward-Failed"
CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 10.0
POOL_SIZE = 32  # connections kept to the parent: as many as forwards may run at once
_CLIENT_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{2,63}$")  # as license_store.clients registers

Timeout = float | tuple[float, float]


# -- errors -------------------------------------------------------------------------------------


class ParentError(Exception):
    """A call to the parent node failed; the message names the parent, never an ID."""

    transient: ClassVar[bool] = False


class ParentUnavailable(ParentError):
    """The parent could not be reached, did not answer in time, or answered 5xx."""

    transient = True


class ParentRefused(ParentError):
    """The parent refused the node's credentials (its token endpoint answered 4xx)."""


# -- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParentCredentials:
    """The node's client id and secret at its parent (``node-credentials.json``)."""

    parent: str  # the parent's region code, as node.json had it when they were stored
    client_id: str
    client_secret: str = field(repr=False)
    saved_at: str


def credentials_file(home: Path) -> Path:
    """Where the node's credentials for its parent live under the data directory ``home``."""
    return home / CREDENTIALS_FILE


def _parent_of(home: Path) -> NodeConfig:
    node = load_node(home)
    if node.parent is None or node.parent_url is None:
        raise NodeError(f"node {node.region} is a province: it has no parent to connect to")
    return node


def save_parent_credentials(
    home: Path, client_id: str, client_secret: str, *, now: dt.datetime | None = None
) -> ParentCredentials:
    """Store the node's credentials for its parent (replacing any), mode 0600, atomically.

    :class:`NodeError` if the deployment is not a node with a parent, or the id or secret is
    malformed. The secret is never part of an error message.
    """
    node = _parent_of(home)
    client_id = client_id.strip()
    client_secret = client_secret.strip()
    if not _CLIENT_ID.fullmatch(client_id):
        raise NodeError(
            f"client id {client_id!r} must be 3-64 characters: lower-case letters, digits, "
            "'_', '.', '-'"
        )
    if not client_secret or any(character.isspace() for character in client_secret):
        raise NodeError("the client secret is empty or holds white space")
    saved = ParentCredentials(
        parent=str(node.parent),
        client_id=client_id,
        client_secret=client_secret,
        saved_at=(now or dt.datetime.now(dt.UTC)).isoformat(),
    )
    path = credentials_file(home)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(
                {
                    "parent": saved.parent,
                    "client_id": saved.client_id,
                    "client_secret": saved.client_secret,
                    "saved_at": saved.saved_at,
                },
                handle,
                indent=2,
            )
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return saved


def load_parent_credentials(home: Path) -> ParentCredentials | None:
    """The node's credentials for its parent; ``None`` if none were stored; :class:`NodeError`
    if the file is unreadable or is for another parent than ``node.json`` names."""
    path = credentials_file(home)
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise NodeError(f"{path} is not node credentials ({type(error).__name__})") from None
    names = set(ParentCredentials.__dataclass_fields__)
    if not isinstance(data, dict) or set(data) != names:
        raise NodeError(f"{path} is not node credentials (fields {', '.join(sorted(names))})")
    if not all(isinstance(value, str) and value for value in data.values()):
        raise NodeError(f"{path} is not node credentials (every field is a text)")
    credentials = ParentCredentials(**data)
    if node_file(home).exists():
        node = load_node(home)
        if node.parent != credentials.parent:
            raise NodeError(
                f"{path} holds credentials for {credentials.parent}, but the node's parent is "
                f"{node.parent}: run `govx node connect` again"
            )
    return credentials


def load_parent_client(home: Path, **options: Any) -> ParentClient | None:
    """The client of this node's parent; ``None`` when the deployment is not a node, the node
    has no parent (the province) or no credentials for it yet (``govx node connect``).
    ``options`` go to :class:`ParentClient`. :class:`NodeError` if a file is unreadable."""
    if not node_file(home).exists():
        return None
    node = load_node(home)
    if node.parent is None or node.parent_url is None:
        return None
    credentials = load_parent_credentials(home)
    if credentials is None:
        return None
    return ParentClient(
        node.parent, node.parent_url, credentials.client_id, credentials.client_secret, **options
    )


# -- the client ---------------------------------------------------------------------------------


class ParentClient(LicenseClient):
    """The node's client of its parent ``parent`` (region code) at ``base_url``.

    Tokens as :class:`~license_store.client.LicenseClient` keeps them; no automatic retries;
    ``timeout`` (seconds, or ``(connect, read)``) is the default of every call, and a call may
    give its own. Safe to share between threads.
    """

    def __init__(
        self,
        parent: str,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: Timeout = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
        pool_size: int = POOL_SIZE,
        session: requests.Session | None = None,
        verify: bool | str = True,
    ) -> None:
        super().__init__(
            base_url,
            client_id,
            client_secret,
            timeout=timeout,  # type: ignore[arg-type]  # requests takes a (connect, read) pair
            retries=0,
            session=session,
            verify=verify,
        )
        self.parent = parent
        # replaces the base class's adapter: no retries (Retry(0, read=False)), a bigger pool
        self._session.mount(self.base_url + "/", HTTPAdapter(pool_maxsize=pool_size, max_retries=0))

    def __repr__(self) -> str:
        return (
            f"ParentClient({self.parent} at {self.base_url!r}, client_id={self.client_id!r}, "
            "secret=***)"
        )

    def __enter__(self) -> ParentClient:
        return self

    @property
    def where(self) -> str:
        """The parent as error messages name it."""
        return f"parent {self.parent} at {self.base_url}"

    # -- calls ----------------------------------------------------------------------------------

    def lookup(
        self,
        holder_id: str,
        matter: str,
        case_id: str,
        on_behalf_of: str,
        *,
        hops: int = 1,
        timeout: Timeout | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Ask the parent for the holder's licenses for ``matter`` and ``case_id``, on behalf of
        ``<region>/<client id>``, this being forward number ``hops``. The HTTP status and the
        decoded body (``{}`` if it is not a JSON object); :class:`ParentUnavailable` when there
        is no answer or a 5xx one, :class:`ParentRefused` when no token is to be had."""
        response = self.request(
            "GET",
            f"/v1/holders/{quote(holder_id, safe='')}/licenses",
            params={"matter": matter},
            headers={
                "X-Case-Id": case_id,
                ON_BEHALF_OF_HEADER: on_behalf_of,
                HOPS_HEADER: str(hops),
            },
            timeout=timeout,
        )
        try:
            body = response.json()
        except ValueError:
            body = {}
        return response.status_code, body if isinstance(body, dict) else {}

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """Send ``method path`` to the parent with the node's bearer token and return the answer
        (any status below 500). On a 401 the token is fetched again and the call made once more,
        so a body must be replayable (bytes or a dict, not a stream). ``kwargs`` go to
        :meth:`requests.Session.request` (``params``, ``headers``, ``json``, ``data``,
        ``timeout`` ...). :class:`ParentUnavailable` for no answer or a 5xx one,
        :class:`ParentRefused` when the parent will not give the node a token."""
        headers = dict(kwargs.pop("headers", None) or {})
        response: requests.Response | None = None
        token: str | None = None
        for _attempt in (1, 2):
            token = self._bearer(refused=token)
            response = self._send(
                method, path, headers={**headers, "Authorization": f"Bearer {token}"}, **kwargs
            )
            if response.status_code != 401:
                break
            log.info("%s refused the node's token (401)", self.where)
        assert response is not None
        if response.status_code >= 500:
            raise ParentUnavailable(f"{self.where} answered {response.status_code}")
        return response

    def check_credentials(self) -> None:
        """Fetch a new token: returns if the parent accepts the node's credentials."""
        self._bearer(refused=self._token.value if self._token is not None else "")

    # -- plumbing -------------------------------------------------------------------------------

    def _bearer(self, *, refused: str | None = None) -> str:
        """The cached token, or a new one when there is none, it is about to expire, or it is
        the token the parent has just ``refused`` (unless another thread replaced it already:
        concurrent 401s fetch one new token, not one each)."""
        current = self._token
        if refused is not None and current is not None and current.value != refused:
            return current.value
        try:
            return self._access_token(force=refused is not None)
        except ServerError as error:
            raise ParentUnavailable(
                f"{self.where}: its token endpoint answered {error.status}"
            ) from None
        except LicenseApiError as error:
            raise ParentRefused(
                f"{self.where} refused client {self.client_id!r}: {error.status} {error.code}"
            ) from None

    def _send(
        self, method: str, path: str, *, timeout: Timeout | None = None, **kwargs: Any
    ) -> requests.Response:
        """One HTTP exchange; transport failures become :class:`ParentUnavailable` (the base
        class's token fetch comes through here too)."""
        wait = self.timeout if timeout is None else timeout
        try:
            return self._session.request(
                method, self.base_url + path, timeout=wait, verify=self._verify, **kwargs
            )
        except requests.Timeout:
            raise ParentUnavailable(f"{self.where}: no answer in time ({wait} s)") from None
        except requests.ConnectionError as error:
            raise ParentUnavailable(
                f"{self.where}: cannot connect ({type(error).__name__})"
            ) from None
        except requests.RequestException as error:
            raise ParentUnavailable(f"{self.where}: {type(error).__name__}") from None
