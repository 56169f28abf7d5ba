"""Where a claim's time goes, layer by layer, in one process on PostgreSQL (no HTTP, no FastAPI).

    .venv/bin/python -m benchmarks.claim_layers                # 3,000 cases, 400 claims + releases per row

Seeds a throw-away database (as benchmarks/queue_load.py does), then prints the median time of a claim:
- through the service (``app.queue.service.claim_next`` in a fresh session, the release after it not timed), with
  the pool's ping before every use of a connection (``NEXTCASE_DB_PING_IDLE_S=0``) and with the default (a ping
  only after a second of idleness);
- the claim statement alone on a connection in autocommit (what the service adds is the rest);
- the reference's ``UPDATE … SKIP LOCKED`` in a transaction of its own (benchmarks/reference_claim.py);
and ``EXPLAIN ANALYZE`` of the claim statement and of the reference's, rolled back: the statement's time inside
PostgreSQL, and the part of it its foreign-key checks take. Rows take turns, so drifting load hits all alike.
Not a test: it measures and prints.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.core import db
from app.core.config import get_settings
from app.models import Project, User
from app.queue import repository as repo
from app.queue import service
from benchmarks.queue_load import fresh_database, seed


def _statement_params(project_id: int, user_id: int) -> dict[str, Any]:
    return {"claim_project_id": project_id, "claim_user_id": user_id, "claim_now": dt.datetime.now(dt.UTC)
            .replace(tzinfo=None), "claim_seed": 0, "claim_base": 0, "claim_arm_u": [], "claim_case_u": [],
            "claim_token": secrets.token_urlsafe(24), "claim_lease_duration": dt.timedelta(minutes=30),
            "claim_published": None}


def _service_claim(engine: Engine, project_id: int, user: User) -> Callable[[], float]:
    def run() -> float:
        with Session(engine, expire_on_commit=False) as session:
            start = time.perf_counter()
            claim = service.claim_next(session, project_id, user)
            seconds = time.perf_counter() - start
        assert claim is not None, "no case left to claim"
        with Session(engine, expire_on_commit=False) as session:
            service.end_lease(session, claim.lease.token, user, "released")
        return seconds
    return run


def _statement_claim(engine: Engine, project_id: int, user: User) -> Callable[[], float]:
    def run() -> float:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            sql, constants = service._compiled(repo.claim_statement(), conn.dialect)
            start = time.perf_counter()
            row = conn.exec_driver_sql(sql, {**constants, **_statement_params(project_id, user.id)}).one()
            seconds = time.perf_counter() - start
        with Session(engine, expire_on_commit=False) as session:
            service.end_lease(session, row.token, user, "released")
        return seconds
    return run


def _reference_claim(engine: Engine, project_id: int) -> Callable[[], float]:
    from benchmarks.reference_claim import CLAIM, RELEASE

    def run() -> float:
        start = time.perf_counter()
        with engine.begin() as conn:
            case_id = conn.scalar(CLAIM, {"project": project_id})
        seconds = time.perf_counter() - start
        assert case_id is not None, "no case left to claim"
        with engine.begin() as conn:
            conn.execute(RELEASE, {"case": case_id})
        return seconds
    return run


def _explain(url: str, sql: str, runs: int = 20) -> dict[str, float]:
    """Planning, execution and foreign-key trigger milliseconds of ``sql`` (each run rolled back): the medians over
    ``runs`` on one connection, as a pooled connection runs it (the first runs fill the connection's caches)."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    found: dict[str, list[float]] = {}
    with psycopg.connect(plain) as conn:
        for _ in range(runs):
            for name, value in _explain_once(conn, sql).items():
                found.setdefault(name, []).append(value)
    return {name: statistics.median(values) for name, values in found.items()}


def _explain_once(conn: psycopg.Connection[Any], sql: str) -> dict[str, float]:
    try:
        rows = [str(r[0]) for r in conn.execute("EXPLAIN (ANALYZE, TIMING ON) " + sql).fetchall()]
    finally:
        conn.rollback()
    found = {name: float(m.group(1)) for name in ("Planning", "Execution")
             for line in rows if (m := re.search(rf"{name} Time: ([0-9.]+) ms", line))}
    found["foreign-key checks"] = sum(float(m.group(1)) for line in rows
                                      if (m := re.search(r"Trigger for constraint fk_.*time=([0-9.]+)", line)))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server URL (a database 'nextcase_bench' is recreated on it)")
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    url = fresh_database(args.server, "nextcase_bench")
    blob_dir = Path(tempfile.mkdtemp(prefix="nextcase-bench-"))
    os.environ.update({"NEXTCASE_DATABASE_URL": url, "NEXTCASE_BLOB_DIR": str(blob_dir),
                       "NEXTCASE_DATA_DIR": str(blob_dir / "data"), "NEXTCASE_SECRET_KEY": "claim-layers-benchmark"})
    get_settings.cache_clear()
    db.configure()
    project_id, _ = seed(args.cases, 1, blob_dir)
    pinging, default = db.make_engine(url, ping_idle_s=0), db.make_engine(url, get_settings().db_ping_idle_s)
    with Session(default, expire_on_commit=False) as session:
        user = session.scalar(select(User).where(User.name == "bench000"))
        assert user is not None and session.get(Project, project_id) is not None
        session.expunge(user)
    rows = {"service claim, ping before every use": _service_claim(pinging, project_id, user),
            "service claim, ping after 1 s idle (default)": _service_claim(default, project_id, user),
            "claim statement alone": _statement_claim(default, project_id, user),
            "reference UPDATE ... SKIP LOCKED": _reference_claim(default, project_id)}
    times: dict[str, list[float]] = {name: [] for name in rows}
    rows["service claim, ping after 1 s idle (default)"]()  # publishes the cold-start ranking
    for _ in range(args.rounds):
        for name, run in rows.items():
            times[name] += [run() for _ in range(args.iterations)]
    print(f"{args.cases} cases, PostgreSQL, one process; median of {args.rounds} x {args.iterations} claims")
    for name, values in times.items():
        print(f"  {name:<46} {statistics.median(values) * 1000:7.3f} ms")

    with default.connect() as conn:
        sql, constants = service._compiled(repo.claim_statement(), conn.dialect)
    literal = psycopg.ClientCursor(psycopg.connect(make_url(url).set(drivername="postgresql")
                                                   .render_as_string(hide_password=False)))
    claim_sql = literal.mogrify(sql, {**constants, **_statement_params(project_id, user.id)})
    literal.connection.close()
    from benchmarks.reference_claim import CLAIM

    reference_sql = str(CLAIM).replace(":project", str(project_id))
    print("EXPLAIN ANALYZE, median of 20 on one connection (a custom plan each time: the service runs a cached generic"
          " one, so it does not pay the planning):")
    for name, text_sql in (("claim statement", claim_sql), ("reference UPDATE", reference_sql)):
        found = _explain(url, text_sql)
        print(f"  {name:<18} " + ", ".join(f"{k} {v:.3f} ms" for k, v in found.items()))
    for engine in (pinging, default):
        engine.dispose()
    db.dispose()


if __name__ == "__main__":
    main()
