"""The "annotate next" queue: ordering, leases, roles and the atomic ranking switch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core import db
from app.core.config import get_settings
from app.models import Ranking, RankingEntry
from app.queue.service import publish_ranking
from tests.conftest import Login, make_login
from tests.factories import bulk_cases, create_project, upload_label


@pytest.fixture
def project(client: TestClient, admin: Login) -> dict[str, Any]:
    return create_project(client, admin.headers, "queue")


def claim(client: TestClient, login: Login, project_id: int) -> Any:
    return client.post(f"/api/v1/projects/{project_id}/queue/next", headers=login.headers)


def ranking_order(ranking_id: int) -> list[int]:
    with db.session_scope() as session:
        return list(session.scalars(
            select(RankingEntry.case_id).where(RankingEntry.ranking_id == ranking_id).order_by(RankingEntry.rank)))


def test_cold_start_ranking_is_recorded_and_followed(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 6, settings_env)
    first = claim(client, annotator, project["id"])
    assert first.status_code == 200
    body = first.json()
    order = ranking_order(body["ranking_id"])
    assert sorted(order) == ids
    assert (body["case"]["id"], body["rank"], body["model_version"]) == (order[0], 1, None)
    with db.session_scope() as session:
        ranking = session.get(Ranking, body["ranking_id"])
        assert ranking is not None and ranking.kind == "cold_start" and ranking.seed is not None
    claimed = [claim(client, annotator, project["id"]).json()["case"]["id"] for _ in range(5)]
    assert claimed == order[1:]
    assert claim(client, annotator, project["id"]).status_code == 204


def test_published_ranking_is_followed_and_score_returned(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 4, settings_env)
    with db.session_scope() as session:
        ranking = publish_ranking(session, project["id"], [(cid, float(cid)) for cid in ids], kind="model",
                                  strategy="mc_dropout_variance", model_version_id=None)
    r = claim(client, annotator, project["id"]).json()
    assert (r["case"]["id"], r["rank"], r["score"], r["ranking_id"]) == (ids[-1], 1, float(ids[-1]), ranking.id)
    stats = client.get(f"/api/v1/projects/{project['id']}/queue/stats", headers=annotator.headers).json()
    assert stats["ranking"]["strategy"] == "mc_dropout_variance"
    assert (stats["open"], stats["leased"], stats["labelled"], stats["pool"]) == (3, 1, 0, 4)


def test_renew_release_and_skip(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    bulk_cases(project["id"], 3, settings_env)
    first = claim(client, annotator, project["id"]).json()
    token = first["lease"]["token"]
    renewed = client.post(f"/api/v1/leases/{token}/renew", headers=annotator.headers)
    assert renewed.status_code == 200
    assert renewed.json()["expires_at"] >= first["lease"]["expires_at"]

    released = client.delete(f"/api/v1/leases/{token}", headers=annotator.headers)
    assert released.json()["end_reason"] == "released"
    again = claim(client, annotator, project["id"]).json()
    assert again["case"]["id"] == first["case"]["id"]  # back at the top of the queue

    r = client.post(f"/api/v1/leases/{again['lease']['token']}/skip", json={"reason": ""}, headers=annotator.headers)
    assert r.status_code == 422 and r.json()["field"] == "reason"
    r = client.post(f"/api/v1/leases/{again['lease']['token']}/skip", json={"reason": "motion artefact"},
                    headers=annotator.headers)
    assert r.status_code == 200 and r.json()["end_reason"] == "skipped"
    nxt = [claim(client, annotator, project["id"]).json()["case"]["id"] for _ in range(3)]
    assert nxt[-1] == first["case"]["id"]  # skipped: at the back for this annotator
    other = make_login("carol", "annotator")
    assert claim(client, other, project["id"]).status_code == 204  # all three are leased now

    gone = client.post(f"/api/v1/leases/{token}/renew", headers=annotator.headers)
    assert gone.status_code == 410
    assert gone.json()["detail"].startswith("the lease ended (released) at ")


def test_skipped_case_goes_to_back_only_for_that_annotator(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    bulk_cases(project["id"], 3, settings_env)
    first = claim(client, annotator, project["id"]).json()
    client.post(f"/api/v1/leases/{first['lease']['token']}/skip", json={"reason": "wrong anatomy"},
                headers=annotator.headers)
    other = make_login("carol", "annotator")
    assert claim(client, other, project["id"]).json()["case"]["id"] == first["case"]["id"]


def test_expired_lease_returns_case_without_sweeper(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The queue's clock is moved forward instead of sleeping past a tiny lease: a loaded machine could
    # otherwise let the lease expire before the "still leased" check.
    import datetime as dt

    from app.queue import service as queue_service

    _, label = bulk_cases(project["id"], 1, settings_env)
    first = claim(client, annotator, project["id"]).json()
    other = make_login("carol", "annotator")
    assert claim(client, other, project["id"]).status_code == 204
    later = dt.timedelta(minutes=get_settings().lease_minutes + 1)
    real_now = queue_service.utcnow
    monkeypatch.setattr(queue_service, "utcnow", lambda: real_now() + later)
    second = claim(client, other, project["id"])
    assert second.status_code == 200 and second.json()["case"]["id"] == first["case"]["id"]

    r = client.post(f"/api/v1/leases/{first['lease']['token']}/renew", headers=annotator.headers)
    assert r.status_code == 410 and r.json()["detail"].startswith("the lease ended (expired) at ")
    late = upload_label(client, annotator.headers, first["case"]["id"], label)
    assert late.status_code == 409
    assert late.json()["detail"].startswith(f"case {first['case']['id']} is leased by carol until ")


def test_foreign_lease_upload_409_admin_override(
    client: TestClient, project: dict[str, Any], annotator: Login, admin: Login, settings_env: Path
) -> None:
    bulk_cases(project["id"], 2, settings_env)
    _, label = bulk_cases(create_project(client, admin.headers, "other")["id"], 1, settings_env)
    held = claim(client, annotator, project["id"]).json()
    case_id = held["case"]["id"]
    other = make_login("carol", "annotator")
    r = upload_label(client, other.headers, case_id, label)
    assert r.status_code == 409
    assert r.json()["detail"].startswith(f"case {case_id} is leased by bob-annotator until ")
    assert client.get(f"/api/v1/cases/{case_id}/labels", headers=other.headers).json() == []

    r = client.post(f"/api/v1/leases/{held['lease']['token']}/renew", headers=other.headers)
    assert r.status_code == 403 and r.json()["detail"] == "this lease belongs to another annotator"

    assert upload_label(client, admin.headers, case_id, label).status_code == 201
    r = client.post(f"/api/v1/leases/{held['lease']['token']}/renew", headers=annotator.headers)
    assert r.status_code == 410 and "(labelled)" in r.json()["detail"]


def test_holder_upload_ends_lease_and_case_leaves_queue(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    _ids, label = bulk_cases(project["id"], 2, settings_env)
    held = claim(client, annotator, project["id"]).json()
    assert upload_label(client, annotator.headers, held["case"]["id"], label).status_code == 201
    queue = client.get(f"/api/v1/projects/{project['id']}/queue", headers=annotator.headers).json()
    status = {item["case_id"]: item["status"] for item in queue["items"]}
    assert status[held["case"]["id"]] == "labelled"
    nxt = claim(client, annotator, project["id"]).json()
    assert nxt["case"]["id"] != held["case"]["id"]
    assert claim(client, annotator, project["id"]).status_code == 204


def test_pin_and_exclude_are_admin_only_and_audited(
    client: TestClient, project: dict[str, Any], annotator: Login, admin: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 4, settings_env)
    r = client.patch(f"/api/v1/cases/{ids[2]}", json={"pinned": True}, headers=annotator.headers)
    assert r.status_code == 403
    assert client.patch(f"/api/v1/cases/{ids[2]}", json={"pinned": True}, headers=admin.headers).json()["pinned"]
    client.patch(f"/api/v1/cases/{ids[0]}", json={"excluded": True}, headers=admin.headers)
    got = [claim(client, annotator, project["id"]).json()["case"]["id"] for _ in range(3)]
    assert got[0] == ids[2] and ids[0] not in got
    assert claim(client, annotator, project["id"]).status_code == 204
    audit = client.get(f"/api/v1/projects/{project['id']}/audit", headers=admin.headers).json()
    actions = [e["action"] for e in audit]
    assert "queue.pin" in actions and "queue.exclude" in actions
    queue = client.get(f"/api/v1/projects/{project['id']}/queue", headers=annotator.headers).json()
    assert {i["case_id"]: i["status"] for i in queue["items"]}[ids[0]] == "excluded"
    leased = [i for i in queue["items"] if i["status"] == "leased"]
    assert len(leased) == 3 and all(i["leased_by"] == "bob-annotator" for i in leased)


def test_validation_cases_are_never_queued(
    client: TestClient, project: dict[str, Any], annotator: Login, admin: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 2, settings_env)
    client.patch(f"/api/v1/cases/{ids[0]}", json={"split": "validation"}, headers=admin.headers)
    assert claim(client, annotator, project["id"]).json()["case"]["id"] == ids[1]
    assert claim(client, annotator, project["id"]).status_code == 204


def test_cases_imported_later_join_the_cold_start_ranking(
    client: TestClient, project: dict[str, Any], annotator: Login, settings_env: Path
) -> None:
    first_ids, _ = bulk_cases(project["id"], 2, settings_env)
    r1 = claim(client, annotator, project["id"]).json()
    later, _ = bulk_cases(project["id"], 2, settings_env)
    r2 = claim(client, annotator, project["id"]).json()
    assert r2["ranking_id"] != r1["ranking_id"]
    # the leased case is ranked too: if its lease is released it must have a place in the queue
    assert set(ranking_order(r2["ranking_id"])) == {*first_ids, *later}
    assert r2["case"]["id"] != r1["case"]["id"]


def test_unknown_lease_and_project(client: TestClient, annotator: Login) -> None:
    r = client.post("/api/v1/leases/nope/renew", headers=annotator.headers)
    assert r.status_code == 404 and r.json()["detail"] == "no lease with this token"
    r = client.post("/api/v1/projects/999/queue/next", headers=annotator.headers)
    assert r.status_code == 404 and r.json()["detail"] == "project 999 does not exist"
    assert client.post("/api/v1/projects/999/queue/next").status_code == 401


def test_skipped_pinned_case_also_goes_to_the_back(
    client: TestClient, project: dict[str, Any], annotator: Login, admin: Login, settings_env: Path
) -> None:
    ids, _ = bulk_cases(project["id"], 3, settings_env)
    client.patch(f"/api/v1/cases/{ids[1]}", json={"pinned": True}, headers=admin.headers)
    first = claim(client, annotator, project["id"]).json()
    assert first["case"]["id"] == ids[1]
    client.post(f"/api/v1/leases/{first['lease']['token']}/skip", json={"reason": "later"}, headers=annotator.headers)
    order = [claim(client, annotator, project["id"]).json()["case"]["id"] for _ in range(3)]
    assert order[-1] == ids[1] and sorted(order) == ids


def test_ending_a_lease_records_it_and_refuses_what_it_must(
    client: TestClient, project: dict[str, Any], annotator: Login, admin: Login, settings_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Release and skip: the audit record (with the skip's reason), another annotator's 403 that changes nothing,
    an admin's release, and a lease past its expiry that can no longer be ended (410)."""
    import datetime as dt

    from app.models import AuditEvent, Case, Lease
    from app.queue import service as queue_service

    bulk_cases(project["id"], 3, settings_env)
    first, second, third = (claim(client, annotator, project["id"]).json() for _ in range(3))
    other = make_login("carol", "annotator")
    r = client.delete(f"/api/v1/leases/{first['lease']['token']}", headers=other.headers)
    assert (r.status_code, r.json()["detail"]) == (403, "this lease belongs to another annotator")
    r = client.post(f"/api/v1/leases/{first['lease']['token']}/skip", json={"reason": "  too dark "},
                    headers=annotator.headers)
    assert r.status_code == 200 and r.json()["end_reason"] == "skipped" and r.json()["ended_at"] is not None
    r = client.delete(f"/api/v1/leases/{second['lease']['token']}", headers=admin.headers)
    assert r.status_code == 200 and (r.json()["end_reason"], r.json()["user_id"]) == ("released", annotator.user_id)

    later = dt.timedelta(minutes=get_settings().lease_minutes + 1)
    real_now = queue_service.utcnow
    monkeypatch.setattr(queue_service, "utcnow", lambda: real_now() + later)
    r = client.delete(f"/api/v1/leases/{third['lease']['token']}", headers=annotator.headers)
    assert r.status_code == 410 and r.json()["detail"].startswith("the lease expired at ")

    with db.session_scope() as session:
        events = {(e.action, e.case_id): e for e in session.scalars(select(AuditEvent))}
        leases = {lease.token: lease for lease in session.scalars(select(Lease))}
        cases = {c.id: c for c in session.scalars(select(Case))}
    skipped, released = leases[first["lease"]["token"]], leases[second["lease"]["token"]]
    assert events[("lease.skipped", skipped.case_id)].detail == {"lease_id": skipped.id, "reason": "too dark"}
    assert events[("lease.skipped", skipped.case_id)].user_id == annotator.user_id
    assert events[("lease.released", released.case_id)].detail == {"lease_id": released.id}
    assert events[("lease.released", released.case_id)].user_id == admin.user_id
    assert (skipped.skip_reason, released.skip_reason) == ("too dark", None)
    assert cases[skipped.case_id].lease_id is None and cases[released.case_id].lease_id is None
    expired = leases[third["lease"]["token"]]
    assert expired.ended_at is None and cases[expired.case_id].lease_id == expired.id  # untouched: a claim ends it
    assert ("lease.released", expired.case_id) not in events
