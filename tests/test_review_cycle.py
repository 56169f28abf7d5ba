"""With train_on = approved a cycle trains on approved label versions only, as its record of training cases shows."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core import db
from app.models import Cycle
from tests.conftest import Login
from tests.factories import encode, upload_case, upload_label
from tests.ml.synthetic import cube_case
from tests.test_cycles import TINY, _image
from worker import pipeline


def test_cycle_trains_only_on_approved_versions(
    client: TestClient, admin: Login, annotator: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.cycles.service.enqueue", lambda cycle_id: None)  # the test runs the phases itself
    project = client.post("/api/v1/projects", headers=admin.headers, json={
        "name": "approved-only", "modality": "CT", "labels": ["background", "cube"], "train_on": "approved"}).json()
    cases, versions = [], []
    for seed in range(4):
        image, label = cube_case(seed)
        case = upload_case(client, admin.headers, project["id"], encode(_image(image)), patient=f"p{seed}").json()
        cases.append(case["id"])
        if seed < 3:
            versions.append(upload_label(client, annotator.headers, case["id"], encode(_image(label))).json())
    decisions: list[dict[str, Any]] = [{"decision": "approved"}, {"decision": "changes_requested", "comment": "redo"},
                                       {"decision": "approved"}]
    for version, body in zip(versions, decisions, strict=True):
        r = client.post(f"/api/v1/labels/{version['id']}/review", json=body, headers=admin.headers)
        assert r.status_code == 200, r.text
    stats = client.get(f"/api/v1/projects/{project['id']}/queue/stats", headers=admin.headers).json()
    assert (stats["labelled"], stats["in_review"], stats["open"]) == (2, 1, 1)

    cycle = client.post(f"/api/v1/projects/{project['id']}/cycles", json=TINY, headers=admin.headers).json()
    pipeline.run_cycle(cycle["id"])
    done = client.get(f"/api/v1/cycles/{cycle['id']}", headers=admin.headers).json()
    assert done["status"] == "done", done["error"]
    with db.session_scope() as session:  # the cycle's own record of what it trained on
        recorded = session.get(Cycle, cycle["id"])
        assert recorded is not None
        assert sorted(recorded.trained_case_ids) == [cases[0], cases[2]]  # not the returned one, not the unlabelled
    models = client.get(f"/api/v1/projects/{project['id']}/models", headers=admin.headers).json()
    assert sorted(models[0]["trained_case_ids"]) == [cases[0], cases[2]]
