"""The docker compose deployment keeps its secrets and watches its worker.

Docker is not available on the development machine, so docker-compose.yml is checked as data here:
one image for migrate/api/worker, required secrets read from .env, restart policies, and the worker
health check, which is run for real against a liveness file written by a real worker process.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
APP_SERVICES = ("migrate", "api", "worker")
LONG_RUNNING = ("postgres", "redis", "api", "worker")
SECRETS = ("NEXTCASE_SECRET_KEY", "POSTGRES_PASSWORD")


@pytest.fixture(scope="module")
def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def services(compose_text: str) -> dict[str, Any]:
    return dict(yaml.safe_load(compose_text)["services"])


def test_one_image_is_built_once_and_used_by_migrate_api_and_worker(services: dict[str, Any]) -> None:
    images = {services[name]["image"] for name in APP_SERVICES}
    assert len(images) == 1
    builders = [name for name in APP_SERVICES if "build" in services[name]]
    assert builders == ["migrate"]  # built once; the others run it by name and never pull it
    assert services["migrate"]["pull_policy"] == "build"
    assert all(services[name]["pull_policy"] == "never" for name in APP_SERVICES if name != "migrate")


def test_secrets_are_required_from_env_and_have_no_default(compose_text: str, services: dict[str, Any]) -> None:
    for var in SECRETS:
        uses = re.findall(r"\$\{" + var + r"(:?[-+?]?)", compose_text)
        assert uses and set(uses) == {":?"}, (var, uses)  # every use fails when unset or empty
    assert all(services[name]["env_file"] == ".env" for name in APP_SERVICES)


def test_env_example_lists_every_variable_the_compose_file_reads(compose_text: str) -> None:
    example = (ROOT / ".env.example").read_text()
    assigned = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    mentioned = set(re.findall(r"^#\s*([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    read = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", compose_text))
    assert set(SECRETS) <= assigned  # required: an uncommented line to fill in
    assert read <= assigned | mentioned, read - assigned - mentioned


def test_env_file_stays_out_of_git_and_the_image() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False)
    assert ignored.returncode == 0
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_long_running_services_restart_and_migrate_does_not(services: dict[str, Any]) -> None:
    assert {name: services[name].get("restart") for name in LONG_RUNNING} == dict.fromkeys(
        LONG_RUNNING, "unless-stopped")
    assert services["migrate"]["restart"] == "no"


def test_postgres_is_healthy_only_once_it_listens_on_tcp(services: dict[str, Any]) -> None:
    # On a fresh volume the image first runs a temporary server on the unix socket only; a socket
    # probe reports it ready, and migrate (one-shot) then fails to connect over TCP and never retries.
    kind, command = services["postgres"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL" and command.startswith("pg_isready -h 127.0.0.1 "), command


# --- the worker health check -------------------------------------------------------------------


def _health_command(services: dict[str, Any]) -> str:
    kind, command = services["worker"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    return str(command).replace("$$", "$")  # Compose's escape for a literal $


def _healthy(services: dict[str, Any], liveness_file: Path) -> bool:
    env = {**os.environ, "NEXTCASE_WORKER_LIVENESS_FILE": str(liveness_file)}
    return subprocess.run(["sh", "-c", _health_command(services)], env=env, check=False).returncode == 0


def test_worker_health_check_reads_the_liveness_file_age(services: dict[str, Any], tmp_path: Path) -> None:
    alive = tmp_path / "alive"
    assert services["worker"]["environment"]["NEXTCASE_WORKER_LIVENESS_FILE"]
    assert not _healthy(services, alive)  # no file: the worker never started consuming, or stopped
    alive.touch()
    assert _healthy(services, alive)
    old = time.time() - 30
    os.utime(alive, (old, old))
    assert _healthy(services, alive)  # a few missed touches (every 10 s) are tolerated
    old = time.time() - 90
    os.utime(alive, (old, old))
    assert not _healthy(services, alive)  # silent for over a minute: wedged or killed


@pytest.fixture(params=["embedded", "redis"])
def worker_setup(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[dict[str, str], str]:
    """Environment and pool of a real `nextcase worker`: embedded SQLite broker (solo), or Redis (prefork)."""
    env = {**os.environ, "NEXTCASE_BLOB_DIR": str(tmp_path / "blobs"),
           "NEXTCASE_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
           "NEXTCASE_WORKER_LIVENESS_FILE": str(tmp_path / "run" / "alive")}
    if request.param == "embedded":
        return env, "solo"
    url = os.environ.get("NEXTCASE_TEST_REDIS_URL")
    if not url:
        pytest.skip("the prefork/Redis variant needs NEXTCASE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/15)")
    return {**env, "NEXTCASE_BROKER_URL": url}, "prefork"


@pytest.fixture
def worker(worker_setup: tuple[dict[str, str], str], tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env, pool = worker_setup
    # A queue of its own: the worker must never take a task meant for another test's worker.
    queue = f"liveness-{uuid.uuid4().hex[:8]}"
    with (tmp_path / "worker.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--pool", pool, "--queues", queue],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        yield proc
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def _wait_for(condition: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def test_a_running_worker_is_healthy_and_a_stopped_one_is_not(
    services: dict[str, Any], worker_setup: tuple[dict[str, str], str], worker: subprocess.Popen[bytes],
    tmp_path: Path,
) -> None:
    alive = Path(worker_setup[0]["NEXTCASE_WORKER_LIVENESS_FILE"])
    started = _wait_for(lambda: alive.exists() or worker.poll() is not None, timeout_s=120)  # a loaded machine
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert started and worker.poll() is None, log[-3000:]
    assert _healthy(services, alive)
    first = alive.stat().st_mtime
    assert _wait_for(lambda: alive.stat().st_mtime > first, timeout_s=60)  # touched again, not just once
    worker.terminate()  # warm shutdown: the consumer stops and removes the file
    worker.wait(timeout=60)
    assert not alive.exists()
    assert not _healthy(services, alive)
