"""Errors of the license API as RFC 9457 problem documents, with stable codes.

Routes raise :class:`ProblemError` (or let a store error through); :func:`install_problem_handlers`
is the one place where exceptions become HTTP statuses. A problem document names the place of
the error and repeats input only masked and bounded, never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from license_store.errors import (
    ConflictError,
    LicenseNotFound,
    LicenseStoreError,
    SchemaNotCurrent,
    StoreUnavailable,
)

__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "ProblemError",
    "bounded",
    "install_problem_handlers",
    "internal_problem",
    "make_problem",
    "problem_response",
    "problem_responses",
]

log = logging.getLogger("govexchange.api")

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "urn:govexchange:problem:{code}"
MAX_ECHO = 40  # longest (masked) input a problem document repeats


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
    expected_seq: int | None = Field(
        default=None,
        description="sequence_gap only: the package number the receiving node expects next",
    )


# -- problems -----------------------------------------------------------------------------------


def make_problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    field: str | None = None,
    expected_seq: int | None = None,
) -> Problem:
    return Problem(
        type=PROBLEM_TYPE.format(code=code),
        title=title,
        status=status,
        detail=detail,
        code=code,
        field=field,
        expected_seq=expected_seq,
    )


class ProblemError(Exception):
    """Raised by a route or a dependency to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
        expected_seq: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.problem = make_problem(status, code, title, detail, field, expected_seq)
        self.headers = headers


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def bounded(text: str) -> str:
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + "…"


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for problem documents."""
    described = {
        400: "The token request is malformed (code: an RFC 6749 error code)",
        401: "No bearer token, or an expired, forged or wrong-audience one",
        403: "The client is not granted this matter, license type or scope",
        404: "No license has this identifier",
        409: "The package leaves a gap (send `expected_seq` first) or clashes with stored data",
        413: "The package is larger than this node accepts (GOVX_MAX_PACKAGE_MB)",
        422: "The input is invalid (problem+json, the ID masked)",
        500: "Unexpected error (no internals disclosed)",
        429: "The client is over its rate limit; retry after Retry-After seconds",
        503: "The license store is unavailable; retry later",
    }
    return {
        status: {
            "description": described[status],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def install_problem_handlers(app: FastAPI) -> None:
    """The one place where errors become HTTP statuses."""

    @app.exception_handler(ProblemError)
    async def _raised_problem(_request: Request, error: ProblemError) -> JSONResponse:
        return problem_response(error.problem, headers=error.headers)

    @app.exception_handler(LicenseNotFound)
    async def _not_found(_request: Request, error: LicenseNotFound) -> JSONResponse:
        problem = make_problem(404, "license_not_found", "License not found", str(error))
        return problem_response(problem)

    @app.exception_handler(StoreUnavailable)
    async def _unavailable(_request: Request, error: StoreUnavailable) -> JSONResponse:
        log.warning("license store unavailable: %s", error)
        problem = make_problem(
            503,
            "store_unavailable",
            "License store unavailable",
            "The license store cannot be reached right now; retry later.",
        )
        return problem_response(problem, headers={"Retry-After": "30"})

    @app.exception_handler(SchemaNotCurrent)
    async def _not_migrated(_request: Request, error: SchemaNotCurrent) -> JSONResponse:
        log.error("license store schema not current: %s", error)
        problem = make_problem(
            503,
            "store_not_ready",
            "License store not ready",
            "The license store is not ready (its schema is being migrated); retry later.",
        )
        return problem_response(problem, headers={"Retry-After": "60"})

    @app.exception_handler(ConflictError)
    async def _conflict(_request: Request, error: ConflictError) -> JSONResponse:
        log.warning("license store conflict: %s", error)
        return problem_response(
            make_problem(409, "conflict", "Conflict", "The request conflicts with stored data.")
        )

    @app.exception_handler(LicenseStoreError)
    async def _store_error(_request: Request, error: LicenseStoreError) -> JSONResponse:
        log.error("license store error: %s", error)
        return problem_response(internal_problem())

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's default output repeats the input; a problem document names the place only.
        errors = error.errors()
        places = [".".join(str(part) for part in item.get("loc", ())) for item in errors]
        detail = "; ".join(
            f"{place}: {item.get('msg', 'invalid')}"
            for place, item in zip(places, errors, strict=True)
        )
        problem = make_problem(
            422,
            "invalid_request",
            "Invalid request",
            detail or "invalid request",
            field=places[0].split(".")[-1] if places else None,
        )
        return problem_response(problem)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and "parsing the body" in str(error.detail):
            # FastAPI's answer to a body that is not UTF-8 or not parsable at all: invalid input
            problem = make_problem(
                422,
                "invalid_request",
                "Invalid request",
                "the request body could not be parsed (it must be UTF-8 JSON or form data)",
                field="body",
            )
            return problem_response(problem)
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        problem = make_problem(error.status_code, code, str(error.detail), str(error.detail))
        return problem_response(problem, headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, error: Exception) -> JSONResponse:
        log.error("unexpected error in the license API: %s", type(error).__name__)
        return problem_response(internal_problem())


def internal_problem() -> Problem:
    return make_problem(500, "internal_error", "Internal error", "An unexpected error occurred.")
