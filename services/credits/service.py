"""Credit movements. Each movement is one transaction writing the ledger row, the account
and the hold together; each carries a unique idempotency key so a retry changes nothing twice.

Concurrency: a hold decrements ``available`` with a conditional UPDATE (``WHERE available >=
amount``) and checks the row count, so parallel holds can never overdraw an account. Captures
and releases lock the hold row (``SELECT … FOR UPDATE``; SQLite transactions are already
``BEGIN IMMEDIATE``) and look the idempotency key up *after* taking the lock. A concurrent
identical call that still collides on a unique key is retried once and then finds the
recorded result.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, TypeVar
from uuid import uuid4

import redis
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, after_commit, isoformat, utcnow
from shared.errors import Conflict, NotFound, PaymentRequired
from shared.events import EventBus
from services.credits.models import CreditAccount, CreditHold, CreditLedger

log = logging.getLogger(__name__)

T = TypeVar("T")


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
    balance: Balance
    created: bool

    def to_dict(self) -> dict[str, Any]:
        return {"jobId": self.job_id, "amount": self.amount, **self.balance.to_dict()}


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    page: int
    page_size: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "page": self.page, "pageSize": self.page_size, "total": self.total}


class CreditsService:
    def __init__(self, db: Database, events: EventBus, signup_bonus: int,
                 hold_lifetime: timedelta) -> None:
        self.db = db
        self.events = events
        self.signup_bonus = signup_bonus
        self.hold_lifetime = hold_lifetime

    def open_account(self, user_id: int) -> Balance:
        """The user's balance, opening the account with the signup bonus on first call."""
        def work(session: Session) -> Balance:
            return _balance(self._ensure_account(session, user_id))
        return self._unit_of_work(work)

    def hold(self, user_id: int, job_id: str, amount: int, description: str) -> HoldResult:
        def work(session: Session) -> HoldResult:
            existing = session.get(CreditHold, job_id)
            if existing is not None:
                return self._replayed_hold(session, existing, user_id, amount)
            self._ensure_account(session, user_id)
            now = utcnow()
            taken = session.execute(
                update(CreditAccount)
                .where(CreditAccount.user_id == user_id, CreditAccount.available >= amount)
                .values(available=CreditAccount.available - amount, held=CreditAccount.held + amount,
                        updated_at=now)
                .execution_options(synchronize_session=False)
            ).rowcount
            account = self._fresh_account(session, user_id)
            if taken != 1:
                raise PaymentRequired(
                    f"This needs {amount} credits; you have {account.available}.",
                    details={"available": account.available, "required": amount,
                             "shortfall": amount - account.available})
            session.add(CreditHold(job_id=job_id, user_id=user_id, amount=amount, created_at=now,
                                   expires_at=now + self.hold_lifetime))
            self._record(session, account, "hold", -amount, amount, f"hold:{job_id}",
                         reference=job_id, description=description)
            return HoldResult(job_id, amount, _balance(account), created=True)
        return self._unit_of_work(work)

    def capture(self, job_id: str, amount: int, idempotency_key: str) -> dict[str, Any]:
        def work(session: Session) -> dict[str, Any]:
            hold = self._locked_hold(session, job_id)
            recorded = self._recorded(session, idempotency_key, "capture", job_id)
            if recorded is not None:
                if -recorded.held_change != amount:
                    raise Conflict("This idempotency key was used for a different capture.",
                                   code="IDEMPOTENCY_CONFLICT")
                return {"jobId": job_id, "captured": amount,
                        "remaining": self._held_after(session, job_id, recorded.id)}
            if hold.status != "open":
                raise Conflict("This hold is already settled.", code="HOLD_SETTLED")
            if amount > hold.remaining:
                raise Conflict(f"Only {hold.remaining} credits remain held for this job.",
                               code="HOLD_EXCEEDED",
                               details={"remaining": hold.remaining, "requested": amount})
            account = self._move(session, hold.user_id, available=0, held=-amount, spent=amount)
            hold.captured += amount
            self._record(session, account, "capture", 0, -amount, idempotency_key,
                         reference=job_id, description=f"Captured {amount} credits for job {job_id}")
            return {"jobId": job_id, "captured": amount, "remaining": hold.remaining}
        return self._unit_of_work(work)

    def release(self, job_id: str, idempotency_key: str) -> dict[str, Any]:
        """Return whatever is still held to available and settle the hold (a no-op if settled)."""
        def work(session: Session) -> dict[str, Any]:
            hold = self._locked_hold(session, job_id)
            recorded = self._recorded(session, idempotency_key, "release", job_id)
            if recorded is not None:
                return {"jobId": job_id, "released": -recorded.held_change, "remaining": 0}
            if hold.status != "open":
                return {"jobId": job_id, "released": 0, "remaining": 0}
            rest = hold.remaining
            if rest > 0:
                account = self._move(session, hold.user_id, available=rest, held=-rest)
                self._record(session, account, "release", rest, -rest, idempotency_key,
                             reference=job_id, description=f"Released {rest} unused credits of job {job_id}")
            hold.released = rest
            hold.status = "settled"
            hold.settled_at = utcnow()
            return {"jobId": job_id, "released": rest, "remaining": 0}
        return self._unit_of_work(work)

    def grant(self, user_id: int, amount: int, reason: str, operator_id: int) -> Balance:
        """An administrator adds credits to a user's available balance."""
        def work(session: Session) -> Balance:
            self._ensure_account(session, user_id)
            account = self._move(session, user_id, available=amount, held=0, earned=amount)
            self._record(session, account, "admin_grant", amount, 0, f"admin_grant:{uuid4().hex}",
                         description=reason, operator_id=operator_id)
            return _balance(account)
        return self._unit_of_work(work)

    def transactions(self, user_id: int, page: int, page_size: int, entry_type: str | None) -> Page:
        with self.db.transaction() as session:
            query = select(CreditLedger).where(CreditLedger.user_id == user_id)
            if entry_type:
                query = query.where(CreditLedger.type == entry_type)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(CreditLedger.id.desc())
                                   .offset((page - 1) * page_size).limit(page_size)).all()
            return Page([_entry(row) for row in rows], page, page_size, total)

    def _unit_of_work(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction; after a unique-key race, run it once more to replay."""
        try:
            with self.db.transaction() as session:
                return work(session)
        except IntegrityError:
            log.info("credit movement raced on a unique key; replaying")
            with self.db.transaction() as session:
                return work(session)

    def _ensure_account(self, session: Session, user_id: int) -> CreditAccount:
        account = session.get(CreditAccount, user_id)
        if account is not None:
            return account
        now = utcnow()
        account = CreditAccount(user_id=user_id, available=self.signup_bonus, held=0,
                                lifetime_earned=self.signup_bonus, lifetime_spent=0,
                                created_at=now, updated_at=now)
        session.add(account)
        session.flush()
        session.add(CreditLedger(user_id=user_id, type="signup_bonus", amount=self.signup_bonus,
                                 held_change=0, balance_before=0, balance_after=self.signup_bonus,
                                 idempotency_key=f"signup_bonus:{user_id}", description="Signup bonus",
                                 created_at=now))
        session.flush()
        self._announce(session, account)
        return account

    def _fresh_account(self, session: Session, user_id: int) -> CreditAccount:
        return session.execute(select(CreditAccount).where(CreditAccount.user_id == user_id)
                               .execution_options(populate_existing=True)).scalar_one()

    def _move(self, session: Session, user_id: int, *, available: int, held: int,
              earned: int = 0, spent: int = 0) -> CreditAccount:
        session.execute(
            update(CreditAccount).where(CreditAccount.user_id == user_id)
            .values(available=CreditAccount.available + available, held=CreditAccount.held + held,
                    lifetime_earned=CreditAccount.lifetime_earned + earned,
                    lifetime_spent=CreditAccount.lifetime_spent + spent, updated_at=utcnow())
            .execution_options(synchronize_session=False))
        return self._fresh_account(session, user_id)

    def _record(self, session: Session, account: CreditAccount, entry_type: str, amount: int,
                held_change: int, key: str, *, reference: str | None = None, description: str = "",
                operator_id: int | None = None) -> None:
        """Append the ledger row for a movement already applied to ``account``."""
        session.add(CreditLedger(user_id=account.user_id, type=entry_type, amount=amount,
                                 held_change=held_change, balance_before=account.available - amount,
                                 balance_after=account.available, reference=reference,
                                 description=description[:255], idempotency_key=key,
                                 operator_id=operator_id, created_at=utcnow()))
        session.flush()
        self._announce(session, account)

    def _announce(self, session: Session, account: CreditAccount) -> None:
        user_id, balance = account.user_id, _balance(account).to_dict()

        def publish() -> None:
            try:
                self.events.publish(user_id, "credits.changed", balance)
            except redis.RedisError:
                # The movement is committed; a missed live notification is only cosmetic.
                log.warning("could not publish credits.changed for user %s", user_id, exc_info=True)

        after_commit(session, publish)

    def _locked_hold(self, session: Session, job_id: str) -> CreditHold:
        hold = session.execute(select(CreditHold).where(CreditHold.job_id == job_id)
                               .with_for_update()).scalar_one_or_none()
        if hold is None:
            raise NotFound(f"No credit hold exists for job {job_id}.", code="HOLD_NOT_FOUND")
        return hold

    def _recorded(self, session: Session, key: str, entry_type: str, job_id: str) -> CreditLedger | None:
        entry = session.scalar(select(CreditLedger).where(CreditLedger.idempotency_key == key))
        if entry is not None and (entry.type != entry_type or entry.reference != job_id):
            raise Conflict("This idempotency key was used for a different movement.",
                           code="IDEMPOTENCY_CONFLICT")
        return entry

    def _held_after(self, session: Session, job_id: str, entry_id: int) -> int:
        """What remained held for a job right after ledger entry ``entry_id``."""
        total = session.scalar(select(func.coalesce(func.sum(CreditLedger.held_change), 0))
                               .where(CreditLedger.reference == job_id, CreditLedger.id <= entry_id))
        return int(total or 0)  # MariaDB sums to a Decimal

    def _replayed_hold(self, session: Session, hold: CreditHold, user_id: int, amount: int) -> HoldResult:
        if hold.user_id != user_id or hold.amount != amount:
            raise Conflict(f"Job {hold.job_id} already holds a different amount.",
                           code="IDEMPOTENCY_CONFLICT",
                           details={"amount": hold.amount, "requested": amount})
        account = session.get(CreditAccount, user_id)
        return HoldResult(hold.job_id, hold.amount, _balance(account), created=False)


def _balance(account: CreditAccount) -> Balance:
    return Balance(available=account.available, held=account.held)


def _entry(row: CreditLedger) -> dict[str, Any]:
    return {"id": row.id, "type": row.type, "amount": row.amount, "heldChange": row.held_change,
            "balanceBefore": row.balance_before, "balanceAfter": row.balance_after,
            "reference": row.reference, "description": row.description,
            "createdAt": isoformat(row.created_at)}
