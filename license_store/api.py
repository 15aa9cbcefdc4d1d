"""The HTTP API of the license library: tokens, intake reads, catalogues and operations.

``create_app()`` builds the FastAPI application; run it with
``uvicorn --factory license_store.api:create_app`` (``govx serve``). Intake systems get a token
from ``POST /v1/oauth/token`` (OAuth2 client credentials, :mod:`license_store.clients`,
:mod:`license_store.tokens`) and read licenses for a named matter and case
(:mod:`license_store.intake`); every read is audited before it is answered. Every error is an
RFC 9457 problem document with a stable ``code`` (:mod:`license_store.problems`). Holder IDs are
validated before the store is touched and never appear unmasked in a response or a log line.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from exchange.admin import install_admin
from exchange.config import ConfigError, Deployment, load_deployment
from license_store.aio import HotPath, open_hot_path
from license_store.audit import AuditLog
from license_store.clients import SCOPES, ClientCache, ClientRegistry
from license_store.direct import DirectRoutes
from license_store.errors import LicenseStoreError
from license_store.exchange_api import router as exchange_router
from license_store.intake import DeploymentDep, PrefillRequest, StoreDep
from license_store.intake import router as intake_router
from license_store.metrics import (
    CONTENT_TYPE_LATEST,
    ApiMetrics,
    MetricsMiddleware,
    exchange_gauges,
)
from license_store.problems import (
    Problem,
    ProblemError,
    install_problem_handlers,
    problem_responses,
)
from license_store.security import Caller, RateLimiter, require
from license_store.store import LicenseStore
from license_store.tokens import TokenIssuer

__all__ = ["Problem", "ProblemError", "TokenResponse", "create_app"]

log = logging.getLogger("govexchange.api")

# Served by :class:`DirectRoutes`: the intake lookup, whose endpoint reads its own parameters.
DIRECT_PATHS = ("/v1/holders/{holder_id}/licenses",)

router = APIRouter()
Catalog = Annotated[Caller, require("catalog:read")]
Monitor = Annotated[Caller, require("metrics:read")]
_basic = HTTPBasic(auto_error=False, description="client_id:client_secret (RFC 6749 2.3.1)")


@router.get("/healthz", tags=["operations"], summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up (does not touch the store)."""
    return {"status": "ok"}


@router.get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "text format"},
        **problem_responses(401, 403, 429),
    },
)
def metrics(_caller: Monitor, request: Request) -> Response:
    """Requests and latency per route, licenses returned per type, and the replication lag read
    from the store at this scrape (Prometheus text format; ``docs/monitoring.md``). Needs the
    ``metrics:read`` scope (a ``monitor`` client). A sync route: FastAPI runs it in a thread, so
    the store read stays off the event loop."""
    registry: ApiMetrics = request.app.state.metrics
    gauges = exchange_gauges(getattr(request.app.state, "store", None))
    return Response(registry.render(gauges), media_type=CONTENT_TYPE_LATEST)


# -- the token endpoint ---------------------------------------------------------------------------


class TokenResponse(BaseModel):
    """An OAuth2 access token (RFC 6749 5.1)."""

    access_token: str = Field(description="a signed JWT; send it as `Authorization: Bearer`")
    token_type: Literal["Bearer"]
    expires_in: int = Field(description="seconds until it expires")
    scope: str = Field(description="the granted scopes, space-separated")


def _oauth_error(status: int, code: str, detail: str) -> ProblemError:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="govexchange"'
    return ProblemError(status, code, "Token request refused", detail, headers=headers)


@router.post(
    "/v1/oauth/token",
    response_model=TokenResponse,
    tags=["auth"],
    summary="Get an access token (OAuth2 client credentials)",
    responses=problem_responses(400, 401, 500, 503),
)
def token(
    request: Request,
    grant_type: Annotated[str, Form(max_length=64, examples=["client_credentials"])],
    client_id: Annotated[str | None, Form(max_length=64)] = None,
    client_secret: Annotated[str | None, Form(max_length=256)] = None,
    scope: Annotated[
        str | None,
        Form(max_length=512, description="space-separated subset of the client's scopes"),
    ] = None,
    basic: Annotated[HTTPBasicCredentials | None, Depends(_basic)] = None,
) -> JSONResponse:
    """Trade a client's id and secret (form fields, or HTTP Basic) for a short-lived bearer
    token. Every failed authentication gets the same answer (401 ``invalid_client``)."""
    if grant_type != "client_credentials":
        raise _oauth_error(
            400, "unsupported_grant_type", "only grant_type=client_credentials is supported"
        )
    if basic is not None:
        client_id, client_secret = basic.username, basic.password
    if not client_id or not client_secret:
        raise _oauth_error(400, "invalid_request", "client_id and client_secret are required")
    registry: ClientRegistry = request.app.state.registry
    client = registry.authenticate(client_id, client_secret)
    if client is None:
        log.info("token refused: client authentication failed")
        raise _oauth_error(401, "invalid_client", "client authentication failed")
    wanted = frozenset(scope.split()) if scope else frozenset(client.scopes)
    unknown = sorted(wanted - set(SCOPES))
    if unknown or not wanted <= set(client.scopes):
        raise _oauth_error(400, "invalid_scope", "the client is not granted every scope asked for")
    issuer: TokenIssuer = request.app.state.tokens
    access_token, lifetime = issuer.issue(client, wanted)
    log.info("token issued to %s (%s), %d s", client.client_id, " ".join(sorted(wanted)), lifetime)
    body = TokenResponse(
        access_token=access_token,
        token_type="Bearer",
        expires_in=lifetime,
        scope=" ".join(sorted(wanted)),
    )
    return JSONResponse(
        body.model_dump(), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


# -- readiness and the catalogues ---------------------------------------------------------------


class Readiness(BaseModel):
    """The store answers and its schema is this code's."""

    status: Literal["ready"]
    store: str = Field(description="the store's URL, password hidden")


@router.get(
    "/readyz",
    response_model=Readiness,
    tags=["operations"],
    summary="Readiness",
    responses=problem_responses(503),
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
    responses=problem_responses(401, 403, 429),
)
def license_types(_caller: Catalog, deployment: DeploymentDep) -> list[LicenseTypeOut]:
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
    responses=problem_responses(401, 403, 429),
)
def matters(_caller: Catalog, deployment: DeploymentDep) -> list[MatterOut]:
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


def _database_url(store: LicenseStore) -> str:
    """The store's full URL (``store.url`` hides the password) for the tables beside it."""
    return store._engine.url.render_as_string(hide_password=False)


def _attach(app: FastAPI, store: LicenseStore, tokens: TokenIssuer | None) -> None:
    """Open what the API keeps beside the store: the clients, the audit trail, the keys."""
    from license_store.signing import KeyRing

    url = _database_url(store)
    app.state.store = store
    app.state.registry = ClientRegistry(url)
    app.state.clients = ClientCache(app.state.registry)
    app.state.audit = AuditLog(url)
    app.state.tokens = tokens if tokens is not None else TokenIssuer()
    app.state.keyring = KeyRing()


async def _open_hot_path(app: FastAPI) -> None:
    """Open the lookup and audit path on the serving event loop (asyncpg on PostgreSQL)."""
    store: LicenseStore = app.state.store
    try:
        app.state.hot_path = await open_hot_path(store, app.state.audit, _database_url(store))
    except LicenseStoreError as error:  # served: /readyz says why; reads go through threads
        log.warning("intake lookups through threads, the asyncpg pool did not open: %s", error)
        return
    log.info("intake lookups and audit through %s", app.state.hot_path.kind)


async def _close_hot_path(app: FastAPI) -> None:
    hot: HotPath | None = getattr(app.state, "hot_path", None)
    app.state.hot_path = None
    if hot is not None:
        await hot.close()


def _detach(app: FastAPI) -> None:
    for name in ("registry", "audit"):
        opened = getattr(app.state, name, None)
        if opened is not None:
            opened.close()
    link = getattr(app.state, "node_link", None)  # the parent's client, if lookups went up
    if link is not None and link.parent is not None:
        link.parent.close()
    app.state.node_link = None


def create_app(
    store: LicenseStore | None = None,
    deployment: Deployment | None = None,
    *,
    tokens: TokenIssuer | None = None,
) -> FastAPI:
    """The API on ``store``; without one, a :class:`LicenseStore` on the configured URL is
    opened at startup and closed at shutdown. Clients and the audit trail live in the store's
    database. The catalogues come from ``deployment``, or from the configured deployment
    directory on first use. ``tokens`` defaults to a :class:`TokenIssuer` on the configured key.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = None
        if store is None:
            owned = LicenseStore()
            _attach(app, owned, tokens)
            log.info("license API serving %s", owned.url)
        if app.state.deployment is None:  # once, not by the first concurrent requests
            try:
                app.state.deployment = load_deployment()
            except ConfigError as error:  # served, but the catalogue routes will say why
                log.error("deployment configuration not loaded: %s", error)
        await _open_hot_path(app)
        # What startup built lives as long as the worker: out of the collector's way, so
        # full collections under load scan only what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await _close_hot_path(app)
            _detach(app)
            exchange_state = getattr(app.state, "exchange_state", None)
            if exchange_state is not None:  # opened by the first dataset package received
                app.state.exchange_state = None
                exchange_state.close()
            if owned is not None:
                app.state.store = None
                owned.close()

    # Docs pages from packaged assets, not a CDN: government networks are often isolated.
    app = FastAPIOffline(
        title="govexchange license library",
        summary="Fetch a holder's electronic licenses by ID for a matter (电子证照库).",
        version="1",
        lifespan=lifespan,
    )
    app.state.store = None
    if store is not None:
        _attach(app, store, tokens)
    app.state.deployment = deployment
    app.state.metrics = ApiMetrics()
    app.state.rate_limiter = RateLimiter()
    # inside the metrics middleware (added after it: outer); built at the first request, when
    # the routes and exception handlers below are in place
    app.add_middleware(
        DirectRoutes, routes=app.router.routes, paths=DIRECT_PATHS, handlers=app.exception_handlers
    )
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    install_problem_handlers(app)
    app.include_router(intake_router)  # first: the intake lookup is the route matched most
    app.include_router(router)
    app.include_router(exchange_router)  # replication packages from child nodes
    install_admin(app)  # the admin dashboard under /admin (exchange/admin, docs/admin.md)
    _document_problems(app)
    return app


def _document_problems(app: FastAPI) -> None:
    """Add the ``Problem`` schema the error responses refer to (no route returns it as a model)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = generate()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas["Problem"] = Problem.model_json_schema(mode="serialization")
            schemas["PrefillRequest"] = PrefillRequest.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            # Invalid input is always a problem document, never FastAPI's default 422 body.
            invalid = problem_responses(422)[422]
            for operations in spec.get("paths", {}).values():
                for operation in operations.values():
                    if "422" in operation.get("responses", {}):
                        operation["responses"]["422"] = invalid
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
