from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, update

from app.core import db
from app.models import ApiToken, utcnow
from tests.conftest import Login


def test_missing_token_is_401_with_problem_body(client: TestClient) -> None:
    r = client.get("/api/v1/projects")
    assert r.status_code == 401
    body = r.json()
    assert body["detail"] == "missing bearer token: send 'Authorization: Bearer <token>'"
    assert set(body) >= {"type", "title", "detail", "field", "status"}
    assert r.headers["www-authenticate"] == "Bearer"


def test_unknown_token_is_401(client: TestClient) -> None:
    r = client.get("/api/v1/projects", headers={"Authorization": "Bearer nc_not-a-real-token"})
    assert r.status_code == 401
    assert r.json()["detail"] == "the bearer token is not valid"


def test_annotator_cannot_create_project_or_users(client: TestClient, annotator: Login) -> None:
    r = client.post("/api/v1/projects", json={"name": "p", "modality": "CT", "labels": ["background", "x"]},
                    headers=annotator.headers)
    assert r.status_code == 403
    assert r.json()["detail"] == "this action needs the admin role; 'bob-annotator' is annotator"
    assert client.get("/api/v1/projects", headers=annotator.headers).json() == []
    r = client.post("/api/v1/users", json={"name": "eve", "role": "admin"}, headers=annotator.headers)
    assert r.status_code == 403


def test_admin_creates_user_token_and_revokes_it(client: TestClient, admin: Login) -> None:
    r = client.post("/api/v1/users", json={"name": "carol", "role": "annotator"}, headers=admin.headers)
    assert r.status_code == 201
    created = r.json()
    carol = {"Authorization": f"Bearer {created['token']}"}
    assert client.get("/api/v1/users/me", headers=carol).json()["name"] == "carol"

    second = client.post(f"/api/v1/users/{created['user']['id']}/tokens", headers=admin.headers).json()
    r = client.delete(f"/api/v1/tokens/{created['token_info']['id']}", headers=admin.headers)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None

    r = client.get("/api/v1/users/me", headers=carol)
    assert r.status_code == 401
    assert r.json()["detail"] == "the bearer token has been revoked"
    # the other token of the same user still works
    assert client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {second['token']}"}).status_code == 200


def test_tokens_are_stored_only_as_hashes(client: TestClient, admin: Login) -> None:
    from sqlalchemy import select

    from app.core import db
    from app.models import ApiToken

    with db.session_scope() as session:
        stored = [t.token_hash for t in session.scalars(select(ApiToken))]
    assert admin.token not in stored
    assert all(len(h) == 64 for h in stored)


def test_duplicate_user_is_409(client: TestClient, admin: Login) -> None:
    r = client.post("/api/v1/users", json={"name": "alice-admin", "role": "admin"}, headers=admin.headers)
    assert r.status_code == 409
    assert r.json()["field"] == "name"


def test_bad_role_is_422_naming_the_field(client: TestClient, admin: Login) -> None:
    r = client.post("/api/v1/users", json={"name": "dave", "role": "root"}, headers=admin.headers)
    assert r.status_code == 422
    assert r.json()["field"] == "role"


def test_a_checked_token_is_trusted_for_the_cache_bound_and_a_revocation_here_acts_at_once(
    client: TestClient, admin: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.auth import service as auth_service
    from app.core.config import get_settings

    monkeypatch.setenv("NEXTCASE_TOKEN_CACHE_S", "5")
    get_settings.cache_clear()
    clock = [1000.0]
    monkeypatch.setattr(auth_service.time, "monotonic", lambda: clock[0])
    user = client.post("/api/v1/users", json={"name": "cached", "role": "annotator"}, headers=admin.headers).json()
    headers = {"Authorization": f"Bearer {user['token']}"}
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200

    statements: list[str] = []
    event.listen(db.get_engine(), "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    assert not any("api_tokens" in sql for sql in statements)  # within the bound: checked in memory

    with db.session_scope() as session:  # revoked elsewhere (another API process): trusted until the bound
        session.execute(update(ApiToken).where(ApiToken.id == user["token_info"]["id"]).values(revoked_at=utcnow()))
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    clock[0] += 5.01
    assert client.get("/api/v1/users/me", headers=headers).status_code == 401

    second = client.post(f"/api/v1/users/{user['user']['id']}/tokens", headers=admin.headers).json()
    headers = {"Authorization": f"Bearer {second['token']}"}
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200
    assert client.delete(f"/api/v1/tokens/{second['token_info']['id']}", headers=admin.headers).status_code == 200
    assert client.get("/api/v1/users/me", headers=headers).status_code == 401  # revoked here: at once
