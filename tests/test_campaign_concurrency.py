"""Many annotators at once with a control arm: still no case handed out twice, none lost, no claim number twice.

Sizes as in tests/test_queue_concurrency.py: PostgreSQL 32 clients / 500 cases, SQLite 8 clients / 100 cases.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import select

from app.core import db
from app.models import Case, Lease
from app.queue.service import publish_ranking
from tests.conftest import Login, make_login
from tests.factories import bulk_cases
from tests.test_queue_concurrency import make_project, size_for


def test_control_arm_claims_never_hand_a_case_out_twice(
    database_url: str, live_server: str, admin: Login, settings_env: Path
) -> None:
    n_cases, n_clients = size_for(database_url)
    project_id = make_project(admin, live_server)
    ids, _ = bulk_cases(project_id, n_cases, settings_env)
    with db.session_scope() as session:
        publish_ranking(session, project_id, [(cid, float(cid)) for cid in ids], kind="model", strategy="test")
    r = httpx.patch(f"{live_server}/api/v1/projects/{project_id}", headers=admin.headers,
                    json={"control_fraction": 0.5, "control_seed": 11})
    assert r.status_code == 200, r.text
    logins = [make_login(f"annotator{i:02d}", "annotator") for i in range(n_clients)]
    lock, claimed = threading.Lock(), []

    def drain(login: Login) -> None:
        with httpx.Client(base_url=live_server, headers=login.headers, timeout=60) as http:
            while (r := http.post(f"/api/v1/projects/{project_id}/queue/next")).status_code == 200:
                with lock:
                    claimed.append(r.json()["case"]["id"])
            assert r.status_code == 204, r.text

    with ThreadPoolExecutor(n_clients) as pool:
        list(pool.map(drain, logins))
    assert sorted(claimed) == ids  # each case exactly once, none lost
    with db.session_scope() as session:
        rows = session.execute(select(Lease.claim_seq, Lease.arm).join(Case, Case.id == Lease.case_id)
                               .where(Case.project_id == project_id)).all()
    assert sorted(n for n, _ in rows) == list(range(1, n_cases + 1))  # one number per claim, no gaps
    arms = Counter(arm for _, arm in rows)
    assert set(arms) == {"ranked", "control"} and arms["control"] > n_cases // 4
