from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Login
from tests.factories import create_project


def test_create_and_list_projects(client: TestClient, admin: Login, annotator: Login) -> None:
    project = create_project(client, admin.headers, "hn", ["background", "brainstem", "cord"])
    assert project["labels"] == ["background", "brainstem", "cord"]
    listed = client.get("/api/v1/projects", headers=annotator.headers).json()
    assert [p["name"] for p in listed] == ["hn"]


def test_label_schema_must_start_with_background(client: TestClient, admin: Login) -> None:
    r = client.post("/api/v1/projects", json={"name": "x", "modality": "CT", "labels": ["liver", "tumour"]},
                    headers=admin.headers)
    assert r.status_code == 422
    assert r.json()["field"] == "labels"
    assert "index 0 must be 'background'" in r.json()["detail"]


def test_unknown_modality_rejected(client: TestClient, admin: Login) -> None:
    r = client.post("/api/v1/projects", json={"name": "x", "modality": "PET", "labels": ["background", "a"]},
                    headers=admin.headers)
    assert r.status_code == 422
    assert r.json()["field"] == "modality"


def test_duplicate_project_name_is_409(client: TestClient, admin: Login) -> None:
    create_project(client, admin.headers, "same")
    r = client.post("/api/v1/projects", json={"name": "same", "modality": "MR", "labels": ["background", "a"]},
                    headers=admin.headers)
    assert r.status_code == 409
    assert r.json()["detail"] == "a project named 'same' already exists"


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "blob_store": "ok", "broker": "ok"}
