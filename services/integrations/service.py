"""Service accounts: an administrator creates one (its user in auth, its credits account
without a signup bonus, its budget granted through the ordinary ledger as ``admin_grant``,
its settings here) and receives its queue credentials once; lists them with usage and
spend; changes their limits; rotates their signing key; tops up their budget.

The steps in other services are each idempotent (auth returns the existing service user of
that name, credits opens an account once, the first grant has a fixed key), so a creation
cut short is completed by running it again.
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from shared.db import Database, isoformat, utcnow
from shared.errors import Conflict, NotFound, Unprocessable
from shared.tokens import Claims
from services.auth.client import AuthClient
from services.credits.client import CreditsClient
from services.integrations.config import IntegrationsConfig
from services.integrations.contract import QueueNames
from services.integrations.models import ServiceAccount
from services.integrations.request_log import RequestLog
from services.integrations.signing import QUEUE_KEY, SigningKeys


class ServiceAccounts:
    def __init__(self, db: Database, config: IntegrationsConfig, keys: SigningKeys, auth: AuthClient,
                 credits: CreditsClient, requests: RequestLog) -> None:
        self.db = db
        self.config = config
        self.keys = keys
        self.names = QueueNames(config.queue_prefix)
        self.auth = auth
        self.credits = credits
        self.requests = requests

    def create(self, admin: Claims, bearer: str, data: dict[str, Any]) -> dict[str, Any]:
        """Create a service account; the answer holds its queue secret, shown this once."""
        owner = self.auth.user(data["owner_id"])
        if owner is None or owner.get("kind") == "service":
            raise Unprocessable("The owner must be an existing person's account.", code="OWNER_NOT_FOUND",
                                details={"ownerId": ["No such person."]})
        with self.db.read() as session:
            if session.scalar(select(ServiceAccount.user_id).where(ServiceAccount.name == data["name"])) is not None:
                raise Conflict("A service account with this name exists.", code="SERVICE_ACCOUNT_EXISTS")
        user = self.auth.create_service_account(data["name"])
        self.credits.open_account(user["id"], signup_bonus=False)
        if data["budget"]:
            self.credits.grant(user["id"], data["budget"], f"Budget of service account {data['name']}",
                               f"service-account:{user['id']}:initial-budget", bearer)
        now = utcnow()
        key_id = self.keys.new_key_id(QUEUE_KEY)
        try:
            with self.db.transaction() as session:
                row = ServiceAccount(user_id=user["id"], name=data["name"], owner_user_id=data["owner_id"],
                                     description=data["description"], allowed_workflows=data["allowed_workflows"],
                                     max_active_jobs=data["max_active_jobs"] or self.config.default_max_active_jobs,
                                     url_ttl_seconds=data["url_ttl_seconds"] or self.config.default_url_ttl_seconds,
                                     lane=data["lane"],
                                     key_id=key_id, key_created_at=now, is_active=True, created_by=admin.user_id,
                                     created_at=now, updated_at=now)
                session.add(row)
        except IntegrityError as exc:
            raise Conflict("A service account with this name exists.", code="SERVICE_ACCOUNT_EXISTS") from exc
        return {"serviceAccount": self._detail(row, bearer), "credentials": self._credentials(row)}

    def list_accounts(self, bearer: str, page: int, page_size: int) -> dict[str, Any]:
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(ServiceAccount)) or 0
            rows = session.scalars(select(ServiceAccount).order_by(ServiceAccount.created_at.desc(),
                                                                   ServiceAccount.user_id.desc())
                                   .offset((page - 1) * page_size).limit(page_size)).all()
        usage = self.requests.usage([row.user_id for row in rows])
        return {"items": [self._json(row, usage[row.user_id], self.credits.account(row.user_id, bearer))
                          for row in rows], "page": page, "pageSize": page_size, "total": total}

    def get(self, bearer: str, user_id: int) -> dict[str, Any]:
        with self.db.read() as session:
            row = _get(session, user_id)
        return self._detail(row, bearer)

    def update(self, bearer: str, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        with self.db.transaction() as session:
            row = _get(session, user_id, lock=True)
            for field, value in changes.items():
                setattr(row, field, value)
            row.updated_at = utcnow()
        return self._detail(row, bearer)

    def rotate_key(self, user_id: int, grace_seconds: int = 0) -> dict[str, Any]:
        """A new signing key. The old one keeps working for ``grace_seconds`` (so the service can
        switch without losing a message); after that, or at once with no grace, messages signed
        with it are dead-lettered. A key from an earlier rotation stops now either way."""
        now = utcnow()
        with self.db.transaction() as session:
            row = _get(session, user_id, lock=True)
            row.previous_key_id = row.key_id if grace_seconds else None
            row.previous_key_expires_at = now + timedelta(seconds=grace_seconds) if grace_seconds else None
            row.key_id, row.key_created_at, row.updated_at = self.keys.new_key_id(QUEUE_KEY), now, now
        return {"credentials": self._credentials(row)}

    def grant(self, bearer: str, user_id: int, amount: int, reason: str, idempotency_key: str | None) -> dict:
        """Add to the account's budget: an ``admin_grant`` in the ledger, naming the administrator."""
        with self.db.read() as session:
            _get(session, user_id)
        key = f"service-account:{user_id}:{idempotency_key}" if idempotency_key else None
        return self.credits.grant(user_id, amount, reason, key, bearer)

    def limits(self, user_id: int) -> dict[str, Any]:
        """What admission applies to this account's jobs over HTTP (``services.render.accounts``)."""
        with self.db.read() as session:
            row = _get(session, user_id)
        return {"maxActiveJobs": row.max_active_jobs, "workflows": row.allowed_workflows, "lane": row.lane,
                "isActive": row.is_active}

    def is_service_account(self, user_id: int) -> bool:
        with self.db.read() as session:
            return session.get(ServiceAccount, user_id) is not None

    def _detail(self, row: ServiceAccount, bearer: str) -> dict[str, Any]:
        return self._json(row, self.requests.usage([row.user_id])[row.user_id], self.credits.account(row.user_id, bearer))

    def _credentials(self, row: ServiceAccount) -> dict[str, Any]:
        return {"keyId": row.key_id, "secret": self.keys.secret(row.key_id), **self._queues(row)}

    def _queues(self, row: ServiceAccount) -> dict[str, str]:
        return {"exchange": self.names.exchange, "requestQueue": self.names.requests(row.name),
                "replyQueue": self.names.replies(row.name), "deadLetterQueue": self.names.dead_letter}

    def _json(self, row: ServiceAccount, usage: dict[str, int], credits: dict[str, Any] | None) -> dict[str, Any]:
        return {"id": row.user_id, "name": row.name, "ownerId": row.owner_user_id, "description": row.description,
                "allowedWorkflows": row.allowed_workflows, "maxActiveJobs": row.max_active_jobs, "lane": row.lane,
                "urlTtlSeconds": row.url_ttl_seconds, "keyId": row.key_id, "keyCreatedAt": isoformat(row.key_created_at),
                "previousKey": _previous_key(row),
                "isActive": row.is_active, "createdAt": isoformat(row.created_at), "queues": self._queues(row),
                "usage": usage, "credits": None if credits is None else {
                    "available": credits["available"], "held": credits["held"],
                    "granted": credits["lifetimeEarned"], "spent": credits["lifetimeSpent"]}}


def _get(session, user_id: int, lock: bool = False) -> ServiceAccount:
    row = session.get(ServiceAccount, user_id, with_for_update=lock) if 0 < user_id < 2**63 else None
    if row is None:
        raise NotFound("No such service account.", code="SERVICE_ACCOUNT_NOT_FOUND")
    return row


def _previous_key(row: ServiceAccount) -> dict[str, str] | None:
    """The key a rotation replaced while it is still accepted, else None."""
    if row.previous_key_id is None or row.previous_key_expires_at is None or row.previous_key_expires_at <= utcnow():
        return None
    return {"keyId": row.previous_key_id, "expiresAt": isoformat(row.previous_key_expires_at)}
