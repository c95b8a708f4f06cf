"""Administrators' adjustments: grants and deductions of available credits, each one ledger
row with the reason and the operator. A grant is also told to its user, as a notification in
the gallery's bell."""
from __future__ import annotations

import hashlib
from uuid import uuid4

from shared.errors import Conflict
from services.credits.ledger import Balance, Ledger, Transaction
from services.gallery.client import GalleryClient

MAX_DEDUPE_KEY = 128  # the gallery's limit


class Adjustments:
    def __init__(self, ledger: Ledger, gallery: GalleryClient) -> None:
        self.ledger = ledger
        self.gallery = gallery

    def grant(self, user_id: int, amount: int, reason: str, operator_id: int,
              idempotency_key: str | None = None) -> Balance:
        """An administrator adds credits to an existing account's available balance."""
        return self._adjust("admin_grant", user_id, amount, reason, operator_id, idempotency_key)

    def deduct(self, user_id: int, amount: int, reason: str, operator_id: int,
               idempotency_key: str | None = None) -> Balance:
        """An administrator removes credits from an account's available balance (never below 0)."""
        return self._adjust("admin_deduct", user_id, -amount, reason, operator_id, idempotency_key)

    def _adjust(self, entry_type: str, user_id: int, amount: int, reason: str, operator_id: int,
                idempotency_key: str | None) -> Balance:
        key = f"{entry_type}:{idempotency_key or uuid4().hex}"

        def work(tx: Transaction) -> Balance:
            recorded = self.ledger.recorded(tx, key, entry_type)
            if recorded is not None:
                if (recorded.user_id, recorded.amount) != (user_id, amount):
                    raise Conflict("This idempotency key was used for a different adjustment.",
                                   code="IDEMPOTENCY_CONFLICT")
                return self.ledger.balance(tx, user_id)
            balance = self.ledger.move(tx, user_id, entry_type, key, amount=amount, held_change=0,
                                       description=reason, operator_id=operator_id)
            if balance is not None:
                if entry_type == "admin_grant":
                    tx.after_commit(lambda: self._notify_granted(user_id, amount, reason, key))
                return balance
            self.ledger.refuse_if_closed(tx, user_id, status=409)
            available = self.ledger.balance(tx, user_id).available  # 404 when there is no account
            raise Conflict(f"The account holds only {available} available credits.", code="BALANCE_TOO_LOW",
                           details={"available": available, "requested": -amount})
        return self.ledger.unit_of_work(work)

    def _notify_granted(self, user_id: int, amount: int, reason: str, key: str) -> None:
        """Best effort, the grant has committed. ``key`` is the grant's ledger idempotency key,
        so a repeated notice for the same grant is stored once."""
        self.gallery.notify(user_id, "credits.granted", "获得积分 / Credits granted", f"{amount} credits: {reason}",
                            {"amount": amount, "reason": reason}, dedupe_key(key))


def dedupe_key(key: str) -> str:
    """The ledger key itself, or its digest when it is longer than the gallery accepts."""
    if len(key) <= MAX_DEDUPE_KEY:
        return key
    return "admin_grant:sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()
