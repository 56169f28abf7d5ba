"""16 reviewers at once against a real HTTP server: no label version is leased twice, none is lost."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import insert

from app.core import db
from app.core.storage import BlobStore
from app.models import LabelVersion
from tests.conftest import Login, make_login
from tests.factories import bulk_cases

REVIEWERS = 16
VERSIONS = 48


def test_concurrent_reviewers_never_lease_the_same_version(
    live_server: str, admin: Login, annotator: Login, settings_env: Path
) -> None:
    r = httpx.post(f"{live_server}/api/v1/projects", headers=admin.headers,
                   json={"name": "reviews", "modality": "CT", "labels": ["background", "organ"]})
    project_id = int(r.json()["id"])
    case_ids, mask = bulk_cases(project_id, VERSIONS, settings_env)
    blob = BlobStore(settings_env).put(mask, "nii.gz")
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    with db.session_scope() as session:  # one submitted version per case, as uploads would leave them
        ids = list(session.scalars(insert(LabelVersion).returning(LabelVersion.id), [
            {"case_id": cid, "version": 1, "author_id": annotator.user_id, "sha256": blob.sha256,
             "blob_key": blob.key, "created_at": start + dt.timedelta(seconds=i), "review_state": "submitted"}
            for i, cid in enumerate(case_ids)]))
    reviewers = [make_login(f"reviewer{i:02d}", "reviewer") for i in range(REVIEWERS)]
    leased: list[tuple[str, int]] = []
    lock = threading.Lock()

    def drain(login: Login) -> None:
        with httpx.Client(base_url=live_server, headers=login.headers, timeout=60) as http:
            while True:
                r = http.post(f"/api/v1/projects/{project_id}/review/next")
                if r.status_code == 204:
                    return
                assert r.status_code == 200, r.text
                with lock:
                    leased.append((login.name, int(r.json()["label"]["id"])))

    with ThreadPoolExecutor(REVIEWERS) as pool:
        list(pool.map(drain, reviewers))
    versions = [vid for _, vid in leased]
    assert sorted(versions) == sorted(ids)  # each exactly once, none lost
    assert len({name for name, _ in leased}) > 1  # the work really was shared
