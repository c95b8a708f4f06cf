"""The integrations service's tables: service accounts' settings, the queue API's request log
and dead letters, webhook endpoints and their deliveries. A service account is a user of auth
(``users.kind = "service"``); its budget is its credits account; ``user_id`` links the three."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, new_metadata, utcnow

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")

REQUEST_STATUSES = ("received", "admitted", "rejected", "succeeded", "failed", "cancelled")
FINAL_REQUEST_STATUSES = ("rejected", "succeeded", "failed", "cancelled")
DELIVERY_STATUSES = ("pending", "succeeded", "failed")
WEBHOOK_EVENTS = ("job.succeeded", "job.failed", "job.cancelled", "credits.low")


class Base(DeclarativeBase):
    metadata = new_metadata()


class ServiceAccount(Base):
    """An internal service's settings. ``key_id`` names the current queue signing key (its
    secret is derived from ``INTEGRATIONS_SECRET`` and never stored); ``previous_key_id`` the
    one it replaced, accepted until ``previous_key_expires_at``."""

    __tablename__ = "service_accounts"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(20), unique=True)
    owner_user_id: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(String(255), default="")
    allowed_workflows: Mapped[list[str] | None] = mapped_column(JSON)  # None: every workflow
    max_active_jobs: Mapped[int] = mapped_column(Integer)
    url_ttl_seconds: Mapped[int] = mapped_column(Integer)
    lane: Mapped[str] = mapped_column(String(16), default="batch")  # the render scheduler's lane of its jobs
    key_id: Mapped[str] = mapped_column(String(40), unique=True)
    key_created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The key before the last rotation, still accepted until then (a rotation with a grace period).
    previous_key_id: Mapped[str | None] = mapped_column(String(40))
    previous_key_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QueueRequest(Base):
    """One render request received over the queue, by its client's ``requestId`` (unique per
    account: a replay is answered as a duplicate, never admitted twice)."""

    __tablename__ = "queue_requests"
    __table_args__ = (
        UniqueConstraint("account_user_id", "request_id"),
        Index("ix_queue_requests_account_user_id_status", "account_user_id", "status"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_user_id: Mapped[int] = mapped_column(BigInteger)
    request_id: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(10), default="received")
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    reply_to: Mapped[str] = mapped_column(String(255))
    meta: Mapped[Any] = mapped_column("metadata", JSON, nullable=True)
    want_progress: Mapped[bool] = mapped_column(Boolean, default=False)
    cost: Mapped[int | None] = mapped_column(Integer)
    charged: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(64))
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the final reply was published


class DeadLetter(Base):
    """A queue message that could not be answered (malformed, unsigned, oversized, …): it was
    moved to the dead-letter queue with this reason, and is counted here."""

    __tablename__ = "queue_dead_letters"
    __table_args__ = (Index("ix_queue_dead_letters_reason_created_at", "reason", "created_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    reason: Mapped[str] = mapped_column(String(32))
    queue: Mapped[str] = mapped_column(String(255))
    account_user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    key_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(String(500), default="")
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookEndpoint(Base):
    """A URL of a user or service account that receives signed events."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    url: Mapped[str] = mapped_column(String(2000))
    events: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(String(255), default="")
    key_id: Mapped[str] = mapped_column(String(40), unique=True)
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event for one endpoint: attempted until it succeeds or ``give_up_at`` passes.
    ``event_id`` (the event's own id, not its stream entry: an outcome announced twice is one
    event) makes recording it twice impossible."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(BigInteger)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body that is signed and sent
    status: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(500))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    give_up_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
