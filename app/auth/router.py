from __future__ import annotations

from fastapi import APIRouter

from app.audit import service as audit
from app.auth import service
from app.auth.deps import AdminDep, SessionDep, UserDep
from app.auth.schemas import NewToken, TokenPublic, UserCreate, UserPublic, UserWithToken
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.core.params import Id

router = APIRouter(prefix="/api/v1", tags=["users"],
                   responses=problem_responses(*COMMON_PROBLEMS, 409))


@router.get("/users/me", response_model=UserPublic)
def me(user: UserDep) -> UserPublic:
    return UserPublic.model_validate(user)


@router.post("/users", response_model=UserWithToken, status_code=201)
def create_user(body: UserCreate, session: SessionDep, admin: AdminDep) -> UserWithToken:
    user = service.create_user(session, body.name, body.role)
    issued = service.issue_token(session, user)
    audit.record(session, "user.create", user_id=admin.id, target_user=user.id, role=user.role)
    return UserWithToken(
        user=UserPublic.model_validate(user), token=issued.token, token_info=TokenPublic.model_validate(issued.record)
    )


@router.get("/users", response_model=list[UserPublic])
def list_users(session: SessionDep, _: AdminDep) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in service.list_users(session)]


@router.post("/users/{user_id}/tokens", response_model=NewToken, status_code=201)
def new_token(user_id: Id, session: SessionDep, admin: AdminDep) -> NewToken:
    issued = service.issue_token(session, service.get_user(session, user_id))
    audit.record(session, "token.create", user_id=admin.id, target_user=user_id, token_id=issued.record.id)
    return NewToken(token=issued.token, token_info=TokenPublic.model_validate(issued.record))


@router.get("/users/{user_id}/tokens", response_model=list[TokenPublic])
def list_tokens(user_id: Id, session: SessionDep, _: AdminDep) -> list[TokenPublic]:
    service.get_user(session, user_id)
    return [TokenPublic.model_validate(t) for t in service.list_tokens(session, user_id)]


@router.delete("/tokens/{token_id}", response_model=TokenPublic)
def revoke_token(token_id: Id, session: SessionDep, admin: AdminDep) -> TokenPublic:
    record = service.revoke_token(session, token_id)
    audit.record(session, "token.revoke", user_id=admin.id, token_id=token_id)
    return TokenPublic.model_validate(record)
