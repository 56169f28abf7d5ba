"""Test fixtures. Every database test runs on SQLite (the embedded default) and on PostgreSQL.

PostgreSQL runs when NEXTCASE_TEST_POSTGRES_URL points at a server (e.g.
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``); a throw-away database is created
for the run and dropped afterwards. The schema is always built with ``alembic upgrade head``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.auth import service as auth
from app.core import db, migrate
from app.core.config import get_settings
from app.main import create_app
from app.models import Base
from worker.celery_app import reset_celery

PG_ENV = "NEXTCASE_TEST_POSTGRES_URL"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"needs ../shared/data/{name} (real data beside the checkout), which is absent")
    return path


@pytest.fixture(scope="session", autouse=True)
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep every default path (key file, database, blobs) of the run out of the user's data folder."""
    path = tmp_path_factory.mktemp("data")
    previous = os.environ.get("NEXTCASE_DATA_DIR")
    os.environ["NEXTCASE_DATA_DIR"] = str(path)
    get_settings.cache_clear()
    yield path
    if previous is None:
        os.environ.pop("NEXTCASE_DATA_DIR", None)
    else:
        os.environ["NEXTCASE_DATA_DIR"] = previous
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    server = os.environ.get(PG_ENV)
    if not server:
        pytest.skip(f"PostgreSQL tests need {PG_ENV} (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres)")
    name = f"nextcase_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    db.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        path = tmp_path / "nextcase.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    _truncate(url)


def _truncate(url: str) -> None:
    engine = create_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def settings_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point settings at this test's database and blob directory; yields the blob directory."""
    blob_dir = tmp_path / "blobs"
    monkeypatch.setenv("NEXTCASE_DATABASE_URL", database_url)
    monkeypatch.setenv("NEXTCASE_BLOB_DIR", str(blob_dir))
    # New projects follow their ranking only, so tests of the ranking order are deterministic; the control-arm
    # tests (tests/test_campaign_*.py) set control_fraction per project.
    monkeypatch.setenv("NEXTCASE_CONTROL_FRACTION", "0")
    get_settings.cache_clear()
    db.configure()
    reset_celery()
    yield blob_dir
    db.dispose()
    get_settings.cache_clear()


@pytest.fixture
def client(settings_env: Path) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


@dataclass(frozen=True)
class Login:
    user_id: int
    name: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def make_login(name: str, role: str) -> Login:
    with db.session_scope() as session:
        user = auth.create_user(session, name, role)
        return Login(user.id, name, auth.issue_token(session, user).token)


@pytest.fixture
def admin(settings_env: Path) -> Login:
    return make_login("alice-admin", "admin")


@pytest.fixture
def annotator(settings_env: Path) -> Login:
    return make_login("bob-annotator", "annotator")


@pytest.fixture
def live_server(settings_env: Path) -> Iterator[str]:
    """The real ASGI app behind uvicorn on a free loopback port, for tests that need true concurrency."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning",
                                           limit_concurrency=256))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@dataclass(frozen=True)
class OrthancServer:
    url: str  # the REST root
    user: str
    password: str

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A real Orthanc (Debian's orthanc + orthanc-dicomweb) on a free port, with basic auth, for the whole run."""
    import json
    import socket
    import subprocess
    import time

    import httpx

    binary = shutil.which("Orthanc")
    plugin = next((p for p in (Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so"),
                               *Path("/usr/lib/orthanc").glob("libOrthancDicomWeb.so*")) if p.exists()), None)
    if binary is None or plugin is None:
        pytest.skip("needs Orthanc with its DICOMweb plugin (apt-get install orthanc orthanc-dicomweb; .ci/run does)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    root = tmp_path_factory.mktemp("orthanc")
    server = OrthancServer(f"http://127.0.0.1:{port}", "nextcase", "orthanc-test-password")
    config = {
        "Name": "nextcase-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
        "HttpPort": port, "DicomServerEnabled": False, "RemoteAccessAllowed": True, "AuthenticationEnabled": True,
        "RegisteredUsers": {server.user: server.password}, "Plugins": [str(plugin)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "StableAge": 1,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = (root / "orthanc.log").open("wb")
    proc = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{server.url}/system", auth=(server.user, server.password)).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: {(root / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
