"""/metrics: Prometheus text that prometheus-client parses, with no token, patient id or case name in a label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.core import db
from app.cycles.service import record_worker_heartbeat
from tests.conftest import Login
from tests.factories import bulk_cases, create_project, upload_label


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_claims_uploads_routes_and_read_the_database(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    project = create_project(client, admin.headers, "metrics")
    pid = str(project["id"])
    _, mask = bulk_cases(project["id"], 3, settings_env)
    claim = client.post(f"/api/v1/projects/{pid}/queue/next", headers=annotator.headers)
    assert claim.status_code == 200
    token, case_id = claim.json()["lease"]["token"], claim.json()["case"]["id"]
    assert upload_label(client, annotator.headers, case_id, mask).status_code == 201
    client.post(f"/api/v1/leases/{token}/renew", headers=annotator.headers)  # 4xx: the lease ended
    client.get("/no/such/path/HOSP-0001")
    with db.session_scope() as session:
        record_worker_heartbeat(session, "celery@gpu-node-1")

    r = client.get("/metrics", headers=admin.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    assert _value(samples, "nextcase_claims_total", outcome="claimed") == 1
    assert _value(samples, "nextcase_label_uploads_total") == 1
    assert _value(samples, "nextcase_http_requests_total", method="POST",
                  route="/api/v1/projects/{project_id}/queue/next", status="200") == 1
    assert _value(samples, "nextcase_http_request_duration_seconds_count", method="PUT",
                  route="/api/v1/cases/{case_id}/label") == 1
    assert _value(samples, "nextcase_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert _value(samples, "nextcase_queue_cases", project_id=pid, state="labelled") == 1
    assert _value(samples, "nextcase_queue_cases", project_id=pid, state="open") == 2
    assert _value(samples, "nextcase_worker_heartbeat_timestamp_seconds", worker="celery@gpu-node-1") > 1.7e9

    label_values = {v for (_, labels) in samples for _, v in labels}
    for secret in (admin.token, annotator.token, token, "HOSP-0001"):
        assert not any(secret in value for value in label_values)
    assert not any("/leases/" in value and "{token}" not in value for value in label_values)


def test_metrics_need_an_admin_or_the_metrics_token(
    client: TestClient, annotator: Login, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.core.config import get_settings

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=annotator.headers).status_code == 403
    monkeypatch.setenv("NEXTCASE_METRICS_TOKEN", "scrape-secret-0123456789")
    get_settings.cache_clear()
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret-0123456789"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
