"""Accounts and holds: opening an account with its signup bonus, holding a render job's
price, capturing it image by image, releasing the rest, expiring forgotten holds, and closing
the account of a deleted user. Every write is one ``Ledger.unit_of_work`` that moves credits
through the ledger and, for holds, updates the hold row.

Captures, releases, expiries and closings lock the hold row first (``SELECT … FOR UPDATE``;
SQLite transactions are already ``BEGIN IMMEDIATE``) and look the idempotency key up after
taking the lock, so a replay always finds what the first call recorded. The lookup is
skipped when the hold shows the key cannot have been used yet (a first capture, a release
of an open hold): a repeat then collides on the key's unique index, and the unit of work
runs again, looking it up first (``replaying``). One statement less for each.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import Row, bindparam, func, insert, select, update

from shared.db import Database, utcnow
from shared.errors import Conflict, NotFound, PaymentRequired, Unprocessable
from services.credits.config import CreditsConfig
from services.credits.ledger import Balance, Ledger, Movement, Transaction, replaying
from services.credits.models import CreditAccount, CreditHold, CreditLedger

# The hot paths run these statements, built once so SQLAlchemy reuses their compiled form.
_holds, _accounts = CreditHold.__table__, CreditAccount.__table__
INSERT_HOLD = insert(_holds)
SELECT_HOLD = select(_holds).where(_holds.c.job_id == bindparam("p_job_id"))
# The hold and its account's balance, both locked (hold, then account: the order every movement
# keeps), so the movement that follows knows the balance without reading it again.
LOCK_HOLD = (select(_holds.c.job_id, _holds.c.user_id, _holds.c.amount, _holds.c.captured, _holds.c.released,
                    _holds.c.status, _holds.c.expires_at, _holds.c.price_per_image,
                    _accounts.c.available.label("account_available"), _accounts.c.held.label("account_held"))
             .join_from(_holds, _accounts, _accounts.c.user_id == _holds.c.user_id, isouter=True)
             .where(_holds.c.job_id == bindparam("p_job_id")).with_for_update())
CAPTURE_HOLD = (update(_holds).where(_holds.c.job_id == bindparam("p_job_id"))
                .values(captured=_holds.c.captured + bindparam("p_amount")))
SETTLE_HOLD = (update(_holds).where(_holds.c.job_id == bindparam("p_job_id"))
               .values(captured=_holds.c.captured + bindparam("p_captured"),
                       released=_holds.c.released + bindparam("p_amount"), status=bindparam("p_status"),
                       settled_at=bindparam("p_now")))
BALANCE = select(_accounts.c.available, _accounts.c.held).where(_accounts.c.user_id == bindparam("p_user_id"))


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


class CreditsService:
    def __init__(self, db: Database, ledger: Ledger, config: CreditsConfig) -> None:
        self.db = db
        self.ledger = ledger
        self.config = config

    # Accounts and the signup bonus

    def open_account(self, user_id: int, signup_bonus: bool = True) -> Balance:
        """The user's balance, opening the account with the signup bonus (once, by key) if missing;
        a service account's opens without one. 409 ACCOUNT_CLOSED for the account of a deleted user."""
        def work(tx: Transaction) -> Balance:
            if not self.ledger.open_if_missing(tx, user_id, signup_bonus):
                self.ledger.refuse_if_closed(tx, user_id, status=409)
            return self.ledger.balance(tx, user_id)
        return self.ledger.unit_of_work(work)

    def balance(self, user_id: int) -> Balance:
        with self.db.read_connection() as connection:  # Core, no ORM session: every signed-in page reads it
            row = connection.execute(BALANCE, {"p_user_id": user_id}).one_or_none()
        return Balance(*row) if row is not None else self.open_account(user_id)

    def grant_signup_bonuses(self, user_ids: Iterable[int]) -> list[int]:
        """Give the signup bonus to each user whose ledger has no ``signup_bonus:<id>`` row,
        whatever their balance; returns the ids that received it."""
        wanted = sorted(set(user_ids))

        def work(tx: Transaction) -> list[int]:
            keys = {f"signup_bonus:{user_id}": user_id for user_id in wanted}
            done = set(tx.scalars(select(CreditLedger.idempotency_key)
                                  .where(CreditLedger.idempotency_key.in_(list(keys)))))
            closed = set(tx.scalars(select(CreditAccount.user_id).where(
                CreditAccount.user_id.in_(wanted), CreditAccount.closed_at.is_not(None))))
            granted = [user_id for key, user_id in keys.items() if key not in done and user_id not in closed]
            for user_id in granted:
                if not self.ledger.open_if_missing(tx, user_id):
                    self.ledger.grant_bonus(tx, user_id)
            return granted
        return self.ledger.unit_of_work(work) if wanted else []

    # Holds

    def pricing(self) -> dict[str, int]:
        """Today's price per image of each workflow."""
        return dict(self.config.pricing)

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

        def work(tx: Transaction) -> HoldResult:
            price_changed = expected_cost is not None and expected_cost != cost
            if replaying(tx) or price_changed:
                existing = tx.first(SELECT_HOLD, {"p_job_id": job_id})
                if existing is not None:
                    return self._replayed_hold(tx, existing, user_id, workflow, images, expected_cost)
                if price_changed:
                    raise Conflict("The price changed since it was shown; nothing was charged.",
                                   code="PRICE_CHANGED",
                                   details={"expectedCost": expected_cost, "cost": cost, "pricePerImage": price})
            # The hold row first: a repeat collides on its job id and runs again, replaying.
            now = utcnow()
            tx.write(INSERT_HOLD, {
                "job_id": job_id, "user_id": user_id, "amount": cost, "captured": 0, "released": 0, "status": "open",
                "created_at": now, "expires_at": now + self.config.hold_ttl, "workflow": workflow, "images": images,
                "price_per_image": price})
            movement = dict(amount=-cost, held_change=cost, reference=job_id,
                            description=description or f"{workflow} × {images}")
            balance = self.ledger.move(tx, user_id, "hold", f"hold:{job_id}", **movement)
            if balance is None:
                # No account yet, or one a concurrent first hold opened after this MOVE missed it:
                # either way the account exists now, so the MOVE is tried once more.
                self.ledger.open_if_missing(tx, user_id)
                balance = self.ledger.move(tx, user_id, "hold", f"hold:{job_id}", **movement)
            if balance is None:
                self.ledger.refuse_if_closed(tx, user_id, status=403)
                available = self.ledger.balance(tx, user_id).available
                raise PaymentRequired(f"This needs {cost} credits; you have {available}.",
                                      details={"available": available, "required": cost,
                                               "shortfall": cost - available})
            return HoldResult(job_id, cost, price, balance, created=True)
        return self.ledger.unit_of_work(work)

    def capture(self, job_id: str, idempotency_key: str, images: int = 1) -> dict[str, Any]:
        """Spend ``images`` delivered images of a job's hold, at the price per image the hold
        was admitted at: that much moves from held to spent, never more than remains held."""
        def work(tx: Transaction) -> dict[str, Any]:
            hold = self._locked_hold(tx, job_id)
            price = _price_per_image(hold)
            amount = images * price
            first_capture = hold.captured == 0 and hold.status == "open" and not replaying(tx)
            recorded = None if first_capture else self.ledger.recorded(tx, idempotency_key, "capture",
                                                                        reference=job_id)
            if recorded is not None:
                if -recorded.held_change != amount:
                    raise Conflict("This idempotency key was used for a different capture.",
                                   code="IDEMPOTENCY_CONFLICT",
                                   details={"images": -recorded.held_change // price, "requested": images})
                return {"jobId": job_id, "captured": amount,
                        "remaining": self._held_after(tx, job_id, recorded.id)}
            if hold.status != "open":
                raise Conflict("This hold is already settled.", code="HOLD_SETTLED",
                               details={"status": hold.status})
            remaining = _remaining(hold)
            if amount > remaining:
                raise Conflict(f"Only {remaining} credits remain held for this job.", code="HOLD_EXCEEDED",
                               details={"remaining": remaining, "requested": amount})
            self.ledger.must_move(tx, hold.user_id, "capture", idempotency_key, amount=0, held_change=-amount,
                                  reference=job_id, description=f"Captured {amount} credits for job {job_id}",
                                  locked=_locked_balance(hold))
            tx.write(CAPTURE_HOLD, {"p_job_id": job_id, "p_amount": amount})
            return {"jobId": job_id, "captured": amount, "remaining": remaining - amount}
        return self.ledger.unit_of_work(work)

    def release(self, job_id: str, idempotency_key: str) -> dict[str, Any]:
        """Return whatever is still held to available and settle the hold (a no-op if settled)."""
        def work(tx: Transaction) -> dict[str, Any]:
            hold = self._locked_hold(tx, job_id)
            may_repeat = hold.status != "open" or replaying(tx)
            recorded = self.ledger.recorded(tx, idempotency_key, "release", reference=job_id) if may_repeat \
                else None
            if recorded is not None:
                return {"jobId": job_id, "released": -recorded.held_change, "remaining": 0}
            if hold.status != "open":
                return {"jobId": job_id, "released": 0, "remaining": 0}
            rest = self._settle(tx, hold, idempotency_key, "settled",
                                f"Released {_remaining(hold)} unused credits of job {job_id}", _locked_balance(hold))
            return {"jobId": job_id, "released": rest, "remaining": 0}
        return self.ledger.unit_of_work(work)

    def settle(self, job_id: str, idempotency_key: str, images: int) -> dict[str, Any]:
        """Settle a finished job in one unit of work: charge its ``images`` delivered images
        (in all, counting those captured already) at the hold's price per image, return the
        rest and close the hold. The charge is one ``capture`` row (key ``<key>:capture``) and
        the return one ``release`` row (``<key>:release``), each only when it moves credits.

        A replay finds the hold settled and answers what the first call did; the same key
        with another image count is 409 IDEMPOTENCY_CONFLICT. A hold settled otherwise (its
        job released it, it expired, its account was closed) is 409 HOLD_SETTLED, unless it
        was settled with exactly these images charged (then nothing is left to do)."""
        capture_key, release_key = f"{idempotency_key}:capture", f"{idempotency_key}:release"

        def work(tx: Transaction) -> dict[str, Any]:
            hold = self._locked_hold(tx, job_id)
            price = _price_per_image(hold)
            charge = images * price
            if hold.status != "open" or replaying(tx):
                captured = self.ledger.recorded(tx, capture_key, "capture", reference=job_id)
                released = self.ledger.recorded(tx, release_key, "release", reference=job_id)
                if hold.status != "open":
                    if captured is None and released is None and not (
                            hold.status == "settled" and hold.captured == charge):
                        raise Conflict("This hold is already settled.", code="HOLD_SETTLED",
                                       details={"status": hold.status})
                    if hold.captured != charge:
                        raise Conflict("This idempotency key settled the job with another image count.",
                                       code="IDEMPOTENCY_CONFLICT",
                                       details={"images": hold.captured // price, "requested": images})
                    return {"jobId": job_id, "captured": -captured.held_change if captured else 0,
                            "released": released.amount if released else 0, "remaining": 0}
            if charge > hold.amount:
                raise Conflict(f"The hold of job {job_id} pays for {hold.amount // price} images.",
                               code="HOLD_EXCEEDED", details={"remaining": _remaining(hold), "requested": images})
            if charge < hold.captured:
                raise Conflict(f"{hold.captured // price} images of job {job_id} were captured already.",
                               code="HOLD_CAPTURED", details={"captured": hold.captured // price,
                                                               "requested": images})
            to_capture, rest = charge - hold.captured, hold.amount - charge - hold.released
            movements = []
            if to_capture:
                movements.append(Movement("capture", capture_key, 0, -to_capture, job_id,
                                          f"Captured {to_capture} credits for job {job_id}"))
            if rest:
                movements.append(Movement("release", release_key, rest, -rest, job_id,
                                          f"Released {rest} unused credits of job {job_id}"))
            if movements:
                self.ledger.must_move_all(tx, hold.user_id, movements, _locked_balance(hold))
            tx.write(SETTLE_HOLD, {"p_job_id": job_id, "p_captured": to_capture, "p_amount": rest,
                                   "p_status": "settled", "p_now": utcnow()})
            return {"jobId": job_id, "captured": to_capture, "released": rest, "remaining": 0}
        return self.ledger.unit_of_work(work)

    def expired_holds(self, now: datetime | None = None, limit: int = 500) -> list[str]:
        """Job ids of open holds past their expiry, oldest first."""
        with self.db.read() as session:
            return list(session.scalars(
                select(CreditHold.job_id).where(CreditHold.status == "open", CreditHold.expires_at <= (now or utcnow()))
                .order_by(CreditHold.expires_at).limit(limit)))

    def expire_hold(self, job_id: str, now: datetime | None = None) -> int | None:
        """Release an open hold past its expiry (key ``expire:<jobId>``); returns the credits
        released, or None when the hold is settled or not yet expired."""
        def work(tx: Transaction) -> int | None:
            hold = self._locked_hold(tx, job_id)
            if hold.status != "open" or hold.expires_at is None or hold.expires_at > (now or utcnow()):
                return None
            return self._settle(tx, hold, f"expire:{job_id}", "expired",
                                f"Hold of job {job_id} expired; {_remaining(hold)} credits returned",
                                _locked_balance(hold))
        return self.ledger.unit_of_work(work)

    # Closing (the user was deleted)

    def close_account(self, user_id: int) -> ClosedAccount:
        """Close a deleted user's account: return every open hold to available (ledger
        ``release`` rows keyed ``close:<jobId>``, holds marked ``closed``), then mark the account
        closed so nothing moves it again. Running it again changes nothing.

        Nothing is deleted: the account row and every ledger row stay, because the ledger is
        the financial record and outlives the user. A user without an account gets an empty,
        closed one, so a late call cannot open it with a signup bonus.
        """
        def work(tx: Transaction) -> ClosedAccount:
            released = self._close_open_holds(tx, user_id)
            account = tx.execute(select(CreditAccount.closed_at).where(CreditAccount.user_id == user_id)
                                 .with_for_update()).first()
            # A hold admitted while we waited for the account's lock has committed by now; with
            # the lock held, no further hold can be admitted before the closing commits.
            released.update(self._close_open_holds(tx, user_id))
            if account is not None and account.closed_at is not None:
                return ClosedAccount(user_id, released, account.closed_at, already_closed=True)
            now = utcnow()
            if account is None:
                tx.execute(insert(CreditAccount).values(
                    user_id=user_id, available=0, held=0, lifetime_earned=0, lifetime_spent=0, created_at=now,
                    updated_at=now, closed_at=now))
            else:
                tx.execute(update(CreditAccount).where(CreditAccount.user_id == user_id)
                           .values(closed_at=now, updated_at=now))
            return ClosedAccount(user_id, released, now, already_closed=False)
        return self.ledger.unit_of_work(work)

    def _close_open_holds(self, tx: Transaction, user_id: int) -> dict[str, int]:
        holds = tx.execute(select(_holds).where(_holds.c.user_id == user_id, _holds.c.status == "open")
                           .order_by(_holds.c.job_id).with_for_update()).all()
        return {hold.job_id: self._settle(tx, hold, f"close:{hold.job_id}", "closed",
                                          f"Account closed; {_remaining(hold)} credits held for job "
                                          f"{hold.job_id} returned")
                for hold in holds}

    # Internals

    def _settle(self, tx: Transaction, hold: Row, key: str, status: str, description: str,
                locked: Balance | None = None) -> int:
        """Return what a hold still holds to available and close it; returns that amount.
        ``locked``: the account's balance read under lock, when nothing moved it since."""
        rest = _remaining(hold)
        if rest > 0:
            self.ledger.must_move(tx, hold.user_id, "release", key, amount=rest, held_change=-rest,
                                  reference=hold.job_id, description=description, locked=locked)
        tx.write(SETTLE_HOLD, {"p_job_id": hold.job_id, "p_captured": 0, "p_amount": rest, "p_status": status,
                               "p_now": utcnow()})
        return rest

    def _locked_hold(self, tx: Transaction, job_id: str) -> Row:
        hold = tx.first(LOCK_HOLD, {"p_job_id": job_id})
        if hold is None:
            raise NotFound(f"No credit hold exists for job {job_id}.", code="HOLD_NOT_FOUND")
        return hold

    def _held_after(self, tx: Transaction, job_id: str, entry_id: int) -> int:
        """What remained held for a job right after ledger entry ``entry_id``."""
        total = tx.scalar(select(func.coalesce(func.sum(CreditLedger.held_change), 0))
                          .where(CreditLedger.reference == job_id, CreditLedger.id <= entry_id))
        return int(total or 0)  # MariaDB sums to a Decimal

    def _replayed_hold(self, tx: Transaction, hold: Row, user_id: int, workflow: str, images: int,
                       expected_cost: int | None) -> HoldResult:
        if (hold.user_id, hold.workflow, hold.images) != (user_id, workflow, images) or (
                expected_cost is not None and expected_cost != hold.amount):
            raise Conflict(f"Job {hold.job_id} already holds credits for a different request.",
                           code="IDEMPOTENCY_CONFLICT",
                           details={"workflow": hold.workflow, "images": hold.images, "amount": hold.amount})
        return HoldResult(hold.job_id, hold.amount, hold.price_per_image or hold.amount,
                          self.ledger.balance(tx, user_id), created=False)


def _locked_balance(hold: Row) -> Balance | None:
    """The account's balance as ``LOCK_HOLD`` read it with the hold (None without an account)."""
    return None if hold.account_available is None else Balance(hold.account_available, hold.account_held)


def _remaining(hold: Row) -> int:
    return hold.amount - hold.captured - hold.released


def _price_per_image(hold: Row) -> int:
    """The price per image a hold was admitted at. Holds from before migration c0002 stored
    neither their price nor their image count, so they cannot be captured by image (409
    HOLD_UNPRICED; they are released, by their job or by the sweeper)."""
    if hold.price_per_image is None:
        raise Conflict(f"The hold of job {hold.job_id} predates prices per image; it can only be released.",
                       code="HOLD_UNPRICED", details={"amount": hold.amount})
    return hold.price_per_image
