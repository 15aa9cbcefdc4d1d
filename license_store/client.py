"""A Python client of the license API, as an intake system uses it: tokens, retries, typed results.

::

    with LicenseClient("https://licenses.example.gov.cn", CLIENT_ID, CLIENT_SECRET) as api:
        found = api.holder_licenses(applicant, matter=MATTER, case_id="FS-2026-000123")
        checked = api.verification(found.licenses[0].license_id, matter=MATTER, case_id=...)
        assert LicenseClient.verify_offline(checked.bundle, department_public_key_pem)

- **Tokens** (OAuth2 client credentials): fetched from ``POST /v1/oauth/token`` on first use,
  cached, refreshed shortly before ``expires_in`` runs out, and refreshed once more (the call
  then retried once) when the API answers 401 ``token_expired`` or ``invalid_token``.
- **Retries**: connection failures, 5xx and 429 are retried with exponential backoff and jitter
  (urllib3's ``Retry``), honouring ``Retry-After`` up to ``max_retry_after`` seconds; other 4xx
  never are. Every call this client makes reads (the prefill POST included), so each may be
  retried.
- **Results** are frozen dataclasses (validated with pydantic), never bare dicts.
- **Errors** are one tree, translated from requests/urllib3 and from problem documents in one
  place (:meth:`LicenseClient._raise_for`)::

      LicenseApiError                 .status  .code  .detail  .transient
      ├── Unauthorized          401   missing_token, invalid_token, token_expired, invalid_client
      ├── Forbidden             403   insufficient_scope, matter_not_granted, ...
      ├── NotFound              404   license_not_found, not_found
      ├── InvalidInput          400, 422   invalid_holder_id, invalid_case_id, invalid_request, ...
      ├── RateLimited           429   rate_limited (.retry_after)             transient
      ├── ServerError           500 and other 5xx                             transient
      │   └── Unavailable       502, 503, 504; no connection or a timeout     transient
      │                         (status None, code connection_failed / timeout)
      └── UnexpectedResponse    a body that is not what the API documents

  No error, log line or ``repr`` holds the client secret or an unmasked holder ID; the client's
  logger is ``govexchange.client``, and urllib3's request log (which prints URLs, and so holder
  IDs) gets :class:`exchange.logs.MaskingFilter`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import requests
from pydantic import TypeAdapter, ValidationError
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader
from urllib3.util.retry import Retry

from exchange.logs import MaskingFilter
from exchange.standards.holder_ids import mask_ids_in_text
from license_store.signing import verify_bundle
from license_store.verification import SignatureCheck  # the API sends the same fields

__all__ = [
    "AccessLog",
    "AccessLogEntry",
    "Department",
    "FaceField",
    "Forbidden",
    "Holder",
    "HolderLicenses",
    "InvalidInput",
    "Issuer",
    "License",
    "LicenseApiError",
    "LicenseClient",
    "LicenseType",
    "Material",
    "Matter",
    "MatterRef",
    "NotFound",
    "Prefill",
    "PrefillMaterial",
    "RateLimited",
    "SatisfiedBy",
    "ServerError",
    "SignatureCheck",
    "Unauthorized",
    "Unavailable",
    "UnexpectedResponse",
    "Verification",
]

log = logging.getLogger("govexchange.client")

TOKEN_PATH = "/v1/oauth/token"
REFRESH_MARGIN = 30.0  # seconds before expiry at which a cached token is replaced
MAX_DETAIL = 300  # longest problem detail kept in an error


# -- errors -------------------------------------------------------------------------------------


class LicenseApiError(Exception):
    """A call to the license API failed. ``status`` is the HTTP status (``None`` when no answer
    came), ``code`` the problem document's stable code, ``detail`` its text (IDs masked).
    ``transient`` says whether trying again later may help."""

    transient: ClassVar[bool] = False

    def __init__(self, status: int | None, code: str, detail: str) -> None:
        self.status = status
        self.code = code
        self.detail = mask_ids_in_text(detail)[:MAX_DETAIL]
        super().__init__(f"{status or '-'} {code}: {self.detail}")


class Unauthorized(LicenseApiError):
    """401: no, a bad or an expired token (after one refresh), or bad client credentials."""


class Forbidden(LicenseApiError):
    """403: the client is not granted the scope, matter or license types."""


class NotFound(LicenseApiError):
    """404: no license has this identifier (or the client may not see it for the matter)."""


class InvalidInput(LicenseApiError):
    """400 or 422: an ID, matter, case id or request field is malformed."""


class RateLimited(LicenseApiError):
    """429, still after the retries: the client is over its rate limit."""

    transient = True

    def __init__(
        self, status: int | None, code: str, detail: str, retry_after: float | None = None
    ) -> None:
        super().__init__(status, code, detail)
        self.retry_after = retry_after


class ServerError(LicenseApiError):
    """5xx, still after the retries."""

    transient = True


class Unavailable(ServerError):
    """502/503/504, or no answer at all (connection refused or reset, timeout)."""


class UnexpectedResponse(LicenseApiError):
    """The API answered 2xx with a body that is not what it documents."""


_BY_STATUS: dict[int, type[LicenseApiError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    422: InvalidInput,
    429: RateLimited,
    502: Unavailable,
    503: Unavailable,
    504: Unavailable,
}


# -- results ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Issuer:
    """The department that issued a license."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class License:
    """A license as the API returns it: the current version, status as of today."""

    license_id: str
    type_code: str
    type_name: str
    number: str
    issuer: Issuer
    region_code: str
    holder_name: str
    holder_code_type: str
    issue_date: dt.date
    valid_from: dt.date | None
    valid_to: dt.date | None
    status: Literal["valid", "expired", "revoked", "suspended"]
    version: int
    face: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Holder:
    """Whose data this is; ``id`` is masked by the API."""

    id: str
    kind: Literal["natural", "legal"]


@dataclass(frozen=True, slots=True)
class MatterRef:
    """The matter a read was for."""

    code: str
    name: str


@dataclass(frozen=True, slots=True)
class HolderLicenses:
    """A holder's current licenses that the matter needs and the client may receive."""

    holder: Holder
    matter: MatterRef
    count: int
    licenses: tuple[License, ...]
    answered_by: str | None = None  # the node that answered (a parent, for a forwarded lookup)


@dataclass(frozen=True, slots=True)
class Verification:
    """Status, version and signature of a license, and the bundle to re-check it offline
    (:meth:`LicenseClient.verify_offline`; empty when unsigned). The bundle's content holds the
    holder's unmasked ID, as signed: do not log it."""

    license_id: str
    status: Literal["valid", "expired", "revoked", "suspended"]
    version: int
    valid: bool
    signature: SignatureCheck
    bundle: Mapping[str, Any] = field(repr=False, default_factory=dict)


@dataclass(frozen=True, slots=True)
class SatisfiedBy:
    """The license that satisfies a material."""

    license_id: str
    type_code: str
    type_name: str
    version: int
    status: str
    issuer: Issuer
    valid_from: dt.date | None
    valid_to: dt.date | None


@dataclass(frozen=True, slots=True)
class PrefillMaterial:
    """One material of the matter: satisfied from the library, or still required and why."""

    name: str
    license_type: str | None
    outcome: Literal["satisfied", "required"]
    license: SatisfiedBy | None = None
    reason: str | None = None
    reason_text: str | None = None

    @property
    def satisfied(self) -> bool:
        return self.outcome == "satisfied"


@dataclass(frozen=True, slots=True)
class Prefill:
    """The matter's materials, prefilled from the library (免提交)."""

    matter: MatterRef
    applicant: Holder
    case_id: str
    materials: tuple[PrefillMaterial, ...]
    materials_total: int
    proofs_eliminated: int
    still_required: int


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """One read of the holder's data: who, what, why, when, with what result."""

    occurred_at: dt.datetime
    client_id: str
    client_name: str | None
    action: str
    matter: str
    case_id: str
    license_ids: tuple[str, ...]
    result: str
    matter_name: str | None = None


@dataclass(frozen=True, slots=True)
class AccessLog:
    """Who read the holder's licenses, newest first."""

    holder: Holder
    count: int
    entries: tuple[AccessLogEntry, ...]


@dataclass(frozen=True, slots=True)
class Department:
    """A department of the catalogue."""

    id: str
    name: str
    code: str
    region: str


@dataclass(frozen=True, slots=True)
class FaceField:
    """A field printed on a license."""

    name: str
    label: str


@dataclass(frozen=True, slots=True)
class LicenseType:
    """A license type of the catalogue (证照目录)."""

    id: str
    code: str
    name: str
    holder_kind: Literal["natural", "legal"]
    issuing_department: Department
    validity: str
    sharing: str
    face_fields: tuple[FaceField, ...]


@dataclass(frozen=True, slots=True)
class Material:
    """A material a matter requires."""

    name: str
    license_type: str | None
    applicant_provides: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Matter:
    """A government service item (事项) and the materials it requires."""

    code: str
    name: str
    department: Department
    materials: tuple[Material, ...]


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: float  # time.monotonic() after which it is replaced before use


@cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def _parse(kind: Any, body: Any) -> Any:
    """``body`` (decoded JSON) as ``kind``; unknown fields are ignored."""
    try:
        return _adapter(kind).validate_python(body)
    except ValidationError as error:
        places = sorted({".".join(str(p) for p in item["loc"]) for item in error.errors()})
        raise UnexpectedResponse(
            None, "unexpected_response", "the API's answer does not match: " + ", ".join(places)
        ) from None


# -- transport ----------------------------------------------------------------------------------


class _Retry(Retry):
    """urllib3's ``Retry`` with ``Retry-After`` capped: a server asking for minutes is waited
    for ``max_retry_after`` seconds at most before the next attempt."""

    max_retry_after: float = 30.0

    def new(self, **kw: Any) -> _Retry:
        renewed = super().new(**kw)
        renewed.max_retry_after = self.max_retry_after
        return renewed  # type: ignore[return-value]

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, self.max_retry_after)


def _retry_policy(retries: int, backoff: float, max_retry_after: float) -> _Retry:
    policy = _Retry(
        total=retries,
        connect=retries,
        read=retries,
        status=retries,
        other=0,
        backoff_factor=backoff,
        backoff_jitter=backoff,
        backoff_max=max(backoff, 10.0),
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),  # every call of this client only reads
        respect_retry_after_header=True,
        raise_on_status=False,  # the last answer is mapped to an error by the client
        raise_on_redirect=False,
    )
    policy.max_retry_after = max_retry_after
    return policy


def _mask_third_party_logs() -> None:
    """urllib3 logs request lines (paths carry holder IDs) at DEBUG and retries at WARNING."""
    for name in ("urllib3.connectionpool", "urllib3.util.retry"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskingFilter) for f in logger.filters):
            logger.addFilter(MaskingFilter())


def _segment(value: str) -> str:
    return quote(value, safe="")


class LicenseClient:
    """A client of the license API with its own client id and secret (see the module docstring).

    ``timeout`` is per HTTP attempt (seconds); ``retries`` the retries after the first attempt;
    ``backoff`` the base of the exponential backoff (``backoff * 2**n`` plus up to ``backoff``
    of jitter); ``session`` a requests session to use (its other mounts are left alone; it is
    not closed by :meth:`close`); ``verify`` is passed to requests (a CA bundle path, or bool).
    """

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10,
        retries: int = 3,
        backoff: float = 0.2,
        session: requests.Session | None = None,
        verify: bool | str = True,
        max_retry_after: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self._secret = client_secret
        self.timeout = timeout
        self._verify = verify
        self._owns_session = session is None
        self._session = session if session is not None else requests.Session()
        adapter = HTTPAdapter(max_retries=_retry_policy(retries, backoff, max_retry_after))
        self._session.mount(self.base_url + "/", adapter)
        self._token: _Token | None = None
        self._token_lock = threading.Lock()
        _mask_third_party_logs()

    def __repr__(self) -> str:
        return f"LicenseClient({self.base_url!r}, client_id={self.client_id!r}, secret=***)"

    def __enter__(self) -> LicenseClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the session (if this client made it) and forget the token."""
        self._token = None
        if self._owns_session:
            self._session.close()

    # -- reads ----------------------------------------------------------------------------------

    def holder_licenses(self, holder_id: str, *, matter: str, case_id: str) -> HolderLicenses:
        """The holder's current licenses that ``matter`` needs and this client is granted."""
        body = self._get(f"/v1/holders/{_segment(holder_id)}/licenses", case_id, {"matter": matter})
        return _parse(HolderLicenses, body)  # type: ignore[no-any-return]

    def license(self, license_id: str, *, matter: str, case_id: str) -> License:
        """The current version of a license (any version's identifier names it)."""
        body = self._get(f"/v1/licenses/{_segment(license_id)}", case_id, {"matter": matter})
        return _parse(License, body)  # type: ignore[no-any-return]

    def verification(self, license_id: str, *, matter: str, case_id: str) -> Verification:
        """Status, version and department signature of a license, with its offline bundle."""
        body = self._get(
            f"/v1/licenses/{_segment(license_id)}/verification", case_id, {"matter": matter}
        )
        return _parse(Verification, body)  # type: ignore[no-any-return]

    def prefill(self, matter: str, applicant_id: str, case_id: str) -> Prefill:
        """Which materials of ``matter`` the library satisfies for the applicant, and why not."""
        body = self._call(
            "POST",
            "/v1/intake/prefill",
            json={"matter": matter, "applicant_id": applicant_id, "case_id": case_id},
        )
        return _parse(Prefill, body)  # type: ignore[no-any-return]

    def access_log(self, holder_id: str, *, case_id: str, limit: int = 100) -> AccessLog:
        """Who read the holder's licenses, newest first (needs the ``access-log:read`` scope)."""
        body = self._get(f"/v1/holders/{_segment(holder_id)}/access-log", case_id, {"limit": limit})
        return _parse(AccessLog, body)  # type: ignore[no-any-return]

    def license_types(self) -> list[LicenseType]:
        """The license-type catalogue."""
        return _parse(list[LicenseType], self._call("GET", "/v1/catalog/license-types"))  # type: ignore[no-any-return]

    def matters(self) -> list[Matter]:
        """The matter catalogue with each matter's materials."""
        return _parse(list[Matter], self._call("GET", "/v1/catalog/matters"))  # type: ignore[no-any-return]

    @staticmethod
    def verify_offline(bundle: Mapping[str, Any], public_key_pem: bytes | str) -> bool:
        """Whether ``bundle`` (from :meth:`verification`) was signed by the department whose
        public key (PEM, ``govx keys export``) is given. No network."""
        if not bundle:
            return False
        pem = public_key_pem.encode("ascii") if isinstance(public_key_pem, str) else public_key_pem
        return verify_bundle(bundle, pem)

    # -- plumbing -------------------------------------------------------------------------------

    def _get(self, path: str, case_id: str, params: Mapping[str, Any]) -> Any:
        return self._call("GET", path, params=params, headers={"X-Case-Id": case_id})

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        """Send an authenticated call; its decoded JSON body, or the mapped error."""
        for attempt in (1, 2):
            access = self._access_token(force=attempt == 2)
            response = self._send(
                method,
                path,
                params=params,
                json=json,
                headers={**(headers or {}), "Authorization": f"Bearer {access}"},
            )
            if response.status_code == 401 and attempt == 1:
                code = _problem(response).get("code")
                if code in ("token_expired", "invalid_token"):
                    log.info("token refused (%s): fetching a new one and retrying once", code)
                    continue
            break
        if not response.ok:
            self._raise_for(response)
        try:
            return response.json()
        except ValueError:
            raise UnexpectedResponse(
                response.status_code, "unexpected_response", "the answer is not JSON"
            ) from None

    def _send(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request (with urllib3's retries); transport failures become :class:`Unavailable`."""
        shown = mask_ids_in_text(path)
        started = time.perf_counter()
        try:
            response = self._session.request(
                method, self.base_url + path, timeout=self.timeout, verify=self._verify, **kwargs
            )
        except requests.Timeout:
            log.warning("%s %s: timed out", method, shown)
            raise Unavailable(None, "timeout", f"{method} {shown}: no answer in time") from None
        except requests.ConnectionError as error:
            log.warning("%s %s: connection failed (%s)", method, shown, type(error).__name__)
            raise Unavailable(
                None, "connection_failed", f"{method} {shown}: cannot connect to {self.base_url}"
            ) from None
        except requests.RequestException as error:
            raise Unavailable(
                None, "request_failed", f"{method} {shown}: {type(error).__name__}"
            ) from None
        log.debug(
            "%s %s -> %d (%.0f ms)",
            method,
            shown,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    def _access_token(self, *, force: bool = False) -> str:
        """The cached token, or a new one when there is none, it is about to expire or
        ``force``."""
        with self._token_lock:
            current = self._token
            if current is not None and not force and time.monotonic() < current.refresh_at:
                return current.value
            self._token = self._fetch_token()
            return self._token.value

    def _fetch_token(self) -> _Token:
        requested = time.monotonic()
        response = self._send(
            "POST",
            TOKEN_PATH,
            data={"grant_type": "client_credentials"},
            auth=(self.client_id, self._secret),
        )
        if not response.ok:
            self._raise_for(response)
        try:
            body = response.json()
            value, expires_in = str(body["access_token"]), float(body["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise UnexpectedResponse(
                response.status_code, "unexpected_response", "the token answer is malformed"
            ) from None
        margin = min(REFRESH_MARGIN, max(expires_in, 0) / 2)
        log.info("token for %s fetched, expires in %.0f s", self.client_id, expires_in)
        return _Token(value, requested + expires_in - margin)

    def _raise_for(self, response: requests.Response) -> None:
        """The one place where an HTTP error answer becomes a :class:`LicenseApiError`."""
        status = response.status_code
        problem = _problem(response)
        code = str(problem.get("code") or f"http_{status}")
        detail = str(problem.get("detail") or response.reason or "")
        detail = detail.replace(self._secret, "***") if self._secret else detail
        kind = _BY_STATUS.get(status)
        if kind is None:
            kind = ServerError if status >= 500 else LicenseApiError
        log.info("%s %s -> %d %s", response.request.method, _masked_path(response), status, code)
        if kind is RateLimited:
            raise RateLimited(status, code, detail, _retry_after(response))
        raise kind(status, code, detail)


def _problem(response: requests.Response) -> dict[str, Any]:
    """The response's problem document, or ``{}``."""
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(response: requests.Response) -> float | None:
    """Seconds the ``Retry-After`` header asks for (delta-seconds or an HTTP date), or ``None``."""
    value = response.headers.get("Retry-After")
    try:
        return None if value is None else Retry().parse_retry_after(value)
    except InvalidHeader:
        return None


def _masked_path(response: requests.Response) -> str:
    return mask_ids_in_text(urlsplit(response.request.url or "").path)
