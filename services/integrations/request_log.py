"""The queue API's request log: one row per ``(account, requestId)``, so a request is
admitted once and answered once however often it is delivered or replayed, and the dead
letters, counted by reason.

A row goes ``received`` → ``admitted`` → ``succeeded | failed | cancelled`` (or ``received``
→ ``rejected``). ``admitted_at`` marks that ``request.accepted`` was claimed for publishing,
``answered_at`` that the final reply was: each is set by one conditional UPDATE, so two
threads or processes never both answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from shared.db import Database, isoformat, utcnow
from services.integrations.models import DeadLetter, QueueRequest


@dataclass(frozen=True)
class Claim:
    """``fresh``: this delivery may go on to admission (a new request, or one whose admission
    never finished); otherwise it is a replay of a request already answered or in flight."""

    row_id: int
    fresh: bool
    status: str
    job_id: str | None
    received_at: str


class RequestLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def claim(self, account_user_id: int, request_id: str, reply_to: str, metadata: Any,
              progress: bool) -> Claim:
        """Record a request the first time it is seen. A request still ``received`` (its
        admission was cut short: a crash, a full account) may be admitted again: admission is
        idempotent by ``queue:<requestId>``. Anything later is a replay."""
        try:
            with self.db.transaction() as session:
                row = QueueRequest(account_user_id=account_user_id, request_id=request_id, status="received",
                                   reply_to=reply_to, meta=metadata, want_progress=progress, duplicates=0,
                                   received_at=utcnow())
                session.add(row)
                session.flush()
                return Claim(row.id, True, "received", None, isoformat(row.received_at))
        except IntegrityError:
            pass
        with self.db.read() as session:
            row = session.scalars(select(QueueRequest).where(QueueRequest.account_user_id == account_user_id,
                                                             QueueRequest.request_id == request_id)).one()
            fresh = row.status == "received" and row.admitted_at is None
            return Claim(row.id, fresh, row.status, row.job_id, isoformat(row.received_at))

    def replayed(self, row_id: int) -> None:
        """Count a replay (answered with ``request.duplicate``)."""
        with self.db.transaction() as session:
            session.execute(update(QueueRequest).where(QueueRequest.id == row_id)
                            .values(duplicates=QueueRequest.duplicates + 1))

    def admitted(self, row_id: int, job_id: str, cost: int) -> bool:
        """Record the admitted job; True for the one caller that may publish ``request.accepted``."""
        with self.db.transaction() as session:
            won = session.execute(update(QueueRequest).where(QueueRequest.id == row_id,
                                                             QueueRequest.admitted_at.is_(None))
                                  .values(job_id=job_id, cost=cost, admitted_at=utcnow())).rowcount == 1
            session.execute(update(QueueRequest).where(QueueRequest.id == row_id, QueueRequest.status == "received")
                            .values(status="admitted"))
            return won

    def rejected(self, row_id: int, code: str) -> bool:
        """Record a refused admission; True for the one caller that may publish the rejection."""
        with self.db.transaction() as session:
            return session.execute(update(QueueRequest).where(QueueRequest.id == row_id,
                                                              QueueRequest.status == "received")
                                   .values(status="rejected", error_code=code[:64], finished_at=utcnow(),
                                           answered_at=utcnow())).rowcount == 1

    def find_by_job(self, account_user_id: int, job_id: str) -> QueueRequest | None:
        with self.db.read() as session:
            return session.scalars(select(QueueRequest).where(QueueRequest.account_user_id == account_user_id,
                                                              QueueRequest.job_id == job_id)).first()

    def attach_job(self, account_user_id: int, request_id: str, job_id: str) -> QueueRequest | None:
        """Link a job to its request when its outcome arrives before admission recorded it."""
        with self.db.transaction() as session:
            row = session.scalars(select(QueueRequest).where(QueueRequest.account_user_id == account_user_id,
                                                             QueueRequest.request_id == request_id)
                                  .with_for_update()).first()
            if row is None or row.job_id not in (None, job_id):
                return None
            row.job_id = job_id
            return row

    def answered(self, row_id: int, status: str, charged: int | None, error_code: str | None) -> bool:
        """Record the job's outcome; True for the one caller that may publish the final reply."""
        now = utcnow()
        with self.db.transaction() as session:
            return session.execute(update(QueueRequest).where(QueueRequest.id == row_id,
                                                              QueueRequest.answered_at.is_(None))
                                   .values(status=status, charged=charged, error_code=error_code, finished_at=now,
                                           answered_at=now)).rowcount == 1

    def in_flight(self, account_user_ids: list[int]) -> list[QueueRequest]:
        """Admitted requests still waiting for their outcome (progress is relayed for these)."""
        if not account_user_ids:
            return []
        with self.db.read() as session:
            return list(session.scalars(select(QueueRequest).where(
                QueueRequest.account_user_id.in_(account_user_ids), QueueRequest.status == "admitted",
                QueueRequest.want_progress.is_(True), QueueRequest.job_id.is_not(None))))

    def dead_letter(self, reason: str, queue: str, account_user_id: int | None, key_id: str | None, detail: str,
                    size: int) -> None:
        with self.db.transaction() as session:
            session.add(DeadLetter(reason=reason, queue=queue[:255], account_user_id=account_user_id,
                                   key_id=key_id, detail=detail[:500], size=size, created_at=utcnow()))

    def usage(self, account_user_ids: list[int]) -> dict[int, dict[str, int]]:
        """Requests by status, replays and dead letters of each account."""
        found: dict[int, dict[str, int]] = {user_id: {} for user_id in account_user_ids}
        if not account_user_ids:
            return found
        with self.db.read() as session:
            for user_id, status, count, duplicates in session.execute(
                    select(QueueRequest.account_user_id, QueueRequest.status, func.count(),
                           func.sum(QueueRequest.duplicates))
                    .where(QueueRequest.account_user_id.in_(account_user_ids))
                    .group_by(QueueRequest.account_user_id, QueueRequest.status)):
                found[user_id][status] = int(count)
                found[user_id]["replays"] = found[user_id].get("replays", 0) + int(duplicates or 0)
            for user_id, count in session.execute(
                    select(DeadLetter.account_user_id, func.count()).where(
                        DeadLetter.account_user_id.in_(account_user_ids)).group_by(DeadLetter.account_user_id)):
                found[user_id]["deadLetters"] = int(count)
        return found

    def dead_letters(self, page: int, page_size: int) -> dict[str, Any]:
        """Counts by reason, and the latest dead letters."""
        with self.db.read() as session:
            counts = {reason: int(count) for reason, count in session.execute(
                select(DeadLetter.reason, func.count()).group_by(DeadLetter.reason))}
            rows = session.scalars(select(DeadLetter).order_by(DeadLetter.id.desc())
                                   .offset((page - 1) * page_size).limit(page_size)).all()
        return {"counts": counts, "total": sum(counts.values()), "page": page, "pageSize": page_size,
                "items": [{"id": row.id, "reason": row.reason, "queue": row.queue, "accountId": row.account_user_id,
                           "keyId": row.key_id, "detail": row.detail, "size": row.size,
                           "createdAt": isoformat(row.created_at)} for row in rows]}
