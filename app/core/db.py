"""Engine and session handling shared by the API, the worker and the CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings, get_settings

_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def make_engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        _cache_long_queries()
        return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=40)
    _ensure_sqlite_dir(url)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
    _serialise_sqlite_transactions(engine)
    return engine


def _cache_long_queries() -> None:
    """Let psycopg keep its parse of long queries too.

    psycopg turns a query's ``%(name)s`` placeholders into ``$n`` on every execution unless the query is at most
    4 KiB with at most 50 parameters (``psycopg._queries``, an LRU cache of 128 queries). The claim statement
    (``app.queue.repository.claim_statement``) is about 15 KiB with 57: parsing it took 0.65 ms of every claim.
    """
    from psycopg import _queries

    _queries.MAX_CACHED_STATEMENT_LENGTH = max(_queries.MAX_CACHED_STATEMENT_LENGTH, 64 * 1024)
    _queries.MAX_CACHED_STATEMENT_PARAMS = max(_queries.MAX_CACHED_STATEMENT_PARAMS, 200)


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _serialise_sqlite_transactions(engine: Engine) -> None:
    """Start every SQLite transaction with BEGIN IMMEDIATE.

    SQLite has one writer at a time; a deferred transaction that reads and then writes can fail
    with SQLITE_BUSY instead of waiting. Taking the write lock up front makes each transaction
    wait its turn, which is what gives the queue its claim-once guarantee on the embedded default.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def configure(settings: Settings | None = None) -> Engine:
    """(Re)build the process-wide engine from settings; returns it."""
    global _engine, _sessionmaker
    settings = settings or get_settings()
    if _engine is not None:
        _engine.dispose()
    _engine = make_engine(settings.database_url)
    _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
    return _engine


def get_engine() -> Engine:
    return _engine if _engine is not None else configure()


def dispose() -> None:
    """Drop pooled connections (after a fork they must not be shared)."""
    if _engine is not None:
        _engine.dispose()


def new_session() -> Session:
    if _sessionmaker is None:
        configure()
    assert _sessionmaker is not None
    return _sessionmaker()


@contextmanager
def session_scope() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def get_session() -> AsyncIterator[Session]:
    """FastAPI dependency: one session per request, committed when the route succeeds, rolled back when it fails.

    Async, so that a request does not wait for a worker thread to create its session or to close one that never
    used the database: creating a session connects to nothing. Commit and close run in a worker thread only when the
    session has a transaction or changes to send (they talk to the database).
    """
    session = new_session()
    try:
        yield session
    except BaseException:
        await _finish(session, commit=False)
        raise
    await _finish(session, commit=True)


async def _finish(session: Session, *, commit: bool) -> None:
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        await anyio.to_thread.run_sync(_end, session, commit)
    else:
        session.close()


def _end(session: Session, commit: bool) -> None:
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
