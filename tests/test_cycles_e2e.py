"""A whole cycle on real Celery worker processes, with real hippocampus MR cases.

- production path: PostgreSQL + Redis broker + ``nextcase worker`` (prefork pool), a separate process;
- embedded default: SQLite + the SQLite-backed broker + ``nextcase worker --pool solo``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.bulk_import import import_msd, msd_subset
from app.core.config import get_settings
from app.core.storage import BlobStore
from tests.conftest import Login, shared_data
from worker.celery_app import reset_celery

PARAMS = {"epochs": 3, "learning_rate": 0.01, "batch_size": 2, "patch_size": [32, 32, 32], "mc_passes": 3,
          "channels": [4, 8, 16], "strides": [2, 2], "samples_per_volume": 1, "seed": 1}


@pytest.fixture
def broker(database_url: str, settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    prefix = ""
    if database_url.startswith("postgresql"):
        url = os.environ.get("NEXTCASE_TEST_REDIS_URL")
        if not url:
            pytest.skip("the production-path cycle test needs NEXTCASE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/15)")
        import redis

        # The Redis server may be shared: this test's keys carry their own prefix and only they are removed.
        prefix = f"nextcase-test-{uuid.uuid4().hex[:12]}:"
        neighbour = redis.Redis.from_url(url)
        neighbour.set(f"{prefix[:-1]}-neighbour", "another installation's key")
        monkeypatch.setenv("NEXTCASE_BROKER_URL", url)
        monkeypatch.setenv("NEXTCASE_BROKER_KEY_PREFIX", prefix)
    get_settings.cache_clear()
    reset_celery()
    yield get_settings().effective_broker_url
    if prefix:
        assert delete_keys(os.environ["NEXTCASE_TEST_REDIS_URL"], prefix) > 0  # the broker used the prefix
        assert neighbour.getdel(f"{prefix[:-1]}-neighbour") == b"another installation's key"
        neighbour.close()


def delete_keys(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=500))
    if keys:
        client.delete(*keys)
    client.close()
    return len(keys)


@pytest.fixture
def worker_process(broker: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    pool = "solo" if broker.startswith("sqla+") else "prefork"
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--pool", pool], env=os.environ.copy(),
                            stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def hippocampus_subset(tmp_path: Path, n: int, labelled: int) -> Path:
    return msd_subset(shared_data("msd-hippocampus"), tmp_path / "hippo", count=n, labelled=labelled)


def wait_done(client: TestClient, login: Login, cycle_id: int, log: Path, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cycle = client.get(f"/api/v1/cycles/{cycle_id}", headers=login.headers).json()
        if cycle["status"] not in ("queued", "running"):
            return dict(cycle)
        time.sleep(0.5)
    raise AssertionError(f"cycle {cycle_id} did not finish; worker log:\n{log.read_text()[-3000:]}")


def test_cycle_on_real_worker(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path, tmp_path: Path,
    worker_process: subprocess.Popen[bytes],
) -> None:
    report = import_msd("hippo", hippocampus_subset(tmp_path, 10, 6), BlobStore(settings_env), with_labels=True)
    assert report.imported == 10
    project = client.get("/api/v1/projects", headers=admin.headers).json()[0]
    cases = client.get(f"/api/v1/projects/{project['id']}/cases", headers=admin.headers).json()["items"]
    labelled = [c["id"] for c in cases if c["status"] == "labelled"]
    for case_id in labelled[:2]:
        client.patch(f"/api/v1/cases/{case_id}", json={"split": "validation"}, headers=admin.headers)

    r = client.post(f"/api/v1/projects/{project['id']}/cycles", json=PARAMS, headers=admin.headers)
    assert r.status_code == 202, r.text
    cycle = wait_done(client, admin, r.json()["id"], tmp_path / "worker.log")
    assert cycle["status"] == "done", cycle["error"]
    assert cycle["progress"]["train_cases"] == 4 and cycle["progress"]["scored"] == 4
    assert cycle["metrics"]["validation_cases"] == 2
    assert set(cycle["metrics"]["per_class"]) == {"background", "anterior", "posterior"}
    assert isinstance(cycle["metrics"]["mean_dice"], float)

    models = client.get(f"/api/v1/projects/{project['id']}/models", headers=annotator.headers).json()
    assert len(models) == 1 and models[0]["metrics"]["per_class"] == cycle["metrics"]["per_class"]
    stats = client.get(f"/api/v1/projects/{project['id']}/queue/stats", headers=annotator.headers).json()
    assert stats["ranking"]["id"] == cycle["ranking_id"] and stats["model_version"] == models[0]["id"]
    queue = client.get(f"/api/v1/projects/{project['id']}/queue", headers=annotator.headers).json()
    top = next(item for item in queue["items"] if item["status"] == "open")
    claim = client.post(f"/api/v1/projects/{project['id']}/queue/next", headers=annotator.headers).json()
    assert (claim["case"]["id"], claim["rank"], claim["ranking_id"]) == (top["case_id"], 1, cycle["ranking_id"])
    assert worker_process.poll() is None  # the worker is still serving
