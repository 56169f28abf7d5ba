"""GET /metrics: Prometheus text format, for the metrics token (NEXTCASE_METRICS_TOKEN) or an admin's token."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from app.auth.deps import authenticated_user, bearer_token
from app.auth.service import require_role
from app.core.config import get_settings
from app.core.errors import COMMON_PROBLEMS, problem_responses
from app.metrics.service import exposition, get_metrics

router = APIRouter(tags=["ops"], responses=problem_responses(*COMMON_PROBLEMS))


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Request counts and latency per route template, claims and uploads, queue depth per project, cycle phase
    durations, scoring rate per worker and worker heartbeats.

    Scrape with `Authorization: Bearer $NEXTCASE_METRICS_TOKEN` (a token that reads this page and nothing
    else), or with an admin's token when that variable is not set."""
    expected = get_settings().metrics_token.get_secret_value()
    token = bearer_token(request)
    if not (expected and hmac.compare_digest(token.encode(), expected.encode())):
        require_role(authenticated_user(request), "admin")
    body, content_type = exposition(get_metrics(request.app.state))
    return Response(body, media_type=content_type)
