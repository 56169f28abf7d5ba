"""How the API serves the browser app: index.html at "/", hashed assets, and nothing that shadows the API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.config import get_settings
from app.main import create_app


@pytest.fixture
def web_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, Path]]:
    dist = tmp_path / "dist"
    monkeypatch.setenv("NEXTCASE_WEB_DIR", str(dist))
    monkeypatch.setenv("NEXTCASE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield TestClient(create_app()), dist
    get_settings.cache_clear()


def test_without_a_build_the_root_says_how_to_build_it(web_client: tuple[TestClient, Path]) -> None:
    client, _ = web_client
    r = client.get("/")
    assert r.status_code == 503
    assert "make run" in r.text and "npm run build" in r.text
    assert client.get("/assets/index-abc.js").status_code == 404  # not a 500 for the missing folder


def test_the_built_app_is_served_with_its_security_and_cache_headers(web_client: tuple[TestClient, Path]) -> None:
    client, dist = web_client
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><script type=module src=/assets/index-abc.js></script>")
    (dist / "assets" / "index-abc.js").write_text("console.log('nextcase')")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp  # no CDN, no framing
    asset = client.get("/assets/index-abc.js")
    assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
    assert client.get("/assets/%2e%2e/index.html").status_code == 404  # only files under assets/


def test_the_app_does_not_shadow_api_errors_or_docs(web_client: tuple[TestClient, Path]) -> None:
    client, dist = web_client
    dist.mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html>")
    missing = client.get("/api/v1/no-such-thing")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/")
    assert client.get("/docs").status_code == 200
    assert client.get("/some/page").status_code == 404  # routing inside the app uses the URL's hash
    assert "/" not in client.get("/openapi.json").json()["paths"]
