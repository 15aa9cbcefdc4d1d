"""The intake routes: a holder's licenses for a matter, prefill, a license and its verification,
and the holder's access log.

Every route here reads personal data, so every one needs a bearer token with a scope
(:func:`license_store.security.require`), a case reference (``X-Case-Id``, or ``case_id`` in the
prefill body) and, for licenses, the matter the read is for. Only the license types that the
matter lists **and** the client is granted are ever returned (:mod:`license_store.access`); a
license of another type is answered exactly as if it did not exist. Each read is appended to the
audit trail before its response is sent (:class:`license_store.audit.AuditWriter`, a group
commit): if the entry cannot be made durable, the read fails with 503.

On a node of the exchange, a holder lookup that this node has no answer for is asked of its
parent node, and another node's reads get only what may cross a node boundary
(:mod:`license_store.forward`, ``docs/replication.md``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import to_json

from exchange.config import Deployment, load_deployment
from exchange.node_client import (
    ANSWERED_BY_HEADER,
    FORWARD_FAILED_HEADER,
    HOPS_HEADER,
    ON_BEHALF_OF_HEADER,
)
from exchange.standards.holder_ids import HolderId, InvalidIdentifier, mask_id, parse_holder_id
from exchange.standards.license_ids import format_license_id, parse_license_id
from license_store.access import AccessDenied, MatterAccess, UnknownMatter, resolve_matter
from license_store.aio import HotPath, threaded_hot_path
from license_store.audit import AuditLog, AuditWriter
from license_store.clients import ClientCache
from license_store.errors import LicenseNotFound, StoreUnavailable
from license_store.forward import (
    FAILURES,
    FORWARDED,
    NodeLink,
    Relay,
    ask_parent,
    audit_client_id,
    node_link,
    node_matter_access,
    on_behalf_of,
    relay_of,
)
from license_store.metrics import ApiMetrics
from license_store.problems import ProblemError, bounded, problem_responses
from license_store.records import License
from license_store.security import (
    CASE_ID_PATTERN,
    Caller,
    authorize,
    case_id,
    checked_case_id,
    header_parameters,
    require,
)
from license_store.store import LicenseStore

__all__ = [
    "EXAMPLE_LICENSE",
    "HolderLicenses",
    "LicenseOut",
    "get_deployment",
    "get_store",
    "router",
]

log = logging.getLogger("govexchange.api")

NEWBORN_MATTER = "11440600MB20125487-XSE-001"
EXAMPLE_LICENSE: dict[str, Any] = {
    "license_id": format_license_id(
        "11440000MB2000000Q002", "11440000MB2000000Q", "20240000001", 1
    ),
    "type_code": "11440000MB2000000Q002",
    "type_name": "居民户口簿",
    "number": "440604001234",
    "issuer": {"code": "11440000MB2000000Q", "name": "广东省公安厅"},
    "region_code": "440604",
    "holder_name": "张三",
    "holder_code_type": "111",
    "issue_date": "2024-03-01",
    "valid_from": "2024-03-01",
    "valid_to": None,
    "status": "valid",
    "version": 1,
    "face": {"address": "广东省佛山市禅城区祖庙路1号", "relation": "户主"},
}

# -- dependencies -------------------------------------------------------------------------------


async def get_store(request: Request) -> LicenseStore:
    """The application's store (set by ``create_app`` or its lifespan)."""
    store: LicenseStore | None = getattr(request.app.state, "store", None)
    if store is None:
        raise StoreUnavailable("the license store is not open (application not started)")
    return store


async def get_deployment(request: Request) -> Deployment:
    """The deployment the app serves (loaded from ``GOVX_CONFIG`` on first use)."""
    deployment: Deployment | None = getattr(request.app.state, "deployment", None)
    if deployment is None:
        deployment = load_deployment()
        request.app.state.deployment = deployment
    return deployment


HOLDER_DOC = "resident identity number (GB 11643) or unified social credit code (GB 32100)"
HOLDER_EXAMPLE = "11010519491231002X"
MATTER_DOC = (
    "the matter (办事事项) this read is for, by its catalogue code (`GET /v1/catalog/matters`)"
)
StoreDep = Annotated[LicenseStore, Depends(get_store)]
DeploymentDep = Annotated[Deployment, Depends(get_deployment)]
Reader = Annotated[Caller, require("licenses:read")]
Portal = Annotated[Caller, require("access-log:read")]
CaseId = Annotated[str, Depends(case_id)]
MatterQuery = Annotated[
    str | None,
    Query(description=MATTER_DOC, examples=[NEWBORN_MATTER]),
]
HolderPath = Annotated[
    str,
    Path(description=HOLDER_DOC, examples=[HOLDER_EXAMPLE]),
]
LicensePath = Annotated[
    str,
    Path(
        description="electronic license identifier; any version's identifier gives the current "
        "version",
        examples=[EXAMPLE_LICENSE["license_id"]],
    ),
]

# The path's holder ID and ``?matter=`` as FastAPI documents ``HolderPath`` and ``MatterQuery``,
# for the route that reads them itself.
HOLDER_PARAMETER: dict[str, Any] = {
    "name": "holder_id",
    "in": "path",
    "required": True,
    "schema": {
        "type": "string",
        "description": HOLDER_DOC,
        "examples": [HOLDER_EXAMPLE],
        "title": "Holder Id",
    },
    "description": HOLDER_DOC,
}
MATTER_PARAMETER: dict[str, Any] = {
    "name": "matter",
    "in": "query",
    "required": False,
    "schema": {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": MATTER_DOC,
        "examples": [NEWBORN_MATTER],
        "title": "Matter",
    },
    "description": MATTER_DOC,
}

# The forwarding headers, read only from ``node`` clients (docs/replication.md).
NODE_HEADER_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"anyOf": [{"type": "string"}, {"type": "null"}], "title": name},
        "description": description,
    }
    for name, description in (
        (
            ON_BEHALF_OF_HEADER,
            "node clients only: `<region>/<client id>` of the client a forwarded lookup is for",
        ),
        (HOPS_HEADER, "node clients only: how often the lookup has been forwarded (0-99)"),
    )
]

_hot_lock = threading.Lock()


def hot_path(app: FastAPI) -> HotPath:
    """The app's lookup and audit append: opened by the lifespan (asyncpg on PostgreSQL), or
    on first use through the synchronous store in threads (an app served without its lifespan).
    """
    hot: HotPath | None = getattr(app.state, "hot_path", None)
    if hot is None:
        with _hot_lock:
            hot = getattr(app.state, "hot_path", None)
            if hot is None:
                hot = threaded_hot_path(
                    app.state.store, AuditWriter(app.state.audit), batched=False
                )
                app.state.hot_path = hot
    return hot


async def _audit(
    request: Request,
    caller: Caller,
    action: str,
    holder_id: str,
    licenses: Sequence[str],
    matter: str,
    case: str,
    result: str = "ok",
    client_id: str | None = None,
) -> None:
    """Append the caller's entry about ``holder_id`` and return once it is durable (503 if it
    cannot be made so). ``client_id`` names the caller (:func:`audit_client_id`) when it acts
    for another node's client."""
    trail: AuditLog = request.app.state.audit
    entry = trail.entry(
        client_id=client_id or caller.client_id,
        action=action,
        holder_id=holder_id,
        license_ids=licenses,
        matter=matter,
        case_id=case,
        result=result,
    )
    try:
        await hot_path(request.app).audit.append([entry])
    except Exception as error:
        log.error("audit trail write failed: %s", type(error).__name__)
        raise StoreUnavailable("the audit trail cannot be written") from None


def _valid_holder(holder_id: str, field: str = "holder_id") -> HolderId:
    try:
        return parse_holder_id(holder_id, field=field)
    except InvalidIdentifier as error:
        log.info("rejected holder ID %s: %s", bounded(error.masked), error.reason)
        raise ProblemError(
            422,
            "invalid_holder_id",
            "Invalid holder ID",
            f"{error.reason} ({bounded(error.masked)})",
            field=error.field,
        ) from None


def _valid_license_id(license_id: str) -> None:
    try:
        parse_license_id(license_id)
    except ValueError as error:
        raise ProblemError(
            422,
            "invalid_license_id",
            "Invalid license identifier",
            bounded(str(error)),
            "license_id",
        ) from None


def _matter_access(
    deployment: Deployment, caller: Caller, matter: str | None, field: str = "matter"
) -> MatterAccess:
    """What the caller may receive for ``matter``: its grants, or for another node what may
    cross the boundary (:func:`node_matter_access`). 422 or 403 problems otherwise."""
    if matter is None or not matter.strip():
        raise ProblemError(
            422,
            "invalid_matter",
            "Invalid matter",
            "name the matter this read is for (?matter=<catalogue code>)",
            field=field,
        )
    try:
        if caller.client.kind == "node":
            return node_matter_access(deployment, caller.client, matter)
        return resolve_matter(deployment, caller.client, matter)
    except UnknownMatter:
        raise ProblemError(
            422,
            "invalid_matter",
            "Invalid matter",
            "no matter of the catalogue has this code (see GET /v1/catalog/matters)",
            field=field,
        ) from None
    except AccessDenied as denied:
        raise ProblemError(403, denied.code, "Forbidden", denied.detail) from None


async def _denied(
    request: Request,
    caller: Caller,
    action: str,
    holder_id: str,
    matter: str | None,
    case: str,
    error: ProblemError,
    client_id: str | None = None,
) -> ProblemError:
    """Audit a refused read of a (valid) holder, then hand back the error to raise."""
    await _audit(request, caller, action, holder_id, (), matter or "-", case, "denied", client_id)
    return error


def _count_lookups(request: Request, licenses: Sequence[License]) -> None:
    metrics: ApiMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.count_lookups(item.type_code for item in licenses)


# -- models -------------------------------------------------------------------------------------


class Issuer(BaseModel):
    """The department that issued a license."""

    code: str = Field(description="unified social credit code of the issuing department")
    name: str


class LicenseOut(BaseModel):
    """A license as intake systems receive it (current version; status as of today)."""

    model_config = ConfigDict(json_schema_extra={"examples": [EXAMPLE_LICENSE]})

    license_id: str = Field(description="electronic license identifier, version and check included")
    type_code: str
    type_name: str
    number: str = Field(description="license number (证照编号)")
    issuer: Issuer
    region_code: str = Field(description="region of jurisdiction, GB/T 2260")
    holder_name: str
    holder_code_type: Literal["111", "001"] = Field(
        description="111 resident identity number, 001 unified social credit code"
    )
    issue_date: dt.date
    valid_from: dt.date | None
    valid_to: dt.date | None
    status: Literal["valid", "expired", "revoked", "suspended"] = Field(
        description="as of today: a valid license past its valid_to reads as expired"
    )
    version: int
    face: dict[str, str] = Field(description="fields printed on the license (照面信息)")


class Holder(BaseModel):
    """Whose licenses these are; the ID is masked."""

    id: str = Field(description="the holder ID, masked")
    kind: Literal["natural", "legal"]


class MatterRef(BaseModel):
    """The matter a read was for."""

    code: str
    name: str


class HolderLicenses(BaseModel):
    """A holder's current licenses that the matter needs and the client may receive."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "holder": {"id": "4406**********1234", "kind": "natural"},
                    "matter": {"code": NEWBORN_MATTER, "name": "新生儿入户登记"},
                    "count": 1,
                    "licenses": [EXAMPLE_LICENSE],
                    "answered_by": "440604",
                }
            ]
        }
    )

    holder: Holder
    matter: MatterRef
    count: int
    licenses: list[LicenseOut]
    answered_by: str | None = Field(
        default=None,
        description="the region code (GB/T 2260) of the node that answered: this one, or a "
        "parent it forwarded the lookup to (also in the X-Govx-Answered-By header); null when "
        "the API runs without a node identity",
    )


def license_fields(found: License) -> dict[str, Any]:
    """The fields of :class:`LicenseOut` for a stored license, in its order."""
    return {
        "license_id": found.license_id,
        "type_code": found.type_code,
        "type_name": found.type_name,
        "number": found.number,
        "issuer": {"code": found.issuer_code, "name": found.issuer_name},
        "region_code": found.region_code,
        "holder_name": found.holder_name,
        "holder_code_type": found.holder_code_type,
        "issue_date": found.issue_date,
        "valid_from": found.valid_from,
        "valid_to": found.valid_to,
        "status": found.status,
        "version": found.version,
        "face": found.face,
    }


def license_out(found: License) -> LicenseOut:
    """The API's view of a stored license."""
    return LicenseOut.model_validate(license_fields(found))


# -- routes -------------------------------------------------------------------------------------

router = APIRouter()


@router.get(
    "/v1/holders/{holder_id}/licenses",
    response_model=HolderLicenses,
    tags=["licenses"],
    summary="A holder's licenses for a matter (一号申办)",
    responses=problem_responses(401, 403, 422, 429, 500, 503),
    openapi_extra={
        "parameters": [
            HOLDER_PARAMETER,
            MATTER_PARAMETER,
            *header_parameters(),
            *NODE_HEADER_PARAMETERS,
        ]
    },
)
async def holder_licenses(request: Request) -> Response:
    """The holder's current licenses of the types that ``matter`` lists as materials **and**
    the client is granted, by type code then issue date. Other types are never returned; an
    unknown holder has none. The read is audited (client, holder, licenses, matter, case).
    On a node with a parent, a lookup with no answer here is the parent's answer
    (``answered_by``, docs/replication.md)."""
    # The hot route reads its parameters itself (documented by openapi_extra): FastAPI's
    # per-parameter dependency solving was half of its CPU (docs/performance.md).
    holder_id: str = request.path_params["holder_id"]
    headers = request.headers
    caller = await authorize(request, "licenses:read", headers.get("authorization"))
    case = checked_case_id(headers.get("x-case-id"))
    relay = relay_of(caller, headers)  # None unless another node asks
    reader = audit_client_id(caller.client_id, relay)
    matter = request.query_params.get("matter")
    await get_store(request)  # 503 when the store is not open
    deployment = await get_deployment(request)
    holder = _valid_holder(holder_id)
    try:
        access = _matter_access(deployment, caller, matter)
    except ProblemError as error:
        if error.problem.status != 403:
            raise
        raise await _denied(
            request, caller, "read", holder.value, matter, case, error, reader
        ) from None
    wanted = access.type_codes
    if not wanted:
        error = ProblemError(
            403,
            "license_type_not_granted",
            "Forbidden",
            "this client is granted none of the license types the matter needs",
        )
        raise await _denied(request, caller, "read", holder.value, matter, case, error, reader)
    found = await hot_path(request.app).reader.licenses_for_holder(holder.value)
    shown = [item for item in found if item.type_code in wanted]
    link = node_link(request.app)
    if not shown and link.parent is not None:
        return await _forwarded_lookup(request, link, caller, relay, reader, holder, access, case)
    await _audit(
        request,
        caller,
        "read",
        holder.value,
        [item.license_id for item in shown],
        access.matter.code,
        case,
        client_id=reader,
    )
    log.info(
        "holder lookup %s (%s) by %s for %s: %d licenses",
        holder.masked,
        holder.kind.value,
        reader,
        access.matter.code,
        len(shown),
    )
    _count_lookups(request, shown)
    # HolderLicenses, serialised straight from the stored licenses (the hot route skips
    # building and validating the models of what the store has validated already)
    body = {
        "holder": {"id": holder.masked, "kind": holder.kind.value},
        "matter": {"code": access.matter.code, "name": access.matter.name},
        "count": len(shown),
        "licenses": [license_fields(item) for item in shown],
        "answered_by": link.region,
    }
    return _lookup_response(body, link.region)


def _lookup_response(
    body: dict[str, Any], answered_by: str | None, failure: str | None = None
) -> Response:
    """The lookup's JSON answer, with who answered and why the parent was not asked, if so."""
    response = Response(to_json(body), media_type="application/json")
    if answered_by is not None:  # appended raw: half the cost of a headers= mapping
        response.raw_headers.append((_ANSWERED_BY, answered_by.encode("ascii")))
        if failure is not None:
            response.raw_headers.append((_FORWARD_FAILED, failure.encode("ascii")))
    return response


_ANSWERED_BY = ANSWERED_BY_HEADER.lower().encode("ascii")
_FORWARD_FAILED = FORWARD_FAILED_HEADER.lower().encode("ascii")
_PARENT_LICENSES: TypeAdapter[list[LicenseOut]] = TypeAdapter(list[LicenseOut])


def _forward_result(failure: str | None) -> str:
    """The audit result of a lookup that went to the parent: ``forwarded``; ``ok`` when the hop
    limit kept it here (a local read, nothing left the node); ``error`` when the parent could
    not be asked or its answer was unusable."""
    if failure is None:
        return FORWARDED
    return "ok" if failure == FAILURES["hops"] else "error"


async def _forwarded_lookup(
    request: Request,
    link: NodeLink,
    caller: Caller,
    relay: Relay | None,
    reader: str,
    holder: HolderId,
    access: MatterAccess,
    case: str,
) -> Response:
    """The parent's answer to a lookup this node has none for, filtered by what the caller may
    see here, audited here as ``forwarded`` (``error`` when the parent could not be asked; the
    caller then gets this node's empty answer and ``X-Govx-Forward-Failed``)."""
    assert link.node is not None
    answer = await ask_parent(
        link,
        holder.value,
        holder.masked,
        access.matter.code,
        case,
        on_behalf_of(link.node, caller.client_id, relay),
        relay.hops if relay is not None else 0,
    )
    answered_by, failure, licenses = answer.answered_by, answer.failure, []
    if failure is None:
        try:
            parsed = _PARENT_LICENSES.validate_python(answer.licenses)
        except ValidationError:
            log.warning(
                "holder lookup %s for %s answered locally: the parent's licenses are malformed",
                holder.masked,
                access.matter.code,
            )
            answered_by, failure = link.region, FAILURES["invalid"]
        else:
            licenses = [
                item.model_dump(mode="json")
                for item in parsed
                if item.type_code in access.type_codes
            ]
    await _audit(
        request,
        caller,
        "read",
        holder.value,
        [item["license_id"] for item in licenses],
        access.matter.code,
        case,
        _forward_result(failure),
        reader,
    )
    log.info(
        "holder lookup %s (%s) by %s for %s: %d licenses, answered by %s",
        holder.masked,
        holder.kind.value,
        reader,
        access.matter.code,
        len(licenses),
        answered_by,
    )
    metrics: ApiMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.count_lookups(item["type_code"] for item in licenses)
    body = {
        "holder": {"id": holder.masked, "kind": holder.kind.value},
        "matter": {"code": access.matter.code, "name": access.matter.name},
        "count": len(licenses),
        "licenses": licenses,
        "answered_by": answered_by,
    }
    return _lookup_response(body, answered_by, failure)


async def _granted_license(
    request: Request,
    store: LicenseStore,
    deployment: Deployment,
    caller: Caller,
    case: str,
    license_id: str,
    matter: str | None,
    action: str,
) -> tuple[License, MatterAccess]:
    """The license if the client may see it for the matter; 404 (as for an unknown one)
    otherwise. A refused read of an existing license is audited as denied."""
    _valid_license_id(license_id)
    access = _matter_access(deployment, caller, matter)
    try:
        found = await run_in_threadpool(store.get, license_id)
    except LicenseNotFound:
        raise LicenseNotFound("no license has this identifier") from None
    if found.type_code not in access.type_codes:
        await _audit(
            request, caller, action, found.holder_id, (), access.matter.code, case, "denied"
        )
        raise LicenseNotFound("no license has this identifier")
    return found, access


@router.get(
    "/v1/licenses/{license_id}",
    response_model=LicenseOut,
    tags=["licenses"],
    summary="A license by its identifier",
    responses=problem_responses(401, 403, 404, 422, 429, 500, 503),
)
async def license_by_id(
    request: Request,
    store: StoreDep,
    deployment: DeploymentDep,
    caller: Reader,
    case: CaseId,
    license_id: LicensePath,
    matter: MatterQuery = None,
) -> LicenseOut:
    """The current version of the license, if ``matter`` needs its type and the client is
    granted it (404 otherwise, the same as for an unknown license). Audited."""
    found, access = await _granted_license(
        request, store, deployment, caller, case, license_id, matter, "read"
    )
    await _audit(
        request, caller, "read", found.holder_id, [found.license_id], access.matter.code, case
    )
    log.info(
        "license lookup %s by %s: holder %s",
        found.license_id,
        caller.client_id,
        mask_id(found.holder_id),
    )
    _count_lookups(request, [found])
    return license_out(found)


# -- verification -------------------------------------------------------------------------------


class SignatureCheck(BaseModel):
    """The department signature over the license's current version."""

    valid: bool = Field(description="the stored content matches what the department signed")
    reason: str | None = Field(default=None, description="why not, when not valid")
    department: str | None = Field(default=None, description="the signing department's id")
    key_id: str | None = Field(default=None, description="fingerprint of the department key")
    batch_id: str | None = None
    signed_at: dt.datetime | None = None


class VerificationOut(BaseModel):
    """A license's status and signature check, with the bundle to re-check it offline."""

    license_id: str = Field(description="the current version's identifier")
    status: Literal["valid", "expired", "revoked", "suspended"]
    version: int
    valid: bool = Field(description="status is valid and the signature checks out")
    signature: SignatureCheck
    bundle: dict[str, Any] = Field(
        description="content, Merkle proof and batch signature: verify offline with the "
        "department's public key (`LicenseClient.verify_offline`, `govx keys export`)"
    )


@router.get(
    "/v1/licenses/{license_id}/verification",
    response_model=VerificationOut,
    tags=["licenses"],
    summary="Check a license: status, version and department signature",
    responses=problem_responses(401, 403, 404, 422, 429, 500, 503),
)
async def license_verification(
    request: Request,
    store: StoreDep,
    deployment: DeploymentDep,
    caller: Reader,
    case: CaseId,
    license_id: LicensePath,
    matter: MatterQuery = None,
) -> VerificationOut:
    """Whether the license is valid now (status) and authentic (its department's signature over
    the current version). Gated by matter and grants like a read; audited as a verification."""
    from license_store.verification import verify_license

    found, access = await _granted_license(
        request, store, deployment, caller, case, license_id, matter, "verify"
    )
    checked = await run_in_threadpool(
        verify_license, store, found.license_id, request.app.state.keyring
    )
    result = checked.as_dict()
    await _audit(
        request, caller, "verify", found.holder_id, [found.license_id], access.matter.code, case
    )
    signature = SignatureCheck(**result["signature"])
    return VerificationOut(
        license_id=result["license_id"],
        status=result["status"],
        version=result["version"],
        valid=result["status"] == "valid" and signature.valid,
        signature=signature,
        bundle=result["bundle"] or {},
    )


# -- prefill ------------------------------------------------------------------------------------

Reason = Literal[
    "no_license", "expired", "revoked", "suspended", "not_shared", "applicant_provides"
]
REASON_TEXT: dict[str, str] = {
    "no_license": "the library holds no such license for the applicant",
    "expired": "the applicant's license has expired",
    "revoked": "the applicant's license was revoked",
    "suspended": "the applicant's license is suspended",
    "not_shared": "this license type is not shared with this client for this matter",
    "applicant_provides": "no electronic license exists for this material",
}


class PrefillRequest(BaseModel):
    """What an intake window sends when it opens a case."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "matter": NEWBORN_MATTER,
                    "applicant_id": "11010519491231002X",
                    "case_id": "FS-2026-000123",
                }
            ]
        },
    )

    matter: str = Field(min_length=1, max_length=64, description="the matter's catalogue code")
    applicant_id: str = Field(
        min_length=1, max_length=64, description="the applicant's resident ID or credit code"
    )
    case_id: str = Field(pattern=CASE_ID_PATTERN, description="the intake case (办件编号)")


class SatisfiedBy(BaseModel):
    """The license that satisfies a material."""

    license_id: str
    type_code: str
    type_name: str
    version: int
    status: Literal["valid"]
    issuer: Issuer
    valid_from: dt.date | None
    valid_to: dt.date | None


class PrefillMaterial(BaseModel):
    """One material of the matter: satisfied from the library, or still required and why."""

    name: str
    license_type: str | None = Field(description="the license type id that can satisfy it")
    outcome: Literal["satisfied", "required"]
    license: SatisfiedBy | None = None
    reason: Reason | None = Field(default=None, description="why it is still required")
    reason_text: str | None = None


class PrefillResponse(BaseModel):
    """The materials of the matter, prefilled from the library (免提交)."""

    matter: MatterRef
    applicant: Holder
    case_id: str
    materials: list[PrefillMaterial]
    materials_total: int
    proofs_eliminated: int = Field(description="materials the applicant need not bring")
    still_required: int


def _prefill_material(item: Any, licenses_by_type: dict[str, list[License]]) -> PrefillMaterial:
    material, license_type = item.material, item.license_type
    type_id = license_type.id if license_type is not None else material.license_type
    if license_type is None:
        reason: Reason = "applicant_provides"
        return PrefillMaterial(
            name=material.name,
            license_type=type_id,
            outcome="required",
            reason=reason,
            reason_text=material.reason or REASON_TEXT[reason],
        )
    if not item.shared:
        return PrefillMaterial(
            name=material.name,
            license_type=type_id,
            outcome="required",
            reason="not_shared",
            reason_text=REASON_TEXT["not_shared"],
        )
    candidates = licenses_by_type.get(license_type.code, [])
    valid = [found for found in candidates if found.status == "valid"]
    if valid:
        best = max(valid, key=lambda found: (found.issue_date, found.version))
        return PrefillMaterial(
            name=material.name,
            license_type=type_id,
            outcome="satisfied",
            license=SatisfiedBy(
                license_id=best.license_id,
                type_code=best.type_code,
                type_name=best.type_name,
                version=best.version,
                status="valid",
                issuer=Issuer(code=best.issuer_code, name=best.issuer_name),
                valid_from=best.valid_from,
                valid_to=best.valid_to,
            ),
        )
    reason = "no_license"
    for status in ("suspended", "expired", "revoked"):  # the most recoverable first
        if any(found.status == status for found in candidates):
            reason = status  # type: ignore[assignment]
            break
    return PrefillMaterial(
        name=material.name,
        license_type=type_id,
        outcome="required",
        reason=reason,
        reason_text=REASON_TEXT[reason],
    )


MAX_BODY = 16 * 1024


async def _prefill_body(request: Request) -> PrefillRequest:
    """The prefill request, parsed and validated (422 ``invalid_request`` naming the field)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ProblemError(
            422, "invalid_request", "Invalid request", "the request body is too large", "body"
        )
    try:
        return PrefillRequest.model_validate_json(raw)
    except ValidationError as error:
        errors = [{**item, "loc": ("body", *item.get("loc", ()))} for item in error.errors()]
        raise RequestValidationError(errors) from None


@router.post(
    "/v1/intake/prefill",
    response_model=PrefillResponse,
    tags=["intake"],
    summary="Prefill a case: which materials the library satisfies (免提交)",
    responses=problem_responses(401, 403, 422, 429, 500, 503),
    # The body is read by the route, after the token is checked (FastAPI would parse it first).
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/PrefillRequest"}}
            },
        }
    },
)
async def prefill(
    request: Request,
    store: StoreDep,
    deployment: DeploymentDep,
    caller: Reader,
) -> PrefillResponse:
    """For each material of the matter: the license that satisfies it (identifier, version,
    validity), or that the applicant must still provide it and why -- no license, expired,
    revoked, suspended, not shared with this client, or no electronic license exists. Only
    license types shared with the client are looked at. Audited with the licenses used."""
    body = await _prefill_body(request)
    holder = _valid_holder(body.applicant_id, field="applicant_id")
    try:
        access = _matter_access(deployment, caller, body.matter)
    except ProblemError as error:
        if error.problem.status != 403:
            raise
        raise await _denied(
            request, caller, "prefill", holder.value, body.matter, body.case_id, error
        ) from None
    found = await hot_path(request.app).reader.licenses_for_holder(holder.value)
    by_type: dict[str, list[License]] = {}
    for item in found:
        if item.type_code in access.type_codes:
            by_type.setdefault(item.type_code, []).append(item)
    materials = [_prefill_material(item, by_type) for item in access.materials]
    used = [m.license.license_id for m in materials if m.license is not None]
    await _audit(request, caller, "prefill", holder.value, used, access.matter.code, body.case_id)
    satisfied = sum(1 for m in materials if m.outcome == "satisfied")
    log.info(
        "prefill %s for %s by %s: %d of %d materials satisfied",
        holder.masked,
        access.matter.code,
        caller.client_id,
        satisfied,
        len(materials),
    )
    _count_lookups(request, [f for group in by_type.values() for f in group])
    return PrefillResponse(
        matter=MatterRef(code=access.matter.code, name=access.matter.name),
        applicant=Holder(id=holder.masked, kind=holder.kind.value),
        case_id=body.case_id,
        materials=materials,
        materials_total=len(materials),
        proofs_eliminated=satisfied,
        still_required=len(materials) - satisfied,
    )


# -- the holder's access log --------------------------------------------------------------------


class AccessLogEntry(BaseModel):
    """One read of the holder's data: who, what, why, when, with what result."""

    occurred_at: dt.datetime
    client_id: str
    client_name: str | None = Field(description="the reading system's registered name")
    action: str = Field(description="read, prefill, verify or change")
    matter: str
    matter_name: str | None = None
    case_id: str
    license_ids: list[str]
    result: str


class AccessLog(BaseModel):
    """Who looked at the holder's licenses, newest first (for a holder-facing portal)."""

    holder: Holder
    count: int
    entries: list[AccessLogEntry]


@router.get(
    "/v1/holders/{holder_id}/access-log",
    response_model=AccessLog,
    tags=["holders"],
    summary="Who read the holder's licenses, when and why",
    responses=problem_responses(401, 403, 422, 429, 500, 503),
)
async def access_log(
    request: Request,
    caller: Portal,
    deployment: DeploymentDep,
    case: CaseId,
    holder_id: HolderPath,
    limit: Annotated[int, Query(ge=1, le=500, description="newest entries to return")] = 100,
) -> AccessLog:
    """The audit trail's entries about this holder, newest first: which client read which
    licenses, for which matter and case. For portals (the ``access-log:read`` scope); the
    portal's own read is audited too (matter ``access-log``)."""
    holder = _valid_holder(holder_id)
    trail: AuditLog = request.app.state.audit
    entries = await run_in_threadpool(trail.for_holder, holder.value, limit)
    await _audit(request, caller, "read", holder.value, (), "access-log", case)
    clients: ClientCache = request.app.state.clients
    matters = {item.code: item.name for item in deployment.matters}
    out = []
    for entry in entries:
        reader = clients.get(entry.client_id)
        out.append(
            AccessLogEntry(
                occurred_at=entry.occurred_at,
                client_id=entry.client_id,
                client_name=reader.name if reader is not None else None,
                action=entry.action,
                matter=entry.matter,
                matter_name=matters.get(entry.matter),
                case_id=entry.case_id,
                license_ids=list(entry.license_ids),
                result=entry.result,
            )
        )
    return AccessLog(
        holder=Holder(id=holder.masked, kind=holder.kind.value), count=len(out), entries=out
    )
