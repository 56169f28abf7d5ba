"""A cancel that arrives while a cycle evaluates or scores acts at the next sliding window.

Before, evaluation never looked at the cancel flag and scoring only between cases, which is what made
Slicer's Stop take about 25 s. The cancel here is the real one (DELETE /api/v1/cycles/{id}), sent from
inside the network's first forward call, so the test needs no clock and no sleep.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from torch import nn

from app.core import db
from app.models import CaseScore
from tests.conftest import Login
from tests.test_cycles import cube_project, no_broker, start  # noqa: F401 (fixtures)
from worker import pipeline


@pytest.mark.parametrize("phase", ["evaluate", "score"])
def test_cancel_during_a_phase_acts_at_the_next_window(
    client: TestClient, admin: Login, cube_project: dict[str, Any], no_broker: list[int],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch, phase: str,
) -> None:
    cycle_id = start(client, admin, cube_project["id"]).json()["id"]
    for earlier in pipeline.PHASES[: pipeline.PHASES.index(phase)]:
        pipeline.run_phase(cycle_id, earlier)
    forwards: list[int] = []

    def cancel_on_first_forward(_module: nn.Module, _args: object) -> None:
        forwards.append(1)
        if len(forwards) == 1:
            r = client.delete(f"/api/v1/cycles/{cycle_id}", headers=admin.headers)
            assert r.status_code == 200 and r.json()["cancel_requested"]

    load_model = pipeline._load_model

    def load_hooked(store: Any, cycle: Any) -> Any:
        model, meta = load_model(store, cycle)
        model.register_forward_pre_hook(cancel_on_first_forward)
        return model, meta

    monkeypatch.setattr(pipeline, "_load_model", load_hooked)
    monkeypatch.setattr(pipeline, "CANCEL_CHECK_S", 0.0)  # read the flag at every poll: no timing in the test
    pipeline.run_phase(cycle_id, phase)

    cycle = client.get(f"/api/v1/cycles/{cycle_id}", headers=admin.headers).json()
    assert (cycle["status"], cycle["error"]) == ("cancelled", f"cancelled by an admin during {phase}")
    assert len(forwards) == 1  # no window ran after the cancel
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).where(CaseScore.cycle_id == cycle_id)) == 0
