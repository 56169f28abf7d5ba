"""Retraining cycles through the API and the pipeline functions, on synthetic cube volumes.

The phases run in this process via ``worker.pipeline`` (the exact functions the Celery tasks call);
tests/test_cycles_e2e.py runs them on real Celery workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from app.cases.imaging import read_nifti
from app.core import db
from app.core.config import get_settings
from app.models import CaseScore, Cycle, Project, RankingEntry
from tests.conftest import Login
from tests.factories import create_project, encode, upload_case, upload_label
from tests.ml.synthetic import cube_case
from worker import pipeline

TINY = {"strategy": "mc_dropout_variance",
        "epochs": 2, "learning_rate": 0.01, "batch_size": 2, "patch_size": [16, 16, 16], "mc_passes": 2,
        "channels": [4, 8, 16], "strides": [2, 2], "samples_per_volume": 1, "seed": 3}


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 1.0))
    return image


@pytest.fixture
def cube_project(client: TestClient, admin: Login) -> dict[str, Any]:
    """8 cases: 3 labelled pool, 2 labelled validation, 3 unlabelled pool."""
    project = create_project(client, admin.headers, "cubes", ["background", "cube"], "CT")
    ids = []
    for seed in range(8):
        image, label = cube_case(seed)
        case = upload_case(client, admin.headers, project["id"], encode(_image(image)), patient=f"p{seed}").json()
        ids.append(case["id"])
        if seed < 5:
            assert upload_label(client, admin.headers, case["id"], encode(_image(label))).status_code == 201
        if seed in (3, 4):
            client.patch(f"/api/v1/cases/{case['id']}", json={"split": "validation"}, headers=admin.headers)
    project["case_ids"] = ids
    return project


@pytest.fixture
def no_broker(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record enqueued cycle ids instead of sending them; the test then runs the phases itself."""
    sent: list[int] = []
    monkeypatch.setattr("app.cycles.service.enqueue", sent.append)
    return sent


def start(client: TestClient, admin: Login, project_id: int, **params: Any) -> Any:
    return client.post(f"/api/v1/projects/{project_id}/cycles", json={**TINY, **params}, headers=admin.headers)


def current_ranking(project_id: int) -> int | None:
    with db.session_scope() as session:
        project = session.get(Project, project_id)
        assert project is not None
        return project.current_ranking_id


def test_cycle_trains_evaluates_scores_and_publishes(
    client: TestClient, admin: Login, annotator: Login, cube_project: dict[str, Any], no_broker: list[int]
) -> None:
    r = start(client, admin, cube_project["id"])
    assert r.status_code == 202 and r.json()["status"] == "queued"
    cycle_id = r.json()["id"]
    assert no_broker == [cycle_id]
    pipeline.run_cycle(cycle_id)

    cycle = client.get(f"/api/v1/cycles/{cycle_id}", headers=annotator.headers).json()
    assert cycle["status"] == "done", cycle["error"]
    assert cycle["progress"]["step"] == cycle["progress"]["steps"] > 0 and cycle["progress"]["scored"] == 3
    assert cycle["progress"]["score_passes_per_call"] == 1  # the CPU runs one MC pass per call (memory flat in T)
    assert set(cycle["timings"]) == {"train", "evaluate", "score", "publish"}
    scraped = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in text_string_to_metric_families(
        client.get("/metrics", headers=admin.headers).text) for s in family.samples}
    pid = str(cube_project["id"])
    assert scraped[("nextcase_cycle_phase_seconds", (("phase", "score"), ("project_id", pid)))] == pytest.approx(
        cycle["timings"]["score"])
    assert scraped[("nextcase_cycles", (("project_id", pid), ("status", "done")))] == 1
    rates = [v for (name, _), v in scraped.items() if name == "nextcase_scoring_cases_per_second"]
    assert len(rates) == 1 and rates[0] > 0
    assert set(cycle["metrics"]["per_class"]) == {"background", "cube"}
    assert cycle["metrics"]["validation_cases"] == 2

    models = client.get(f"/api/v1/projects/{cube_project['id']}/models", headers=annotator.headers).json()
    assert [m["version"] for m in models] == [1]
    assert sorted(models[0]["trained_case_ids"]) == cube_project["case_ids"][:3]
    weights = client.get(f"/api/v1/models/{models[0]['id']}/weights", headers=annotator.headers)
    assert weights.status_code == 200 and len(weights.content) > 1000

    claim = client.post(f"/api/v1/projects/{cube_project['id']}/queue/next", headers=annotator.headers).json()
    assert (claim["ranking_id"], claim["model_version"], claim["rank"]) == (cycle["ranking_id"], models[0]["id"], 1)
    assert claim["case"]["id"] in cube_project["case_ids"][5:]

    pred = client.get(f"/api/v1/cases/{claim['case']['id']}/prediction", headers=annotator.headers)
    unc = client.get(f"/api/v1/cases/{claim['case']['id']}/uncertainty", headers=annotator.headers)
    assert pred.status_code == unc.status_code == 200
    pred_img, unc_img = read_nifti(pred.content), read_nifti(unc.content)
    assert pred_img.GetSize() == unc_img.GetSize() == (16, 16, 16)
    assert set(np.unique(sitk.GetArrayFromImage(pred_img))) <= {0, 1}
    assert unc_img.GetPixelID() == sitk.sitkFloat32


def test_second_cycle_while_one_is_active_is_409(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int]
) -> None:
    first = start(client, admin, cube_project["id"]).json()
    r = start(client, admin, cube_project["id"])
    assert r.status_code == 409
    assert r.json()["detail"] == f"cycle {first['id']} is already queued for this project"


def test_cycle_parameters_are_validated(
    client: TestClient, admin: Login, annotator: Login, cube_project: dict[str, Any], no_broker: list[int]
) -> None:
    assert start(client, annotator, cube_project["id"]).status_code == 403
    r = start(client, admin, cube_project["id"], strategy="oracle")
    assert r.status_code == 422 and r.json()["field"] == "strategy"
    assert r.json()["detail"].startswith("unknown strategy 'oracle'; known: bald, coreset, entropy, mc_dropout")
    r = start(client, admin, cube_project["id"], patch_size=[15, 16, 16])
    assert r.status_code == 422 and r.json()["field"] == "params"
    r = start(client, admin, cube_project["id"], dropout=1.5)
    assert r.status_code == 422 and r.json()["field"] == "dropout"
    assert no_broker == []
    with db.session_scope() as session:
        assert session.scalars(select(Cycle)).all() == []


def _done_cycle(client: TestClient, admin: Login, project_id: int) -> dict[str, Any]:
    cycle_id = start(client, admin, project_id).json()["id"]
    pipeline.run_cycle(cycle_id)
    return dict(client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json())


def test_failed_cycle_keeps_previous_model_and_ranking(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good = _done_cycle(client, admin, cube_project["id"])
    before = current_ranking(cube_project["id"])
    assert before == good["ranking_id"]

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr("worker.ml.scoring.score_case", broken)
    bad = _done_cycle(client, admin, cube_project["id"])
    assert bad["status"] == "failed"
    assert bad["error"] == "score failed: RuntimeError: CUDA out of memory (simulated)"
    assert current_ranking(cube_project["id"]) == before
    models = client.get(f"/api/v1/projects/{cube_project['id']}/models", headers=admin.headers).json()
    assert [m["version"] for m in models] == [1]


def test_cancelled_cycle_keeps_previous_ranking(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int]
) -> None:
    claim = client.post(f"/api/v1/projects/{cube_project['id']}/queue/next", headers=admin.headers).json()
    cold = claim["ranking_id"]
    cycle_id = start(client, admin, cube_project["id"]).json()["id"]
    pipeline.run_phase(cycle_id, "train")
    pipeline.run_phase(cycle_id, "evaluate")
    r = client.delete(f"/api/v1/cycles/{cycle_id}", headers=admin.headers)
    assert r.status_code == 200 and r.json()["cancel_requested"]
    pipeline.run_phase(cycle_id, "score")
    pipeline.run_phase(cycle_id, "publish")
    cycle = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
    assert cycle["status"] == "cancelled" and cycle["error"] == "cancelled by an admin before score"
    assert current_ranking(cube_project["id"]) == cold
    assert client.get(f"/api/v1/projects/{cube_project['id']}/models", headers=admin.headers).json() == []
    assert client.delete(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).status_code == 409


def test_cancel_of_queued_cycle_is_immediate(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int]
) -> None:
    cycle_id = start(client, admin, cube_project["id"]).json()["id"]
    assert client.delete(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()["status"] == "cancelled"
    pipeline.run_cycle(cycle_id)  # the message still arrives: the worker must not run it
    cycle = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
    assert cycle["status"] == "cancelled" and cycle["phase"] is None
    assert start(client, admin, cube_project["id"]).status_code == 202  # the slot is free again


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the phase catches it, so it leaves the cycle as a dead worker would."""


def test_redelivered_train_phase_resumes_from_its_checkpoint(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEXTCASE_TRAIN_CHECKPOINT_EVERY_S", "0.001")  # a checkpoint after every step
    get_settings.cache_clear()
    cycle_id = start(client, admin, cube_project["id"], epochs=None, steps=10).json()["id"]
    real_saver = pipeline._checkpoint_saver

    def dying_saver(cycle: int, store: Any, inputs: str) -> Any:
        save = real_saver(cycle, store, inputs)

        def save_then_die(checkpoint: Any) -> None:
            save(checkpoint)
            if checkpoint.step == 6:
                raise Killed

        return save_then_die

    monkeypatch.setattr(pipeline, "_checkpoint_saver", dying_saver)
    with pytest.raises(Killed):
        pipeline.run_cycle(cycle_id)
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        assert cycle is not None and (cycle.status, cycle.phase, cycle.progress["checkpoint_step"]) == (
            "running", "train", 6)

    monkeypatch.setattr(pipeline, "_checkpoint_saver", real_saver)
    pipeline.run_cycle(cycle_id)  # Celery requeues the unacknowledged message; it runs again
    cycle_json = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
    assert cycle_json["status"] == "done", cycle_json["error"]
    metrics = cycle_json["metrics"]
    assert (metrics["train_resumed_from"], metrics["train_steps_after_resume"], metrics["train_steps"]) == (6, 4, 10)
    assert [r["phase"] for r in metrics["redelivered"]] == ["train"]
    with db.session_scope() as session:
        cycle = session.get(Cycle, cycle_id)
        assert cycle is not None and cycle.checkpoint_key is None  # the last checkpoint is deleted once trained


def test_redelivered_score_phase_scores_only_what_is_left(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEXTCASE_SCORE_SHARD_CASES", "2")
    get_settings.cache_clear()
    cycle_id = start(client, admin, cube_project["id"]).json()["id"]
    scored: list[int] = []
    real_store = pipeline._store_score

    def store_then_die(store: Any, cycle: int, case: Any, result: Any) -> None:
        real_store(store, cycle, case, result)
        scored.append(case.id)
        if len(scored) == 2:
            raise Killed

    monkeypatch.setattr(pipeline, "_store_score", store_then_die)
    with pytest.raises(Killed):
        pipeline.run_cycle(cycle_id)
    monkeypatch.setattr(pipeline, "_store_score", lambda *a: (scored.append(a[2].id), real_store(*a))[-1])
    pipeline.run_cycle(cycle_id)
    cycle_json = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
    assert cycle_json["status"] == "done", cycle_json["error"]
    unlabelled = cube_project["case_ids"][5:]
    assert sorted(scored) == unlabelled  # each case scored once, across the two deliveries
    assert cycle_json["progress"]["scored"] == cycle_json["progress"]["total"] == 3
    assert sorted(ranking_case_ids(cycle_json["ranking_id"])) == unlabelled


def ranking_case_ids(ranking_id: int) -> list[int]:
    with db.session_scope() as session:
        return list(session.scalars(select(RankingEntry.case_id).where(RankingEntry.ranking_id == ranking_id)))


def test_training_needs_a_labelled_case(
    client: TestClient, admin: Login, no_broker: list[int]
) -> None:
    project = create_project(client, admin.headers, "empty", ["background", "cube"])
    upload_case(client, admin.headers, project["id"], encode(_image(cube_case(0)[0])))
    cycle = _done_cycle(client, admin, project["id"])
    assert cycle["status"] == "failed"
    assert cycle["error"] == ("train failed: no labelled case in the pool split: label at least one case "
                              "before training")


def test_unreachable_broker_is_503_and_cycle_failed(
    client: TestClient, admin: Login, cube_project: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings
    from worker.celery_app import reset_celery

    monkeypatch.setenv("NEXTCASE_BROKER_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    reset_celery().conf.broker_connection_timeout = 1
    r = client.post(f"/api/v1/projects/{cube_project['id']}/cycles", json=TINY, headers=admin.headers)
    assert r.status_code == 503
    assert r.json()["detail"].startswith("could not reach the task broker")
    cycles = client.get(f"/api/v1/projects/{cube_project['id']}/cycles", headers=admin.headers).json()
    assert cycles[0]["status"] == "failed"
    assert cycles[0]["error"] == "the task broker was unreachable when the cycle was queued"
    assert client.get("/readyz").status_code == 503
    assert client.get("/readyz").json()["checks"]["broker"].startswith("error")


def test_prediction_before_any_cycle_is_404(client: TestClient, admin: Login, cube_project: dict[str, Any]) -> None:
    case_id = cube_project["case_ids"][6]
    r = client.get(f"/api/v1/cases/{case_id}/prediction", headers=admin.headers)
    assert r.status_code == 404 and r.json()["detail"].startswith(f"case {case_id} has no prediction yet")



def test_default_strategy_is_random(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int]
) -> None:
    body = {k: v for k, v in TINY.items() if k != "strategy"}
    r = client.post(f"/api/v1/projects/{cube_project['id']}/cycles", json=body, headers=admin.headers)
    assert r.status_code == 202 and r.json()["strategy"] == "random"


@pytest.mark.parametrize("strategy", ["stratified_power", "coreset"])
def test_batch_aware_strategy_publishes_its_own_order(
    client: TestClient, admin: Login, annotator: Login, cube_project: dict[str, Any], no_broker: list[int],
    strategy: str,
) -> None:
    from worker.ml.params import TrainParams
    from worker.ml.scoring import ScoreResult, rank_cases

    cycle_id = start(client, admin, cube_project["id"], strategy=strategy, query_size=2).json()["id"]
    pipeline.run_cycle(cycle_id)
    cycle = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
    assert cycle["status"] == "done", cycle["error"]
    with db.session_scope() as session:
        rows = list(session.execute(select(CaseScore.case_id, CaseScore.score, CaseScore.extras)
                                    .where(CaseScore.cycle_id == cycle_id)))
        entries = list(session.scalars(select(RankingEntry).where(RankingEntry.ranking_id == cycle["ranking_id"])
                                       .order_by(RankingEntry.rank)))
    results = [(cid, ScoreResult(score=s, extras={k: v for k, v in x.items() if k != "embedding"},
                                 embedding=np.asarray(x["embedding"]))) for cid, s, x in rows]
    params = TrainParams.from_dict(cycle["params"])
    assert [e.case_id for e in entries] == rank_cases(strategy, results, params, round_index=0)
    assert sorted(e.case_id for e in entries) == cube_project["case_ids"][5:]
