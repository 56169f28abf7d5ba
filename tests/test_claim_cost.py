"""What a claim costs the database: round trips with a cached token, and no reading of an annotator's history.

Round trips are counted at the wire: libpq's trace of every pooled connection (``PGconn.trace``) records each
ReadyForQuery, the end of one exchange with the server, whatever sent it (SQLAlchemy's statements, the pool's
ping, the BEGIN and COMMIT that psycopg sends itself). SQLite has no wire: there the statements are counted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql
from sqlalchemy import Engine, create_engine, event, insert, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from app.core import db
from app.core.config import get_settings
from app.models import AuditEvent, Case, Lease, Project, RankingEntry, utcnow
from app.queue import repository as repo
from tests.conftest import Login, make_login
from tests.factories import bulk_cases, create_project

# SQLite runs the claim as a transaction of several statements (it serialises writers anyway): lock the project,
# read the ranking, check for cases added since, pick the case, then the lease, case, project and audit writes and
# the response's reads. A bound, so that a claim that starts reading per tier or per past lease fails.
SQLITE_STATEMENTS = 14


@dataclass
class Traffic:
    statements: list[str] = field(default_factory=list)  # what SQLAlchemy sent
    trace: Path | None = None  # PostgreSQL: libpq's trace of every connection
    start: int = 0

    def round_trips(self) -> list[str]:
        """The exchanges on the wire since ``start``: one ReadyForQuery each; the message that started each."""
        assert self.trace is not None
        lines = self.trace.read_text().splitlines()[self.start:]
        sent = [line.split("\t", 2)[-1][:60] for line in lines
                if "\tF\t" in line and ("\tQuery\t" in line or line.rstrip().endswith("Sync"))]
        done = sum("\tB\t" in line and "ReadyForQuery" in line for line in lines)
        assert done == len(sent), lines
        return sent


@contextmanager
def wire(engine: Engine, tmp_path: Path, client: TestClient) -> Iterator[Traffic]:
    """Trace every connection the engine and the app's event loop pool (``db.async_pool``, where a claim runs) open
    from now on (both pools are emptied first), and every statement SQLAlchemy sends."""
    traffic = Traffic()

    def on_execute(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        traffic.statements.append(" ".join(statement.split())[:80])

    event.listen(engine, "before_cursor_execute", on_execute)
    if engine.dialect.name != "postgresql":
        yield traffic
        event.remove(engine, "before_cursor_execute", on_execute)
        return
    traffic.trace = tmp_path / "libpq-trace.txt"
    with traffic.trace.open("w") as out:
        def on_connect(dbapi_conn: Any, *_: Any) -> None:
            dbapi_conn.pgconn.trace(out.fileno())

        event.listen(engine, "connect", on_connect)
        db.async_connect_hooks.append(on_connect)
        engine.dispose()
        assert client.portal is not None
        client.portal.call(db.close_async_pool)
        try:
            yield traffic
        finally:
            event.remove(engine, "connect", on_connect)
            event.remove(engine, "before_cursor_execute", on_execute)
            db.async_connect_hooks.remove(on_connect)
            engine.dispose()  # stop tracing before the file closes
            client.portal.call(db.close_async_pool)


def mark(traffic: Traffic) -> None:
    """Count from here on."""
    traffic.statements.clear()
    if traffic.trace is not None:
        traffic.start = len(traffic.trace.read_text().splitlines())


@pytest.fixture
def cached_tokens(monkeypatch: pytest.MonkeyPatch, settings_env: Path) -> None:
    monkeypatch.setenv("NEXTCASE_TOKEN_CACHE_S", "60")  # warm for the whole test, however slow the machine
    monkeypatch.setenv("NEXTCASE_DB_PING_IDLE_S", "60")  # a pooled connection is used again without a ping
    get_settings.cache_clear()
    db.configure()


def claim(client: TestClient, login: Login, project_id: int) -> Any:
    r = client.post(f"/api/v1/projects/{project_id}/queue/next", headers=login.headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_claim_with_a_cached_token_is_at_most_4_round_trips(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path, cached_tokens: None, tmp_path: Path
) -> None:
    project = create_project(client, admin.headers, "cost")["id"]
    bulk_cases(project, 20, settings_env)
    engine = db.get_engine()
    with wire(engine, tmp_path, client) as traffic:
        for _ in range(3):  # the first publishes the cold-start ranking; the token is then cached
            claim(client, annotator, project)
        mark(traffic)
        got = claim(client, annotator, project)
        statements = list(traffic.statements)
        round_trips = traffic.round_trips() if traffic.trace is not None else None
    # All of it was written: the lease (how it was served), the case pointing at it, the audit record, the count.
    with db.session_scope() as session:
        lease = session.scalar(select(Lease).where(Lease.token == got["lease"]["token"]))
        assert lease is not None and lease.case_id == got["case"]["id"] and lease.user_id == annotator.user_id
        assert (lease.arm, lease.claim_seq, lease.ranking_id) == ("cold_start", 4, got["ranking_id"])
        assert lease.expires_at == dt.datetime.fromisoformat(got["lease"]["expires_at"]) > lease.created_at
        case = session.get(Case, lease.case_id)
        assert case is not None and (case.lease_id, case.lease_expires_at) == (lease.id, lease.expires_at)
        event_ = session.scalar(select(AuditEvent).where(AuditEvent.action == "lease.claim",
                                                         AuditEvent.case_id == case.id)
                                .order_by(AuditEvent.id.desc()).limit(1))
        assert event_ is not None and (event_.user_id, event_.project_id, event_.detail) == (
            annotator.user_id, project, {"lease_id": lease.id})
        stored = session.get(Project, project)
        assert stored is not None and stored.claim_count == 4
        entry = session.get(RankingEntry, (got["ranking_id"], case.id))
        assert entry is not None and (got["rank"], got["score"]) == (entry.rank, entry.score)
    if engine.dialect.name == "postgresql":
        assert round_trips is not None and len(round_trips) <= 4, round_trips
        # What it is today: the claim statement, in autocommit, on the event loop's own connection (one back in the
        # pool within NEXTCASE_DB_PING_IDLE_S is used without a ping; past it, the ping is one round trip more), and
        # nothing through the ORM session.
        assert len(round_trips) == 1 and statements == [], (round_trips, statements)
    else:
        assert len(statements) <= SQLITE_STATEMENTS, statements


def _end_idle_connections(url: str) -> int:
    """What a database restart does to a pool: the server ends every idle connection to this test's database."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.connect() as conn:
        ended = conn.scalar(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                                 "datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle'"))
    engine.dispose()
    return int(ended or 0)


@pytest.mark.parametrize("idle_s", [0.0, 0.3])
def test_a_pooled_connection_the_database_ended_is_replaced_before_use(
    client: TestClient, admin: Login, database_url: str, monkeypatch: pytest.MonkeyPatch, idle_s: float
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server that could end a pooled connection")
    monkeypatch.setenv("NEXTCASE_DB_PING_IDLE_S", str(idle_s))
    get_settings.cache_clear()
    db.configure()
    project = create_project(client, admin.headers, "restarted")["id"]  # the pool now holds a used connection
    assert _end_idle_connections(database_url) >= 1
    time.sleep(2 * idle_s)  # idle past the bound: never shorter, however loaded the machine
    for _ in range(3):
        r = client.get(f"/api/v1/projects/{project}", headers=admin.headers)
        assert r.status_code == 200, r.text


def test_within_the_bound_an_ended_connection_fails_one_request_and_the_pool_is_renewed(
    client: TestClient, admin: Login, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The price of not pinging a connection used a moment ago (README, "Deployment"): one request fails."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server that could end a pooled connection")
    monkeypatch.setenv("NEXTCASE_DB_PING_IDLE_S", "60")
    get_settings.cache_clear()
    db.configure()
    project = create_project(client, admin.headers, "restarted")["id"]
    assert _end_idle_connections(database_url) >= 1
    with pytest.raises(OperationalError, match="terminating connection"):
        client.get(f"/api/v1/projects/{project}", headers=admin.headers)
    for _ in range(3):  # SQLAlchemy dropped every connection the pool held: the next requests connect afresh
        r = client.get(f"/api/v1/projects/{project}", headers=admin.headers)
        assert r.status_code == 200, r.text


def _claim_pool_bound(client: TestClient, monkeypatch: pytest.MonkeyPatch, idle_s: float) -> None:
    monkeypatch.setenv("NEXTCASE_DB_PING_IDLE_S", str(idle_s))
    get_settings.cache_clear()
    db.configure()
    assert client.portal is not None
    client.portal.call(db.close_async_pool)  # the event loop's pool is made anew, with this bound


@pytest.mark.parametrize("idle_s", [0.0, 0.3])
def test_a_claim_connection_the_database_ended_is_replaced_before_use(
    client: TestClient, admin: Login, annotator: Login, database_url: str, settings_env: Path,
    monkeypatch: pytest.MonkeyPatch, idle_s: float
) -> None:
    """Claims and lease ends run on the event loop's own pool (``db.async_pool``): it pings a connection idle past
    NEXTCASE_DB_PING_IDLE_S and replaces one the database ended, as the ORM's pool does."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server that could end a pooled connection")
    _claim_pool_bound(client, monkeypatch, idle_s)
    project = create_project(client, admin.headers, "restarted")["id"]
    bulk_cases(project, 6, settings_env)
    first = claim(client, annotator, project)  # the loop's pool now holds a used connection
    assert _end_idle_connections(database_url) >= 1
    time.sleep(2 * idle_s)  # idle past the bound: never shorter, however loaded the machine
    r = client.delete(f"/api/v1/leases/{first['lease']['token']}", headers=annotator.headers)
    assert r.status_code == 200, r.text
    assert len({claim(client, annotator, project)["case"]["id"] for _ in range(3)}) == 3


def test_within_the_bound_an_ended_claim_connection_fails_one_claim_and_is_replaced(
    client: TestClient, admin: Login, annotator: Login, database_url: str, settings_env: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no server that could end a pooled connection")
    _claim_pool_bound(client, monkeypatch, 60)
    project = create_project(client, admin.headers, "restarted")["id"]
    bulk_cases(project, 6, settings_env)
    held = claim(client, annotator, project)["case"]["id"]
    assert client.portal is not None
    assert client.portal.call(_use_connections, 3) == 3  # the loop's pool holds 3 connections used a moment ago
    assert _end_idle_connections(database_url) >= 3
    with pytest.raises(psycopg.OperationalError, match="terminating connection"):
        client.post(f"/api/v1/projects/{project}/queue/next", headers=annotator.headers)
    # Nothing was claimed by the failed one, and only that one failed: the pool tested its other connections then.
    assert len({held} | {claim(client, annotator, project)["case"]["id"] for _ in range(3)}) == 4


def test_the_claim_pool_hands_out_the_connection_returned_last(client: TestClient, database_url: str) -> None:
    """After a burst, a light load keeps to one warm connection (psycopg's pool alone would cycle through all)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite claims run through the ORM's pool")
    assert client.portal is not None
    returned, next_used = client.portal.call(_reuse_after_burst)
    assert next_used == returned[-1], (returned, next_used)


async def _reuse_after_burst() -> tuple[list[int], int]:
    """Backend pids of 3 connections in the order they went back to the pool, and of the next one handed out."""
    returned: list[int] = []
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(3):  # held at once, so three connections
            conn = await stack.enter_async_context(db.async_connection())
            await conn.execute("SELECT 1")
            stack.callback(returned.append, conn.info.backend_pid)  # runs just before this connection goes back
    async with db.async_connection() as conn:
        return returned, conn.info.backend_pid


async def _use_connections(n: int) -> int:
    """Check out n connections of the event loop's pool at once, use each, give them back."""
    pool = await db.async_pool()
    async with contextlib.AsyncExitStack() as stack:
        conns = [await stack.enter_async_context(pool.connection()) for _ in range(n)]
        for conn in conns:
            await conn.execute("SELECT 1")
        return len({id(conn) for conn in conns})


def _history(project_id: int, user_id: int, case_ids: list[int], skipped: list[int]) -> dict[int, dt.datetime]:
    """A long lease history for the user: 3,000 released leases over every case and 300 skips of ``skipped``
    (each skipped many times); returns when each of those was last skipped."""
    now = utcnow() - dt.timedelta(days=30)
    rows, last_skip = [], {}
    for i in range(3300):
        reason = "skipped" if i % 11 == 0 else "released"
        case_id = skipped[i % len(skipped)] if reason == "skipped" else case_ids[i % len(case_ids)]
        start = now + dt.timedelta(minutes=i)
        rows.append({"token": secrets.token_urlsafe(24), "case_id": case_id, "user_id": user_id,
                     "created_at": start, "expires_at": start + dt.timedelta(hours=1),
                     "ended_at": start + dt.timedelta(seconds=30), "end_reason": reason})
        if reason == "skipped":
            last_skip[case_id] = start + dt.timedelta(seconds=30)
    with db.session_scope() as session:
        session.execute(insert(Lease), rows)
    return last_skip


def test_a_claim_does_not_read_the_annotators_lease_history(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path, cached_tokens: None, tmp_path: Path
) -> None:
    """3,300 past leases of the annotator: the claim still hands out the right cases, sends as many statements as
    for a newcomer, and on PostgreSQL reads leases only through the skip index (and the expired lease by its id)."""
    project = create_project(client, admin.headers, "history")["id"]
    ids, _ = bulk_cases(project, 12, settings_env)
    newcomer = make_login("newcomer", "annotator")
    first = claim(client, newcomer, project)  # publishes the cold-start ranking
    client.delete(f"/api/v1/leases/{first['lease']['token']}", headers=newcomer.headers)
    with db.session_scope() as session:
        order = list(session.scalars(select(RankingEntry.case_id).where(RankingEntry.ranking_id == first["ranking_id"])
                                     .order_by(RankingEntry.rank)))
    skipped = order[:8]  # the top of the ranking: a claim that ignored the skips would hand these out first
    last_skip = _history(project, annotator.user_id, ids, skipped)
    engine = db.get_engine()

    with wire(engine, tmp_path, client) as traffic:
        # Warm: both tokens cached, the statement prepared. They hold the ranking's first case and first unskipped one.
        held = {claim(client, newcomer, project)["case"]["id"], claim(client, annotator, project)["case"]["id"]}
        mark(traffic)
        newcomer_claim = claim(client, newcomer, project)
        newcomer_cost = (list(traffic.statements), traffic.round_trips() if traffic.trace else [])
        mark(traffic)
        annotator_claim = claim(client, annotator, project)
        annotator_cost = (list(traffic.statements), traffic.round_trips() if traffic.trace else [])
    assert [len(c) for c in annotator_cost] == [len(c) for c in newcomer_cost], (annotator_cost, newcomer_cost)

    # The annotator got the first unskipped cases of the ranking (the newcomer, who skipped nothing, the top ones)...
    fresh = [c for c in order if c not in skipped]
    assert held == {order[0], fresh[0]}
    assert newcomer_claim["case"]["id"] == order[1]
    assert annotator_claim["case"]["id"] == fresh[1]
    held |= {order[1], fresh[1]}
    # ... and once the unskipped ones are gone, their skips least recently skipped first, whatever their rank.
    rest = [claim(client, annotator, project)["case"]["id"] for _ in range(len(fresh) - 2)]
    assert set(rest) == set(fresh[2:])
    expected = sorted((c for c in skipped if c not in held), key=lambda c: last_skip[c])
    got = []
    for _ in expected:
        r = client.post(f"/api/v1/projects/{project}/queue/next", headers=annotator.headers)
        if r.status_code == 204:
            break
        got.append(r.json()["case"]["id"])
    assert got == expected

    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE leases")  # what autovacuum does after the inserts: the plan as in service
        plan = _explain_claim(engine, project, annotator.user_id)
        reads = [line.strip() for line in plan if "Scan" in line and " on leases" in line]
        assert reads, plan
        allowed = ("using ix_leases_user_skipped on leases", "using pk_leases on leases")
        assert all(any(a in line for a in allowed) for line in reads), "\n".join(plan)


def _explain_claim(engine: Engine, project_id: int, user_id: int) -> list[str]:
    """EXPLAIN ANALYZE of the claim statement for this user (rolled back), with the plan a claim runs in service: a
    prepared statement's generic plan (psycopg prepares a statement once a connection has run it a few times, and
    PostgreSQL then plans it for any parameter values)."""
    compiled = repo.claim_statement().compile(dialect=postgresql.psycopg.dialect(paramstyle="numeric_dollar"))
    values = {"claim_project_id": project_id, "claim_user_id": user_id, "claim_now": utcnow(), "claim_seed": 0,
              "claim_base": 0, "claim_arm_u": [], "claim_case_u": [], "claim_token": secrets.token_urlsafe(24),
              "claim_lease_duration": dt.timedelta(minutes=30), "claim_published": None}
    params = compiled.construct_params(values)
    params["claim_now"] = utcnow().replace(tzinfo=None)  # what UTCDateTime sends
    args = sql.SQL(", ").join(sql.Literal(params[name]) for name in compiled.positiontup or ())
    own = create_engine(engine.url, poolclass=NullPool)  # a connection of its own: the PREPARE dies with it
    try:
        with own.connect() as conn:
            conn.exec_driver_sql(f"PREPARE claim_plan AS {compiled.string}")
            conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_generic_plan")
            execute = sql.SQL("EXPLAIN (ANALYZE) EXECUTE claim_plan({})").format(args)
            plan = [str(line) for line in conn.exec_driver_sql(execute.as_string(conn.connection.driver_connection))
                    .scalars()]
            conn.rollback()
    finally:
        own.dispose()
    return plan


def test_the_claim_statement_runs_a_tier_only_when_the_ones_before_it_found_nothing(
    client: TestClient, admin: Login, annotator: Login, settings_env: Path
) -> None:
    """COALESCE stops at the first tier with an open case: a claim from the top of the ranking never runs the
    control, unranked, skipped or sent-back-and-skipped tiers (nor locks a case in them)."""
    if db.get_engine().dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks; its claim runs the same tiers one after another in one statement")
    project = create_project(client, admin.headers, "lazy")["id"]
    bulk_cases(project, 6, settings_env)
    claim(client, annotator, project)
    plan = _explain_claim(db.get_engine(), project, annotator.user_id)
    pick = plan[next(i for i, line in enumerate(plan) if "CTE pick" in line):
                next(i for i, line in enumerate(plan) if "CTE granted" in line)]
    limits = [line for line in pick if line.strip().startswith("->  Limit")]
    # returned, pinned, control, ranked, unranked, skipped, returned-and-skipped: the first four run, the rest do not
    # (the control tier's Limit runs and stops at once: this claim is not a control claim).
    assert len(limits) == len(repo.CLAIM_TIERS), plan
    ran = ["never executed" not in line for line in limits]
    assert ran == [True, True, True, True, False, False, False], "\n".join(plan)
