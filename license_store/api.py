"""The intake HTTP API of the license library: a holder's licenses by ID, a license by identifier.

``create_app()`` builds the FastAPI application; run it with
``uvicorn --factory license_store.api:create_app``. Every error is an RFC 9457 problem document
(``application/problem+json``) with a stable ``code``; store errors are mapped to HTTP statuses in
one place (:func:`_install_problem_handlers`). Holder IDs are validated before the store is
touched and never appear unmasked in a response or a log line.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from exchange.admin import install_admin
from exchange.config import Deployment, load_deployment
from exchange.standards.holder_ids import HolderId, InvalidIdentifier, mask_id, parse_holder_id
from exchange.standards.license_ids import parse_license_id
from license_store.errors import (
    ConflictError,
    LicenseNotFound,
    LicenseStoreError,
    SchemaNotCurrent,
    StoreUnavailable,
)
from license_store.metrics import CONTENT_TYPE_LATEST, ApiMetrics, MetricsMiddleware
from license_store.records import License
from license_store.store import LicenseStore

__all__ = ["HolderLicenses", "LicenseOut", "Problem", "ProblemError", "create_app"]

log = logging.getLogger("govexchange.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "urn:govexchange:problem:{code}"
MAX_ECHO = 40  # longest (masked) input a problem document repeats

EXAMPLE_LICENSE: dict[str, Any] = {
    "license_id": "1.2.156.3005.2.11440000MB2000000Q001.11440000MB2000000Q.20240000001.001.5",
    "type_code": "11440000MB2000000Q001",
    "type_name": "居民户口簿",
    "number": "440604001234",
    "issuer": {"code": "11440000MB2000000Q", "name": "佛山市公安局禅城分局"},
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


# -- response models ----------------------------------------------------------------------------


class Problem(BaseModel):
    """An error, as an RFC 9457 problem document."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "urn:govexchange:problem:invalid_holder_id",
                    "title": "Invalid holder ID",
                    "status": 422,
                    "detail": "not a resident ID or credit code: bad check character "
                    "(1101**********0021)",
                    "code": "invalid_holder_id",
                    "field": "holder_id",
                }
            ]
        }
    )

    type: str = Field(description="URI naming the kind of problem")
    title: str = Field(description="short, human-readable summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong this time; IDs are masked")
    code: str = Field(description="stable machine-readable code, e.g. invalid_holder_id")
    field: str | None = Field(default=None, description="the input that was wrong, if one was")


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


class HolderLicenses(BaseModel):
    """A holder's current licenses, by type code then issue date."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "holder": {"id": "4406**********1234", "kind": "natural"},
                    "count": 1,
                    "licenses": [EXAMPLE_LICENSE],
                }
            ]
        }
    )

    holder: Holder
    count: int
    licenses: list[LicenseOut]


def _license_out(found: License) -> LicenseOut:
    return LicenseOut(
        license_id=found.license_id,
        type_code=found.type_code,
        type_name=found.type_name,
        number=found.number,
        issuer=Issuer(code=found.issuer_code, name=found.issuer_name),
        region_code=found.region_code,
        holder_name=found.holder_name,
        holder_code_type=found.holder_code_type,
        issue_date=found.issue_date,
        valid_from=found.valid_from,
        valid_to=found.valid_to,
        status=found.status,
        version=found.version,
        face=found.face,
    )


# -- problems -----------------------------------------------------------------------------------


def _problem(status: int, code: str, title: str, detail: str, field: str | None = None) -> Problem:
    return Problem(
        type=PROBLEM_TYPE.format(code=code),
        title=title,
        status=status,
        detail=detail,
        code=code,
        field=field,
    )


class ProblemError(Exception):
    """Raised by a route to answer with a problem document."""

    def __init__(
        self, status: int, code: str, title: str, detail: str, field: str | None = None
    ) -> None:
        super().__init__(detail)
        self.problem = _problem(status, code, title, detail, field)


def _problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + "…"


def _problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem documents."""
    described = {
        404: "No license has this identifier",
        422: "The input is invalid (problem+json, the ID masked)",
        500: "Unexpected error (no internals disclosed)",
        503: "The license store is unavailable; retry later",
    }
    return {
        status: {
            "description": described[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def _install_problem_handlers(app: FastAPI) -> None:
    """The one place where errors become HTTP statuses."""

    @app.exception_handler(ProblemError)
    async def _raised_problem(_request: Request, error: ProblemError) -> JSONResponse:
        return _problem_response(error.problem)

    @app.exception_handler(LicenseNotFound)
    async def _not_found(_request: Request, error: LicenseNotFound) -> JSONResponse:
        problem = _problem(404, "license_not_found", "License not found", str(error))
        return _problem_response(problem)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(_request: Request, error: StoreUnavailable) -> JSONResponse:
        log.warning("license store unavailable: %s", error)
        problem = _problem(
            503,
            "store_unavailable",
            "License store unavailable",
            "The license store cannot be reached right now; retry later.",
        )
        return _problem_response(problem, headers={"Retry-After": "30"})

    @app.exception_handler(SchemaNotCurrent)
    async def _not_migrated(_request: Request, error: SchemaNotCurrent) -> JSONResponse:
        log.error("license store schema not current: %s", error)
        problem = _problem(
            503,
            "store_not_ready",
            "License store not ready",
            "The license store is not ready (its schema is being migrated); retry later.",
        )
        return _problem_response(problem, headers={"Retry-After": "60"})

    @app.exception_handler(ConflictError)
    async def _conflict(_request: Request, error: ConflictError) -> JSONResponse:
        log.warning("license store conflict: %s", error)
        return _problem_response(
            _problem(409, "conflict", "Conflict", "The request conflicts with stored data.")
        )

    @app.exception_handler(LicenseStoreError)
    async def _store_error(_request: Request, error: LicenseStoreError) -> JSONResponse:
        log.error("license store error: %s", error)
        return _problem_response(_internal_problem())

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default output repeats the input; a problem document names the place only.
        errors = error.errors()
        places = [".".join(str(part) for part in item.get("loc", ())) for item in errors]
        detail = "; ".join(
            f"{place}: {item.get('msg', 'invalid')}"
            for place, item in zip(places, errors, strict=True)
        )
        problem = _problem(
            422,
            "invalid_request",
            "Invalid request",
            detail or "invalid request",
            field=places[0].split(".")[-1] if places else None,
        )
        return _problem_response(problem)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        problem = _problem(error.status_code, code, str(error.detail), str(error.detail))
        return _problem_response(problem, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.error("unexpected error in the license API: %s", type(error).__name__)
        return _problem_response(_internal_problem())


def _internal_problem() -> Problem:
    return _problem(500, "internal_error", "Internal error", "An unexpected error occurred.")


# -- routes -------------------------------------------------------------------------------------

router = APIRouter()


def get_store(request: Request) -> LicenseStore:
    """The application's store (set by ``create_app`` or its lifespan)."""
    store: LicenseStore | None = getattr(request.app.state, "store", None)
    if store is None:
        raise StoreUnavailable("the license store is not open (application not started)")
    return store


StoreDep = Annotated[LicenseStore, Depends(get_store)]


def _valid_holder(holder_id: str) -> HolderId:
    try:
        return parse_holder_id(holder_id, field="holder_id")
    except InvalidIdentifier as error:
        log.info("rejected holder ID %s: %s", _bounded(error.masked), error.reason)
        raise ProblemError(
            422,
            "invalid_holder_id",
            "Invalid holder ID",
            f"{error.reason} ({_bounded(error.masked)})",
            field=error.field,
        ) from None


@router.get("/healthz", tags=["operations"], summary="Liveness")
def healthz() -> dict[str, str]:
    """The process is up (does not touch the store)."""
    return {"status": "ok"}


@router.get(
    "/v1/holders/{holder_id}/licenses",
    response_model=HolderLicenses,
    tags=["licenses"],
    summary="A holder's licenses (一号申办)",
    responses=_problem_responses(422, 500, 503),
)
def holder_licenses(
    store: StoreDep,
    request: Request,
    holder_id: Annotated[
        str,
        Path(
            description="resident identity number (GB 11643) or unified social credit code "
            "(GB 32100)",
            examples=["11010519491231002X"],
        ),
    ],
) -> HolderLicenses:
    """The holder's current licenses by type code then issue date; an unknown holder has none."""
    holder = _valid_holder(holder_id)
    found = store.licenses_for_holder(holder.value)
    log.info("holder lookup %s (%s): %d licenses", holder.masked, holder.kind.value, len(found))
    metrics: ApiMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        for item in found:
            metrics.lookups.labels(item.type_code).inc()
    return HolderLicenses(
        holder=Holder(id=holder.masked, kind=holder.kind.value),
        count=len(found),
        licenses=[_license_out(item) for item in found],
    )


@router.get(
    "/v1/licenses/{license_id}",
    response_model=LicenseOut,
    tags=["licenses"],
    summary="A license by its identifier",
    responses=_problem_responses(404, 422, 500, 503),
)
def license_by_id(
    store: StoreDep,
    license_id: Annotated[
        str,
        Path(
            description="electronic license identifier; any version's identifier gives the "
            "current version",
            examples=[EXAMPLE_LICENSE["license_id"]],
        ),
    ],
) -> LicenseOut:
    """The current version of the license."""
    try:
        parse_license_id(license_id)
    except ValueError as error:
        raise ProblemError(
            422, "invalid_license_id", "Invalid license identifier", str(error), "license_id"
        ) from None
    found = store.get(license_id)
    log.info("license lookup %s: holder %s", found.license_id, mask_id(found.holder_id))
    return _license_out(found)


# -- readiness and the catalogues ---------------------------------------------------------------


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "text format"}},
)
def metrics(request: Request) -> Response:
    """Requests and latency per route, licenses returned per type (Prometheus text format)."""
    registry: ApiMetrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)


class Readiness(BaseModel):
    """The store answers and its schema is this code's."""

    status: Literal["ready"]
    store: str = Field(description="the store's URL, password hidden")


@router.get(
    "/readyz",
    response_model=Readiness,
    tags=["operations"],
    summary="Readiness",
    responses=_problem_responses(503),
)
def readyz(store: StoreDep) -> Readiness:
    """Ready when the store is reachable and its migrations are current (503 otherwise)."""
    try:
        current = store.is_current()
    except Exception as error:  # any failure to reach the store means not ready
        log.warning("readiness: store %s unreachable: %s", store.url, type(error).__name__)
        raise ProblemError(
            503, "store_unavailable", "Store unavailable", "the license store cannot be reached"
        ) from None
    if not current:
        raise ProblemError(
            503,
            "store_not_ready",
            "Store not migrated",
            "the license store's schema is not this version's: run `govx db upgrade`",
        )
    return Readiness(status="ready", store=store.url)


class FaceFieldOut(BaseModel):
    name: str
    label: str


class DepartmentRef(BaseModel):
    id: str
    name: str
    code: str = Field(description="unified social credit code")
    region: str = Field(description="GB/T 2260 region code")


class LicenseTypeOut(BaseModel):
    """A license type of the catalogue (证照目录)."""

    id: str
    code: str = Field(description="catalogue type code")
    name: str
    holder_kind: Literal["natural", "legal"]
    issuing_department: DepartmentRef
    validity: str = Field(description="permanent, from_source or years:N")
    sharing: Literal["unconditional", "conditional", "not_shared"]
    face_fields: list[FaceFieldOut]


class MaterialOut(BaseModel):
    name: str
    license_type: str | None = Field(description="the license type id that satisfies it, if any")
    applicant_provides: bool
    reason: str | None = None


class MatterOut(BaseModel):
    """A government service item (事项) and the materials it requires."""

    code: str
    name: str
    department: DepartmentRef
    materials: list[MaterialOut]


def get_deployment(request: Request) -> Deployment:
    """The deployment the app serves (loaded from ``GOVX_CONFIG`` on first use)."""
    deployment: Deployment | None = getattr(request.app.state, "deployment", None)
    if deployment is None:
        deployment = load_deployment()
        request.app.state.deployment = deployment
    return deployment


DeploymentDep = Annotated[Deployment, Depends(get_deployment)]


def _department(deployment: Deployment, department_id: str) -> DepartmentRef:
    department = deployment.department_by_id[department_id]
    return DepartmentRef(
        id=department.id, name=department.name, code=department.code, region=department.region
    )


@router.get(
    "/v1/catalog/license-types",
    response_model=list[LicenseTypeOut],
    tags=["catalogue"],
    summary="The license-type catalogue (证照目录)",
)
def license_types(deployment: DeploymentDep) -> list[LicenseTypeOut]:
    """Every license type the library holds, with its issuer, validity rule and face fields."""
    return [
        LicenseTypeOut(
            id=item.id,
            code=item.code,
            name=item.name,
            holder_kind=item.holder_kind.value,
            issuing_department=_department(deployment, item.issuing_department),
            validity=item.validity.rule
            + (f":{item.validity.years}" if item.validity.years else ""),
            sharing=item.sharing,
            face_fields=[FaceFieldOut(name=f.name, label=f.label) for f in item.face_fields],
        )
        for item in deployment.license_types
    ]


@router.get(
    "/v1/catalog/matters",
    response_model=list[MatterOut],
    tags=["catalogue"],
    summary="The matter catalogue with materials (事项目录)",
)
def matters(deployment: DeploymentDep) -> list[MatterOut]:
    """Every matter, its department and the materials it requires."""
    return [
        MatterOut(
            code=item.code,
            name=item.name,
            department=_department(deployment, item.department),
            materials=[
                MaterialOut(
                    name=m.name,
                    license_type=m.license_type,
                    applicant_provides=m.applicant_provides,
                    reason=m.reason,
                )
                for m in item.materials
            ],
        )
        for item in deployment.matters
    ]


# -- application --------------------------------------------------------------------------------


def create_app(store: LicenseStore | None = None, deployment: Deployment | None = None) -> FastAPI:
    """The API on ``store``; without one, a :class:`LicenseStore` on the configured URL is
    opened at startup and closed at shutdown. The catalogues come from ``deployment``, or from
    the configured deployment directory on first use."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None:
            yield
            return
        owned = LicenseStore()
        app.state.store = owned
        log.info("license API serving %s", owned.url)
        try:
            yield
        finally:
            app.state.store = None
            owned.close()

    # Docs pages from packaged assets, not a CDN: government networks are often isolated.
    app = FastAPIOffline(
        title="govexchange license library",
        summary="Fetch a holder's electronic licenses by ID (电子证照库).",
        version="1",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.deployment = deployment
    app.state.metrics = ApiMetrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    _install_problem_handlers(app)
    app.include_router(router)
    install_admin(app)  # the admin dashboard under /admin (exchange/admin, docs/admin.md)
    _document_problems(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Add the ``Problem`` schema the error responses refer to (no route returns it as a model)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schemas = generate().setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(mode="serialization")
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
