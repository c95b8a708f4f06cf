"""The ledger: the one way credits move, and the unit of work every movement runs in.

A movement updates the account and appends exactly one ledger row (unique idempotency key),
inside the caller's unit of work; ``credits.changed`` goes out after the commit.

A unit of work runs on a SQLAlchemy Core ``Connection`` (``Transaction``), not an ORM
``Session``: every movement is a handful of prepared statements, and the session's
bookkeeping (identity map, flush, its own transaction states) cost about 0.25 ms of CPU
per transaction, a fifth of a hold. The movements' own statements go further: each is
compiled once for the engine's dialect (``Prepared``) and runs on the DBAPI cursor of the
unit of work's connection, inside its transaction, skipping SQLAlchemy's per-execution work
(cache key, parameters, result metadata, events), which cost as much CPU as the driver.

Concurrency: a movement that takes credits updates the account with a conditional UPDATE
(``WHERE available >= n``) and checks the row count, so parallel holds never overdraw.
Callers lock what a movement is about (a hold, a redeem code) before it, so the lock order is
always hold or code → account and movements cannot deadlock each other; a call that still
collides on a unique key (two identical calls at once) or loses a MariaDB deadlock is run
again and then finds the recorded result.

A closed account (its user was deleted) refuses every movement: the account UPDATE of each
movement requires ``closed_at IS NULL``, so no movement can slip in after the closing commits.
"""
from __future__ import annotations

import logging
from collections import namedtuple
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import redis
from sqlalchemy import (Connection, Dialect, Executable, Result, Row, ScalarResult, bindparam, insert, select,
                        update)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from shared.db import Database, is_disconnect, isoformat, utcnow
from shared.errors import Conflict, NotFound, ServiceError
from shared.events import EventBus, announce_credits_low
from services.credits.models import INFLOW_TYPES, CreditAccount, CreditLedger, refuse_ledger_rewrite

log = logging.getLogger(__name__)

T = TypeVar("T")

# The hot paths run these statements, built once so SQLAlchemy reuses their compiled form.
_accounts, _ledger = CreditAccount.__table__, CreditLedger.__table__
MOVE = (update(_accounts)
        .where(_accounts.c.user_id == bindparam("p_user_id"), _accounts.c.closed_at.is_(None),
               _accounts.c.available + bindparam("p_amount") >= 0)
        .values(available=_accounts.c.available + bindparam("p_amount"),
                held=_accounts.c.held + bindparam("p_held_change"),
                lifetime_earned=_accounts.c.lifetime_earned + bindparam("p_earned"),
                lifetime_spent=_accounts.c.lifetime_spent + bindparam("p_spent"),
                updated_at=bindparam("p_now")))
BALANCE = select(_accounts.c.available, _accounts.c.held).where(_accounts.c.user_id == bindparam("p_user_id"))
INSERT_LEDGER = insert(_ledger)
# One ledger row whose balances come from the account row the MOVE just updated, answering the
# new balance: for a movement whose caller did not read the balance under lock, one statement
# instead of a SELECT and an INSERT (INSERT … SELECT … RETURNING: MariaDB 10.5+, SQLite 3.35+).
_ROW_COLUMNS = ("user_id", "type", "amount", "held_change", "balance_before", "balance_after", "reference",
                "description", "idempotency_key", "operator_id", "created_at")
INSERT_LEDGER_READING_BALANCE = (
    insert(_ledger).from_select(_ROW_COLUMNS, select(
        _accounts.c.user_id, bindparam("p_type", type_=_ledger.c.type.type),
        bindparam("p_amount", type_=_ledger.c.amount.type),
        bindparam("p_held_change", type_=_ledger.c.held_change.type),
        _accounts.c.available - bindparam("p_amount", type_=_ledger.c.amount.type), _accounts.c.available,
        bindparam("p_reference", type_=_ledger.c.reference.type),
        bindparam("p_description", type_=_ledger.c.description.type),
        bindparam("p_key", type_=_ledger.c.idempotency_key.type),
        bindparam("p_operator_id", type_=_ledger.c.operator_id.type),
        bindparam("p_now", type_=_ledger.c.created_at.type))
        .where(_accounts.c.user_id == bindparam("p_user_id")))
    .returning(_ledger.c.balance_after,
               select(_accounts.c.held).where(_accounts.c.user_id == bindparam("p_user_id")).scalar_subquery()))
RECORDED = (select(_ledger.c.id, _ledger.c.user_id, _ledger.c.type, _ledger.c.amount, _ledger.c.held_change,
                   _ledger.c.reference)
            .where(_ledger.c.idempotency_key == bindparam("p_key")))
DEADLOCK_ERRORS = (1205, 1213)  # MySQL/MariaDB lock wait timeout, deadlock
DEADLOCK_RETRIES = 3


@dataclass(frozen=True)
class Movement:
    """One ledger row to append: ``amount`` changes available, ``held_change`` held."""
    entry_type: str
    key: str
    amount: int
    held_change: int
    reference: str | None = None
    description: str = ""
    operator_id: int | None = None


@dataclass(frozen=True)
class Balance:
    available: int
    held: int

    def to_dict(self) -> dict[str, int]:
        return {"available": self.available, "held": self.held}


def earned_by(entry_type: str, amount: int) -> int:
    """What a ledger row adds to lifetime earned."""
    return amount if entry_type in INFLOW_TYPES else 0


def spent_by(entry_type: str, amount: int, held_change: int) -> int:
    """What a ledger row adds to lifetime spent: captured credits and admin deductions."""
    if entry_type == "capture":
        return -held_change
    if entry_type == "admin_deduct":
        return -amount
    return 0


class Prepared:
    """A statement compiled once for one dialect, run on a DBAPI cursor: its SQL, its
    parameters in the driver's style (PyMySQL's ``%(name)s``, SQLite's ``?``), each with its
    type's bind processor or the literal compiled into it, and, when it answers rows, their
    names and the types' result processors (SQLite stores datetimes as text). Inserts are
    compiled for the columns they are given (``column_keys``): they must be given every
    column but the key, as no column default applies."""

    __slots__ = ("sql", "named", "parameters", "row", "results")

    def __init__(self, statement: Executable, dialect: Dialect, column_keys: Sequence[str] | None = None) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        refuse_ledger_rewrite(self.sql)
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        self.named = not compiled.positional
        self.parameters = [(name, binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                            binds[name].required, binds[name].value)
                           for name in (binds if self.named else compiled.positiontup)]
        columns = list(statement.exported_columns)  # a SELECT's, or an INSERT's RETURNING
        self.row = namedtuple("Row", [column.key or f"column_{index}" for index, column in enumerate(columns)],
                              rename=True) if columns else None
        processors = [column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns]
        self.results = processors if any(processors) else None

    def bind(self, values: dict[str, Any]) -> tuple | dict[str, Any]:
        bound = ((name, (values[name] if required else literal) if processor is None
                  else processor(values[name] if required else literal))
                 for name, processor, required, literal in self.parameters)
        return dict(bound) if self.named else tuple(value for _name, value in bound)

    def make_row(self, values: Sequence[Any]) -> tuple:
        if self.results is not None:
            values = [value if process is None else process(value) for process, value in zip(self.results, values)]
        return self.row._make(values)


class Statements:
    """The movements' statements of one engine, each compiled on its first use (``Prepared``)."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._prepared: dict[tuple[Executable, tuple[str, ...] | None], Prepared] = {}

    def __getitem__(self, key: tuple[Executable, tuple[str, ...] | None]) -> Prepared:
        prepared = self._prepared.get(key)
        if prepared is None:
            prepared = self._prepared[key] = Prepared(key[0], self.dialect, key[1])
        return prepared


class Transaction:
    """One unit of work: its Core connection inside a database transaction, whether it runs
    again after a unique-key race (``replaying``), and what to do once it has committed.

    ``write``, ``first`` and ``one`` run a module-level statement (``Statements``) on the
    connection's DBAPI cursor; ``execute`` and the rest go through SQLAlchemy. A driver error
    on the cursor is raised as SQLAlchemy's (``IntegrityError``, ``OperationalError`` …), and a
    lost connection is invalidated first, as SQLAlchemy does, so ``unit_of_work`` treats both
    paths alike."""

    __slots__ = ("connection", "replaying", "committed", "statements", "_cursor")

    def __init__(self, connection: Connection, replaying: bool, statements: Statements) -> None:
        self.connection = connection
        self.replaying = replaying
        self.committed: list[Callable[[], None]] = []
        self.statements = statements
        self._cursor: Any = None

    def write(self, statement: Executable, values: dict[str, Any] | list[dict[str, Any]]) -> int:
        """Run an INSERT or UPDATE (one row of values, or several: one batch); its row count."""
        many = isinstance(values, list)
        prepared = self.statements[statement, tuple(values[0] if many else values) if statement.is_insert
                                   else None]
        cursor = self._run(prepared, [prepared.bind(row) for row in values] if many else prepared.bind(values), many)
        return cursor.rowcount

    def first(self, statement: Executable, values: dict[str, Any]) -> tuple | None:
        """The first row a SELECT (or an INSERT … RETURNING) answers, by column name; None without one."""
        prepared = self.statements[statement, None]
        rows = self._run(prepared, prepared.bind(values), False).fetchall()  # all: SQLite's statement ends
        return prepared.make_row(rows[0]) if rows else None

    def one(self, statement: Executable, values: dict[str, Any]) -> tuple:
        row = self.first(statement, values)
        if row is None:
            raise LookupError(f"no row from {self.statements[statement, None].sql!r}")
        return row

    def _run(self, prepared: Prepared, parameters: Any, many: bool) -> Any:
        if self._cursor is None:
            self._cursor = self.connection.connection.driver_connection.cursor()
        try:
            if many:
                self._cursor.executemany(prepared.sql, parameters)
            else:
                self._cursor.execute(prepared.sql, parameters)
        except self.connection.dialect.loaded_dbapi.Error as exc:
            raise self._wrapped(exc, prepared.sql, parameters) from exc
        return self._cursor

    def _wrapped(self, exc: Exception, sql: str, parameters: Any) -> DBAPIError:
        dialect = self.connection.dialect
        lost = dialect.is_disconnect(exc, self.connection.connection.dbapi_connection, self._cursor)
        if lost:
            self.connection.invalidate(exc)
        return DBAPIError.instance(sql, parameters, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost,
                                   dialect=dialect)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def execute(self, statement: Executable, parameters: Any = None) -> Result:
        return self.connection.execute(statement, parameters)

    def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        return self.connection.scalar(statement, parameters)

    def scalars(self, statement: Executable, parameters: Any = None) -> ScalarResult:
        return self.connection.scalars(statement, parameters)

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this unit of work has committed (never if it rolls back)."""
        self.committed.append(callback)


def replaying(tx: Transaction) -> bool:
    """Whether this unit of work runs again after its idempotency key was found taken: a
    movement that skips looking its key up when it cannot be a repeat looks it up then
    (see ``CreditsService``)."""
    return tx.replaying


def account_not_found(user_id: int) -> NotFound:
    return NotFound(f"User {user_id} has no credit account.", code="ACCOUNT_NOT_FOUND")


class Ledger:
    def __init__(self, db: Database, events: EventBus, signup_bonus: int, low_threshold: int = 0) -> None:
        self.db = db
        self.events = events
        self.signup_bonus = signup_bonus
        self.low_threshold = low_threshold  # a movement taking available below it announces credits.low
        self.statements = Statements(db.engine.dialect)

    def unit_of_work(self, work: Callable[[Transaction], T]) -> T:
        """Run ``work`` in one transaction. After a unique-key race run it once more, to replay
        the winner's result (``replaying(tx)`` is then true, so the work looks its key up
        first); after a MariaDB deadlock run it again, a few times; after a lost
        connection (pooled connections are not pinged first) run it once more on a fresh one.
        Every movement has its idempotency key, so a commit that did land before the
        connection broke is found and replayed, never applied twice."""
        replayed, deadlocks, reconnected = False, 0, False
        while True:
            try:
                with self.db.engine.begin() as connection:
                    tx = Transaction(connection, replayed, self.statements)
                    try:
                        result = work(tx)
                    finally:
                        tx.close()
                break
            except IntegrityError:
                if replayed:
                    raise
                replayed = True
                log.info("credit movement raced on a unique key; replaying")
            except DBAPIError as exc:
                if is_disconnect(exc) and not reconnected:
                    reconnected = True
                    log.warning("the database connection was lost; running the credit movement again")
                    continue
                if not isinstance(exc, OperationalError):
                    raise
                code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
                if code not in DEADLOCK_ERRORS or deadlocks >= DEADLOCK_RETRIES:
                    raise
                deadlocks += 1
                log.info("credit movement lost a deadlock; running it again")
        for callback in tx.committed:
            callback()
        return result

    def open_if_missing(self, tx: Transaction, user_id: int, signup_bonus: bool = True) -> bool:
        """Create the account with its signup bonus if it does not exist; True if created.

        Without the bonus (a service account, whose budget an administrator grants) the
        ``signup_bonus`` row is still written, for 0 credits: it records that the account
        had its opening, so no later sweep grants one."""
        if tx.first(BALANCE, {"p_user_id": user_id}) is not None:
            return False
        now = utcnow()
        tx.execute(insert(CreditAccount).values(user_id=user_id, available=0, held=0, lifetime_earned=0,
                                                lifetime_spent=0, created_at=now, updated_at=now))
        self.grant_bonus(tx, user_id, self.signup_bonus if signup_bonus else 0)
        return True

    def grant_bonus(self, tx: Transaction, user_id: int, amount: int | None = None) -> None:
        amount = self.signup_bonus if amount is None else amount
        self.must_move(tx, user_id, "signup_bonus", f"signup_bonus:{user_id}", amount=amount,
                       held_change=0, description="Signup bonus" if amount else "Opened without a signup bonus")

    def move(self, tx: Transaction, user_id: int, entry_type: str, key: str, *, amount: int,
             held_change: int, reference: str | None = None, description: str = "",
             operator_id: int | None = None, locked: Balance | None = None) -> Balance | None:
        """Apply one movement to the account and append its ledger row. Returns the new
        balance, or None when the account is missing or would go below zero available."""
        return self.move_all(tx, user_id, [Movement(entry_type, key, amount, held_change, reference,
                                                         description, operator_id)], locked)

    def move_all(self, tx: Transaction, user_id: int, movements: list[Movement],
                 locked: Balance | None = None) -> Balance | None:
        """Apply ``movements`` in turn: one account UPDATE for their sum and one INSERT of their
        ledger rows, which chain one after the other. ``locked`` is the account's balance when the
        caller read it under a row lock in this transaction (``SELECT … FOR UPDATE``): the new
        balance then follows from it without reading the account again; without it, a single
        movement's row reads the balance as it is inserted. Returns the new
        balance, or None when the account is missing or would go below zero available."""
        amount = sum(movement.amount for movement in movements)
        held_change = sum(movement.held_change for movement in movements)
        now = utcnow()
        moved = tx.write(MOVE, {
            "p_user_id": user_id, "p_amount": amount, "p_held_change": held_change,
            "p_earned": sum(earned_by(m.entry_type, m.amount) for m in movements),
            "p_spent": sum(spent_by(m.entry_type, m.amount, m.held_change) for m in movements),
            "p_now": now})
        if moved != 1:
            return None
        if locked is None and len(movements) == 1:
            movement = movements[0]
            balance = Balance(*tx.one(INSERT_LEDGER_READING_BALANCE, {
                "p_user_id": user_id, "p_type": movement.entry_type, "p_amount": movement.amount,
                "p_held_change": movement.held_change, "p_reference": movement.reference,
                "p_description": movement.description[:255], "p_key": movement.key,
                "p_operator_id": movement.operator_id, "p_now": now}))
            self._announce(tx, user_id, balance, balance.available - amount)
            return balance
        balance = (Balance(locked.available + amount, locked.held + held_change) if locked is not None
                   else self.balance(tx, user_id))
        before = balance.available - amount
        rows = []
        for movement in movements:
            rows.append({"user_id": user_id, "type": movement.entry_type, "amount": movement.amount,
                         "held_change": movement.held_change, "balance_before": before,
                         "balance_after": before + movement.amount, "reference": movement.reference,
                         "description": movement.description[:255], "idempotency_key": movement.key,
                         "operator_id": movement.operator_id, "created_at": now})
            before += movement.amount
        tx.write(INSERT_LEDGER, rows[0] if len(rows) == 1 else rows)
        self._announce(tx, user_id, balance, balance.available - amount)
        return balance

    def must_move(self, tx: Transaction, user_id: int, entry_type: str, key: str, **movement: Any) -> Balance:
        """A movement that cannot lack funds (it adds, or only moves held credits)."""
        locked = movement.pop("locked", None)
        return self.must_move_all(tx, user_id, [Movement(entry_type, key, **movement)], locked)

    def must_move_all(self, tx: Transaction, user_id: int, movements: list[Movement],
                      locked: Balance | None = None) -> Balance:
        """Movements that cannot lack funds; 409 ACCOUNT_CLOSED or 404 instead of None."""
        balance = self.move_all(tx, user_id, movements, locked)
        if balance is None:
            self.refuse_if_closed(tx, user_id, status=409)
            raise account_not_found(user_id)
        return balance

    def refuse_if_closed(self, tx: Transaction, user_id: int, status: int) -> None:
        """Raise ACCOUNT_CLOSED (with ``status``) when the user's account is closed."""
        closed_at = tx.scalar(select(CreditAccount.closed_at).where(CreditAccount.user_id == user_id))
        if closed_at is not None:
            raise ServiceError(f"The credit account of user {user_id} is closed.", status=status,
                               code="ACCOUNT_CLOSED", details={"closedAt": isoformat(closed_at)})

    def balance(self, tx: Transaction, user_id: int) -> Balance:
        """The account's balance in this transaction; 404 when there is no account."""
        row = tx.first(BALANCE, {"p_user_id": user_id})
        if row is None:
            raise account_not_found(user_id)
        return Balance(*row)

    def recorded(self, tx: Transaction, key: str, entry_type: str, reference: str | None = None) -> Row | None:
        """The ledger row of ``key`` if it was recorded; IDEMPOTENCY_CONFLICT when the key was
        used for another kind of movement or another reference."""
        entry = tx.first(RECORDED, {"p_key": key})
        if entry is not None and (entry.type != entry_type or entry.reference != reference):
            raise Conflict("This idempotency key was used for a different movement.",
                           code="IDEMPOTENCY_CONFLICT")
        return entry

    def _announce(self, tx: Transaction, user_id: int, balance: Balance, available_before: int) -> None:
        data = balance.to_dict()
        crossed_low = balance.available < self.low_threshold <= available_before

        def publish() -> None:
            try:
                self.events.publish(user_id, "credits.changed", data)
                if crossed_low:
                    announce_credits_low(self.events.redis, user_id, balance.available, self.low_threshold)
            except redis.RedisError as exc:
                # The movement is committed; a missed notification is not worth failing it for.
                log.warning("could not publish credits.changed for user %s: %s", user_id, exc)

        tx.after_commit(publish)
