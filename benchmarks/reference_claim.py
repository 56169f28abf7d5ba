"""The minimal claim a queue needs, as a reference for benchmarks/queue_load.py (not part of the service).

One FastAPI endpoint, one statement: ``UPDATE cases … WHERE id = (SELECT … FOR NO KEY UPDATE SKIP LOCKED LIMIT 1)
RETURNING id`` on the benchmark's own database, and a release that clears the lease. No authentication, no
ranking, no audit record, no lease history: what NextCase's claim costs beyond this is what those cost.

    NEXTCASE_DATABASE_URL=postgresql+psycopg://... uvicorn benchmarks.reference_claim:app --port 8766
"""

from __future__ import annotations

import os

from fastapi import FastAPI, HTTPException
from sqlalchemy import create_engine, text

# The pool as NextCase configures it (app.core.db.make_engine: last in, first out).
engine = create_engine(os.environ["NEXTCASE_DATABASE_URL"], pool_size=20, max_overflow=80, pool_use_lifo=True)
app = FastAPI()

CLAIM = text("""
UPDATE cases SET lease_expires_at = (now() AT TIME ZONE 'utc') + interval '30 minutes'
WHERE id = (
    SELECT id FROM cases
    WHERE project_id = :project AND split = 'pool' AND status = 'unlabelled' AND NOT excluded
      AND deleted_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at <= (now() AT TIME ZONE 'utc'))
    ORDER BY id LIMIT 1 FOR NO KEY UPDATE SKIP LOCKED)
RETURNING id
""")
RELEASE = text("UPDATE cases SET lease_expires_at = NULL WHERE id = :case")


@app.post("/claim/{project}")
def claim(project: int) -> dict[str, int]:
    with engine.begin() as conn:
        case_id = conn.scalar(CLAIM, {"project": project})
    if case_id is None:
        raise HTTPException(204)
    return {"case": int(case_id)}


@app.delete("/claim/{case}")
def release(case: int) -> None:
    with engine.begin() as conn:
        conn.execute(RELEASE, {"case": case})
