"""Effort records: what a label upload stores about the prediction its author started from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.background import BackgroundTasks

from app.campaign import effort as metrics
from app.campaign import service as campaign
from app.core import db
from app.core.config import get_settings
from app.core.storage import BlobStore
from app.models import CaseScore, Cycle, LabelEffort, Lease, ModelVersion
from app.queue.service import publish_ranking
from tests.conftest import Login, make_login
from tests.factories import bulk_cases, create_project, encode, upload_label, volume

# A hand-built prediction and mask on bulk_cases' (2, 3, 4) grid, flattened (24 voxels):
#   prediction: voxels 0-11 class a, 12-17 class b, 18-23 background
#   mask:       voxels 0-9 class a, 10-11 background, 12-19 class b, 20-23 background
# a: |P| = 12, |M| = 10, overlap 10 -> Dice 20/22; b: |P| = 6, |M| = 8, overlap 6 -> 12/14;
# background: |P| = 6, |M| = 6 (10, 11, 20-23), overlap 4 (20-23) -> 8/12; changed: 10, 11, 18, 19 -> 4 voxels.
PREDICTION = np.array([1] * 12 + [2] * 6 + [0] * 6, dtype=np.uint8).reshape(2, 3, 4)
MASK = np.array([1] * 10 + [0] * 2 + [2] * 8 + [0] * 4, dtype=np.uint8).reshape(2, 3, 4)
EXPECTED_DICE = {"background": 8 / 12, "a": 20 / 22, "b": 12 / 14}


def on_case_grid(array: np.ndarray) -> bytes:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(volume((2, 3, 4)))  # the grid of bulk_cases' image
    return encode(image)


def publish_model(project_id: int, case_ids: list[int], blob_dir: Path, prediction: bytes | None,
                  version: int = 1) -> int:
    """A finished cycle, its model version, its stored prediction for every case, and its ranking (case order)."""
    key = BlobStore(blob_dir).put(prediction, "nii.gz").key if prediction is not None else None
    with db.session_scope() as session:
        cycle = Cycle(project_id=project_id, status="done", strategy="mc_dropout_variance", params={})
        session.add(cycle)
        session.flush()
        model = ModelVersion(project_id=project_id, version=version, cycle_id=cycle.id, weights_key="unused",
                             params={}, metrics={}, trained_case_ids=[])
        session.add(model)
        session.flush()
        session.add_all(CaseScore(cycle_id=cycle.id, case_id=cid, score=float(-i), prediction_key=key)
                        for i, cid in enumerate(case_ids))
        ranking = publish_ranking(session, project_id, [(cid, float(-i)) for i, cid in enumerate(case_ids)],
                                  kind="model", strategy="mc_dropout_variance", model_version_id=model.id)
        cycle.model_version_id, cycle.ranking_id = model.id, ranking.id
        return model.id


def effort_of(case_id: int) -> LabelEffort:
    with db.session_scope() as session:
        effort = session.scalar(select(LabelEffort).where(LabelEffort.case_id == case_id))
        assert effort is not None
        return effort


def claim(client: TestClient, login: Login, project_id: int) -> dict[str, Any]:
    r = client.post(f"/api/v1/projects/{project_id}/queue/next", headers=login.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture
def project(client: TestClient, admin: Login) -> dict[str, Any]:
    return create_project(client, admin.headers, "effort")


def test_claim_download_upload_records_dice_against_the_claimed_prediction(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 3, settings_env)
    served = on_case_grid(PREDICTION)
    first_model = publish_model(project["id"], ids, settings_env, served)
    body = claim(client, annotator, project["id"])
    case_id = body["case"]["id"]
    assert (case_id, body["model_version"]) == (ids[0], first_model)
    prediction = client.get(f"/api/v1/cases/{case_id}/prediction", headers=annotator.headers)
    assert prediction.content == served
    # A new model is published while the annotator works: the effort still compares with what was served.
    newer = on_case_grid(np.zeros((2, 3, 4), np.uint8))
    publish_model(project["id"], ids, settings_env, newer, version=2)
    # The holder keeps being served the prediction the effort is measured against; others see the newest.
    again = client.get(f"/api/v1/cases/{case_id}/prediction", headers=annotator.headers)
    assert again.status_code == 200 and again.content == served
    other = make_login("reader", "annotator")
    assert client.get(f"/api/v1/cases/{case_id}/prediction", headers=other.headers).content == newer

    assert upload_label(client, annotator.headers, case_id, on_case_grid(MASK)).status_code == 201

    effort = effort_of(case_id)  # the test client returns after the background task has run
    assert (effort.status, effort.model_version_id, effort.arm) == ("done", first_model, "ranked")
    assert effort.dice == pytest.approx(EXPECTED_DICE)
    assert effort.predicted_voxels == {"background": 6, "a": 12, "b": 6}
    assert effort.label_voxels == {"background": 6, "a": 10, "b": 8}
    assert (effort.voxels_changed, effort.voxels_total) == (4, 24)
    with db.session_scope() as session:
        lease = session.scalar(select(Lease).where(Lease.case_id == case_id))
        assert lease is not None and lease.ended_at is not None
        assert effort.lease_id == lease.id
        assert effort.working_s == pytest.approx((lease.ended_at - lease.created_at).total_seconds())


def test_cold_start_upload_records_no_prediction_with_its_working_time(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    bulk_cases(project["id"], 2, settings_env)
    case_id = claim(client, annotator, project["id"])["case"]["id"]
    assert upload_label(client, annotator.headers, case_id, on_case_grid(MASK)).status_code == 201
    effort = effort_of(case_id)
    assert (effort.status, effort.note, effort.arm) == ("no_prediction", campaign.COLD_START, "cold_start")
    assert effort.model_version_id is None and effort.dice is None
    assert effort.working_s is not None and effort.working_s >= 0


def test_upload_without_a_lease_records_no_lease(
    client: TestClient, project: dict[str, Any], admin: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 2, settings_env)
    publish_model(project["id"], ids, settings_env, on_case_grid(PREDICTION))
    assert upload_label(client, admin.headers, ids[1], on_case_grid(MASK)).status_code == 201
    effort = effort_of(ids[1])
    assert (effort.status, effort.note, effort.lease_id, effort.working_s) == (
        "no_prediction", campaign.NO_LEASE, None, None)


def test_case_the_model_did_not_score_records_no_prediction(
    client: TestClient, project: dict[str, Any], annotator: Login, admin: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 2, settings_env)
    publish_model(project["id"], ids[1:], settings_env, on_case_grid(PREDICTION))  # ids[0]: imported later
    client.patch(f"/api/v1/cases/{ids[0]}", json={"pinned": True}, headers=admin.headers)  # the claim takes it
    case_id = claim(client, annotator, project["id"])["case"]["id"]
    assert case_id == ids[0]
    upload_label(client, annotator.headers, case_id, on_case_grid(MASK))
    effort = effort_of(case_id)
    assert (effort.status, effort.note, effort.arm) == ("no_prediction", campaign.UNSCORED, "pinned")


def test_lost_background_job_is_computed_when_the_report_is_read(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ids, _ = bulk_cases(project["id"], 2, settings_env)
    publish_model(project["id"], ids, settings_env, on_case_grid(PREDICTION))
    case_id = claim(client, annotator, project["id"])["case"]["id"]
    with monkeypatch.context() as m:  # the API process "dies" before its background job runs
        m.setattr(BackgroundTasks, "add_task", lambda *args, **kwargs: None)
        assert upload_label(client, annotator.headers, case_id, on_case_grid(MASK)).status_code == 201
    assert effort_of(case_id).status == "pending"
    report = client.get(f"/api/v1/projects/{project['id']}/campaign", headers=annotator.headers).json()
    assert report["pending"] == 1  # younger than NEXTCASE_EFFORT_RETRY_AFTER_S: its job may still be running
    monkeypatch.setenv("NEXTCASE_EFFORT_RETRY_AFTER_S", "0")
    get_settings.cache_clear()
    report = client.get(f"/api/v1/projects/{project['id']}/campaign", headers=annotator.headers).json()
    assert report["pending"] == 0
    effort = effort_of(case_id)
    assert effort.status == "done" and effort.dice == pytest.approx(EXPECTED_DICE)


def test_missing_prediction_blob_marks_the_effort_failed(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 2, settings_env)
    publish_model(project["id"], ids, settings_env, on_case_grid(PREDICTION))
    body = claim(client, annotator, project["id"])
    with db.session_scope() as session:
        lease = session.scalar(select(Lease).where(Lease.token == body["lease"]["token"]))
        assert lease is not None and lease.prediction_key is not None
        BlobStore(settings_env).delete(lease.prediction_key)
    assert upload_label(client, annotator.headers, body["case"]["id"], on_case_grid(MASK)).status_code == 201
    effort = effort_of(body["case"]["id"])
    assert effort.status == "failed" and effort.note is not None and effort.note.startswith("FileNotFoundError")


@pytest.mark.parametrize("num_classes", [3, 20])  # uint8 and uint16 pair codes
def test_compare_agrees_with_the_workers_dice_in_chunks(num_classes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.ml.inference import dice_per_class

    rng = np.random.default_rng(num_classes)
    prediction = rng.integers(0, num_classes - 1, size=(5, 7, 9)).astype(np.uint8)  # last class in neither
    mask = np.where(rng.random((5, 7, 9)) < 0.3, rng.integers(0, num_classes - 1, size=(5, 7, 9)), prediction)
    monkeypatch.setattr(metrics, "CHUNK", 50)  # several chunks, the last one short
    result = metrics.compare(prediction, mask.astype(np.int16), num_classes)
    assert result.dice == pytest.approx(dice_per_class(prediction, mask, num_classes))
    assert result.dice[-1] is None
    assert result.predicted == [int((prediction == c).sum()) for c in range(num_classes)]
    assert result.labelled == [int((mask == c).sum()) for c in range(num_classes)]
    assert (result.changed, result.total) == (int((prediction != mask).sum()), 5 * 7 * 9)


@pytest.mark.parametrize(("prediction", "mask", "message"), [
    (np.zeros((2, 2), np.uint8), np.zeros((2, 3), np.uint8), "shapes differ"),
    (np.full((2, 2), 3, np.uint8), np.zeros((2, 2), np.uint8), "prediction has a class value outside 0..2"),
    (np.zeros((2, 2), np.uint8), np.full((2, 2), -1, np.int16), "mask has a class value outside 0..2"),
    (np.zeros((2, 2), np.float32), np.zeros((2, 2), np.uint8), "not an integer label map"),
])
def test_compare_refuses_what_it_cannot_count(prediction: np.ndarray, mask: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        metrics.compare(prediction, mask, 3)
