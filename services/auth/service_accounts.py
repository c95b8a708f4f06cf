"""Service accounts: accounts of internal services (``users.kind = "service"``). They never
sign in with a password; they act through API tokens and the queue API. Their credit budget
is an ordinary credits account; their settings (allowed workflows, concurrency, queue
signing key) belong to the integrations service, which creates them here."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from shared.db import Database, utcnow
from shared.errors import Conflict
from services.auth.config import AuthConfig
from services.auth.models import User

# Addresses under the reserved ".invalid" domain (RFC 2606) never receive mail.
SERVICE_EMAIL_DOMAIN = "service.invalid"


class ServiceAccounts:
    def __init__(self, db: Database, config: AuthConfig) -> None:
        self.db = db
        self.config = config

    def create(self, username: str) -> tuple[dict[str, Any], bool]:
        """The service account ``username``, created if missing (so a caller that failed half
        way can try again); ``(user, created)``. 409 USERNAME_TAKEN when a person has the name."""
        with self.db.read() as session:
            existing = session.scalar(select(User).where(User.username_lower == username.lower()))
        if existing is not None:
            if existing.kind != "service":
                raise Conflict("This username is taken.", code="USERNAME_TAKEN")
            return existing.summary(), False
        now = utcnow()
        with self.db.transaction() as session:
            user = User(username=username, username_lower=username.lower(),
                        email=f"{username.lower()}@{SERVICE_EMAIL_DOMAIN}", password_hash=None,
                        role="user", kind="service", is_active=True, bio="", website="", location="",
                        new_works_public=False, profile_visible=False, created_at=now, updated_at=now)
            session.add(user)
            session.flush()
            return user.summary(), True
