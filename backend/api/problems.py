"""RFC 9457 problem details: every non-2xx answer of the API, with a problem code (problem_codes.py)."""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.api.problem_codes import problem
from backend.exceptions.classifier import database_error_code

log = structlog.get_logger("crewrun.api")
PROBLEM_JSON = "application/problem+json"
# Field errors whose location starts with one of these are crew-spec problems.
_SPEC_LOCATIONS = {"crew", "agents", "tasks", "name", "process", "retry"}


class ProblemError(Exception):
    def __init__(
        self,
        code: str,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.entry = problem(code)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}


def invalid_cursor(exc: ValueError) -> ProblemError:
    """422 for a pagination cursor the store did not make (every paginated route)."""
    return ProblemError(
        "REQUEST_INVALID",
        "invalid cursor",
        errors=[{"loc": ["query", "cursor"], "msg": str(exc), "type": "cursor"}],
    )


def problem_response(
    code: str,
    detail: str,
    request: Request,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    entry = problem(code)
    body: dict[str, Any] = {
        "type": f"/api/v1/error-codes#{entry.code}",
        "title": entry.description,
        "status": entry.http_status,
        "detail": detail,
        "code": entry.code,
        "instance": f"{request.url.path}#{uuid.uuid4().hex[:12]}",
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=entry.http_status, media_type=PROBLEM_JSON, headers=headers)


def field_errors(raw: list[Any]) -> list[dict[str, Any]]:
    """Pydantic errors as JSON-safe field errors; cross-field spec problems are expanded."""
    out: list[dict[str, Any]] = []
    for err in raw:
        loc = [p for p in err.get("loc", ()) if p != "body"]
        ctx = err.get("ctx") or {}
        if err.get("type") == "crew_spec_reference" and isinstance(ctx.get("problems"), list):
            for problem in ctx["problems"]:
                out.append(
                    {"loc": loc + list(problem["loc"]), "msg": problem["msg"], "type": "crew_spec_reference"}
                )
            continue
        out.append({"loc": loc, "msg": str(err.get("msg", "")), "type": str(err.get("type", ""))})
    return out


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.entry.code, exc.detail, request, errors=exc.errors, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw = list(exc.errors())
        if any(e.get("type") in ("json_invalid", "model_attributes_type") for e in raw) and all(
            len(e.get("loc", ())) <= 2 for e in raw
        ):
            return problem_response("REQUEST_MALFORMED", "the body is not a valid JSON document", request)
        errors = field_errors(raw)
        spec_problem = request.url.path.rstrip("/").endswith("/crews") or any(
            e["loc"] and str(e["loc"][0]) in _SPEC_LOCATIONS for e in errors
        )
        code = "CREW_SPEC_INVALID" if spec_problem else "REQUEST_INVALID"
        return problem_response(code, f"{len(errors)} invalid field(s)", request, errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            400: "REQUEST_MALFORMED",
            404: "NOT_FOUND",
            405: "METHOD_NOT_ALLOWED",
            413: "PAYLOAD_TOO_LARGE",
        }.get(exc.status_code, "REQUEST_INVALID")
        return problem_response(code, str(exc.detail), request)

    @app.exception_handler(DBAPIError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        log.warning("api.database_unavailable", error=type(exc.orig).__name__ if exc.orig else "")
        full = database_error_code(exc) == "RESOURCE_DISK_FULL"
        return problem_response(
            "DATABASE_UNAVAILABLE",
            "the backend database is out of disk space" if full else "the backend database is unavailable",
            request,
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unexpected_error", path=request.url.path)
        return problem_response("INTERNAL_ERROR", "unexpected error; it has been logged", request)
