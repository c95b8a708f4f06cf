"""What users and administrators read: a user's statistics and ledger (also read by job), the
list of accounts and any user's ledger, balances in bulk. Nothing here writes, except that a
user's first look opens their account (through ``CreditsService.balance``).

The ledger read by job shows one row per render job (its hold; captures and releases are
folded into it from the job's ``credit_holds`` row) beside every other movement. What the
render domain knows of those jobs (status, prompt, thumbnail) comes in one batch call per
page (``RenderClient.job_summaries``); when it cannot answer, the rows come without it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Generic, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Select, func, select

from shared.db import Database
from shared.errors import ServiceError
from services.credits.ledger import account_not_found, spent_by
from services.credits.models import CreditAccount, CreditHold, CreditLedger
from services.credits.service import CreditsService
from services.render.client import RenderClient

log = logging.getLogger(__name__)

T = TypeVar("T")
# Folded into their job's row when the ledger is read by job.
JOB_SETTLEMENT_TYPES = ("capture", "release")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    page: int
    page_size: int
    total: int


@dataclass(frozen=True)
class LedgerFilter:
    entry_type: str | None = None
    date_from: date | None = None
    date_to: date | None = None


@dataclass(frozen=True)
class JobLine:
    """A ledger row as read by job: a hold row with its hold and the render domain's summary
    of the job (None when it cannot say), or any other movement (``hold`` None)."""

    entry: CreditLedger
    hold: CreditHold | None = None
    job: dict[str, Any] | None = None


class Reports:
    def __init__(self, db: Database, timezone: ZoneInfo, balances: CreditsService, jobs: RenderClient) -> None:
        self.db = db
        self.timezone = timezone  # of calendar days and months
        self.balances = balances
        self.jobs = jobs

    def stats(self, user_id: int, now: datetime | None = None) -> dict[str, Any]:
        """Balances, lifetime totals and what the user spent since the start of this month
        in the configured time zone."""
        balance = self.balances.balance(user_id)
        local_now = (now or datetime.now(timezone.utc)).astimezone(self.timezone)
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
                "timezone": self.timezone.key}

    def transactions(self, user_id: int, page: int, page_size: int, filters: LedgerFilter) -> Page[CreditLedger]:
        """The user's ledger, newest first, optionally of one type and within local dates."""
        return self._page(self._ledger_query(user_id, filters), page, page_size)

    def transactions_by_job(self, user_id: int, page: int, page_size: int, filters: LedgerFilter) -> Page[JobLine]:
        """The user's ledger with one line per render job, newest first, within local dates."""
        query = self._ledger_query(user_id, filters).where(CreditLedger.type.not_in(JOB_SETTLEMENT_TYPES))
        entries = self._page(query, page, page_size)
        job_ids = [entry.reference for entry in entries.items if entry.type == "hold" and entry.reference]
        with self.db.read() as session:
            holds = {hold.job_id: hold for hold in session.scalars(
                select(CreditHold).where(CreditHold.job_id.in_(job_ids)))} if job_ids else {}
        jobs = self._job_summaries(user_id, job_ids)
        lines = [JobLine(entry, holds.get(entry.reference), jobs.get(entry.reference)) if entry.type == "hold"
                 else JobLine(entry) for entry in entries.items]
        return Page(lines, page, page_size, entries.total)

    def _job_summaries(self, user_id: int, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not job_ids:
            return {}
        try:
            summaries = self.jobs.job_summaries(job_ids)
        except ServiceError as exc:
            log.warning("job summaries of user %s unavailable (%s); ledger shown without them", user_id, exc.code)
            return {}
        return {job_id: job for job_id, job in summaries.items() if job.get("userId") == user_id}

    def _ledger_query(self, user_id: int, filters: LedgerFilter) -> Select:
        query = select(CreditLedger).where(CreditLedger.user_id == user_id)
        if filters.entry_type:
            query = query.where(CreditLedger.type == filters.entry_type)
        if filters.date_from:
            query = query.where(CreditLedger.created_at >= self._utc_midnight(filters.date_from))
        if filters.date_to:
            query = query.where(CreditLedger.created_at < self._utc_midnight(filters.date_to + timedelta(days=1)))
        return query

    def _page(self, query: Select, page: int, page_size: int) -> Page[CreditLedger]:
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(CreditLedger.id.desc())
                                   .offset((page - 1) * page_size).limit(page_size)).all()
        return Page(list(rows), page, page_size, total)

    def accounts_of(self, user_ids: list[int]) -> list[CreditAccount]:
        """The accounts of those of ``user_ids`` that have one."""
        with self.db.read() as session:
            return list(session.scalars(select(CreditAccount).where(CreditAccount.user_id.in_(user_ids))
                                        .order_by(CreditAccount.user_id)))

    def accounts(self, page: int, page_size: int, user_id: int | None = None) -> Page[CreditAccount]:
        """Every account (or the one of ``user_id``), by user id."""
        with self.db.read() as session:
            query = select(CreditAccount)
            if user_id is not None:
                query = query.where(CreditAccount.user_id == user_id)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(CreditAccount.user_id)
                                   .offset((page - 1) * page_size).limit(page_size)).all()
            return Page(list(rows), page, page_size, total)

    def account_transactions(self, user_id: int, page: int, page_size: int,
                             filters: LedgerFilter) -> Page[CreditLedger]:
        """Any user's ledger, for administrators; 404 when the user has no account."""
        with self.db.read() as session:
            if session.get(CreditAccount, user_id) is None:
                raise account_not_found(user_id)
        return self.transactions(user_id, page, page_size, filters)

    def _utc_midnight(self, day: date) -> datetime:
        """The start of a local calendar day as naive UTC."""
        local = datetime.combine(day, time.min, tzinfo=self.timezone)
        return local.astimezone(timezone.utc).replace(tzinfo=None)
