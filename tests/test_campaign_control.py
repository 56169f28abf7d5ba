"""The random control arm of the queue: settings, reproducible draws, recorded arms, the MONAI Label facade."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.campaign import draw
from app.core import db
from app.core.config import get_settings
from app.models import AuditEvent, Case, Lease, Project
from app.queue.service import publish_ranking
from tests.conftest import Login
from tests.factories import bulk_cases, create_project


def model_ranking(project_id: int, ids: list[int]) -> list[int]:
    """Publish a model ranking whose order is a fixed shuffle of the cases (not id order); returns that order."""
    order = ids[1::2] + ids[0::2]
    with db.session_scope() as session:
        publish_ranking(session, project_id, [(cid, float(len(order) - i)) for i, cid in enumerate(order)],
                        kind="model", strategy="mc_dropout_variance")
    return order


def set_control(client: TestClient, admin: Login, project_id: int, fraction: float, seed: int) -> None:
    r = client.patch(f"/api/v1/projects/{project_id}", json={"control_fraction": fraction, "control_seed": seed},
                     headers=admin.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["control_fraction"], r.json()["control_seed"]) == (fraction, seed)


def claim_all(client: TestClient, login: Login, project_id: int, n: int) -> None:
    for _ in range(n):
        assert client.post(f"/api/v1/projects/{project_id}/queue/next", headers=login.headers).status_code == 200


def leases(project_id: int) -> list[tuple[int, int, str]]:
    """(claim number, case id, arm) of the project's leases in claim order."""
    with db.session_scope() as session:
        rows = session.execute(select(Lease.claim_seq, Lease.case_id, Lease.arm).join(Case, Case.id == Lease.case_id)
                               .where(Case.project_id == project_id).order_by(Lease.claim_seq))
        return [(int(n), int(c), str(a)) for n, c, a in rows]


def expected_claims(seed: int, fraction: float, ranking: list[int]) -> list[tuple[int, int, str]]:
    """What the queue must hand out to one annotator claiming every case, replayed from the draw functions."""
    open_cases, out = sorted(ranking), []
    for n in range(1, len(ranking) + 1):
        if draw.is_control(seed, n, fraction):
            case, arm = open_cases[draw.control_position(seed, n, len(open_cases))], "control"
        else:
            case, arm = next(c for c in ranking if c in open_cases), "ranked"
        open_cases.remove(case)
        out.append((n, case, arm))
    return out


def test_new_project_defaults_and_patch_validation(client: TestClient, admin: Login, annotator: Login,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEXTCASE_CONTROL_FRACTION")  # the tests' settings turn it off; the product default is 0.1
    get_settings.cache_clear()
    project = create_project(client, admin.headers, "defaults")
    assert project["control_fraction"] == 0.1 and 0 <= project["control_seed"] < 2**31
    url = f"/api/v1/projects/{project['id']}"
    for body, field in (({"control_fraction": 1.5}, "control_fraction"), ({"control_seed": -1}, "control_seed"),
                        ({"control_fraction": -0.1}, "control_fraction"), ({"name": "renamed"}, "name")):
        r = client.patch(url, json=body, headers=admin.headers)
        assert (r.status_code, r.headers["content-type"], r.json()["field"]) == (422, "application/problem+json", field)
    assert client.patch(url, json={"control_fraction": 0.5}, headers=annotator.headers).status_code == 403
    seen = client.get(url, headers=annotator.headers).json()
    assert seen["control_fraction"] == 0.1 and "control_seed" not in seen  # nothing changed; the seed stays hidden
    r = client.patch(url, json={"control_fraction": 0.25}, headers=admin.headers)
    assert (r.json()["control_fraction"], r.json()["control_seed"]) == (0.25, project["control_seed"])
    with db.session_scope() as session:
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "project.control"))
        assert event is not None and event.detail == {"changes": {"control_fraction": 0.25}}


def test_half_of_200_claims_are_control_and_the_sequence_replays(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    claims = []
    for name in ("first", "replay"):
        project = create_project(client, admin.headers, name)
        ids, _ = bulk_cases(project["id"], 200, settings_env)
        ranking = model_ranking(project["id"], ids)
        set_control(client, admin, project["id"], 0.5, seed=20261128)
        claim_all(client, annotator, project["id"], 200)
        got = leases(project["id"])
        assert got == expected_claims(20261128, 0.5, ranking)  # arms and cases replayed from (seed, n)
        claims.append([(n, ids.index(case), arm) for n, case, arm in got])  # case as position: ids differ
    assert claims[0] == claims[1]  # the same seed and queue: the same campaign
    controls = sum(arm == "control" for _, _, arm in claims[0])
    # Binomial(200, 0.5): mean 100, SD 7.07; this seed draws a fixed number within 3 SD of the mean.
    assert 79 <= controls <= 121
    assert controls == sum(draw.is_control(20261128, n, 0.5) for n in range(1, 201))


def test_another_seed_draws_another_sequence(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    arms = {}
    for seed in (1, 2):
        project = create_project(client, admin.headers, f"seed{seed}")
        ids, _ = bulk_cases(project["id"], 40, settings_env)
        model_ranking(project["id"], ids)
        set_control(client, admin, project["id"], 0.5, seed=seed)
        claim_all(client, annotator, project["id"], 40)
        arms[seed] = [arm for _, _, arm in leases(project["id"])]
    assert arms[1] != arms[2]
    assert arms[1] == ["control" if draw.is_control(1, n, 0.5) else "ranked" for n in range(1, 41)]


def test_fraction_zero_follows_the_ranking_only(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers, "off")
    ids, _ = bulk_cases(project["id"], 50, settings_env)
    ranking = model_ranking(project["id"], ids)
    set_control(client, admin, project["id"], 0.0, seed=7)
    claim_all(client, annotator, project["id"], 50)
    assert leases(project["id"]) == [(n, case, "ranked") for n, case in enumerate(ranking, start=1)]


def test_arms_pinned_cold_start_skipped_and_the_claim_counter(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers, "arms")
    ids, _ = bulk_cases(project["id"], 3, settings_env)
    set_control(client, admin, project["id"], 1.0, seed=3)  # every claim a control claim, once a model exists
    next_url = f"/api/v1/projects/{project['id']}/queue/next"
    body = client.post(next_url, headers=annotator.headers).json()
    first, token = body["case"]["id"], body["lease"]["token"]
    client.post(f"/api/v1/leases/{token}/skip", json={"reason": "blurry"}, headers=annotator.headers)
    model_ranking(project["id"], ids)
    others = [c for c in ids if c != first]
    client.patch(f"/api/v1/cases/{others[1]}", json={"pinned": True}, headers=admin.headers)
    claim_all(client, annotator, project["id"], 3)
    assert client.post(next_url, headers=annotator.headers).status_code == 204  # gives its number back
    assert leases(project["id"]) == [(1, first, "cold_start"), (2, others[1], "pinned"), (3, others[0], "control"),
                                     (4, first, "skipped")]
    with db.session_scope() as session:
        stored = session.get(Project, project["id"])
        assert stored is not None and stored.claim_count == 4


def test_monailabel_next_sample_records_the_arm(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers, "slicer")
    ids, _ = bulk_cases(project["id"], 4, settings_env)
    ranking = model_ranking(project["id"], ids)
    set_control(client, admin, project["id"], 0.0, seed=5)
    base = f"/monailabel/{project['id']}"
    sample = client.post(f"{base}/activelearning/nextcase", headers=annotator.headers).json()
    assert sample["id"].startswith(f"case{ranking[0]}-")
    set_control(client, admin, project["id"], 1.0, seed=5)
    client.post(f"{base}/activelearning/nextcase", headers=annotator.headers)  # releases the first as skipped
    got = leases(project["id"])
    open_cases = sorted(set(ids) - {ranking[0]})  # the skipped case is not handed straight back
    assert got == [(1, ranking[0], "ranked"), (2, open_cases[draw.control_position(5, 2, 3)], "control")]


def test_a_claim_whose_number_the_draws_sent_miss_is_drawn_with_its_own_number(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL sends each claim the control draws of the claim numbers this API process expects next; other
    processes' claims (or a new seed) move the number past them. Such a claim is drawn again with its own number,
    in autocommit or, when that misses too, in a transaction of its own: the campaign still replays from (seed, n).
    (SQLite draws from the number it reads; the same claims come out.)"""
    from app.queue import service as queue_service

    project = create_project(client, admin.headers, "other-processes")
    ids, _ = bulk_cases(project["id"], 30, settings_env)
    ranking = model_ranking(project["id"], ids)
    set_control(client, admin, project["id"], 0.5, seed=11)
    claim_all(client, annotator, project["id"], 5)
    queue_service._HINTS[project["id"]] = (11, 6 - 100, True)  # 100 claims elsewhere since this process's last
    claim_all(client, annotator, project["id"], 5)
    queue_service._HINTS[project["id"]] = (12, 11, True)  # the seed changed elsewhere
    claim_all(client, annotator, project["id"], 5)

    stale = [True]
    inside: list[bool] = []  # set while a claim runs in a transaction of its own
    original_params, original_transaction = queue_service._claim_params, queue_service._claim_in_transaction

    def always_behind(project_id: int, user: Any, published: int | None = None) -> Any:
        if inside:
            in_transaction.append(project_id)  # a run of the statement in the claim's own transaction
        elif stale[0]:  # each try in autocommit finds the draws it sent far behind
            queue_service._HINTS[project_id] = (11, -1000, True)
        return original_params(project_id, user, published)

    def in_own_transaction(session: Any, project_id: int, user: Any) -> Any:
        inside.append(True)
        try:
            return original_transaction(session, project_id, user)
        finally:
            inside.pop()

    in_transaction: list[int] = []
    monkeypatch.setattr(queue_service, "_claim_params", always_behind)
    monkeypatch.setattr(queue_service, "_claim_in_transaction", in_own_transaction)
    claim_all(client, annotator, project["id"], 5)  # both tries in autocommit miss: a transaction of its own
    stale[0] = False
    if db.get_engine().dialect.name == "postgresql":
        assert in_transaction == [project["id"]] * 5  # one run each, with the draws for the number the last try read
    claim_all(client, annotator, project["id"], 10)
    assert leases(project["id"]) == expected_claims(11, 0.5, ranking)
    assert {arm for _, _, arm in leases(project["id"])} == {"control", "ranked"}
