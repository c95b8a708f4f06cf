"""Redeem codes: an administrator creates a code worth some credits; each user may redeem it
once (ledger key ``redeem:<code>:<user id>``), at most ``max_uses`` users in all, until it
expires. A redemption locks the code row before it moves credits (lock order code → account)."""
from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update

from shared.db import Database, isoformat, utcnow
from shared.errors import Conflict, NotFound, ServiceError, Unprocessable
from services.credits.ledger import Ledger, Transaction
from services.credits.models import CreditLedger, RedeemCode
from services.credits.reports import Page

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


class RedeemCodes:
    def __init__(self, db: Database, ledger: Ledger) -> None:
        self.db = db
        self.ledger = ledger

    def create(self, amount: int, max_uses: int, operator_id: int, code: str | None = None,
               expires_at: datetime | None = None, description: str = "") -> RedeemCode:
        """A new code (``code``, or a generated one) worth ``amount`` credits to each of ``max_uses`` users."""
        if expires_at is not None and expires_at <= utcnow():
            raise Unprocessable("The expiry must be in the future.", details={"expiresAt": ["Must be in the future."]})
        code = normalise_code(code) if code else _generate_code()

        def work(tx: Transaction) -> RedeemCode:
            if tx.scalar(select(RedeemCode.code).where(RedeemCode.code == code)) is not None:
                raise Conflict(f"The code {code} already exists.", code="REDEEM_CODE_EXISTS")
            values = dict(code=code, amount=amount, max_uses=max_uses, uses=0, expires_at=expires_at,
                          description=description, created_by=operator_id, created_at=utcnow())
            tx.execute(insert(RedeemCode).values(**values))
            return RedeemCode(**values)
        return self.ledger.unit_of_work(work)

    def list_codes(self, page: int, page_size: int) -> Page[RedeemCode]:
        """Every code, newest first."""
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(RedeemCode)) or 0
            rows = session.scalars(select(RedeemCode).order_by(RedeemCode.created_at.desc(), RedeemCode.code)
                                   .offset((page - 1) * page_size).limit(page_size)).all()
            return Page(list(rows), page, page_size, total)

    def redemptions(self, code: str, page: int, page_size: int) -> Page[CreditLedger]:
        """Who redeemed a code, newest first (its ledger rows); 404 for an unknown code."""
        code = normalise_code(code)
        with self.db.read() as session:
            if session.get(RedeemCode, code) is None:
                raise NotFound("This code does not exist.", code="REDEEM_CODE_NOT_FOUND")
            query = select(CreditLedger).where(CreditLedger.reference == code, CreditLedger.type == "redeem")
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(CreditLedger.id.desc())
                                   .offset((page - 1) * page_size).limit(page_size)).all()
            return Page(list(rows), page, page_size, total)

    def redeem(self, user_id: int, code: str) -> dict[str, Any]:
        """Add a code's credits to the user's balance, once per user per code."""
        code = normalise_code(code)

        def work(tx: Transaction) -> dict[str, Any]:
            row = tx.execute(select(RedeemCode.__table__).where(RedeemCode.code == code).with_for_update()).first()
            if row is None:
                raise NotFound("This code does not exist.", code="REDEEM_CODE_NOT_FOUND")
            key = f"redeem:{code}:{user_id}"
            if tx.scalar(select(CreditLedger.id).where(CreditLedger.idempotency_key == key)) is not None:
                raise Conflict("You have already redeemed this code.", code="REDEEM_CODE_ALREADY_REDEEMED")
            if row.expires_at is not None and row.expires_at <= utcnow():
                raise ServiceError("This code has expired.", status=410, code="REDEEM_CODE_EXPIRED",
                                   details={"expiresAt": isoformat(row.expires_at)})
            if row.uses >= row.max_uses:
                raise Conflict("This code has been used up.", code="REDEEM_CODE_USED_UP")
            tx.execute(update(RedeemCode).where(RedeemCode.code == code).values(uses=RedeemCode.uses + 1))
            self.ledger.open_if_missing(tx, user_id)
            balance = self.ledger.must_move(tx, user_id, "redeem", key, amount=row.amount, held_change=0,
                                            reference=code, description=row.description or f"Redeemed code {code}")
            return {"code": code, "amount": row.amount, **balance.to_dict()}
        return self.ledger.unit_of_work(work)


def normalise_code(code: str) -> str:
    return code.strip().upper()


def _generate_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
    return f"{raw[:4]}-{raw[4:8]}-{raw[8:]}"
