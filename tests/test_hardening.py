"""Security hardening: each test pins one finding of the security review (see the commit that adds it)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
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


# --- integers beyond the database's range, NUL bytes -------------------------------------------

HUGE = (2**63, 2**31)


def _int_params(operation: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in operation.get("parameters", [])
            if p["in"] in ("path", "query") and p.get("schema", {}).get("type") == "integer"]


def _fill(path: str, operation: dict[str, Any], values: dict[str, int]) -> tuple[str, dict[str, str]]:
    """The URL and query with ``values`` for the named integers, 1 for the others and plausible strings."""
    query: dict[str, str] = {}
    for p in operation.get("parameters", []):
        if p["in"] not in ("path", "query"):
            continue
        integer = p.get("schema", {}).get("type") == "integer"
        value = str(values.get(p["name"], 1)) if integer else (
            f"case{values.get('case', 1)}" if p["name"] in ("image", "label") else "x")
        if p["in"] == "path":
            path = path.replace("{" + p["name"] + "}", value)
        elif integer or p.get("required"):
            query[p["name"]] = value
    return path, query


def _operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in app.openapi()["paths"].items() for method, op in item.items()]


def test_integers_beyond_the_column_range_are_4xx_problems(client: Any, admin: Login) -> None:
    project = client.post("/api/v1/projects", json={"name": "p", "modality": "CT", "labels": ["background", "x"]},
                          headers=admin.headers).json()
    assert project["id"] == 1  # so the other integers (1) name something that exists
    checked = 0
    for path, method, op in _operations(client.app):
        names = [p["name"] for p in _int_params(op)]
        # monailabel image ids carry a case id too
        names += ["case"] if any(p["name"] in ("image", "label") for p in op.get("parameters", [])) else []
        for name in names:
            for value in HUGE:
                url, query = _fill(path, op, {name: value})
                r = client.request(method.upper(), url, params=query, headers=admin.headers)
                assert r.status_code < 500 and r.status_code >= 400, (method, url, query, r.status_code, r.text)
                _is_problem(r, r.status_code)
                checked += 1
    assert checked >= 40  # the walk found the routes


@pytest.mark.parametrize("method,suffix", [("POST", "/renew"), ("DELETE", ""), ("POST", "/skip")])
def test_nul_byte_in_a_lease_token_is_4xx(client: Any, admin: Login, method: str, suffix: str) -> None:
    r = client.request(method, f"/api/v1/leases/abc%00def{suffix}", headers=admin.headers, json={"reason": "x"})
    assert r.status_code in (404, 422), r.text
    _is_problem(r, r.status_code)


def test_nul_byte_in_a_stored_text_is_422_and_stores_nothing(client: Any, admin: Login) -> None:
    r = client.post("/api/v1/projects", json={"name": "a\u0000b", "modality": "CT", "labels": ["background", "x"]},
                    headers=admin.headers)
    assert r.status_code in (201, 422), r.text  # SQLite stores NUL; PostgreSQL cannot
    if r.status_code == 422:
        _is_problem(r, 422)
        assert client.get("/api/v1/projects", headers=admin.headers).json() == []


# --- DICOM values stay out of logs ---------------------------------------------------------------

MALFORMED_UID = "1.2.826.0.1.3680043.8.498.ABCDEF" + ".99999" * 12  # letters and over 64 characters


def test_malformed_dicom_uid_never_reaches_logs_or_warnings(
    client: Any, admin: Login, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    import logging
    import warnings

    from tests.factories import create_project, dicom_slices, upload_case, zip_files

    project = create_project(client, admin.headers, labels=("background", "x"), modality="MR")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # writing the malformed test data warns too: not under test
        data = zip_files(dicom_slices(5, series_uid=MALFORMED_UID))
    capfd.readouterr()
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = upload_case(client, admin.headers, project["id"], data, filename="series.zip")
    assert r.status_code == 201, r.text
    out, err = capfd.readouterr()
    # whatever pydicom still logs (or warns, through logging.captureWarnings) has its text withheld
    logging.getLogger("pydicom").warning("Invalid value for VR UI: %r", MALFORMED_UID)
    logging.getLogger("py.warnings").warning("%s", f"UserWarning: Invalid value for VR UI: {MALFORMED_UID!r}")
    leaked = [str(w.message) for w in caught] + [rec.getMessage() for rec in caplog.records] + [out, err]
    assert not [text for text in leaked if "ABCDEF" in text], leaked


# --- smaller items ---------------------------------------------------------------------------------


@pytest.fixture
def one_mib_limit(settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.core.config import get_settings

    monkeypatch.setenv("NEXTCASE_MAX_UPLOAD_MB", "1")
    get_settings.cache_clear()


def _lying_zip_bomb(inflated: int, declared: int) -> bytes:
    """A one-member zip of ``inflated`` zero bytes whose headers declare ``declared`` bytes."""
    import io
    import struct
    import zipfile

    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", b"\0" * inflated)
    data = bytearray(packed.getvalue())
    local, central = data.find(b"PK\x03\x04"), data.find(b"PK\x01\x02")
    struct.pack_into("<I", data, local + 22, declared)  # uncompressed size, local file header
    struct.pack_into("<I", data, central + 24, declared)  # uncompressed size, central directory
    return bytes(data)


def test_zip_bomb_with_a_lying_size_is_413_without_inflating(
    client: Any, admin: Login, settings_env: Path, one_mib_limit: None
) -> None:
    import tracemalloc

    from tests.factories import create_project, snapshot, upload_case

    project = create_project(client, admin.headers)
    bomb = _lying_zip_bomb(64 * 2**20, declared=100)  # 64 KiB that inflate to 64 MiB, "100 bytes"
    before = snapshot(settings_env)
    tracemalloc.start()
    try:
        r = upload_case(client, admin.headers, project["id"], bomb, filename="bomb.zip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _is_problem(r, 413)
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.0f} MiB: the member was inflated"
    assert snapshot(settings_env) == before


def _answer_before_body(base: str, path: str, headers: dict[str, str]) -> bytes:
    """Send the headers of a 20 MB multipart upload and 1 KB of it; return what the server answers."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(base)
    boundary = "nextcaseboundary"
    head = [f"PUT {path} HTTP/1.1", f"Host: {url.netloc}", "Content-Length: 20000000",
            f"Content-Type: multipart/form-data; boundary={boundary}", *[f"{k}: {v}" for k, v in headers.items()]]
    with socket.create_connection((url.hostname, url.port), timeout=PROMPT_S) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + f"--{boundary}\r\n".encode() + b"x" * 1024)
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b""  # the server is still waiting for the rest of the body


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token"}], ids=["missing", "invalid"])
def test_upload_without_a_valid_token_is_401_before_the_body(
    live_server: str, database_url: str, headers: dict[str, str]
) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("HTTP behaviour; one database is enough")
    for path in ("/api/v1/cases/1/label", "/monailabel/1/datastore/label?image=case1"):
        answer = _answer_before_body(live_server, path, headers)
        assert answer.startswith(b"HTTP/1.1 401"), (path, answer[:200])
        assert b"application/problem+json" in answer


def test_token_less_image_download_does_not_extend_the_lease(client: Any, admin: Login, annotator: Login) -> None:
    from sqlalchemy import select

    from app.core import db
    from app.models import Lease
    from tests.factories import create_project, encode, upload_case, volume

    project = create_project(client, admin.headers)
    assert upload_case(client, admin.headers, project["id"], encode(volume())).status_code == 201
    base = f"/monailabel/{project['id']}"
    sample = client.post(f"{base}/activelearning/nextcase", headers=annotator.headers).json()

    def expiry() -> Any:
        with db.session_scope() as session:
            return session.scalar(select(Lease.expires_at).where(Lease.ended_at.is_(None)))

    before = expiry()
    time.sleep(0.05)  # any extension would move the expiry by at least this
    r = client.get(f"{base}/datastore/image", params={"image": sample["id"]})  # no token: the capability id
    assert r.status_code == 200
    assert expiry() == before
    client.get(f"{base}/datastore/image", params={"image": sample["id"]}, headers=annotator.headers)
    assert expiry() > before  # the holder's authenticated use still keeps it


def test_405_keeps_its_allow_header(client: Any, admin: Login) -> None:
    r = client.delete("/api/v1/projects", headers=admin.headers)
    _is_problem(r, 405)
    allowed = set(r.headers["allow"].replace(" ", "").split(","))
    assert {"GET", "POST"} <= allowed and "DELETE" not in allowed


@pytest.mark.parametrize("syntax,name", [("1.2.840.10008.1.2.4.70", "JPEG Lossless"),
                                         ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless")])
def test_undecodable_dicom_compression_is_refused_naming_the_syntax(
    client: Any, admin: Login, settings_env: Path, syntax: str, name: str
) -> None:
    import io

    import pydicom
    from pydicom.encaps import encapsulate

    from tests.factories import create_project, dicom_slices, snapshot, upload_case, zip_files

    slices = {}
    for key, raw in dicom_slices(3).items():
        ds = pydicom.dcmread(io.BytesIO(raw))
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate([b"\xff\xd8 not really a compressed frame \xff\xd9"])
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        slices[key] = buf.getvalue()
    project = create_project(client, admin.headers)
    before = snapshot(settings_env)
    r = upload_case(client, admin.headers, project["id"], zip_files(slices), filename="series.zip")
    assert r.status_code in (400, 415), r.text
    _is_problem(r, r.status_code)
    assert name in r.json()["detail"]
    assert snapshot(settings_env) == before
