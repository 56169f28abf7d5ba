"""Security hardening: each test pins one finding of the security review (see the commit that adds it)."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import Login

# Far below the 60 s SQLite busy timeout the bug ran into, far above any scheduling delay on 2 cores.
PROMPT_S = 15.0


def _is_problem(response: httpx.Response | Any, status: int | None = None) -> None:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "field"}
    if status is not None:
        assert response.status_code == status == body["status"], response.text


@pytest.fixture
def sqlite_only(database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("the write-lock freeze is specific to SQLite (one writer)")


def test_garbage_bearer_on_facade_image_does_not_freeze_sqlite(
    sqlite_only: None, live_server: str, admin: Login
) -> None:
    api = httpx.Client(base_url=live_server, headers=admin.headers, timeout=PROMPT_S)
    project = api.post("/api/v1/projects", json={"name": "p", "modality": "CT", "labels": ["background", "x"]}).json()
    results: dict[str, Any] = {}

    def garbage() -> None:
        with httpx.Client(base_url=live_server, timeout=PROMPT_S) as c:
            results["garbage"] = c.get(f"/monailabel/{project['id']}/datastore/image", params={"image": "case1"},
                                       headers={"Authorization": "Bearer garbage"})

    def other() -> None:
        results["other"] = api.get("/api/v1/projects")

    threads = [threading.Thread(target=garbage), threading.Thread(target=other)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < PROMPT_S
    assert "garbage" in results and "other" in results, "a request timed out (the write lock was held)"
    _is_problem(results["garbage"], 401)
    assert results["other"].status_code == 200
