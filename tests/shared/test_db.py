import subprocess
import sys
import threading
import uuid

import pytest
from sqlalchemy import Integer, String, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.config import PROJECT_ROOT
from shared.db import Database, after_commit, isoformat, new_metadata, utcnow


class Base(DeclarativeBase):
    metadata = new_metadata()


class Counter(Base):
    __tablename__ = "shared_test_counter"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'test.db'}")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def test_after_commit_callbacks_run_only_once_committed(db):
    ran = []
    with db.transaction() as session:
        session.add(Counter(name="a", value=1))
        after_commit(session, lambda: ran.append("sent"))
        assert ran == []
    assert ran == ["sent"]


def test_an_error_rolls_back_and_skips_callbacks(db):
    ran = []
    with pytest.raises(RuntimeError):
        with db.transaction() as session:
            session.add(Counter(name="b", value=1))
            after_commit(session, lambda: ran.append("sent"))
            raise RuntimeError("boom")
    assert ran == []
    with db.transaction() as session:
        assert session.get(Counter, "b") is None


def test_sqlite_runs_in_wal_mode(db):
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_concurrent_read_modify_write_transactions_do_not_lose_updates(db):
    """BEGIN IMMEDIATE serialises writers, so increments from many threads all land."""
    with db.transaction() as session:
        session.add(Counter(name="c", value=0))

    def increment():
        for _ in range(10):
            with db.transaction() as session:
                row = session.scalars(select(Counter).where(Counter.name == "c")).one()
                row.value += 1

    threads = [threading.Thread(target=increment) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with db.transaction() as session:
        assert session.execute(text("SELECT value FROM shared_test_counter WHERE name='c'")).scalar() == 50


def test_timestamps_render_as_utc_iso():
    assert isoformat(None) is None
    assert isoformat(utcnow()).endswith("Z")


def test_readers_do_not_wait_for_a_writer(db):
    with db.transaction() as session:
        session.add(Counter(name="r", value=7))
    with db.transaction() as writer:
        writer.add(Counter(name="w", value=1))
        writer.flush()
        with db.read() as reader:  # would block for busy_timeout if it took the write lock
            assert reader.get(Counter, "r").value == 7
            assert reader.get(Counter, "w") is None


def _kill_connections(database_url: str, connection_ids: list[int]) -> None:
    """End server connections from another client, as a server restart or an idle cut-off would."""
    import pymysql
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    admin = pymysql.connect(host=url.host, port=url.port or 3306, user=url.username, password=url.password or "")
    with admin.cursor() as cursor:
        for connection_id in connection_ids:
            cursor.execute(f"KILL {int(connection_id)}")
    admin.close()


def test_a_lost_pooled_connection_fails_once_then_is_replaced(database_url, db_backend):
    """Pooled connections are not pinged before use: a dead one fails its statement, is
    recognised as a disconnect, and the pool starts afresh."""
    if db_backend != "mariadb":
        pytest.skip("only a server connection can be lost")
    from sqlalchemy.exc import DBAPIError

    from shared.db import is_disconnect

    database = Database(database_url, pool_size=1, max_overflow=0)
    try:
        with database.read() as session:
            connection_id = session.scalar(text("SELECT CONNECTION_ID()"))
        _kill_connections(database_url, [connection_id])
        with pytest.raises(DBAPIError) as failure:
            with database.read() as session:
                session.scalar(text("SELECT 1"))
        assert is_disconnect(failure.value)
        with database.read() as session:
            assert session.scalar(text("SELECT CONNECTION_ID()")) != connection_id
    finally:
        database.dispose()


GEVENT_WRITER = """
from gevent import monkey; monkey.patch_all()
import sqlite3, sys
import gevent
from sqlalchemy import text
from shared.db import Database

path = sys.argv[1]
db = Database(f"sqlite:///{path}")
with db.transaction() as session:
    session.execute(text("CREATE TABLE t (n INTEGER)"))
other_writer = sqlite3.connect(path, isolation_level=None)
other_writer.execute("BEGIN IMMEDIATE")  # another process holding the write lock

def write():
    with db.transaction() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))

ticks = []
writer = gevent.spawn(write)
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(20)])
gevent.sleep(0.3)
waited_cooperatively = bool(ticks) and not writer.ready()
other_writer.execute("COMMIT")
writer.get(timeout=10)
ticker.join()
with db.read() as session:
    rows = session.execute(text("SELECT count(*) FROM t")).scalar()
print(waited_cooperatively, rows)
"""


def test_under_gevent_a_writer_waiting_for_the_lock_lets_other_greenlets_run(tmp_path):
    """The gateway runs under gevent: a write waiting for SQLite's lock must not stall the
    process's other greenlets (sockets, requests), as SQLite's own busy handler would."""
    result = subprocess.run([sys.executable, "-c", GEVENT_WRITER, str(tmp_path / "gevent.db")],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "1"]


def _in_transaction(database: Database) -> bool:
    """Whether the pool's one connection is inside a transaction, asked of the connection itself."""
    raw = database.engine.raw_connection()  # the same connection: the pool holds one
    try:
        if database.dialect == "sqlite":
            return raw.driver_connection.in_transaction
        cursor = raw.cursor()
        cursor.execute("SELECT @@in_transaction")
        return bool(cursor.fetchone()[0])
    finally:
        raw.rollback()  # this check's own statement (it began nothing of ours)
        raw.close()


def _scenarios(name: str):
    """Ways a unit of work ends, each returning its connection to the pool."""
    def read_only(db):
        with db.read() as session:
            session.get(Counter, name)

    def written_in_a_read(db):  # a read that wrote anyway: nothing it did may stay
        with db.read() as session:
            session.add(Counter(name=name, value=1))
            session.flush()

    def failed_transaction(db):
        with pytest.raises(RuntimeError):
            with db.transaction() as session:
                session.add(Counter(name=name, value=1))
                session.flush()
                raise RuntimeError("boom")

    def plain_connection(db):  # a Connection closed without committing what it wrote
        with db.engine.connect() as connection:
            connection.execute(Counter.__table__.insert().values(name=name, value=1))

    def driver_connection(db):  # checked out from the pool and used without SQLAlchemy's transactions
        raw = db.engine.raw_connection()
        cursor = raw.cursor()
        cursor.execute("BEGIN")
        cursor.execute("INSERT INTO shared_test_counter (name, value) VALUES ('%s', 1)" % name)
        raw.close()

    def committed_then_read(db):
        with db.transaction() as session:
            session.add(Counter(name=name + "-kept", value=1))
        with db.read() as session:
            session.get(Counter, name + "-kept")

    return [read_only, written_in_a_read, failed_transaction, plain_connection, driver_connection,
            committed_then_read]


@pytest.mark.parametrize("scenario", range(6))
def test_a_connection_goes_back_to_the_pool_outside_any_transaction(database_url, scenario):
    """The pool's reset on return is ours (one ROLLBACK at most, not two): whatever a unit of work
    did, the connection it returns holds no transaction, no lock and no uncommitted row."""
    database = Database(database_url, pool_size=1, max_overflow=0)
    try:
        Base.metadata.create_all(database.engine)
        name = f"pool-{uuid.uuid4().hex[:12]}"
        _scenarios(name)[scenario](database)
        assert not _in_transaction(database)
        with database.read() as session:
            assert session.get(Counter, name) is None
    finally:
        database.dispose()


def test_a_read_and_a_transaction_cost_one_rollback_or_commit_each(database_url, db_backend):
    """On MariaDB every ROLLBACK is a round trip: the session's own ends a read, and the pool adds
    none after it (nor after a commit)."""
    if db_backend != "mariadb":
        pytest.skip("the server's statement counters are MariaDB's")
    database = Database(database_url, pool_size=1, max_overflow=0)

    def counters() -> dict[str, int]:
        with database.engine.connect() as connection:
            rows = connection.exec_driver_sql(
                "SHOW SESSION STATUS WHERE Variable_name IN ('Com_rollback', 'Com_commit')").all()
        return {name: int(value) for name, value in rows}

    try:
        Base.metadata.create_all(database.engine)
        before = counters()
        for _ in range(3):
            with database.read() as session:
                session.get(Counter, "anything")
        for _ in range(2):
            with database.transaction() as session:
                session.get(Counter, "anything")
        after = counters()
        # + 1: the ROLLBACK that ended counters()'s own connection
        assert (after["Com_rollback"] - before["Com_rollback"], after["Com_commit"] - before["Com_commit"]) == (4, 2)
    finally:
        database.dispose()
