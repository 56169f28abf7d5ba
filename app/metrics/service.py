"""What /metrics exposes: request counters kept by the API, and figures read from the database at scrape time.

Label values are route templates, methods, status codes, project ids, cycle phases and worker names: never a
token, a patient id or a case name (a path that matched no route is counted as ``<unmatched>``, because its
text could be anything a client sent).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.core import db

UNMATCHED = "<unmatched>"
# Route templates whose successful answer is a claim or a label upload (REST and the MONAI Label facade).
EVENTS: dict[tuple[str, str], str] = {
    ("POST", "/api/v1/projects/{project_id}/queue/next"): "claim",
    ("POST", "/monailabel/{project_id}/activelearning/{strategy}"): "claim",
    ("PUT", "/api/v1/cases/{case_id}/label"): "upload",
    ("PUT", "/monailabel/{project_id}/datastore/label"): "upload",
}
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    """The counters of one API process, in a registry of their own (one per app: tests build many apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("nextcase_http_requests", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("nextcase_http_request_duration_seconds", "Time to answer, by route template",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.claims = Counter("nextcase_claims", "Claims answered: claimed (a case leased) or empty (none left)",
                              ["outcome"], registry=self.registry)
        self.uploads = Counter("nextcase_label_uploads", "Label versions accepted", registry=self.registry)
        self.registry.register(DatabaseCollector())

    def observe(self, method: str, route: str | None, status: int, seconds: float) -> None:
        template = route or UNMATCHED
        self.requests.labels(method, template, str(status)).inc()
        self.latency.labels(method, template).observe(seconds)
        event = EVENTS.get((method, template))
        if event == "claim" and status < 300:
            self.claims.labels("claimed" if status == 200 else "empty").inc()
        elif event == "upload" and status < 300:
            self.uploads.inc()


class DatabaseCollector(Collector):
    """Queue depth, cycles, phase durations, scoring rate and worker heartbeats, read when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from app.cycles import service as cycles
        from app.projects import service as projects
        from app.queue import service as queue

        depth = GaugeMetricFamily("nextcase_queue_cases", "Pool cases per project and queue state",
                                  labels=["project_id", "state"])
        with db.session_scope() as session:
            for project_id in projects.project_ids(session):
                for state, count in queue.pool_counts(session, project_id).items():
                    depth.add_metric([str(project_id), state], count)
            figures = cycles.operator_figures(session)
        yield depth
        yield _family("nextcase_cycles", "Cycles per project and status", ["project_id", "status"],
                      figures["cycles"])
        yield _family("nextcase_cycle_phase_seconds", "Phase durations of each project's last finished cycle",
                      ["project_id", "phase"], figures["phase_seconds"])
        yield _family("nextcase_scoring_cases_per_second", "Cases scored per second in the worker's last score "
                      "phase", ["worker"], figures["scoring_rate"])
        yield _family("nextcase_worker_heartbeat_timestamp_seconds", "Unix time of each worker's last heartbeat",
                      ["worker"], figures["heartbeats"])


def _family(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def exposition(metrics: ApiMetrics) -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return generate_latest(metrics.registry), CONTENT_TYPE_LATEST


def get_metrics(app_state: Any) -> ApiMetrics:
    metrics: ApiMetrics | None = getattr(app_state, "metrics", None)
    if metrics is None:
        metrics = ApiMetrics()
        app_state.metrics = metrics
    return metrics
