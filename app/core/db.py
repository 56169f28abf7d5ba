"""Engine and session handling shared by the API, the worker and the CLI."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings, get_settings

_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def make_engine(url: str, ping_idle_s: float = 0) -> Engine:
    """An engine for ``url``; PostgreSQL connections idle in the pool for more than ``ping_idle_s`` seconds are
    pinged before use (0: every reused one)."""
    if not url.startswith("sqlite"):
        _cache_long_queries()
        # LIFO: the connection back in the pool last is the one used next, so a light load keeps reusing a few warm
        # server processes instead of cycling through every connection a burst opened (a claim at one client took
        # about 15 % less time, benchmarks/queue_load.py); the rest idle and are pinged when used again.
        engine = create_engine(url, pool_size=20, max_overflow=40, pool_use_lifo=True)
        _ping_idle_connections(engine, ping_idle_s)
        return engine
    _ensure_sqlite_dir(url)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
    _serialise_sqlite_transactions(engine)
    return engine


def _ping_idle_connections(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection before use when it sat in the pool for more than ``idle_s`` seconds.

    SQLAlchemy's ``pool_pre_ping`` pings before every use: a round trip that was a quarter of a claim's time in the
    database layer. A connection back in the pool a moment ago is used as it is. What that risks: a database that
    restarted (or a network that dropped the connection) within those seconds fails the one request that draws the
    connection; SQLAlchemy then drops every pooled connection, so the requests after it connect afresh. A ping that
    fails here makes the pool replace the connection and try again (SQLAlchemy's pessimistic disconnect handling).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("idle_since", None)  # none: a connection opened for this checkout
        if since is None or time.monotonic() - since <= idle_s:  # with 0, every reused connection is pinged
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


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
    _engine = make_engine(settings.database_url, settings.db_ping_idle_s)
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


# --- the event loop's own PostgreSQL connections -------------------------------------------------

ASYNC_POOL_SIZE = 20
_async_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool[Any]] = (
    weakref.WeakKeyDictionary())
_returned_at: weakref.WeakKeyDictionary[AsyncConnection[Any], float] = weakref.WeakKeyDictionary()
# Called with each new connection of the async pools (tests trace the wire with it).
async_connect_hooks: list[Callable[[AsyncConnection[Any]], None]] = []


class LifoConnectionPool(AsyncConnectionPool[AsyncConnection[Any]]):
    """psycopg's pool, handing out the connection returned last (it has no option for it; it hands out the one
    returned first). Under a light load the same few connections then serve every request, warm in the CPU's
    caches, and the others stay idle until the pool closes them (``max_idle``), as with the ORM's pool
    (``pool_use_lifo``). Only the order changes: the deque of idle connections is rotated so that its newest
    connection comes first, where the pool takes one from."""

    async def _get_ready_connection(self, timeout: float | None) -> AsyncConnection[Any] | None:
        if self._pool:
            self._pool.rotate(1)
        return await super()._get_ready_connection(timeout)


async def async_pool() -> AsyncConnectionPool[Any]:
    """The running event loop's pool of PostgreSQL connections in autocommit.

    For the requests that are one statement and nothing else (a claim): run on the event loop, they need no worker
    thread and no ORM session (at one client a claim took 13-22 % less time than through ``get_session`` and a
    worker thread: README, "Performance"). One pool per event loop, because a connection belongs to the loop
    that opened it (a test client runs a loop of its own); ``close_async_pool`` closes it when the app stops.
    Connections back in the pool for over ``NEXTCASE_DB_PING_IDLE_S`` are pinged before use, as in ``make_engine``.
    """
    loop = asyncio.get_running_loop()
    pool = _async_pools.get(loop)
    if pool is None:
        settings = get_settings()
        _cache_long_queries()
        pool = _async_pools[loop] = LifoConnectionPool(
            _libpq_url(settings.database_url), min_size=1, max_size=ASYNC_POOL_SIZE, open=False,
            kwargs={"autocommit": True}, configure=_configure, check=_ping_if_idle(settings.db_ping_idle_s),
            name="nextcase-async")
        await pool.open()
    return pool


@asynccontextmanager
async def async_connection() -> AsyncIterator[AsyncConnection[Any]]:
    """A connection of ``async_pool``, in autocommit.

    A connection the database ended fails the statement; the pool then tests its other idle connections at once
    (as SQLAlchemy's pool drops all of them), so a database restart fails one request, not one per connection."""
    pool = await async_pool()
    try:
        async with pool.connection() as conn:
            try:
                yield conn
            finally:
                # Noted here, not in the pool's reset hook: with one, the pool returns every connection from a
                # task of its own, later and in no set order, and a light load would find none back yet.
                _returned_at[conn] = time.monotonic()
    except psycopg.OperationalError:
        await pool.check()
        raise


async def close_async_pool() -> None:
    """Close the running event loop's pool (the app's shutdown)."""
    pool = _async_pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()


def _libpq_url(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _configure(conn: AsyncConnection[Any]) -> None:
    for hook in async_connect_hooks:
        hook(conn)


def _ping_if_idle(idle_s: float) -> Callable[[AsyncConnection[Any]], Any]:
    async def check(conn: AsyncConnection[Any]) -> None:
        since = _returned_at.get(conn)
        if since is not None and time.monotonic() - since <= idle_s:
            return
        await AsyncConnectionPool.check_connection(conn)  # a failure makes the pool replace the connection
    return check
