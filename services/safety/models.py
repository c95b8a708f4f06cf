"""The safety service's tables: the term list and the audit log."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, new_metadata, utcnow

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = new_metadata()


class SafetyTerm(Base):
    """One entry of the list. ``normalised`` is the matcher's compact form of a term (the text
    itself for a pattern): two spellings of one term are one entry."""

    __tablename__ = "safety_terms"
    __table_args__ = (UniqueConstraint("kind", "normalised", name="uq_safety_terms_kind_normalised"),
                      Index("ix_safety_terms_category", "category"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    text: Mapped[str] = mapped_column(String(200))
    normalised: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # term | pattern
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16))  # block | review
    note: Mapped[str] = mapped_column(String(255), default="")
    created_by: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SafetyAudit(Base):
    """One recorded decision: a block or flag of submitted text, a review decision, a list change.
    ``event_id`` is the Redis stream entry it came from (a repeat is ignored). ``media_key`` is a
    withheld image kept for moderators (``quarantine/…``), deleted with the last row naming it."""

    __tablename__ = "safety_audit"
    __table_args__ = (Index("ix_safety_audit_created", "created_at"),
                      Index("ix_safety_audit_action_created", "action", "created_at"),
                      Index("ix_safety_audit_actor_created", "actor_id", "created_at"),
                      Index("ix_safety_audit_media_key", "media_key"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    action: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64))  # e.g. render.prompt, gallery.title, safety.terms
    actor_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    actor_name: Mapped[str] = mapped_column(String(64), default="")
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    severity: Mapped[str | None] = mapped_column(String(16), nullable=True)
    subject: Mapped[str] = mapped_column(String(100), default="")  # e.g. work:12, term:5, user:7
    excerpt: Mapped[str] = mapped_column(Text, default="")  # the submitted text (up to 2,000 characters)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    media_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
