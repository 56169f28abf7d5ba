"""GET /projects/{id}/campaign: figures checked against values worked out by hand, JSON and CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.campaign.stats import t_critical
from app.core import db
from app.models import Cycle, LabelEffort, LabelVersion, Lease, ModelVersion, utcnow
from tests.conftest import Login
from tests.factories import bulk_cases, create_project

DAY1 = dt.datetime(2026, 1, 5, 9, tzinfo=dt.UTC)
DAY2 = dt.datetime(2026, 1, 6, 9, tzinfo=dt.UTC)

# (arm, dice of a, dice of b, working seconds, voxels changed, status, day); None: no lease / no Dice
EFFORTS: list[tuple[str | None, float | None, float | None, float | None, int | None, str, dt.datetime | None]] = [
    ("ranked", 0.6, 0.5, 120, 10, "done", DAY1),
    ("ranked", 0.7, None, 300, 40, "done", DAY1),  # b absent from prediction and mask
    ("ranked", 0.8, 0.7, 600, 100, "done", DAY2),
    ("ranked", None, None, 900, None, "pending", None),  # uploaded just now, comparison not run yet
    ("control", 0.9, 0.7, 60, 5, "done", DAY2),
    ("control", 0.8, 1.0, 180, 20, "done", DAY2),
    ("cold_start", None, None, 240, None, "no_prediction", DAY1),
]


def seed_efforts(project_id: int, annotator: Login, admin: Login, blob_dir: Path) -> int:
    """The rows above by the annotator (model version 1 except cold start), one upload by the admin without a lease."""
    ids, _ = bulk_cases(project_id, len(EFFORTS) + 1, blob_dir)
    with db.session_scope() as session:
        cycle = Cycle(project_id=project_id, status="done", strategy="mc_dropout_variance", params={})
        session.add(cycle)
        session.flush()
        model = ModelVersion(project_id=project_id, version=1, cycle_id=cycle.id, weights_key="unused", params={},
                             metrics={}, trained_case_ids=[])
        session.add(model)
        session.flush()
        for case_id, (arm, a, b, working, changed, status, day) in zip(ids, EFFORTS, strict=False):
            at = day or utcnow()
            version = _version(session, case_id, annotator.user_id, at)
            lease = Lease(token=uuid.uuid4().hex, case_id=case_id, user_id=annotator.user_id, arm=arm, created_at=at,
                          expires_at=at + dt.timedelta(hours=1), ended_at=at, end_reason="labelled")
            session.add(lease)
            session.flush()
            model_id = None if arm == "cold_start" else model.id
            done = status == "done"
            session.add(LabelEffort(
                label_version_id=version, project_id=project_id, case_id=case_id, user_id=annotator.user_id,
                lease_id=lease.id, arm=arm, model_version_id=model_id, status=status, working_s=working,
                dice={"background": 0.99, "a": a, "b": b} if done else None, voxels_changed=changed, created_at=at))
        version = _version(session, ids[-1], admin.user_id, DAY1)
        session.add(LabelEffort(label_version_id=version, project_id=project_id, case_id=ids[-1], user_id=admin.user_id,
                                status="no_prediction", created_at=DAY1))
        return model.id


def _version(session: Any, case_id: int, author: int, at: dt.datetime) -> int:
    version = LabelVersion(case_id=case_id, version=1, author_id=author, sha256="0" * 64, blob_key="unused",
                           created_at=at)
    session.add(version)
    session.flush()
    return version.id


def approx(value: float | None) -> Any:
    return pytest.approx(value, abs=1e-4)


def test_campaign_figures_match_hand_computed_values(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers, "campaign")
    model_id = seed_efforts(project["id"], annotator, admin, settings_env)
    r = client.get(f"/api/v1/projects/{project['id']}/campaign", headers=annotator.headers)
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["classes"], report["pending"], report["failed"]) == (["a", "b"], 1, 0)
    keys = [(a["model_version"], a["arm"]) for a in report["arms"]]
    assert keys == [(None, "cold_start"), (None, "no_lease"), (1, "ranked"), (1, "control")]
    cold, no_lease, ranked, control = report["arms"]

    assert (ranked["labels"], ranked["compared"], ranked["pending"], ranked["model_version_id"]) == (4, 3, 1, model_id)
    # a: 0.6, 0.7, 0.8 -> mean 0.7, SD 0.1, t(0.975, 2) = 4.303: 0.7 +- 4.303 * 0.1 / sqrt(3) = 0.7 +- 0.24843
    assert ranked["dice"]["a"] == {"n": 3, "mean": approx(0.7), "ci_low": approx(0.45157), "ci_high": approx(0.94843)}
    # b: 0.5, 0.7 -> mean 0.6, SD 0.14142, t(1) = 12.706: 0.6 +- 1.2706, cut to [0, 1]
    assert ranked["dice"]["b"] == {"n": 2, "mean": approx(0.6), "ci_low": 0.0, "ci_high": 1.0}
    # per case (a + b) / 2 where both exist: 0.55, 0.7, 0.75 -> mean 0.66667, SD 0.10408: +- 0.25858
    assert ranked["mean_foreground_dice"] == {"n": 3, "mean": approx(2 / 3), "ci_low": approx(0.40809),
                                              "ci_high": approx(0.92524)}
    # minutes 2, 5, 10, 15 (the pending upload's time counts) -> 7.5; voxels changed 10, 40, 100 -> 40
    assert (ranked["median_minutes"], ranked["median_voxels_changed"]) == (approx(7.5), 40)

    # control per case: 0.8, 0.9 -> mean 0.85, SD 0.07071, t(1): 0.85 +- 0.63530, cut at 1
    assert control["mean_foreground_dice"] == {"n": 2, "mean": approx(0.85), "ci_low": approx(0.21470),
                                               "ci_high": 1.0}
    assert (control["median_minutes"], control["median_voxels_changed"]) == (approx(2.0), approx(12.5))
    assert (cold["labels"], cold["compared"], cold["median_minutes"], cold["mean_foreground_dice"]["mean"]) == (
        1, 0, approx(4.0), None)
    assert (no_lease["labels"], no_lease["median_minutes"]) == (1, None)

    # ranked - control = 0.66667 - 0.85; Welch: variances of the means 0.010833/3 and 0.005/2, df 2.92 -> t(2):
    # -0.18333 +- 4.303 * sqrt(0.0036111 + 0.0025) = -0.18333 +- 0.33638
    (diff,) = report["ranked_vs_control"]
    assert diff["model_version"] == 1
    assert diff["ranked_minus_control"] == {"n": 5, "mean": approx(-0.18333), "ci_low": approx(-0.51971),
                                            "ci_high": approx(0.15305)}

    # bob: 7 labels on 3 UTC days (5 and 6 Jan, today); minutes 1, 2, 3, 4, 5, 10, 15 -> median 4
    assert report["annotators"] == [
        {"user": "alice-admin", "labels": 1, "active_days": 1, "labels_per_day": 1.0, "median_minutes": None},
        {"user": "bob-annotator", "labels": 7, "active_days": 3, "labels_per_day": approx(7 / 3),
         "median_minutes": approx(4.0)}]
    assert any("unbiased estimate" in line for line in report["explanation"])


def test_campaign_csv_has_one_row_per_model_version_and_arm(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers, "campaign-csv")
    seed_efforts(project["id"], annotator, admin, settings_env)
    r = client.get(f"/api/v1/projects/{project['id']}/campaign?format=csv", headers=admin.headers)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == f'attachment; filename="campaign-{project["id"]}.csv"'
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["model_version"], row["arm"]) for row in rows] == [
        ("", "cold_start"), ("", "no_lease"), ("1", "ranked"), ("1", "control")]
    control = rows[3]
    assert (control["labels"], control["mean_foreground_dice_n"]) == ("2", "2")
    assert float(control["mean_foreground_dice"]) == approx(0.85)
    assert float(control["dice_a_ci_low"]) == approx(0.2147) and control["dice_a_ci_high"] == "1.0"
    assert float(control["median_voxels_changed"]) == 12.5
    assert list(rows[0])[:6] == ["model_version", "model_version_id", "arm", "labels", "compared", "pending"]


def test_campaign_of_an_unknown_project_is_a_404(client: TestClient, annotator: Login) -> None:
    r = client.get("/api/v1/projects/999/campaign", headers=annotator.headers)
    assert (r.status_code, r.json()["field"]) == (404, "project_id")
    r = client.get("/api/v1/projects/999/campaign?format=xml", headers=annotator.headers)
    assert (r.status_code, r.json()["field"]) == (422, "format")


@pytest.mark.parametrize(("df", "expected"), [(1, 12.706), (2, 4.303), (2.92, 4.303), (30, 2.042), (40, 2.021),
                                              (120, 1.980), (10_000, 1.960)])
def test_t_critical_values(df: float, expected: float) -> None:
    assert t_critical(df) == pytest.approx(expected, abs=1e-3)  # from printed t tables
