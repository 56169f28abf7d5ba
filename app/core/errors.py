"""Domain errors and their mapping to RFC 9457 problem bodies.

Services raise these; one handler turns each into ``{type, title, status, detail, field}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match


class DomainError(Exception):
    status = 400
    type = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidUpload(DomainError):
    status, type, title = 400, "invalid-upload", "Invalid upload"


class UnsupportedFormat(DomainError):
    status, type, title = 415, "unsupported-format", "Unsupported file format"


class GeometryMismatch(DomainError):
    status, type, title = 422, "geometry-mismatch", "Label geometry does not match the case"


class ModalityMismatch(DomainError):
    status, type, title = 422, "modality-mismatch", "Image modality does not match the project"


class InvalidLabelValues(DomainError):
    status, type, title = 422, "invalid-label-values", "Label values outside the project's schema"


class InvalidRequest(DomainError):
    status, type, title = 422, "invalid-request", "Invalid request"


class UploadTooLarge(DomainError):
    status, type, title = 413, "upload-too-large", "Upload too large"


class NotFound(DomainError):
    status, type, title = 404, "not-found", "Not found"


class Conflict(DomainError):
    status, type, title = 409, "conflict", "Conflict"


class LeaseExpired(DomainError):
    status, type, title = 410, "lease-expired", "Lease expired or ended"


class Unauthorized(DomainError):
    status, type, title = 401, "unauthorized", "Authentication required"


class Forbidden(DomainError):
    status, type, title = 403, "forbidden", "Forbidden"


class Problem(BaseModel):
    """The body of every error answer (RFC 9457), media type application/problem+json."""

    type: str = Field(description="URI naming the kind of problem")
    title: str
    status: int
    detail: str
    field: str | None = Field(None, description="the request field at fault, when there is one")


_DESCRIPTIONS = {
    400: "Invalid input (e.g. an unreadable upload)", 401: "Missing or invalid bearer token",
    403: "The token's user lacks the role", 404: "No such resource", 406: "Not offered by this server",
    409: "Conflicts with the current state",
    410: "The lease has expired or ended", 411: "Upload without Content-Length", 413: "Upload too large",
    415: "Unsupported file format", 422: "Invalid request parameters or body", 429: "A training cycle is running",
    503: "A backing service (task broker) is unavailable",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries: each status answered with a problem body."""
    schema = Problem.model_json_schema()
    return {status: {"description": _DESCRIPTIONS[status], "content": {"application/problem+json": {"schema": schema}}}
            for status in statuses}


# Every authenticated route can answer these.
COMMON_PROBLEMS = (401, 403, 404, 422)


def problem(
    status: int, type_: str, title: str, detail: str, field: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"https://nextcase.dev/problems/{type_}",
        "title": title,
        "status": status,
        "detail": detail,
        "field": field,
    }
    headers = {**(headers or {}), **({"WWW-Authenticate": "Bearer"} if status == 401 else {})}
    return JSONResponse(body, status_code=status, media_type="application/problem+json", headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        return problem(exc.status, exc.type, exc.title, exc.detail, exc.field)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(loc) or None
        detail = f"{field}: {first.get('msg', 'invalid')}" if field else str(first.get("msg", "invalid"))
        return problem(422, "invalid-request", "Invalid request", detail, field)

    @app.exception_handler(DataError)
    async def _data(_: Request, exc: DataError) -> JSONResponse:
        # The database refused a value (a NUL byte or an out-of-range number in a field no schema bounds).
        # The request's transaction is rolled back by its session; the value itself is not echoed.
        return problem(422, "invalid-request", "Invalid request",
                       "a value in the request cannot be stored (out of range, or contains a NUL byte)", None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110: a 405 says what is allowed. Starlette names only the first route on the path.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem(exc.status_code, "http-error", str(exc.detail), str(exc.detail), headers=headers)


def _allowed_methods(request: Request) -> list[str]:
    """The methods some route fully matches on this path (asked of the router, so included routers count)."""
    def allowed(method: str) -> bool:
        scope = {**request.scope, "method": method}
        return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)

    return [m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE") if allowed(m)]
