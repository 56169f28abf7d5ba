"""The FastAPI application."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy import text
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.middleware import AuthenticateUploadsFirst
from app.auth.router import router as auth_router
from app.campaign.router import router as campaign_router
from app.cases.router import router as cases_router
from app.core import db
from app.core.config import get_settings
from app.core.errors import install_handlers, problem, problem_responses
from app.core.logging import keep_identifiers_out_of_library_output
from app.core.storage import get_blob_store
from app.cycles.router import router as cycles_router
from app.dicomweb.router import router as dicomweb_router
from app.metrics.router import router as metrics_router
from app.metrics.service import get_metrics
from app.monailabel.router import router as monailabel_router
from app.projects.router import router as projects_router
from app.queue.router import router as queue_router
from app.review.router import router as review_router
from app.training_sets.router import router as training_sets_router
from app.web.router import install as install_web_app

log = logging.getLogger("nextcase.http")
BODY_METHODS = {"POST", "PUT", "PATCH"}


def create_app() -> FastAPI:
    # /docs and /redoc load Swagger UI and ReDoc from files shipped in the fastapi-offline package,
    # served under /static-offline-docs: the default pages fetch them from a CDN, and hospital
    # networks are often offline (the page was blank).
    app = FastAPIOffline(title="NextCase", version="0.1.0",
                         description="Decides which 3D image an annotator should label next.", lifespan=_lifespan)
    install_handlers(app)
    get_metrics(app.state)
    keep_identifiers_out_of_library_output()
    # The queue first: a request is matched against the routes in this order, route by route (about 30 µs each
    # here), and claims and lease ends are the requests annotators make all day (server CPU per claim + release
    # 8.2 -> 6.9 ms in benchmarks/queue_load.py at 8 clients).
    for router in (queue_router, auth_router, projects_router, cases_router, cycles_router, campaign_router,
                   dicomweb_router, training_sets_router, monailabel_router, review_router, metrics_router):
        app.include_router(router)
    install_web_app(app)
    _document_size_checks(app)
    app.add_middleware(AuthenticateUploadsFirst)  # inside LimitAndLog: the 401 is logged too
    app.add_middleware(LimitAndLog)
    app.get("/healthz", tags=["ops"])(healthz)
    app.get("/readyz", tags=["ops"])(readyz)
    return app


def _document_size_checks(app: FastAPI) -> None:
    """_limit_and_log answers any body-carrying request with 411/413 before routing: say so on each operation.

    Added to the generated document (FastAPI's "extending OpenAPI"), as the check itself sits
    outside the routers.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for item in schema.get("paths", {}).values():
                for method, operation in item.items():
                    if method.upper() in BODY_METHODS:
                        for status, answer in problem_responses(411, 413).items():
                            operation["responses"].setdefault(str(status), answer)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    await db.close_async_pool()


class LimitAndLog:
    """Refuse a body without a length or over the limit before it is read (411, 413), then time, count and log the
    request.

    A pure ASGI middleware: as ``app.middleware("http")`` (Starlette's BaseHTTPMiddleware) it ran every request
    through a task group and memory streams of its own.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = _refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, noting_status)
        # Reads that succeed are the polls (cycle status, queue, Slicer's train status): DEBUG, or they drown the rest.
        seconds = time.perf_counter() - start
        method, route = scope["method"], getattr(scope.get("route"), "path", None)
        get_metrics(scope["app"].state).observe(method, route, status, seconds)
        quiet = method in ("GET", "HEAD") and status < 400
        level = logging.DEBUG if quiet else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "request", extra={
                "method": method, "status": status, "ms": round(seconds * 1000, 1),
                # The route template, not the path: tokens in lease URLs must not reach the logs.
                "route": route or scope["path"].split("/leases/")[0],
                "user_id": scope.get("state", {}).get("user_id"),
            })


def _refusal(scope: Scope) -> Response | None:
    headers = Headers(scope=scope)
    length = headers.get("content-length")
    limit = get_settings().max_upload_bytes
    if scope["method"] in BODY_METHODS and length is None and "chunked" in headers.get("transfer-encoding", ""):
        # Without a length the size limit could only be enforced after spooling everything to disk.
        return problem(411, "length-required", "Length required",
                       "send uploads with a Content-Length header (chunked bodies are not accepted)", None)
    # Refuse before the body is read: the multipart parser would otherwise spool it all to disk.
    if length and length.isdigit() and int(length) > limit + 1024 * 1024:
        return problem(413, "upload-too-large", "Upload too large",
                       f"request body is {int(length) / 2**20:.1f} MiB; the limit is "
                       f"NEXTCASE_MAX_UPLOAD_MB={get_settings().max_upload_mb}", "file")
    return None


def _broker_check() -> str:
    from worker import celery_app as apps

    try:
        with apps.celery_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return "ok"
    except Exception as exc:
        return f"error: {type(exc).__name__}"


def healthz() -> dict[str, str]:
    return {"status": "ok"}


def readyz() -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with db.get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        get_blob_store().check_writable()
        checks["blob_store"] = "ok"
    except OSError as exc:
        checks["blob_store"] = f"error: {type(exc).__name__}"
    checks["broker"] = _broker_check()
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)
