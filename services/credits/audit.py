"""The credits audit: every invariant the service promises, checked for every account.

- available ≥ 0 and held ≥ 0;
- available = Σ ledger amount, held = Σ ledger held_change (so available + held = Σ both);
- held = what the user's open holds still hold;
- lifetime earned and spent equal the ledger's inflows and outflows;
- each row's balance_after = balance_before + amount, and each row starts where the user's
  previous row ended (the ledger is a chain with no gaps or rewrites);
- each job is charged at most price × images: captured ≤ held amount, at most one capture per
  image, and a hold's captured/released columns equal its ledger rows; a settled hold holds nothing;
- each idempotency key moved credits once, and hold rows carry the key ``hold:<jobId>``.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from shared.db import Database, isoformat
from services.credits.models import INFLOW_TYPES, CreditAccount, CreditHold, CreditLedger

ENTRIES_SHOWN = 20


@dataclass
class Discrepancy:
    check: str
    message: str
    user_id: int | None
    job_id: str | None = None
    entries: list[dict[str, Any]] = field(default_factory=list)

    def render(self) -> str:
        where = f"account {self.user_id}" + (f", job {self.job_id}" if self.job_id else "")
        lines = [f"[{self.check}] {where}: {self.message}"]
        lines += [f"    #{e['id']} {e['createdAt']} {e['type']:<12} amount={e['amount']:+d} "
                  f"held={e['heldChange']:+d} {e['balanceBefore']}→{e['balanceAfter']} "
                  f"ref={e['reference']} key={e['key']}" for e in self.entries]
        return "\n".join(lines)


def _int(value: Any) -> int:
    return int(value or 0)  # MariaDB sums to Decimal, empty sums are NULL


def audit(db: Database) -> list[Discrepancy]:
    """Every discrepancy in the credits tables, each with the ledger entries involved."""
    with db.read() as session:
        found = _accounts(session) + _holds(session) + _chains(session) + _keys(session)
        for item in found:
            item.entries = _entries(session, item)
    return found


def _accounts(session: Session) -> list[Discrepancy]:
    spent = case((CreditLedger.type == "capture", -CreditLedger.held_change),
                 (CreditLedger.type == "admin_deduct", -CreditLedger.amount), else_=0)
    earned = case((CreditLedger.type.in_(INFLOW_TYPES), CreditLedger.amount), else_=0)
    sums = {row[0]: tuple(_int(v) for v in row[1:]) for row in session.execute(
        select(CreditLedger.user_id, func.sum(CreditLedger.amount), func.sum(CreditLedger.held_change),
               func.sum(earned), func.sum(spent)).group_by(CreditLedger.user_id))}
    open_held = {row[0]: _int(row[1]) for row in session.execute(
        select(CreditHold.user_id, func.sum(CreditHold.amount - CreditHold.captured - CreditHold.released))
        .where(CreditHold.status == "open").group_by(CreditHold.user_id))}
    found = []
    accounts = session.execute(select(CreditAccount.user_id, CreditAccount.available, CreditAccount.held,
                                      CreditAccount.lifetime_earned, CreditAccount.lifetime_spent)).all()
    for user_id, available, held, lifetime_earned, lifetime_spent in accounts:
        ledger_available, ledger_held, ledger_earned, ledger_spent = sums.pop(user_id, (0, 0, 0, 0))
        checks = [
            (available >= 0 and held >= 0, "negative-balance", f"available {available}, held {held}"),
            (available == ledger_available, "available-vs-ledger",
             f"available {available} but the ledger sums to {ledger_available}"),
            (held == ledger_held, "held-vs-ledger", f"held {held} but the ledger sums to {ledger_held}"),
            (held == open_held.get(user_id, 0), "held-vs-open-holds",
             f"held {held} but open holds hold {open_held.get(user_id, 0)}"),
            ((lifetime_earned, lifetime_spent) == (ledger_earned, ledger_spent), "lifetime-totals",
             f"earned/spent {lifetime_earned}/{lifetime_spent} but the ledger says {ledger_earned}/{ledger_spent}"),
        ]
        found += [Discrepancy(name, message, user_id) for passed, name, message in checks if not passed]
    found += [Discrepancy("ledger-without-account", "ledger rows exist but the account does not", user_id)
              for user_id in sums]
    return found


def _holds(session: Session) -> list[Discrepancy]:
    per_job: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    owners: dict[str, int] = {}
    for reference, user_id, kind, held_change, count in session.execute(
            select(CreditLedger.reference, CreditLedger.user_id, CreditLedger.type,
                   func.sum(CreditLedger.held_change), func.count())
            .where(CreditLedger.type.in_(("hold", "capture", "release")))
            .group_by(CreditLedger.reference, CreditLedger.user_id, CreditLedger.type)):
        per_job[reference][kind] += abs(_int(held_change))
        per_job[reference][f"{kind}_rows"] += count
        owners[reference] = user_id
    found = []
    for hold in session.scalars(select(CreditHold)):
        ledger = per_job.pop(hold.job_id, defaultdict(int))

        def problem(check: str, message: str) -> None:
            found.append(Discrepancy(check, message, hold.user_id, hold.job_id))

        if hold.price_per_image is not None and hold.images is not None and \
                hold.amount != hold.price_per_image * hold.images:
            problem("hold-price", f"holds {hold.amount}, not {hold.price_per_image} × {hold.images}")
        if ledger["hold"] != hold.amount or ledger["hold_rows"] != 1:
            problem("hold-entry", f"hold of {hold.amount} but {ledger['hold_rows']} hold rows for {ledger['hold']}")
        if hold.captured > hold.amount or hold.captured + hold.released > hold.amount:
            problem("overcharge", f"captured {hold.captured} + released {hold.released} exceed {hold.amount}")
        if hold.images is not None and ledger["capture_rows"] > hold.images:
            problem("overcharge", f"{ledger['capture_rows']} captures for {hold.images} images")
        if (ledger["capture"], ledger["release"]) != (hold.captured, hold.released):
            problem("hold-vs-ledger", f"captured/released {hold.captured}/{hold.released} but the ledger "
                                      f"says {ledger['capture']}/{ledger['release']}")
        if hold.status != "open" and hold.remaining != 0:
            problem("settled-hold-holds", f"{hold.status} but still holds {hold.remaining}")
    for job_id in per_job:
        found.append(Discrepancy("entries-without-hold", "hold/capture/release rows name a job with no hold",
                                 owners[job_id], job_id))
    return found


def _chains(session: Session) -> list[Discrepancy]:
    found, previous_user, previous_after = [], None, 0
    rows = session.execute(select(CreditLedger.user_id, CreditLedger.id, CreditLedger.amount,
                                  CreditLedger.balance_before, CreditLedger.balance_after)
                           .order_by(CreditLedger.user_id, CreditLedger.id).execution_options(yield_per=5000))
    broken: set[int] = set()
    for user_id, entry_id, amount, before, after in rows:
        if user_id != previous_user:
            previous_user, previous_after = user_id, 0
        if user_id not in broken and (after != before + amount or before != previous_after):
            broken.add(user_id)
            found.append(Discrepancy("balance-chain", f"entry #{entry_id} goes {before}→{after} by {amount:+d}; "
                                                      f"the previous entry ended at {previous_after}", user_id))
        previous_after = after
    return found


def _keys(session: Session) -> list[Discrepancy]:
    found = [Discrepancy("duplicate-key", f"key {key!r} moved credits {count} times", user_id)
             for key, user_id, count in session.execute(
                 select(CreditLedger.idempotency_key, func.min(CreditLedger.user_id), func.count())
                 .group_by(CreditLedger.idempotency_key).having(func.count() > 1))]
    found += [Discrepancy("hold-key", f"hold entry #{entry_id} has key {key!r}", user_id, reference)
              for entry_id, user_id, reference, key in session.execute(
                  select(CreditLedger.id, CreditLedger.user_id, CreditLedger.reference, CreditLedger.idempotency_key)
                  .where(CreditLedger.type == "hold",
                         CreditLedger.idempotency_key != "hold:" + CreditLedger.reference))]
    return found


def _entries(session: Session, item: Discrepancy) -> list[dict[str, Any]]:
    query = select(CreditLedger)
    if item.job_id is not None:
        query = query.where(CreditLedger.reference == item.job_id)
    elif item.user_id is not None:
        query = query.where(CreditLedger.user_id == item.user_id)
    else:
        return []
    rows = session.scalars(query.order_by(CreditLedger.id.desc()).limit(ENTRIES_SHOWN)).all()
    return [{"id": r.id, "createdAt": isoformat(r.created_at), "type": r.type, "amount": r.amount,
             "heldChange": r.held_change, "balanceBefore": r.balance_before, "balanceAfter": r.balance_after,
             "reference": r.reference, "key": r.idempotency_key} for r in reversed(rows)]
