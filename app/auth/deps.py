"""FastAPI dependencies for authentication and roles."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth import service
from app.core.db import get_session
from app.core.errors import Unauthorized
from app.models import User

SessionDep = Annotated[Session, Depends(get_session, scope="function")]
# Declares the bearer scheme in OpenAPI (the Authorize button of /docs); the token is checked below.
BEARER = HTTPBearer(auto_error=False, description="an API token: Authorization: Bearer <token>")


def bearer_token(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    return token.strip()


async def current_user(
    request: Request, _scheme: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)] = None
) -> User:
    # A token checked in the last NEXTCASE_TOKEN_CACHE_S seconds is answered here, with no worker thread.
    token = bearer_token(request)
    user = service.TOKENS.get(token)
    if user is None:
        user = await anyio.to_thread.run_sync(service.authenticate_cached, token)
    request.state.user_id = user.id
    return user


def authenticated_user(request: Request) -> User:
    """``current_user`` for code already in a worker thread (it may read the database).

    A short transaction of its own: on SQLite every transaction holds the write lock, and the request's main
    session should not take it before the upload has been validated.
    """
    user = service.authenticate_cached(bearer_token(request))
    request.state.user_id = user.id
    return user


async def admin_user(user: Annotated[User, Depends(current_user)]) -> User:
    service.require_role(user, "admin")
    return user


UserDep = Annotated[User, Depends(current_user)]
AdminDep = Annotated[User, Depends(admin_user)]
