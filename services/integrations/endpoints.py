"""Webhook endpoints: registered by a user (or an API token with the scope ``webhooks``) or,
for a service account, by an administrator; listed with their deliveries; a delivery can be
sent again. The signing secret is shown once, at registration."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.db import Database, isoformat, utcnow
from shared.errors import Conflict, Forbidden, NotFound
from shared.tokens import Claims
from services.integrations.config import IntegrationsConfig
from services.integrations.models import WebhookDelivery, WebhookEndpoint
from services.integrations.service import ServiceAccounts
from services.integrations.signing import WEBHOOK_KEY, SigningKeys
from services.integrations.ssrf import check_url

MAX_ENDPOINTS = 20


class WebhookEndpoints:
    def __init__(self, db: Database, config: IntegrationsConfig, keys: SigningKeys, accounts: ServiceAccounts) -> None:
        self.db = db
        self.config = config
        self.keys = keys
        self.accounts = accounts

    def register(self, caller: Claims, owner_id: int | None, url: str, events: list[str],
                 description: str) -> dict[str, Any]:
        owner = self._owner(caller, owner_id)
        check_url(url, self.config.webhook_allow_private)
        now = utcnow()
        with self.db.transaction() as session:
            count = session.scalar(select(func.count()).select_from(WebhookEndpoint).where(
                WebhookEndpoint.user_id == owner, WebhookEndpoint.deleted_at.is_(None))) or 0
            if count >= MAX_ENDPOINTS:
                raise Conflict(f"An account may have at most {MAX_ENDPOINTS} webhooks.", code="WEBHOOK_LIMIT")
            row = WebhookEndpoint(user_id=owner, url=url, events=sorted(set(events)), description=description,
                                  key_id=self.keys.new_key_id(WEBHOOK_KEY), created_by=caller.user_id, created_at=now)
            session.add(row)
            session.flush()
            return {"webhook": endpoint_json(row), "secret": self.keys.secret(row.key_id)}

    def list_endpoints(self, caller: Claims, owner_id: int | None) -> dict[str, Any]:
        owner = self._owner(caller, owner_id)
        with self.db.read() as session:
            rows = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.user_id == owner,
                                                                 WebhookEndpoint.deleted_at.is_(None))
                                   .order_by(WebhookEndpoint.id)).all()
            return {"items": [endpoint_json(row) for row in rows]}

    def delete(self, caller: Claims, endpoint_id: int) -> dict[str, Any]:
        """Stop deliveries to the endpoint; its pending ones are given up."""
        now = utcnow()
        with self.db.transaction() as session:
            row = self._endpoint(session, caller, endpoint_id)
            row.deleted_at = now
            session.execute(update(WebhookDelivery).where(WebhookDelivery.endpoint_id == row.id,
                                                          WebhookDelivery.status == "pending")
                            .values(status="failed", last_error="The webhook was deleted.", next_attempt_at=None))
            return endpoint_json(row)

    def deliveries(self, caller: Claims, endpoint_id: int, page: int, page_size: int) -> dict[str, Any]:
        with self.db.read() as session:
            endpoint = self._endpoint(session, caller, endpoint_id)
            total = session.scalar(select(func.count()).select_from(WebhookDelivery)
                                   .where(WebhookDelivery.endpoint_id == endpoint.id)) or 0
            rows = session.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
                                   .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
                                   .offset((page - 1) * page_size).limit(page_size)).all()
            return {"items": [delivery_json(row) for row in rows], "page": page, "pageSize": page_size, "total": total}

    def redeliver(self, caller: Claims, endpoint_id: int, delivery_id: str) -> dict[str, Any]:
        """Send a delivery again now (whatever became of it), retrying for another day if it fails."""
        now = utcnow()
        with self.db.transaction() as session:
            endpoint = self._endpoint(session, caller, endpoint_id)
            row = session.get(WebhookDelivery, delivery_id, with_for_update=True) if len(delivery_id) <= 32 else None
            if row is None or row.endpoint_id != endpoint.id:
                raise NotFound("No such delivery.", code="DELIVERY_NOT_FOUND")
            row.status, row.next_attempt_at, row.locked_until = "pending", now, None
            row.give_up_at = now + timedelta(seconds=self.config.webhook_give_up_seconds)
            return delivery_json(row)

    def _owner(self, caller: Claims, owner_id: int | None) -> int:
        """The caller, or a service account an administrator names."""
        if owner_id is None or owner_id == caller.user_id:
            return caller.user_id
        if not caller.is_admin:
            raise Forbidden("Only administrators manage another account's webhooks.", code="ADMIN_REQUIRED")
        if not self.accounts.is_service_account(owner_id):
            raise Forbidden("Administrators manage the webhooks of service accounts only.",
                            code="NOT_A_SERVICE_ACCOUNT")
        return owner_id

    def _endpoint(self, session: Session, caller: Claims, endpoint_id: int) -> WebhookEndpoint:
        row = session.get(WebhookEndpoint, endpoint_id) if 0 < endpoint_id < 2**63 else None
        if row is None or row.deleted_at is not None or not (
                row.user_id == caller.user_id or (caller.is_admin and self.accounts.is_service_account(row.user_id))):
            raise NotFound("No such webhook.", code="WEBHOOK_NOT_FOUND")
        return row


def endpoint_json(row: WebhookEndpoint) -> dict[str, Any]:
    return {"id": row.id, "userId": row.user_id, "url": row.url, "events": list(row.events),
            "description": row.description, "keyId": row.key_id, "createdAt": isoformat(row.created_at),
            "deletedAt": isoformat(row.deleted_at)}


def delivery_json(row: WebhookDelivery) -> dict[str, Any]:
    return {"id": row.id, "eventId": row.event_id, "eventType": row.event_type, "status": row.status,
            "attempts": row.attempts, "lastStatusCode": row.last_status_code, "lastError": row.last_error,
            "nextAttemptAt": isoformat(row.next_attempt_at), "giveUpAt": isoformat(row.give_up_at),
            "createdAt": isoformat(row.created_at), "lastAttemptAt": isoformat(row.last_attempt_at),
            "deliveredAt": isoformat(row.delivered_at)}
