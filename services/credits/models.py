"""Credit tables: one account per user, an append-only ledger, one hold per render job,
and redeem codes. Ledger rows are never updated or deleted (see ``protect_ledger``), not
even when their user is deleted: they are the financial record."""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, new_metadata, utcnow

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

LEDGER_TYPES = ("signup_bonus", "hold", "capture", "release", "admin_grant", "admin_deduct", "redeem")
INFLOW_TYPES = ("signup_bonus", "admin_grant", "redeem")
HOLD_STATUSES = ("open", "settled", "expired", "closed")  # closed: its account was closed


class Base(DeclarativeBase):
    metadata = new_metadata()


class CreditAccount(Base):
    """Balances of one user. ``lifetime_earned − lifetime_spent = available + held`` always:
    earned counts signup bonus, grants and redeems; spent counts captures and admin deductions.
    A closed account (``closed_at`` set: its user was deleted) keeps its row and balances but
    no longer moves."""

    __tablename__ = "credit_accounts"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    available: Mapped[int] = mapped_column(Integer, default=0)
    held: Mapped[int] = mapped_column(Integer, default=0)
    lifetime_earned: Mapped[int] = mapped_column(Integer, default=0)
    lifetime_spent: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CreditLedger(Base):
    """One row per movement; never updated or deleted.

    ``amount`` is the signed change of the available balance and ``held_change`` the
    signed change of the held amount, so ``available = Σ amount`` and ``held = Σ held_change``.
    """

    __tablename__ = "credit_ledger"
    __table_args__ = (
        Index("ix_credit_ledger_user_id_id", "user_id", "id"),
        Index("ix_credit_ledger_reference", "reference"),
        Index("ix_credit_ledger_user_id_created_at", "user_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(20))
    amount: Mapped[int] = mapped_column(Integer)
    held_change: Mapped[int] = mapped_column(Integer)
    balance_before: Mapped[int] = mapped_column(Integer)
    balance_after: Mapped[int] = mapped_column(Integer)
    reference: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255), default="")
    idempotency_key: Mapped[str] = mapped_column(String(191), unique=True)
    operator_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CreditHold(Base):
    """Credits reserved for one render job at the price it was admitted at: captured image by
    image, the rest released; an open hold past ``expires_at`` is released by the sweeper."""

    __tablename__ = "credit_holds"
    __table_args__ = (
        Index("ix_credit_holds_user_id", "user_id"),
        Index("ix_credit_holds_status_expires_at", "status", "expires_at"),
    )

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    amount: Mapped[int] = mapped_column(Integer)
    captured: Mapped[int] = mapped_column(Integer, default=0)
    released: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(10), default="open")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    workflow: Mapped[str | None] = mapped_column(String(64))
    images: Mapped[int | None] = mapped_column(Integer)
    price_per_image: Mapped[int | None] = mapped_column(Integer)

    @property
    def remaining(self) -> int:
        return self.amount - self.captured - self.released


class RedeemCode(Base):
    """A code an administrator hands out; each user may redeem it once (ledger key
    ``redeem:<code>:<user id>``), at most ``max_uses`` users in all, until ``expires_at``."""

    __tablename__ = "credit_redeem_codes"

    code: Mapped[str] = mapped_column(String(32), primary_key=True)
    amount: Mapped[int] = mapped_column(Integer)
    max_uses: Mapped[int] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LedgerImmutable(RuntimeError):
    """Something tried to change or remove a ledger row."""


_LEDGER_WRITE = re.compile(r"^\s*(UPDATE|DELETE\s+FROM|REPLACE\s+INTO|TRUNCATE(\s+TABLE)?)\s+[`\"\[]?credit_ledger\b",
                           re.IGNORECASE)


def protect_ledger(engine: Engine) -> None:
    """Refuse every UPDATE or DELETE of ledger rows on ``engine``, whatever issues it
    (ORM flush, bulk statement or raw SQL): the ledger is append-only."""

    @event.listens_for(engine, "before_cursor_execute")
    def _refuse_ledger_rewrites(_conn, _cursor, statement, _parameters, _context, _executemany):
        refuse_ledger_rewrite(statement)


def refuse_ledger_rewrite(sql: str) -> None:
    """LedgerImmutable when ``sql`` would update or delete ledger rows. ``protect_ledger``
    checks every statement SQLAlchemy runs, ``ledger.Prepared`` the movements' statements,
    which run on the driver's cursor, once when it compiles them."""
    if _LEDGER_WRITE.match(sql):
        raise LedgerImmutable("credit_ledger rows are never updated or deleted")
