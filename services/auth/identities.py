"""Identities at outside providers linked to accounts: the owner's list and unlinking, the
administrators' view, and the operator's switches that turn a provider off at once."""
from __future__ import annotations

from typing import Any, Sequence

from sqlalchemy import func, select

from shared.db import Database, utcnow
from shared.errors import Conflict, NotFound
from services.auth.external import IdentityProvider, provider_not_found
from services.auth.models import ExternalIdentity, ProviderSwitch
from services.auth.users import get_user


class ProviderSwitches:
    """Which configured providers accept sign-ins. A provider is on until an administrator turns
    it off; every step of a sign-in asks, so turning one off stops sign-ins already under way."""

    def __init__(self, db: Database, providers: Sequence[IdentityProvider]) -> None:
        self.db = db
        self.providers = {provider.key: provider for provider in providers}

    def enabled_keys(self) -> set[str]:
        with self.db.read() as session:
            off = set(session.scalars(select(ProviderSwitch.provider).where(ProviderSwitch.enabled.is_(False))))
        return set(self.providers) - off

    def is_enabled(self, key: str) -> bool:
        with self.db.read() as session:
            row = session.get(ProviderSwitch, key)
        return row is None or row.enabled

    def states(self) -> list[dict[str, Any]]:
        enabled = self.enabled_keys()
        return [{**describe(provider), "enabled": key in enabled} for key, provider in self.providers.items()]

    def set_enabled(self, admin_id: int, key: str, enabled: bool) -> dict[str, Any]:
        provider = self.providers.get(key)
        if provider is None:
            raise provider_not_found(key)
        with self.db.transaction() as session:
            row = session.get(ProviderSwitch, key, with_for_update=True)
            if row is None:
                row = ProviderSwitch(provider=key)
                session.add(row)
            row.enabled, row.updated_by, row.updated_at = enabled, admin_id, utcnow()
        return {**describe(provider), "enabled": enabled}


class LinkedIdentities:
    def __init__(self, db: Database, providers: Sequence[IdentityProvider]) -> None:
        self.db = db
        self.names = {provider.key: provider.name for provider in providers}

    def of_user(self, user_id: int) -> dict[str, Any]:
        with self.db.read() as session:
            user = get_user(session, user_id)
            rows = session.scalars(select(ExternalIdentity).where(ExternalIdentity.user_id == user.id)
                                   .order_by(ExternalIdentity.id)).all()
            return {"items": [self._view(row) for row in rows], "hasPassword": user.password_hash is not None}

    def unlink(self, user_id: int, identity_id: int) -> dict[str, Any]:
        """Remove one of the caller's identities, unless it is their last way to sign in."""
        with self.db.transaction() as session:
            user = get_user(session, user_id, lock=True)
            row = session.get(ExternalIdentity, identity_id) if 0 < identity_id < 2**63 else None
            if row is None or row.user_id != user.id:
                raise NotFound("You have no linked identity by this id.", code="IDENTITY_NOT_FOUND")
            count = session.scalar(select(func.count()).select_from(ExternalIdentity)
                                   .where(ExternalIdentity.user_id == user.id))
            if user.password_hash is None and count == 1:
                raise Conflict("This is your only way to sign in: set a password or link another identity first.",
                               code="LAST_SIGN_IN_METHOD")
            session.delete(row)
        return self.of_user(user_id)

    def _view(self, row: ExternalIdentity) -> dict[str, Any]:
        return {**row.view(), "providerName": self.names.get(row.provider, row.provider)}


def describe(provider: IdentityProvider) -> dict[str, Any]:
    """What anyone may know of a provider: never its client id, secret or endpoints."""
    return {"key": provider.key, "kind": provider.kind, "name": provider.name, "icon": provider.icon or None}
