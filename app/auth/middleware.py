"""Authenticate uploads before their body is read.

FastAPI parses a multipart body (spooling it to disk) before it resolves the route's dependencies,
so without this an unauthenticated client could send a full-size upload before getting its 401.
A pure ASGI middleware: it answers from the headers alone and never touches ``receive``.
"""

from __future__ import annotations

import anyio
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import service
from app.core.errors import Unauthorized, problem

BODY_METHODS = {"POST", "PUT", "PATCH"}
# The MONAI Label login posts a form and, by design, has no bearer token yet.
UNAUTHENTICATED_SUFFIXES = ("/auth/token", "/auth/token/")


class AuthenticateUploadsFirst:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and _is_upload(scope):
            refusal = await anyio.to_thread.run_sync(_refusal, _header(scope, b"authorization"))
            if refusal is not None:
                await problem(401, "unauthorized", "Authentication required", refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope["headers"] if k.lower() == name), "")


def _is_upload(scope: Scope) -> bool:
    return (scope["method"] in BODY_METHODS and _header(scope, b"content-type").lower().startswith("multipart/")
            and not scope["path"].endswith(UNAUTHENTICATED_SUFFIXES))


def _refusal(header: str) -> str | None:
    """Why the bearer token of ``header`` is refused, or None when it is valid (the route checks roles)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "missing bearer token: send 'Authorization: Bearer <token>'"
    try:
        service.authenticate_cached(token.strip())
    except Unauthorized as exc:
        return exc.detail
    return None
