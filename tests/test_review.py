"""Review, the review queue and several readers per case (issue 14), on SQLite and PostgreSQL.

Masks are 8x8x8 with voxel size 1 x 1 x 2 mm (x, y, z), so the agreement figures can be worked out by hand.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.cases.imaging import read_nifti
from app.core import db
from app.core.storage import get_blob_store
from app.models import AuditEvent, LabelVersion, Project, ReviewLease
from app.review import service as review
from tests.conftest import Login, make_login
from tests.factories import encode, upload_case, upload_label

SHAPE = (8, 8, 8)  # (z, y, x)
SPACING = (1.0, 1.0, 2.0)  # (x, y, z) in mm


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    return image


def _volume(seed: int) -> bytes:
    return encode(_image(np.random.default_rng(seed).integers(-100, 400, SHAPE).astype(np.int16)))


def _mask(z: slice, value: int = 1) -> np.ndarray:
    """A 2 x 2 x 2 voxel block of ``value`` at rows/columns 1-2 and the given slices."""
    mask = np.zeros(SHAPE, np.uint8)
    mask[z, 1:3, 1:3] = value
    return mask


def _project(client: TestClient, admin: Login, name: str = "review", cases: int = 1, **settings: Any) -> dict[str, Any]:
    r = client.post("/api/v1/projects", headers=admin.headers,
                    json={"name": name, "modality": "CT", "labels": ["background", "organ", "vessel"], **settings})
    assert r.status_code == 201, r.text
    project = dict(r.json())
    project["case_ids"] = [upload_case(client, admin.headers, project["id"], _volume(s), patient=f"p{s}").json()["id"]
                           for s in range(cases)]
    return project


def _claim(client: TestClient, login: Login, project_id: int) -> Any:
    return client.post(f"/api/v1/projects/{project_id}/queue/next", headers=login.headers)


def _label(client: TestClient, login: Login, case_id: int, mask: np.ndarray | None = None) -> dict[str, Any]:
    r = upload_label(client, login.headers, case_id, encode(_image(_mask(slice(1, 3)) if mask is None else mask)))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _review(client: TestClient, login: Login, label_id: int, decision: str, comment: str | None = None) -> Any:
    return client.post(f"/api/v1/labels/{label_id}/review", headers=login.headers,
                       json={"decision": decision, "comment": comment})


def _case(client: TestClient, login: Login, case_id: int) -> dict[str, Any]:
    return dict(client.get(f"/api/v1/cases/{case_id}", headers=login.headers).json())


@pytest.fixture
def reviewer(settings_env: Any) -> Login:
    return make_login("rita-reviewer", "reviewer")


def test_nobody_reviews_their_own_version_and_annotators_do_not_review(
    client: TestClient, admin: Login, annotator: Login, reviewer: Login
) -> None:
    project = _project(client, admin)
    own = _label(client, reviewer, project["case_ids"][0])  # reviewers may label too
    assert own["review_state"] == "submitted"
    r = _review(client, reviewer, own["id"], "approved")
    assert r.status_code == 403 and r.json()["detail"] == "nobody reviews their own label version"
    assert _review(client, annotator, own["id"], "approved").status_code == 403  # role
    assert client.post(f"/api/v1/projects/{project['id']}/review/next", headers=reviewer.headers).status_code == 204
    assert client.get(f"/api/v1/labels/{own['id']}", headers=admin.headers).json()["review_state"] == "submitted"
    assert _review(client, admin, own["id"], "approved").status_code == 200  # admins review too
    assert _review(client, admin, own["id"], "approved").status_code == 409  # already approved
    assert _review(client, admin, 999999, "approved").status_code == 404


def test_approve_through_the_review_queue(
    client: TestClient, admin: Login, annotator: Login, reviewer: Login
) -> None:
    project = _project(client, admin, train_on="approved")
    case_id = project["case_ids"][0]
    assert _claim(client, annotator, project["id"]).json()["case"]["id"] == case_id
    version = _label(client, annotator, case_id)
    assert _case(client, admin, case_id)["status"] == "in_review"  # train_on=approved: not labelled yet
    assert _claim(client, make_login("dora", "annotator"), project["id"]).status_code == 204  # nor handed out again

    claim = client.post(f"/api/v1/projects/{project['id']}/review/next", headers=reviewer.headers)
    assert claim.status_code == 200
    body = claim.json()
    assert (body["label"]["id"], body["case"]["id"]) == (version["id"], case_id)
    assert body["label"]["author"] == annotator.name
    mask = client.get(f"/api/v1/cases/{case_id}/label?version={body['label']['version']}", headers=reviewer.headers)
    assert mask.status_code == 200 and read_nifti(mask.content).GetSize() == (8, 8, 8)
    assert client.post(f"/api/v1/projects/{project['id']}/review/next", headers=admin.headers).status_code == 204

    r = _review(client, reviewer, version["id"], "approved", "clean borders")
    assert r.status_code == 200
    assert (r.json()["review_state"], r.json()["reviewer"], r.json()["review_comment"]) == (
        "approved", reviewer.name, "clean borders")
    assert _case(client, admin, case_id)["status"] == "labelled"
    renew = client.post(f"/api/v1/review/leases/{body['lease']['token']}/renew", headers=reviewer.headers)
    assert renew.status_code in (409, 410)  # the review ended the lease
    with db.session_scope() as session:
        lease = session.scalar(select(ReviewLease))
        assert lease is not None and lease.end_reason == "reviewed"
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "label.review")).all()
        assert [(e.user_id, e.detail["decision"]) for e in audit] == [(reviewer.user_id, "approved")]


def test_changes_requested_sends_the_case_back_first_to_its_author_with_the_comment(
    client: TestClient, admin: Login, annotator: Login, reviewer: Login
) -> None:
    project = _project(client, admin, cases=3)
    first, second, third = project["case_ids"]
    client.patch(f"/api/v1/cases/{third}", json={"pinned": True}, headers=admin.headers)
    v1 = _label(client, annotator, first)
    assert _case(client, admin, first)["status"] == "labelled"  # train_on=submitted, as before review

    r = _review(client, reviewer, v1["id"], "changes_requested", "  ")
    assert r.status_code == 422 and r.json()["field"] == "comment"
    r = _review(client, reviewer, v1["id"], "changes_requested", "the organ misses its upper slice")
    assert r.status_code == 200 and r.json()["review_state"] == "changes_requested"
    assert _case(client, admin, first)["status"] == "in_review"

    other = make_login("olga", "annotator")
    assert _claim(client, other, project["id"]).json()["case"]["id"] == third  # not the author: pinned first
    claim = _claim(client, annotator, project["id"]).json()
    assert claim["case"]["id"] == first  # before the pinned and ranked cases
    assert claim["review"]["comment"] == "the organ misses its upper slice"
    assert (claim["review"]["reviewer"], claim["review"]["label_version_id"]) == (reviewer.name, v1["id"])

    v2 = _label(client, annotator, first, _mask(slice(1, 4)))
    assert (v2["version"], v2["review_state"]) == (2, "submitted")
    assert _case(client, admin, first)["status"] == "labelled"
    nxt = _claim(client, annotator, project["id"]).json()
    assert nxt["case"]["id"] == second and nxt["review"] is None  # the returned case is done
    claimed = client.post(f"/api/v1/projects/{project['id']}/review/next", headers=reviewer.headers).json()
    assert claimed["label"]["id"] == v2["id"]  # the sent-back version is superseded
    assert _review(client, reviewer, v1["id"], "approved").status_code == 409


def test_review_leases_renew_release_and_expire(
    client: TestClient, admin: Login, annotator: Login, reviewer: Login
) -> None:
    project = _project(client, admin, cases=2)
    versions = [_label(client, annotator, cid) for cid in project["case_ids"]]
    url = f"/api/v1/projects/{project['id']}/review/next"
    held = client.post(url, headers=reviewer.headers).json()
    assert held["label"]["id"] == versions[0]["id"]  # the oldest submitted version
    token = held["lease"]["token"]
    renewed = client.post(f"/api/v1/review/leases/{token}/renew", headers=reviewer.headers)
    assert renewed.status_code == 200 and renewed.json()["expires_at"] >= held["lease"]["expires_at"][:19]
    assert client.post(f"/api/v1/review/leases/{token}/renew", headers=annotator.headers).status_code == 403
    r = _review(client, admin, versions[0]["id"], "approved")
    assert r.status_code == 409 and "leased for review by rita-reviewer" in r.json()["detail"]
    assert client.post(url, headers=admin.headers).json()["label"]["id"] == versions[1]["id"]  # no double lease

    released = client.delete(f"/api/v1/review/leases/{token}", headers=reviewer.headers)
    assert released.status_code == 200 and released.json()["end_reason"] == "released"
    again = client.post(url, headers=reviewer.headers).json()
    assert again["label"]["id"] == versions[0]["id"]
    with db.session_scope() as session:  # expire the lease without waiting for it
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        session.execute(update(ReviewLease).where(ReviewLease.token == again["lease"]["token"]).values(expires_at=past))
        session.execute(update(LabelVersion).where(LabelVersion.id == versions[0]["id"])
                        .values(review_lease_expires_at=past))
    other = make_login("rolf-reviewer", "reviewer")
    assert client.post(url, headers=other.headers).json()["label"]["id"] == versions[0]["id"]
    assert client.post(f"/api/v1/review/leases/{again['lease']['token']}/renew",
                       headers=reviewer.headers).status_code in (409, 410)
    assert client.post("/api/v1/review/leases/nosuchtoken/renew", headers=reviewer.headers).status_code == 404


def test_three_readers_agreement_and_consensus(
    client: TestClient, admin: Login, reviewer: Login
) -> None:
    project = _project(client, admin, readers_per_case=3, consensus_method="majority_vote")
    case_id = project["case_ids"][0]
    readers = [make_login(name, "annotator") for name in ("ann", "ben", "cat", "dan")]
    # ann and cat draw the same block; ben's is one slice (2 mm) further along z: half of it overlaps.
    masks = {"ann": _mask(slice(1, 3)), "ben": _mask(slice(2, 4)), "cat": _mask(slice(1, 3))}
    for login in readers[:3]:
        claim = _claim(client, login, project["id"])
        assert claim.status_code == 200 and claim.json()["case"]["id"] == case_id
        if login.name != "cat":
            assert _case(client, admin, case_id)["status"] == "unlabelled"  # still needs readers
        _label(client, login, case_id, masks[login.name])
        assert _claim(client, login, project["id"]).status_code == 204  # nobody gets it twice
    assert _claim(client, readers[3], project["id"]).status_code == 204  # the fourth does not get it
    assert _case(client, admin, case_id)["status"] == "labelled"

    agreement = client.get(f"/api/v1/cases/{case_id}/agreement", headers=reviewer.headers).json()
    assert [r["reader"] for r in agreement["readers"]] == ["ann", "ben", "cat"]
    pairs = {(p["reader_a"], p["reader_b"]): p for p in agreement["pairs"]}
    # Dice 2|A∩B|/(|A|+|B|) = 2*4/16; every surface voxel of one block is 0 or one slice (2 mm) from the other.
    assert pairs[("ann", "ben")]["dice"] == {"organ": pytest.approx(0.5), "vessel": None}
    assert pairs[("ann", "ben")]["hd95"] == {"organ": pytest.approx(2.0), "vessel": None}
    assert pairs[("ann", "cat")]["dice"]["organ"] == pytest.approx(1.0)
    assert pairs[("ann", "cat")]["hd95"]["organ"] == pytest.approx(0.0)
    assert pairs[("ben", "cat")]["dice"]["organ"] == pytest.approx(0.5)
    per_annotator = client.get(f"/api/v1/projects/{project['id']}/agreement", headers=reviewer.headers).json()
    means = {a["annotator"]: (a["cases"], a["pairs"], a["mean_dice"]["organ"], a["mean_hd95"]["organ"])
             for a in per_annotator["annotators"]}
    assert means == {"ann": (1, 2, pytest.approx(0.75), pytest.approx(1.0)),
                     "ben": (1, 2, pytest.approx(0.5), pytest.approx(2.0)),
                     "cat": (1, 2, pytest.approx(0.75), pytest.approx(1.0))}

    images = [_image(masks[name]) for name in ("ann", "ben", "cat")]
    _assert_consensus_is(client, admin, case_id, sitk.LabelVoting(images, 0))
    r = client.patch(f"/api/v1/projects/{project['id']}", json={"consensus_method": "staple"}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["consensus_method"] == "staple"
    staple = sitk.MultiLabelSTAPLEImageFilter()
    staple.SetLabelForUndecidedPixels(0)
    _assert_consensus_is(client, admin, case_id, staple.Execute(images))
    assert client.patch(f"/api/v1/projects/{project['id']}", json={"consensus_method": "mean"},
                        headers=admin.headers).status_code == 422


def _assert_consensus_is(client: TestClient, admin: Login, case_id: int, expected: sitk.Image) -> None:
    versions = client.get(f"/api/v1/cases/{case_id}/labels", headers=admin.headers).json()
    made = versions[-1]
    assert made["author"] == "consensus" and len(made["consensus_of"]) == 3
    stored = client.get(f"/api/v1/cases/{case_id}/label?version={made['version']}", headers=admin.headers)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_nifti(stored.content)),
                                  sitk.GetArrayFromImage(expected))
    with db.session_scope() as session:  # and it is what trains
        project = session.scalar(select(Project))
        assert project is not None
        pairs = review.training_labels(session, get_blob_store(), project, "pool")
        key = session.scalar(select(LabelVersion.blob_key).where(LabelVersion.id == made["id"]))
    assert [(case.id, blob) for case, blob in pairs] == [(case_id, key)]


def test_slicer_submit_label_creates_a_submitted_version_a_reviewer_approves(
    client: TestClient, admin: Login, annotator: Login, reviewer: Login
) -> None:
    project = _project(client, admin)
    base = f"/monailabel/{project['id']}"
    sample = client.post(f"{base}/activelearning/nextcase", json={"client_id": "user-xyz"},
                         headers=annotator.headers).json()
    r = client.put(f"{base}/datastore/label", params={"image": sample["id"]}, headers=annotator.headers,
                   files={"label": ("C:\\label.nii.gz", encode(_image(_mask(slice(1, 3)))))},
                   data={"params": '{"label_info": [{"name": "organ", "idx": 1}], "client_id": "user-xyz"}'})
    assert r.status_code == 200, r.text
    claim = client.post(f"/api/v1/projects/{project['id']}/review/next", headers=reviewer.headers).json()
    assert (claim["label"]["author"], claim["label"]["review_state"]) == (annotator.name, "submitted")
    assert _review(client, reviewer, claim["label"]["id"], "approved").json()["review_state"] == "approved"


def test_the_training_set_export_holds_what_trains_not_merely_the_newest_version(
    client: TestClient, admin: Login, annotator: Login, reviewer: Login
) -> None:
    project = _project(client, admin, "export", cases=3, train_on="approved")
    approved, _waiting, sent_back = project["case_ids"]
    for case_id in project["case_ids"]:
        _label(client, annotator, case_id)
    versions = {c: client.get(f"/api/v1/cases/{c}/labels", headers=admin.headers).json()[-1]["id"]
                for c in project["case_ids"]}
    assert _review(client, reviewer, versions[approved], "approved").status_code == 200
    assert _review(client, reviewer, versions[sent_back], "changes_requested", "redo the edge").status_code == 200

    r = client.get(f"/api/v1/projects/{project['id']}/export?format=msd", headers=admin.headers)
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        meta = json.loads(archive.read("dataset.json"))
    # Neither the version waiting for review nor the one sent back is in the set.
    assert [entry["label"] for entry in meta["training"]] == [f"./labelsTr/export_{approved:05d}.nii.gz"]


def test_a_sent_back_case_can_be_skipped_and_comes_back_after_everything_else(
    client: TestClient, admin: Login, annotator: Login, reviewer: Login
) -> None:
    project = _project(client, admin, "skip-returned", cases=2, train_on="approved")
    returned = _claim(client, annotator, project["id"]).json()["case"]["id"]  # the cold start order is seeded
    (other,) = set(project["case_ids"]) - {returned}
    _label(client, annotator, returned)
    version = client.get(f"/api/v1/cases/{returned}/labels", headers=admin.headers).json()[-1]["id"]
    assert _review(client, reviewer, version, "changes_requested", "too small").status_code == 200

    first = _claim(client, annotator, project["id"]).json()
    assert first["case"]["id"] == returned and first["review"] is not None
    skip = client.post(f"/api/v1/leases/{first['lease']['token']}/skip", headers=annotator.headers,
                       json={"reason": "later"})
    assert skip.status_code == 200, skip.text
    assert _claim(client, annotator, project["id"]).json()["case"]["id"] == other  # not the skipped one again
