"""The interactive docs work offline and can call the API: local assets, the bearer scheme, problem answers."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Login

# Every URL a docs page makes the browser load: script/link/img sources, and the OpenAPI document
# (Swagger UI's `url:` setting, ReDoc's `spec-url` attribute).
ASSET_URL = re.compile(r"""(?:\bsrc|\bhref|spec-url)=["']([^"']+)["']|\burl: *["']([^"']+)["']""")
PROBLEMS = {"401", "403", "404", "409", "410", "413", "422"}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_loads_every_asset_from_the_server_itself(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    urls = [a or b for a, b in ASSET_URL.findall(r.text)]
    assert any(u.endswith(".js") for u in urls) and "/openapi.json" in urls, urls
    assert not re.findall(r"https?://|//[a-z]", r.text), "the page names another host (a CDN or web fonts)"
    for url in urls:
        assert not urlsplit(url).scheme and not urlsplit(url).netloc, url
        asset = client.get(url)
        assert asset.status_code == 200 and asset.content, url


def test_openapi_declares_the_bearer_scheme_the_api_reads(client: TestClient, admin: Login) -> None:
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert len(schemes) == 1  # one Authorize field in /docs
    name, scheme = next(iter(schemes.items()))
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert {name: []} in spec["paths"]["/api/v1/projects"]["get"]["security"]
    # What Swagger UI sends once authorized: "Authorization: Bearer <token>".
    assert client.get("/api/v1/projects", headers={"Authorization": f"Bearer {admin.token}"}).status_code == 200
    assert client.get("/api/v1/projects").status_code == 401


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]


def test_problem_answers_are_documented_as_problem_json(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    documented: set[str] = set()
    for path, method, op in _operations(spec):
        responses = op["responses"]
        if path.startswith("/api/v1/"):
            assert {"401", "403", "404", "422"} <= set(responses), (method, path)
        if method in ("post", "put", "patch"):
            # the size check answers any body-carrying request before routing
            assert {"411", "413"} <= set(responses), (method, path)
        if "/leases/" in path:
            assert "410" in responses, (method, path)
        for status, answer in responses.items():
            if status.startswith("4"):
                assert "application/problem+json" in answer.get("content", {}), (method, path, status)
                documented.add(status)
    assert documented >= PROBLEMS
