"""Scoring shared by several real Celery workers on Redis, and cycles that survive a killed worker process.

Production path only (PostgreSQL + Redis + `nextcase worker`, prefork): the embedded default has one
worker process, so it has nothing to share and nobody to take over.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.core import db
from app.core.config import get_settings
from app.models import CaseScore, Cycle, RankingEntry, ScoreShard, utcnow
from tests.conftest import Login
from tests.factories import bulk_cases, create_project, upload_label
from tests.test_cycles_e2e import delete_keys
from worker.celery_app import reset_celery

WORKERS = 3
# A tiny network, but enough MC passes on a 32^3 case that a shard of two cases lasts seconds, and enough steps
# that training is still running when a checkpoint exists.
PARAMS = {"strategy": "mc_dropout_variance", "steps": 120, "learning_rate": 0.01, "batch_size": 2,
          "patch_size": [16, 16, 16], "mc_passes": 12, "channels": [4, 8, 16], "strides": [2, 2],
          "samples_per_volume": 1, "seed": 2, "val_every": 0}


@pytest.fixture
def redis_env(database_url: str, settings_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = os.environ.get("NEXTCASE_TEST_REDIS_URL")
    if not database_url.startswith("postgresql"):
        pytest.skip("several workers sharing a cycle is the production path (PostgreSQL + Redis)")
    if not url:
        pytest.skip("needs NEXTCASE_TEST_REDIS_URL (e.g. redis://127.0.0.1:6379/15)")
    prefix = f"nextcase-scale-{uuid.uuid4().hex[:12]}:"
    for name, value in {"NEXTCASE_BROKER_URL": url, "NEXTCASE_BROKER_KEY_PREFIX": prefix,
                        "NEXTCASE_SCORE_SHARD_CASES": "2", "NEXTCASE_TRAIN_CHECKPOINT_EVERY_S": "0.5",
                        # The workers start while the test adds patients: they must not look for a key file.
                        "NEXTCASE_SECRET_KEY": "scale-test-secret-key-0123456789abcdef"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    reset_celery()
    yield prefix
    delete_keys(url, prefix)


@pytest.fixture
def workers(redis_env: str, tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    for i in range(WORKERS):
        log = (tmp_path / f"worker-{i}.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--pool", "prefork"],
                                      env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True))
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def short_heartbeat(redis_env: str, monkeypatch: pytest.MonkeyPatch) -> float:
    """A worker silent for 8 s counts as lost (set before the workers start: they read it then); workers beat every
    second. A shard taken for lost while its worker lives is only scored twice (one score per case is kept)."""
    monkeypatch.setenv("NEXTCASE_CYCLE_HEARTBEAT_TIMEOUT_S", "8")
    monkeypatch.setenv("NEXTCASE_WORKER_HEARTBEAT_INTERVAL_S", "1")
    get_settings.cache_clear()
    return 8.0


def _project(client: TestClient, admin: Login, settings_env: Path, name: str, unlabelled: int) -> int:
    project = create_project(client, admin.headers, name, ["background", "thing"], "CT")
    ids, mask = bulk_cases(project["id"], unlabelled + 2, settings_env, shape=(32, 32, 32))
    for case_id in ids[:2]:
        assert upload_label(client, admin.headers, case_id, mask).status_code == 201
    return int(project["id"])


def _cycle(cycle_id: int) -> Cycle:
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        assert cycle is not None
        session.expunge(cycle)
        return cycle


def _shards(cycle_id: int) -> list[ScoreShard]:
    with db.session_scope() as session:
        shards = list(session.scalars(select(ScoreShard).where(ScoreShard.cycle_id == cycle_id)
                                      .order_by(ScoreShard.index)))
        session.expunge_all()
        return shards


def _wait(what: str, check: Callable[[], Any], tmp_path: Path, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    logs = "\n".join(p.read_text()[-1500:] for p in sorted(tmp_path.glob("worker-*.log")))
    raise AssertionError(f"timed out waiting for {what}; worker logs:\n{logs}")


def _kill(worker: str) -> int:
    pid = int(worker.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)  # the pool child running the task; its worker's main process requeues the task
    return pid


def _kill_the_trainer_then_wait_for_scoring(
    client: TestClient, admin: Login, settings_env: Path, tmp_path: Path, name: str, kill: Callable[[str], object],
) -> tuple[int, str, int, list[ScoreShard]]:
    """Start a cycle of 8 unlabelled cases, ``kill`` the worker training it once it saved a checkpoint, and wait
    for a shard being scored: (cycle id, the trainer, the checkpoint's step when it was killed, running shards)."""
    project_id = _project(client, admin, settings_env, name, unlabelled=8)
    r = client.post(f"/api/v1/projects/{project_id}/cycles", json=PARAMS, headers=admin.headers)
    assert r.status_code == 202, r.text
    cycle_id = r.json()["id"]
    trainer = _wait("a training checkpoint", lambda: (c := _cycle(cycle_id)).checkpoint_key and c.worker, tmp_path)
    killed_at = _cycle(cycle_id).progress["checkpoint_step"]
    kill(trainer)
    running = _wait("a shard being scored", lambda: [s for s in _shards(cycle_id) if s.status == "running"], tmp_path)
    return cycle_id, trainer, killed_at, running


def test_workers_share_scoring_and_a_killed_worker_process_costs_the_cycle_nothing(
    client: TestClient, admin: Login, settings_env: Path, tmp_path: Path, workers: list[Any],
) -> None:
    cycle_id, _, killed_at, running = _kill_the_trainer_then_wait_for_scoring(
        client, admin, settings_env, tmp_path, "shared", lambda trainer: _kill(trainer))
    _kill(running[0].worker)
    cycle = _wait("the cycle to finish", lambda: (c := _cycle(cycle_id)).finished_at and c, tmp_path)

    assert cycle.status == "done", cycle.error
    assert 0 < killed_at <= cycle.metrics["train_resumed_from"] < PARAMS["steps"]  # resumed, did not start over
    assert cycle.metrics["train_steps_after_resume"] == PARAMS["steps"] - cycle.metrics["train_resumed_from"]
    shards = _shards(cycle_id)
    assert len(shards) == 4 and all(s.status == "done" for s in shards)
    assert next(s for s in shards if s.index == running[0].index).attempts >= 2  # the killed shard ran again
    assert len({s.worker for s in shards}) >= 2  # scoring was shared (each shard records its worker process)
    with db.session_scope() as session:
        entries = list(session.scalars(select(RankingEntry.case_id).where(RankingEntry.ranking_id == cycle.ranking_id)))
        scores = session.scalar(select(func.count()).select_from(CaseScore).where(CaseScore.cycle_id == cycle_id))
    pool = sorted(c for s in shards for c in s.case_ids)
    assert sorted(entries) == pool and len(set(entries)) == len(entries) == 8 == scores

    # Cancel during sharded scoring stops every shard.
    second = _project(client, admin, settings_env, "cancelled", unlabelled=8)
    cycle_id = client.post(f"/api/v1/projects/{second}/cycles", json={**PARAMS, "steps": 10, "mc_passes": 60},
                           headers=admin.headers).json()["id"]
    _wait("a shard being scored", lambda: [s for s in _shards(cycle_id) if s.status == "running"], tmp_path)
    assert client.delete(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).status_code in (200, 202)
    _wait("every shard to stop", lambda: _cycle(cycle_id).status == "cancelled"
          and not any(s.status == "running" for s in _shards(cycle_id)), tmp_path, timeout=60)
    done = [s.index for s in _shards(cycle_id) if s.status == "done"]
    time.sleep(3)  # not a race: nothing may change any more, however long we look
    assert [s.index for s in _shards(cycle_id) if s.status == "done"] == done and len(done) < 4
    assert _cycle(cycle_id).ranking_id is None


def _kill_whole_worker(worker: str, workers: list[Any]) -> None:
    """SIGKILL a worker's main process and its pool children: nothing hands its message back to Redis (it stays
    unacknowledged for the 12 h visibility timeout), so only the other workers can rescue its work."""
    group = os.getpgid(int(worker.rsplit(":", 1)[1]))
    assert any(p.pid == group for p in workers)  # one of this test's workers, each a process group of its own
    os.killpg(group, signal.SIGKILL)


def test_a_worker_lost_whole_costs_the_cycle_nothing_but_the_heartbeat_bound(
    client: TestClient, admin: Login, settings_env: Path, tmp_path: Path, short_heartbeat: float, workers: list[Any],
) -> None:
    cycle_id, trainer, killed_at, running = _kill_the_trainer_then_wait_for_scoring(
        client, admin, settings_env, tmp_path, "lost-host", lambda trainer: _kill_whole_worker(trainer, workers))
    lost = running[0]
    _kill_whole_worker(lost.worker or "", workers)
    cycle = _wait("the cycle to finish", lambda: (c := _cycle(cycle_id)).finished_at and c, tmp_path)

    assert cycle.status == "done", cycle.error
    taken = cycle.metrics["taken_over"]
    assert [t["phase"] for t in taken] == ["train"] and taken[0]["previous_worker"] == trainer
    assert 0 < killed_at <= cycle.metrics["train_resumed_from"] < PARAMS["steps"]  # resumed on another worker
    shards = _shards(cycle_id)
    rescued = next(s for s in shards if s.index == lost.index)
    assert rescued.status == "done" and rescued.attempts >= 2 and rescued.worker != lost.worker
    with db.session_scope() as session:
        entries = list(session.scalars(select(RankingEntry.case_id).where(RankingEntry.ranking_id == cycle.ranking_id)))
    assert sorted(entries) == sorted(c for s in shards for c in s.case_ids) and len(set(entries)) == 8


def _silent_training(client: TestClient, admin: Login) -> int:
    """A cycle training on a worker that has not been heard of for an hour (no worker runs here)."""
    project = create_project(client, admin.headers, "silent", ["background", "thing"], "CT")
    long_ago = utcnow() - dt.timedelta(hours=1)
    with db.session_scope() as session:
        cycle = Cycle(project_id=project["id"], strategy="mc_dropout_variance", status="running", phase="train",
                      worker="lost-host:4242", started_at=long_ago, heartbeat_at=long_ago)
        session.add(cycle)
        session.flush()
        return int(cycle.id)


def test_a_broker_that_refuses_the_takeover_leaves_the_cycle_unmarked_and_the_read_answers(
    redis_env: str, client: TestClient, admin: Login, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEXTCASE_BROKER_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    get_settings.cache_clear()
    reset_celery()
    cycle_id = _silent_training(client, admin)
    r = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers)
    assert r.status_code == 200, r.text
    # Nothing was sent, so nothing says it was: the cycle is failed as a silent one, as before takeovers existed.
    assert "taken_over" not in r.json()["metrics"] and r.json()["status"] == "failed", r.json()


def test_reading_a_cycle_sends_its_lost_phase_again_until_the_takeovers_run_out(
    redis_env: str, client: TestClient, admin: Login,
) -> None:
    """The API's side of the takeover (no worker runs here: the sent tasks wait in Redis, where we count them)."""
    import redis

    from app.cycles.service import MAX_PHASE_TAKEOVERS

    cycle_id = _silent_training(client, admin)
    long_ago = utcnow() - dt.timedelta(hours=1)
    queued = redis.Redis.from_url(os.environ["NEXTCASE_TEST_REDIS_URL"])

    def messages() -> int:
        return sum(int(queued.llen(key)) for key in queued.scan_iter(match=f"{redis_env}gpu*"))

    for taken in range(1, MAX_PHASE_TAKEOVERS + 1):
        body = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
        assert body["status"] == "running", body
        assert len(body["metrics"]["taken_over"]) == taken and messages() == taken  # one train task per takeover
        with db.session_scope() as session:  # the new worker went silent too
            session.execute(update(Cycle).where(Cycle.id == cycle_id).values(heartbeat_at=long_ago))
    body = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
    assert body["status"] == "failed" and "no heartbeat" in body["error"] and messages() == MAX_PHASE_TAKEOVERS
    queued.close()


def test_shard_priorities_spread_each_cycle_over_the_levels() -> None:
    from worker.tasks import shard_priority

    assert [shard_priority(i, 10) for i in range(10)] == list(range(10))
    assert [shard_priority(i, 3) for i in range(3)] == [0, 3, 6]
    assert shard_priority(0, 1) == 0 and shard_priority(39, 40) == 9


@pytest.fixture
def one_worker(redis_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[subprocess.Popen[bytes]]:
    monkeypatch.setenv("NEXTCASE_SCORE_SHARD_CASES", "1")
    log = (tmp_path / "worker-0.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--pool", "prefork", "--concurrency", "1"],
                            env=os.environ.copy(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_two_projects_cycles_score_side_by_side_not_one_after_the_other(
    client: TestClient, admin: Login, settings_env: Path, tmp_path: Path, one_worker: Any,
) -> None:
    # One worker, two cycles started together: first-in-first-out would score every shard of the first cycle
    # before any of the second (its score task arrives after the first cycle's shards were queued).
    params = {**PARAMS, "steps": 4, "mc_passes": 2}
    first, second = (_project(client, admin, settings_env, name, unlabelled=6) for name in ("first", "second"))
    ids = [client.post(f"/api/v1/projects/{p}/cycles", json=params, headers=admin.headers).json()["id"]
           for p in (first, second)]
    for cycle_id in ids:
        cycle = _wait("the cycles to finish", lambda c=cycle_id: (x := _cycle(c)).finished_at and x, tmp_path)
        assert cycle.status == "done", cycle.error
    starts = {cycle_id: sorted(s.started_at for s in _shards(cycle_id)) for cycle_id in ids}
    assert all(len(times) == 6 for times in starts.values())
    a, b = (starts[i] for i in ids)
    assert b[0] < a[-1] and a[0] < b[-1], f"no interleaving: {a} / {b}"
