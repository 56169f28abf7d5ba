"""A cycle whose worker died is failed once its heartbeat is older than the bound; admins can force-cancel."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core import db
from app.core.config import get_settings
from app.models import Cycle, utcnow
from tests.conftest import Login
from tests.test_cycles import TINY, cube_project, no_broker  # noqa: F401  (fixtures)
from tests.test_cycles_e2e import broker  # noqa: F401  (fixture)
from worker import pipeline

BOUND_S = 10  # the test's liveness bound: generous against scheduling delays, short for the test's run time
DEADLINE_S = 180  # polling deadline for state changes on a loaded 2-core machine


def _cycle(client: TestClient, login: Login, cycle_id: int) -> dict[str, Any]:
    r = client.get(f"/api/v1/cycles/{cycle_id}", headers=login.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _poll(client: TestClient, login: Login, cycle_id: int, done: Any, log: Path | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        cycle = _cycle(client, login, cycle_id)
        if done(cycle):
            return cycle
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    raise AssertionError(f"cycle {cycle_id} never reached the expected state: {cycle}\n{tail}")


@pytest.fixture
def short_bound(monkeypatch: pytest.MonkeyPatch, settings_env: Path) -> None:
    monkeypatch.setenv("NEXTCASE_CYCLE_HEARTBEAT_TIMEOUT_S", str(BOUND_S))
    get_settings.cache_clear()


@pytest.fixture
def killable_worker(short_bound: None, broker: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:  # noqa: F811
    """A real `nextcase worker` in its own process group, so the test can kill it whole (pool children too)."""
    pool = "solo" if broker.startswith("sqla+") else "prefork"
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--pool", pool, "--concurrency", "1"],
                            env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    log.close()


def test_killed_worker_fails_its_cycle_within_the_bound(
    client: TestClient, admin: Login, cube_project: dict[str, Any], killable_worker: subprocess.Popen[bytes],  # noqa: F811
    tmp_path: Path,
) -> None:
    log = tmp_path / "worker.log"
    long_training = {**TINY, "epochs": 10_000}  # still training when it is killed
    r = client.post(f"/api/v1/projects/{cube_project['id']}/cycles", json=long_training, headers=admin.headers)
    assert r.status_code == 202, r.text
    cycle_id = r.json()["id"]
    _poll(client, admin, cycle_id, lambda c: c["status"] == "running" and c["progress"].get("step", 0) >= 1, log)

    os.killpg(killable_worker.pid, signal.SIGKILL)
    killable_worker.wait(timeout=30)

    cycle = _poll(client, admin, cycle_id, lambda c: c["status"] != "running", log)
    assert cycle["status"] == "failed"
    assert "no heartbeat" in cycle["error"] and "train" in cycle["error"]
    silent = dt.datetime.fromisoformat(cycle["finished_at"]) - dt.datetime.fromisoformat(cycle["heartbeat_at"])
    assert silent.total_seconds() >= BOUND_S  # failed only once the worker had been silent for the whole bound
    again = client.post(f"/api/v1/projects/{cube_project['id']}/cycles", json=TINY, headers=admin.headers)
    assert again.status_code == 202, again.text


def _running_cycle(client: TestClient, admin: Login, project_id: int, sent: list[int]) -> int:
    r = client.post(f"/api/v1/projects/{project_id}/cycles", json=TINY, headers=admin.headers)
    assert r.status_code == 202, r.text
    assert pipeline._enter(sent[-1], "train")  # what the worker does when the train task starts
    return int(r.json()["id"])


def test_admin_force_cancels_a_running_cycle(
    client: TestClient, admin: Login, annotator: Login, cube_project: dict[str, Any], no_broker: list[int],  # noqa: F811
) -> None:
    cycle_id = _running_cycle(client, admin, cube_project["id"], no_broker)
    polite = client.delete(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
    assert polite["status"] == "running" and polite["cancel_requested"]  # waits for the worker's next check
    assert client.delete(f"/api/v1/cycles/{cycle_id}?force=true", headers=annotator.headers).status_code == 403

    forced = client.delete(f"/api/v1/cycles/{cycle_id}", params={"force": "true"}, headers=admin.headers)
    assert forced.status_code == 200, forced.text
    assert forced.json()["status"] == "cancelled" and "force" in forced.json()["error"]
    assert not pipeline._enter(cycle_id, "evaluate")  # a live worker's next phase does not run
    again = client.post(f"/api/v1/projects/{cube_project['id']}/cycles", json=TINY, headers=admin.headers)
    assert again.status_code == 202, again.text


def test_stale_cycle_is_failed_when_read_and_when_a_new_one_starts(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int], short_bound: None,  # noqa: F811
) -> None:
    cycle_id = _running_cycle(client, admin, cube_project["id"], no_broker)
    assert _cycle(client, admin, cycle_id)["status"] == "running"  # fresh heartbeat: left alone
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        assert cycle is not None
        cycle.heartbeat_at = utcnow() - dt.timedelta(seconds=BOUND_S + 1)
    again = client.post(f"/api/v1/projects/{cube_project['id']}/cycles", json=TINY, headers=admin.headers)
    assert again.status_code == 202, again.text
    assert _cycle(client, admin, cycle_id)["status"] == "failed"


def test_a_score_phase_waiting_for_workers_is_left_alone_but_not_for_ever(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int], short_bound: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cycle_id = _running_cycle(client, admin, cube_project["id"], no_broker)
    with db.session_scope() as session:  # trained and evaluated; its shards wait in the broker
        cycle = session.get(Cycle, cycle_id)
        assert cycle is not None
        cycle.phase, cycle.timings = "evaluate", {"train": 1.0, "evaluate": 1.0}
    assert pipeline.start_scoring(cycle_id) == [0]
    monkeypatch.setenv("NEXTCASE_SCORE_QUEUE_WAIT_S", "600")
    get_settings.cache_clear()

    def silent_for(seconds: float) -> str:
        with db.session_scope() as session:
            cycle = session.get(Cycle, cycle_id)
            assert cycle is not None
            cycle.heartbeat_at = utcnow() - dt.timedelta(seconds=seconds)
        return str(_cycle(client, admin, cycle_id)["status"])

    assert silent_for(BOUND_S + 1) == "running"  # past the heartbeat bound, but no shard has started: waiting
    assert silent_for(601) == "failed"  # no shard started or finished for the queue-wait bound: messages lost
