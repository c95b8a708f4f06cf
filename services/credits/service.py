"""Credit movements and the views of balances and ledgers.

Every movement is one transaction that updates the account, writes exactly one ledger row
(unique idempotency key) and, for holds, the hold row; events go out after the commit.

Concurrency: a movement that takes credits updates the account with a conditional UPDATE
(``WHERE available >= n``) and checks the row count, so parallel holds never overdraw.
Captures, releases and expiries lock the hold row first (``SELECT … FOR UPDATE``; SQLite
transactions are already ``BEGIN IMMEDIATE``) and look the idempotency key up after taking
the lock. Lock order is always hold or code → account, so movements cannot deadlock each
other; a call that still collides on a unique key (two identical calls at once) or loses a
MariaDB deadlock is run again and then finds the recorded result.

A closed account (its user was deleted) refuses every movement: the account UPDATE of each
movement requires ``closed_at IS NULL``, so no movement can slip in after the closing commits.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Callable, Iterable, Protocol, TypeVar
from uuid import uuid4

import redis
from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from shared.db import Database, after_commit, isoformat, utcnow
from shared.errors import Conflict, NotFound, PaymentRequired, ServiceError, Unprocessable
from shared.events import EventBus
from services.credits.config import CreditsConfig
from services.credits.models import INFLOW_TYPES, CreditAccount, CreditHold, CreditLedger, RedeemCode

log = logging.getLogger(__name__)

T = TypeVar("T")

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I

# The hot paths run these statements, built once so SQLAlchemy reuses their compiled form.
_accounts, _ledger, _holds = CreditAccount.__table__, CreditLedger.__table__, CreditHold.__table__
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
INSERT_HOLD = insert(_holds)
SELECT_HOLD = select(_holds).where(_holds.c.job_id == bindparam("p_job_id"))
LOCK_HOLD = SELECT_HOLD.with_for_update()
CAPTURE_HOLD = (update(_holds).where(_holds.c.job_id == bindparam("p_job_id"))
                .values(captured=_holds.c.captured + bindparam("p_amount")))
SETTLE_HOLD = (update(_holds).where(_holds.c.job_id == bindparam("p_job_id"))
               .values(released=_holds.c.released + bindparam("p_amount"), status=bindparam("p_status"),
                       settled_at=bindparam("p_now")))
RECORDED = (select(_ledger.c.id, _ledger.c.user_id, _ledger.c.type, _ledger.c.amount, _ledger.c.held_change,
                   _ledger.c.reference)
            .where(_ledger.c.idempotency_key == bindparam("p_key")))
DEADLOCK_ERRORS = (1205, 1213)  # MySQL/MariaDB lock wait timeout, deadlock
DEADLOCK_RETRIES = 3


class GrantNotifier(Protocol):
    def credits_granted(self, user_id: int, amount: int, reason: str, key: str) -> None: ...


@dataclass(frozen=True)
class Balance:
    available: int
    held: int

    def to_dict(self) -> dict[str, int]:
        return {"available": self.available, "held": self.held}


@dataclass(frozen=True)
class HoldResult:
    job_id: str
    amount: int
    price_per_image: int
    balance: Balance
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {"jobId": self.job_id, "amount": self.amount, "pricePerImage": self.price_per_image,
                **self.balance.to_dict()}


@dataclass(frozen=True)
class ClosedAccount:
    user_id: int
    released: dict[str, int]  # job id → credits returned to available
    closed_at: datetime
    already_closed: bool


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    page: int
    page_size: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "page": self.page, "pageSize": self.page_size, "total": self.total}


@dataclass(frozen=True)
class LedgerFilter:
    entry_type: str | None = None
    date_from: date | None = None
    date_to: date | None = None


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


class CreditsService:
    def __init__(self, db: Database, events: EventBus, config: CreditsConfig, signup_bonus: int,
                 notifier: GrantNotifier | None = None) -> None:
        self.db = db
        self.events = events
        self.config = config
        self.signup_bonus = signup_bonus
        self.notifier = notifier  # told about admin grants after they commit

    # Accounts and the signup bonus

    def open_account(self, user_id: int) -> Balance:
        """The user's balance, opening the account with the signup bonus (once, by key) if missing.
        409 ACCOUNT_CLOSED for the account of a deleted user."""
        def work(session: Session) -> Balance:
            if not self._open(session, user_id):
                self._refuse_if_closed(session, user_id, status=409)
            return self._balance(session, user_id)
        return self._unit_of_work(work)

    def balance(self, user_id: int) -> Balance:
        with self.db.read() as session:
            row = session.execute(select(CreditAccount.available, CreditAccount.held)
                                  .where(CreditAccount.user_id == user_id)).one_or_none()
        return Balance(*row) if row is not None else self.open_account(user_id)

    def grant_signup_bonuses(self, user_ids: Iterable[int]) -> list[int]:
        """Give the signup bonus to each user whose ledger has no ``signup_bonus:<id>`` row,
        whatever their balance; returns the ids that received it."""
        wanted = sorted(set(user_ids))

        def work(session: Session) -> list[int]:
            keys = {f"signup_bonus:{user_id}": user_id for user_id in wanted}
            done = set(session.scalars(select(CreditLedger.idempotency_key)
                                       .where(CreditLedger.idempotency_key.in_(list(keys)))))
            closed = set(session.scalars(select(CreditAccount.user_id).where(
                CreditAccount.user_id.in_(wanted), CreditAccount.closed_at.is_not(None))))
            granted = [user_id for key, user_id in keys.items() if key not in done and user_id not in closed]
            for user_id in granted:
                if not self._open(session, user_id):
                    self._grant_bonus(session, user_id)
            return granted
        return self._unit_of_work(work) if wanted else []

    # Holds

    def price(self, workflow: str) -> int:
        price = self.config.pricing.get(workflow)
        if price is None:
            raise Unprocessable(f"There is no price for workflow {workflow!r}.", code="UNKNOWN_WORKFLOW",
                                details={"workflow": [f"Unknown workflow; known: {sorted(self.config.pricing)}."]})
        return price

    def hold(self, user_id: int, job_id: str, workflow: str, images: int, description: str = "",
             expected_cost: int | None = None) -> HoldResult:
        """Reserve price × images for a job at today's price; a replay returns the recorded hold."""
        price = self.price(workflow)
        cost = price * images

        def work(session: Session) -> HoldResult:
            existing = session.execute(SELECT_HOLD, {"p_job_id": job_id}).first()
            if existing is not None:
                return self._replayed_hold(session, existing, user_id, workflow, images, expected_cost)
            if expected_cost is not None and expected_cost != cost:
                raise Conflict("The price changed since it was shown; nothing was charged.", code="PRICE_CHANGED",
                               details={"expectedCost": expected_cost, "cost": cost, "pricePerImage": price})
            movement = dict(amount=-cost, held_change=cost, reference=job_id,
                            description=description or f"{workflow} × {images}")
            balance = self._move(session, user_id, "hold", f"hold:{job_id}", **movement)
            if balance is None and self._open(session, user_id):
                balance = self._move(session, user_id, "hold", f"hold:{job_id}", **movement)
            if balance is None:
                self._refuse_if_closed(session, user_id, status=403)
                available = self._balance(session, user_id).available
                raise PaymentRequired(f"This needs {cost} credits; you have {available}.",
                                      details={"available": available, "required": cost,
                                               "shortfall": cost - available})
            now = utcnow()
            session.execute(INSERT_HOLD, {
                "job_id": job_id, "user_id": user_id, "amount": cost, "captured": 0, "released": 0, "status": "open",
                "created_at": now, "expires_at": now + self.config.hold_ttl, "workflow": workflow, "images": images,
                "price_per_image": price})
            return HoldResult(job_id, cost, price, balance, created=True)
        return self._unit_of_work(work)

    def capture(self, job_id: str, amount: int, idempotency_key: str) -> dict[str, Any]:
        """Move ``amount`` of a job's hold from held to spent; never more than remains held."""
        def work(session: Session) -> dict[str, Any]:
            hold = self._locked_hold(session, job_id)
            recorded = self._recorded(session, idempotency_key, "capture", reference=job_id)
            if recorded is not None:
                if -recorded.held_change != amount:
                    raise Conflict("This idempotency key was used for a different capture.",
                                   code="IDEMPOTENCY_CONFLICT",
                                   details={"amount": -recorded.held_change, "requested": amount})
                return {"jobId": job_id, "captured": amount,
                        "remaining": self._held_after(session, job_id, recorded.id)}
            if hold.status != "open":
                raise Conflict("This hold is already settled.", code="HOLD_SETTLED",
                               details={"status": hold.status})
            remaining = _remaining(hold)
            if amount > remaining:
                raise Conflict(f"Only {remaining} credits remain held for this job.", code="HOLD_EXCEEDED",
                               details={"remaining": remaining, "requested": amount})
            self._must_move(session, hold.user_id, "capture", idempotency_key, amount=0, held_change=-amount,
                            reference=job_id, description=f"Captured {amount} credits for job {job_id}")
            session.execute(CAPTURE_HOLD, {"p_job_id": job_id, "p_amount": amount})
            return {"jobId": job_id, "captured": amount, "remaining": remaining - amount}
        return self._unit_of_work(work)

    def release(self, job_id: str, idempotency_key: str) -> dict[str, Any]:
        """Return whatever is still held to available and settle the hold (a no-op if settled)."""
        def work(session: Session) -> dict[str, Any]:
            hold = self._locked_hold(session, job_id)
            recorded = self._recorded(session, idempotency_key, "release", reference=job_id)
            if recorded is not None:
                return {"jobId": job_id, "released": -recorded.held_change, "remaining": 0}
            if hold.status != "open":
                return {"jobId": job_id, "released": 0, "remaining": 0}
            rest = self._settle(session, hold, idempotency_key, "settled",
                                f"Released {_remaining(hold)} unused credits of job {job_id}")
            return {"jobId": job_id, "released": rest, "remaining": 0}
        return self._unit_of_work(work)

    def expired_holds(self, now: datetime | None = None, limit: int = 500) -> list[str]:
        """Job ids of open holds past their expiry, oldest first."""
        with self.db.read() as session:
            return list(session.scalars(
                select(CreditHold.job_id).where(CreditHold.status == "open", CreditHold.expires_at <= (now or utcnow()))
                .order_by(CreditHold.expires_at).limit(limit)))

    def expire_hold(self, job_id: str, now: datetime | None = None) -> int | None:
        """Release an open hold past its expiry (key ``expire:<jobId>``); returns the credits
        released, or None when the hold is settled or not yet expired."""
        def work(session: Session) -> int | None:
            hold = self._locked_hold(session, job_id)
            if hold.status != "open" or hold.expires_at is None or hold.expires_at > (now or utcnow()):
                return None
            return self._settle(session, hold, f"expire:{job_id}", "expired",
                                f"Hold of job {job_id} expired; {_remaining(hold)} credits returned")
        return self._unit_of_work(work)

    # Closing (the user was deleted)

    def close_account(self, user_id: int) -> ClosedAccount:
        """Close a deleted user's account: return every open hold to available (ledger
        ``release`` rows keyed ``close:<jobId>``, holds marked ``closed``), then mark the account
        closed so nothing moves it again. Running it again changes nothing.

        Nothing is deleted: the account row and every ledger row stay, because the ledger is
        the financial record and outlives the user. A user without an account gets an empty,
        closed one, so a late call cannot open it with a signup bonus.
        """
        def work(session: Session) -> ClosedAccount:
            released = self._close_open_holds(session, user_id)
            account = session.execute(select(CreditAccount.closed_at).where(CreditAccount.user_id == user_id)
                                      .with_for_update()).first()
            # A hold admitted while we waited for the account's lock has committed by now; with
            # the lock held, no further hold can be admitted before the closing commits.
            released.update(self._close_open_holds(session, user_id))
            if account is not None and account.closed_at is not None:
                return ClosedAccount(user_id, released, account.closed_at, already_closed=True)
            now = utcnow()
            if account is None:
                session.execute(insert(CreditAccount).values(
                    user_id=user_id, available=0, held=0, lifetime_earned=0, lifetime_spent=0, created_at=now,
                    updated_at=now, closed_at=now))
            else:
                session.execute(update(CreditAccount).where(CreditAccount.user_id == user_id)
                                .values(closed_at=now, updated_at=now))
            return ClosedAccount(user_id, released, now, already_closed=False)
        return self._unit_of_work(work)

    def _close_open_holds(self, session: Session, user_id: int) -> dict[str, int]:
        holds = session.execute(select(_holds).where(_holds.c.user_id == user_id, _holds.c.status == "open")
                                .order_by(_holds.c.job_id).with_for_update()).all()
        return {hold.job_id: self._settle(session, hold, f"close:{hold.job_id}", "closed",
                                          f"Account closed; {_remaining(hold)} credits held for job "
                                          f"{hold.job_id} returned")
                for hold in holds}

    # Administration

    def grant(self, user_id: int, amount: int, reason: str, operator_id: int,
              idempotency_key: str | None = None) -> Balance:
        """An administrator adds credits to an existing account's available balance."""
        return self._adjust("admin_grant", user_id, amount, reason, operator_id, idempotency_key)

    def deduct(self, user_id: int, amount: int, reason: str, operator_id: int,
               idempotency_key: str | None = None) -> Balance:
        """An administrator removes credits from an account's available balance (never below 0)."""
        return self._adjust("admin_deduct", user_id, -amount, reason, operator_id, idempotency_key)

    def accounts(self, page: int, page_size: int, user_id: int | None = None) -> Page:
        with self.db.read() as session:
            query = select(CreditAccount)
            if user_id is not None:
                query = query.where(CreditAccount.user_id == user_id)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(CreditAccount.user_id)
                                   .offset((page - 1) * page_size).limit(page_size)).all()
            return Page([_account(row) for row in rows], page, page_size, total)

    def account_transactions(self, user_id: int, page: int, page_size: int, filters: LedgerFilter) -> Page:
        """Any user's ledger, for administrators; 404 when the user has no account."""
        with self.db.read() as session:
            if session.get(CreditAccount, user_id) is None:
                raise _no_account(user_id)
        return self.transactions(user_id, page, page_size, filters, with_operator=True)

    def create_redeem_code(self, amount: int, max_uses: int, operator_id: int, code: str | None = None,
                           expires_at: datetime | None = None, description: str = "") -> dict[str, Any]:
        if expires_at is not None and expires_at <= utcnow():
            raise Unprocessable("The expiry must be in the future.", details={"expiresAt": ["Must be in the future."]})
        code = normalise_code(code) if code else _generate_code()

        def work(session: Session) -> dict[str, Any]:
            if session.get(RedeemCode, code) is not None:
                raise Conflict(f"The code {code} already exists.", code="REDEEM_CODE_EXISTS")
            row = RedeemCode(code=code, amount=amount, max_uses=max_uses, uses=0, expires_at=expires_at,
                             description=description, created_by=operator_id, created_at=utcnow())
            session.add(row)
            session.flush()
            return _redeem_code(row)
        return self._unit_of_work(work)

    def redeem_codes(self, page: int, page_size: int) -> Page:
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(RedeemCode)) or 0
            rows = session.scalars(select(RedeemCode).order_by(RedeemCode.created_at.desc(), RedeemCode.code)
                                   .offset((page - 1) * page_size).limit(page_size)).all()
            return Page([_redeem_code(row) for row in rows], page, page_size, total)

    def redeem(self, user_id: int, code: str) -> dict[str, Any]:
        """Add a code's credits to the user's balance, once per user per code."""
        code = normalise_code(code)

        def work(session: Session) -> dict[str, Any]:
            row = session.execute(select(RedeemCode).where(RedeemCode.code == code)
                                  .with_for_update()).scalar_one_or_none()
            if row is None:
                raise NotFound("This code does not exist.", code="REDEEM_CODE_NOT_FOUND")
            key = f"redeem:{code}:{user_id}"
            if session.scalar(select(CreditLedger.id).where(CreditLedger.idempotency_key == key)) is not None:
                raise Conflict("You have already redeemed this code.", code="REDEEM_CODE_ALREADY_REDEEMED")
            if row.expires_at is not None and row.expires_at <= utcnow():
                raise ServiceError("This code has expired.", status=410, code="REDEEM_CODE_EXPIRED",
                                   details={"expiresAt": isoformat(row.expires_at)})
            if row.uses >= row.max_uses:
                raise Conflict("This code has been used up.", code="REDEEM_CODE_USED_UP")
            row.uses += 1
            self._open(session, user_id)
            balance = self._must_move(session, user_id, "redeem", key, amount=row.amount, held_change=0,
                                      reference=code, description=row.description or f"Redeemed code {code}")
            return {"code": code, "amount": row.amount, **balance.to_dict()}
        return self._unit_of_work(work)

    # The user's views

    def stats(self, user_id: int, now: datetime | None = None) -> dict[str, Any]:
        """Balances, lifetime totals and what the user spent since the start of this month
        in the configured time zone."""
        balance = self.balance(user_id)
        local_now = (now or datetime.now(timezone.utc)).astimezone(self.config.timezone)
        month_start = local_now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        since = month_start.astimezone(timezone.utc).replace(tzinfo=None)
        with self.db.read() as session:
            account = session.get(CreditAccount, user_id)
            rows = session.execute(
                select(CreditLedger.type, func.sum(CreditLedger.amount), func.sum(CreditLedger.held_change))
                .where(CreditLedger.user_id == user_id, CreditLedger.created_at >= since,
                       CreditLedger.type.in_(("capture", "admin_deduct")))
                .group_by(CreditLedger.type)).all()
        month_spent = sum(spent_by(kind, int(amount or 0), int(held or 0)) for kind, amount, held in rows)
        return {**balance.to_dict(), "earned": account.lifetime_earned, "spent": account.lifetime_spent,
                "spentThisMonth": month_spent, "month": local_now.strftime("%Y-%m"),
                "timezone": self.config.timezone.key}

    def transactions(self, user_id: int, page: int, page_size: int, filters: LedgerFilter,
                     with_operator: bool = False) -> Page:
        """The user's ledger, newest first, optionally of one type and within local dates."""
        query = select(CreditLedger).where(CreditLedger.user_id == user_id)
        if filters.entry_type:
            query = query.where(CreditLedger.type == filters.entry_type)
        if filters.date_from:
            query = query.where(CreditLedger.created_at >= self._utc_midnight(filters.date_from))
        if filters.date_to:
            query = query.where(CreditLedger.created_at < self._utc_midnight(filters.date_to + timedelta(days=1)))
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(CreditLedger.id.desc())
                                   .offset((page - 1) * page_size).limit(page_size)).all()
        return Page([_entry(row, with_operator) for row in rows], page, page_size, total)

    # Internals

    def _unit_of_work(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction. After a unique-key race run it once more, to replay
        the winner's result; after a MariaDB deadlock run it again, a few times."""
        replayed, deadlocks = False, 0
        while True:
            try:
                with self.db.transaction() as session:
                    return work(session)
            except IntegrityError:
                if replayed:
                    raise
                replayed = True
                log.info("credit movement raced on a unique key; replaying")
            except OperationalError as exc:
                code = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
                if code not in DEADLOCK_ERRORS or deadlocks >= DEADLOCK_RETRIES:
                    raise
                deadlocks += 1
                log.info("credit movement lost a deadlock; running it again")

    def _open(self, session: Session, user_id: int) -> bool:
        """Create the account with its signup bonus if it does not exist; True if created."""
        if session.get(CreditAccount, user_id) is not None:
            return False
        now = utcnow()
        session.execute(insert(CreditAccount).values(user_id=user_id, available=0, held=0, lifetime_earned=0,
                                                     lifetime_spent=0, created_at=now, updated_at=now))
        self._grant_bonus(session, user_id)
        return True

    def _grant_bonus(self, session: Session, user_id: int) -> None:
        self._must_move(session, user_id, "signup_bonus", f"signup_bonus:{user_id}", amount=self.signup_bonus,
                        held_change=0, description="Signup bonus")

    def _move(self, session: Session, user_id: int, entry_type: str, key: str, *, amount: int,
              held_change: int, reference: str | None = None, description: str = "",
              operator_id: int | None = None) -> Balance | None:
        """Apply one movement to the account and append its ledger row. Returns the new
        balance, or None when the account is missing or would go below zero available."""
        now = utcnow()
        moved = session.execute(MOVE, {
            "p_user_id": user_id, "p_amount": amount, "p_held_change": held_change,
            "p_earned": earned_by(entry_type, amount), "p_spent": spent_by(entry_type, amount, held_change),
            "p_now": now}).rowcount
        if moved != 1:
            return None
        balance = self._balance(session, user_id)
        session.execute(INSERT_LEDGER, {
            "user_id": user_id, "type": entry_type, "amount": amount, "held_change": held_change,
            "balance_before": balance.available - amount, "balance_after": balance.available,
            "reference": reference, "description": description[:255], "idempotency_key": key,
            "operator_id": operator_id, "created_at": now})
        self._announce(session, user_id, balance)
        return balance

    def _must_move(self, session: Session, user_id: int, entry_type: str, key: str, **movement: Any) -> Balance:
        """A movement that cannot lack funds (it adds, or only moves held credits)."""
        balance = self._move(session, user_id, entry_type, key, **movement)
        if balance is None:
            self._refuse_if_closed(session, user_id, status=409)
            raise _no_account(user_id)
        return balance

    def _refuse_if_closed(self, session: Session, user_id: int, status: int) -> None:
        """Raise ACCOUNT_CLOSED (with ``status``) when the user's account is closed."""
        closed_at = session.scalar(select(CreditAccount.closed_at).where(CreditAccount.user_id == user_id))
        if closed_at is not None:
            raise ServiceError(f"The credit account of user {user_id} is closed.", status=status,
                               code="ACCOUNT_CLOSED", details={"closedAt": isoformat(closed_at)})

    def _balance(self, session: Session, user_id: int) -> Balance:
        row = session.execute(BALANCE, {"p_user_id": user_id}).first()
        if row is None:
            raise _no_account(user_id)
        return Balance(*row)

    def _settle(self, session: Session, hold: Row, key: str, status: str, description: str) -> int:
        """Return what a hold still holds to available and close it; returns that amount."""
        rest = _remaining(hold)
        if rest > 0:
            self._must_move(session, hold.user_id, "release", key, amount=rest, held_change=-rest,
                            reference=hold.job_id, description=description)
        session.execute(SETTLE_HOLD, {"p_job_id": hold.job_id, "p_amount": rest, "p_status": status,
                                      "p_now": utcnow()})
        return rest

    def _adjust(self, entry_type: str, user_id: int, amount: int, reason: str, operator_id: int,
                idempotency_key: str | None) -> Balance:
        key = f"{entry_type}:{idempotency_key or uuid4().hex}"

        def work(session: Session) -> Balance:
            recorded = self._recorded(session, key, entry_type)
            if recorded is not None:
                if (recorded.user_id, recorded.amount) != (user_id, amount):
                    raise Conflict("This idempotency key was used for a different adjustment.",
                                   code="IDEMPOTENCY_CONFLICT")
                return self._balance(session, user_id)
            balance = self._move(session, user_id, entry_type, key, amount=amount, held_change=0,
                                 description=reason, operator_id=operator_id)
            if balance is not None:
                if entry_type == "admin_grant" and self.notifier is not None:
                    notifier = self.notifier
                    after_commit(session, lambda: notifier.credits_granted(user_id, amount, reason, key))
                return balance
            self._refuse_if_closed(session, user_id, status=409)
            available = self._balance(session, user_id).available  # 404 when there is no account
            raise Conflict(f"The account holds only {available} available credits.", code="BALANCE_TOO_LOW",
                           details={"available": available, "requested": -amount})
        return self._unit_of_work(work)

    def _announce(self, session: Session, user_id: int, balance: Balance) -> None:
        data = balance.to_dict()

        def publish() -> None:
            try:
                self.events.publish(user_id, "credits.changed", data)
            except redis.RedisError:
                # The movement is committed; a missed live notification is only cosmetic.
                log.warning("could not publish credits.changed for user %s", user_id, exc_info=True)

        after_commit(session, publish)

    def _locked_hold(self, session: Session, job_id: str) -> Row:
        hold = session.execute(LOCK_HOLD, {"p_job_id": job_id}).first()
        if hold is None:
            raise NotFound(f"No credit hold exists for job {job_id}.", code="HOLD_NOT_FOUND")
        return hold

    def _recorded(self, session: Session, key: str, entry_type: str,
                  reference: str | None = None) -> Row | None:
        entry = session.execute(RECORDED, {"p_key": key}).first()
        if entry is not None and (entry.type != entry_type or entry.reference != reference):
            raise Conflict("This idempotency key was used for a different movement.",
                           code="IDEMPOTENCY_CONFLICT")
        return entry

    def _held_after(self, session: Session, job_id: str, entry_id: int) -> int:
        """What remained held for a job right after ledger entry ``entry_id``."""
        total = session.scalar(select(func.coalesce(func.sum(CreditLedger.held_change), 0))
                               .where(CreditLedger.reference == job_id, CreditLedger.id <= entry_id))
        return int(total or 0)  # MariaDB sums to a Decimal

    def _replayed_hold(self, session: Session, hold: Row, user_id: int, workflow: str, images: int,
                       expected_cost: int | None) -> HoldResult:
        if (hold.user_id, hold.workflow, hold.images) != (user_id, workflow, images) or (
                expected_cost is not None and expected_cost != hold.amount):
            raise Conflict(f"Job {hold.job_id} already holds credits for a different request.",
                           code="IDEMPOTENCY_CONFLICT",
                           details={"workflow": hold.workflow, "images": hold.images, "amount": hold.amount})
        return HoldResult(hold.job_id, hold.amount, hold.price_per_image or hold.amount,
                          self._balance(session, user_id), created=False)

    def _utc_midnight(self, day: date) -> datetime:
        """The start of a local calendar day as naive UTC."""
        local = datetime.combine(day, time.min, tzinfo=self.config.timezone)
        return local.astimezone(timezone.utc).replace(tzinfo=None)


def _remaining(hold: Row) -> int:
    return hold.amount - hold.captured - hold.released


def normalise_code(code: str) -> str:
    return code.strip().upper()


def _generate_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"


def _no_account(user_id: int) -> NotFound:
    return NotFound(f"User {user_id} has no credit account.", code="ACCOUNT_NOT_FOUND")


def _account(row: CreditAccount) -> dict[str, Any]:
    return {"userId": row.user_id, "available": row.available, "held": row.held,
            "lifetimeEarned": row.lifetime_earned, "lifetimeSpent": row.lifetime_spent,
            "createdAt": isoformat(row.created_at), "updatedAt": isoformat(row.updated_at),
            "closedAt": isoformat(row.closed_at)}


def _redeem_code(row: RedeemCode) -> dict[str, Any]:
    return {"code": row.code, "amount": row.amount, "maxUses": row.max_uses, "uses": row.uses,
            "expiresAt": isoformat(row.expires_at), "description": row.description,
            "createdBy": row.created_by, "createdAt": isoformat(row.created_at)}


def _entry(row: CreditLedger, with_operator: bool) -> dict[str, Any]:
    entry = {"id": row.id, "type": row.type, "amount": row.amount, "heldChange": row.held_change,
             "balanceBefore": row.balance_before, "balanceAfter": row.balance_after,
             "reference": row.reference, "description": row.description,
             "createdAt": isoformat(row.created_at)}
    if with_operator:
        entry["operatorId"] = row.operator_id
    return entry
