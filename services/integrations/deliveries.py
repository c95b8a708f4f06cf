"""Webhook deliveries: each job outcome or ``credits.low`` of a user becomes one delivery
per subscribed endpoint (keyed by the event's id: a job has one outcome, so ``<type>:<jobId>``,
the ``eventId`` of its live event (``shared.events.outcome_id``); ``credits.low:<userId>:<time>``;
reading the event again, or the same outcome announced twice, records nothing new), with its JSON
body fixed once. A delivery is POSTed, signed, until the
endpoint answers 2xx; after a failure it waits ``WEBHOOK_RETRY_BASE_SECONDS`` × 2^(attempt−1)
(at most an hour) and is given up ``WEBHOOK_GIVE_UP_SECONDS`` (a day) after it was recorded.
Every attempt is recorded: status, attempts, the last answer or error.

Several dispatchers may run: a delivery is leased (``locked_until``) by the one attempting it.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import requests
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError

from shared.db import Database, utcnow
from shared.events import Announcement, outcome_id, user_announcement
from services.integrations.config import IntegrationsConfig
from services.integrations.models import WebhookDelivery, WebhookEndpoint
from services.integrations.outcomes import JobOutcomes
from services.integrations.signing import SigningKeys, webhook_signature
from services.integrations.ssrf import UrlRefused, check_url, public_only_session

log = logging.getLogger(__name__)

LEASE_SECONDS = 120
MAX_BACKOFF_SECONDS = 3600
USER_AGENT = "aigc-platform-webhooks/1"


class Deliveries:
    def __init__(self, db: Database, config: IntegrationsConfig, keys: SigningKeys, outcomes: JobOutcomes) -> None:
        self.db = db
        self.config = config
        self.keys = keys
        self.outcomes = outcomes
        self.http = public_only_session(config.webhook_allow_private)
        self.http.headers["User-Agent"] = USER_AGENT

    def record(self, fields: dict[str, str]) -> int:
        """The deliveries of one ``platform:events`` entry; returns how many were recorded."""
        event = user_announcement(fields)
        if event is None:
            return 0
        event_id = event_key(event)
        with self.db.read() as session:
            endpoints = [row for row in session.scalars(select(WebhookEndpoint).where(
                WebhookEndpoint.user_id == event.user_id, WebhookEndpoint.deleted_at.is_(None))) if event.type in row.events]
        if not endpoints:
            return 0
        body = json.dumps(self._payload(event_id, event), separators=(",", ":"), ensure_ascii=False)
        recorded = 0
        for endpoint in endpoints:
            now = utcnow()
            try:
                with self.db.transaction() as session:
                    session.add(WebhookDelivery(
                        id=uuid.uuid4().hex, endpoint_id=endpoint.id, event_id=event_id, event_type=event.type,
                        payload=body, status="pending", attempts=0, next_attempt_at=now, created_at=now,
                        give_up_at=now + timedelta(seconds=self.config.webhook_give_up_seconds)))
                recorded += 1
            except IntegrityError:
                pass  # recorded when this entry was read before
        return recorded

    def _payload(self, event_id: str, event: Announcement) -> dict[str, Any]:
        data = (self.outcomes.data(event, self.config.default_url_ttl_seconds) if event.job_id is not None
                else dict(event.data))
        return {"version": 1, "id": event_id, "type": event.type, "createdAt": event.ts,
                "userId": event.user_id, "data": data}

    def lease_due(self, limit: int = 20, now: datetime | None = None) -> list[str]:
        """Ids of pending deliveries whose time has come, leased to this caller."""
        now = now or utcnow()
        with self.db.read() as session:
            candidates = list(session.scalars(select(WebhookDelivery.id).where(
                WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now,
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now))
                .order_by(WebhookDelivery.next_attempt_at).limit(limit)))
        leased = []
        for delivery_id in candidates:
            with self.db.transaction() as session:
                if session.execute(update(WebhookDelivery).where(
                        WebhookDelivery.id == delivery_id, WebhookDelivery.status == "pending",
                        or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until < now))
                        .values(locked_until=now + timedelta(seconds=LEASE_SECONDS))).rowcount == 1:
                    leased.append(delivery_id)
        return leased

    def attempt(self, delivery_id: str) -> str:
        """POST one leased delivery and record what happened; returns its status."""
        with self.db.read() as session:
            delivery = session.get(WebhookDelivery, delivery_id)
            endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
        status_code, error = None, None
        started = utcnow()
        try:
            check_url(endpoint.url, self.config.webhook_allow_private)
            timestamp = int(time.time())
            body = delivery.payload.encode("utf-8")
            response = self.http.post(endpoint.url, data=body, timeout=self.config.webhook_timeout_seconds,
                                      allow_redirects=False, headers={
                                          "Content-Type": "application/json",
                                          "X-Webhook-Id": delivery.id, "X-Webhook-Event": delivery.event_type,
                                          "X-Webhook-Key-Id": endpoint.key_id,
                                          "X-Webhook-Signature": webhook_signature(self.keys.secret(endpoint.key_id),
                                                                                   timestamp, body)})
            response.close()
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"The endpoint answered {status_code}."
        except UrlRefused as exc:
            error = exc.message
        except requests.RequestException as exc:
            error = f"{exc.__class__.__name__}: {exc}"[:500]
        return self._record(delivery_id, started, status_code, error)

    def _record(self, delivery_id: str, at: datetime, status_code: int | None, error: str | None) -> str:
        with self.db.transaction() as session:
            row = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            row.attempts += 1
            row.last_attempt_at, row.last_status_code, row.last_error, row.locked_until = at, status_code, error, None
            if error is None:
                row.status, row.delivered_at, row.next_attempt_at = "succeeded", utcnow(), None
            elif utcnow() >= row.give_up_at:
                row.status, row.next_attempt_at = "failed", None
            else:
                row.next_attempt_at = utcnow() + timedelta(seconds=self.backoff(row.attempts))
            if row.status != "pending":
                log.info("webhook delivery %s %s after %s attempts (%s)", row.id, row.status, row.attempts,
                         error or status_code)
            return row.status

    def backoff(self, attempts: int) -> int:
        return min(self.config.webhook_retry_base_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)

    def close(self) -> None:
        self.http.close()


def event_key(event: Announcement) -> str:
    """The event's id: the same for every endpoint and every time the entry is read."""
    if event.job_id is not None:
        return outcome_id(event.type, event.job_id)[:64]
    return f"{event.type}:{event.user_id}:{event.ts}"[:64]
