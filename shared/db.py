"""Database engine and unit-of-work session scope.

SQLite (the embedded default) runs in WAL mode and every transaction starts with
``BEGIN IMMEDIATE``, so concurrent writers from several processes queue on the
database lock instead of failing half-way. MySQL/MariaDB runs at READ COMMITTED.

Pooled connections are not pinged before each use (a round trip per transaction): they
are recycled well within the server's idle timeout, and a connection that died anyway
(the server restarted) fails its statement with ``connection_invalidated`` set, which
makes the pool drop every connection it holds. ``is_disconnect`` tells such an error; the
request fails with 503 ``DATABASE_RECONNECTED`` and the next one gets a fresh connection
(credits runs its unit of work again instead, see ``services/credits/ledger.py``).

A writer waits for SQLite's lock in Python, not in SQLite's own busy handler: that one
sleeps inside the C library, which under the gateway's gevent worker would stall every
greenlet of the process (all its sockets and requests) for as long as another process
writes. ``time.sleep`` between attempts is cooperative there (gevent patches it), and a
plain sleep elsewhere. Other statements keep a short busy timeout (WAL readers rarely wait).

A connection goes back to the pool with one ``ROLLBACK`` at most, not two. SQLAlchemy's own
reset on return rolls back every connection a ``Session`` returns, even one whose transaction
the session has just committed or rolled back (a round trip each on MariaDB: a ``read()``
paid two). The pool's reset is ours instead (``_track_transactions``): it rolls back unless
the connection's last transaction ended in a commit or rollback that succeeded.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator, Mapping

from sqlalchemy import DateTime, MetaData, create_engine, event
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shared.config import ConfigError, env_int

# A statement waits at most this long inside SQLite for a lock; a writer waits up to
# SQLITE_LOCK_WAIT_SECONDS for the database lock, polling from Python.
SQLITE_BUSY_MS = 50
SQLITE_LOCK_WAIT_SECONDS = 30.0
SQLITE_LOCK_POLL_MAX_SECONDS = 0.025

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Well below MariaDB's default wait_timeout (8 hours) and common proxies' idle limits.
POOL_RECYCLE_SECONDS = 600
# The largest id a signed 64-bit column holds: a larger one in a path or query cannot exist
# (and would overflow the driver).
MAX_ID = 2**63 - 1

# Naive UTC timestamps with microseconds on every backend.
UTCDateTime = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    """Current time as naive UTC, the form every table stores."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def isoformat(value: datetime | None) -> str | None:
    """Render a stored naive-UTC timestamp as ISO 8601 with an explicit Z."""
    if value is None:
        return None
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def pool_limits(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """Connections one engine keeps (``DB_POOL_SIZE``) and may open beyond them at a peak
    (``DB_MAX_OVERFLOW``). The process table gives each kind of process its own small figures
    (``deploy/processes.py``: a render worker 2 + 2); without them, 10 + 20."""
    env = os.environ if env is None else env
    size, overflow = env_int(env, "DB_POOL_SIZE", 10), env_int(env, "DB_MAX_OVERFLOW", 20)
    if size < 1 or overflow < 0:
        raise ConfigError(f"DB_POOL_SIZE must be at least 1 and DB_MAX_OVERFLOW at least 0, got {size} and {overflow}")
    return size, overflow


def make_engine(url: str, **kwargs) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False},
                               pool_reset_on_return=None, **kwargs)
        _track_transactions(engine)  # first: its "begin" listener runs before the one that begins
        _configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        if "charset" not in parsed.query:
            parsed = parsed.update_query_dict({"charset": "utf8mb4"})
        if "poolclass" not in kwargs:
            size, overflow = pool_limits()
            kwargs.setdefault("pool_size", size)
            kwargs.setdefault("max_overflow", overflow)
        engine = create_engine(parsed, pool_recycle=POOL_RECYCLE_SECONDS, isolation_level="READ COMMITTED",
                               pool_reset_on_return=None, **kwargs)
    else:
        engine = create_engine(url, pool_recycle=POOL_RECYCLE_SECONDS, pool_reset_on_return=None, **kwargs)
    _track_transactions(engine)
    return engine


# On a pooled connection's record: True when its last transaction ended in a commit or rollback
# (and nothing began since); False or absent: it may be open.
_ENDED = "transaction_ended"


def _track_transactions(engine: Engine) -> None:
    """Replace the pool's reset on return (``pool_reset_on_return=None``) by one that rolls back
    only a connection that may be inside a transaction. A ``Connection``'s commit or rollback
    marks its record ended just before the driver call; a new transaction, or an error on the
    connection (``handle_error``: a failed ``COMMIT`` or ``ROLLBACK`` included), marks it open
    again. A connection checked out and returned without a transaction of ours is rolled back
    as before (and invalidated when that fails)."""

    def mark(connection, ended: bool) -> None:
        if not connection.invalidated and not connection.closed:
            connection.connection.info[_ENDED] = ended

    event.listen(engine, "begin", lambda connection: mark(connection, False))
    event.listen(engine, "commit", lambda connection: mark(connection, True))
    event.listen(engine, "rollback", lambda connection: mark(connection, True))

    @event.listens_for(engine, "handle_error")
    def _on_error(context) -> None:
        if context.connection is not None:
            mark(context.connection, False)

    @event.listens_for(engine, "reset")
    def _on_reset(dbapi_connection, record, state) -> None:
        ended = record is not None and record.info.pop(_ENDED, False)
        if not (ended or state.transaction_was_reset):
            dbapi_connection.rollback()


def is_disconnect(exc: BaseException) -> bool:
    """Whether a database error means the connection was lost (the pool has been emptied)."""
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):
        # Readers (Database.read) take no write lock; WAL lets them run beside a writer.
        if connection.get_execution_options().get("read_only", False):
            connection.exec_driver_sql("BEGIN")
        else:
            _begin_immediate(connection.connection.driver_connection)


def _begin_immediate(sqlite_connection) -> None:
    """``BEGIN IMMEDIATE``, waiting for another writer's lock with cooperative sleeps."""
    deadline = time.monotonic() + SQLITE_LOCK_WAIT_SECONDS
    pause = 0.001
    sqlite_connection.execute("PRAGMA busy_timeout=0")
    try:
        while True:
            try:
                sqlite_connection.execute("BEGIN IMMEDIATE")
                return
            except sqlite_connection.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, SQLITE_LOCK_POLL_MAX_SECONDS)
    finally:
        sqlite_connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")


class Database:
    """One engine and its session factory. ``transaction()`` is the unit of work."""

    def __init__(self, url: str, **engine_kwargs) -> None:
        self.url = url
        self.engine = make_engine(url, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = self.engine.execution_options(read_only=True)
        self._read_sessions = sessionmaker(self._read_engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Commit once on success, roll back on any error, then run after-commit callbacks."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
        for callback in session.info.pop("after_commit", []):
            callback()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for queries only: never commits, and on SQLite takes no write lock."""
        session = self._read_sessions()
        try:
            yield session
        finally:
            session.close()  # ends the transaction; loaded objects stay readable

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """``read()`` without the ORM: a Core connection for statements built once, on a hot path
        where a session's own work (its creation, its transaction's bookkeeping, its close) would
        cost more CPU than the query. ``engine.begin()`` is its counterpart for a write."""
        with self._read_engine.connect() as connection:
            yield connection

    def ping(self) -> None:
        """Raise unless the database answers a trivial query (a readiness probe)."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` only once the session's transaction has committed."""
    session.info.setdefault("after_commit", []).append(callback)
