"""The minimal claim a queue needs, as a reference for benchmarks/queue_load.py (not part of the service).

One FastAPI endpoint, one statement: ``UPDATE cases … WHERE id = (SELECT … FOR NO KEY UPDATE SKIP LOCKED LIMIT 1)
RETURNING id`` on the benchmark's own database, and a release that clears the lease. No authentication, no
ranking, no audit record, no lease history: what NextCase's claim costs beyond this is what those cost.
``/claim/{project}/numbered`` adds the one thing of those that makes a project's claims take turns: a gap-free
claim number (a counter row per project, in the claim's transaction).

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
# Gap-free claim numbers, the least way: a counter row per project (a table of the reference's own), updated in
# the claim's transaction. Its row lock makes a project's claims take turns until each commits, as NextCase's claim
# lock does (the control arm's draws follow the claim number: numbers go out one at a time and without gaps).
COUNT = text("INSERT INTO reference_claim_numbers AS c (project, n) VALUES (:project, 1) "
             "ON CONFLICT (project) DO UPDATE SET n = c.n + 1 RETURNING n")
with engine.begin() as setup:
    setup.execute(text("CREATE TABLE IF NOT EXISTS reference_claim_numbers (project integer PRIMARY KEY, n integer)"))


@app.post("/claim/{project}")
def claim(project: int) -> dict[str, int]:
    with engine.begin() as conn:
        case_id = conn.scalar(CLAIM, {"project": project})
    if case_id is None:
        raise HTTPException(204)
    return {"case": int(case_id)}


@app.post("/claim/{project}/numbered")
def claim_numbered(project: int) -> dict[str, int]:
    with engine.begin() as conn:
        number = conn.scalar(COUNT, {"project": project})
        case_id = conn.scalar(CLAIM, {"project": project})
    if case_id is None or number is None:
        raise HTTPException(204)
    return {"case": int(case_id), "number": int(number)}


@app.delete("/claim/{case}")
def release(case: int) -> None:
    with engine.begin() as conn:
        conn.execute(RELEASE, {"case": case})
