"""Deleting an account: the user, their sessions, linked identities and avatar, then the ``user.deleted``
announcement on which credits and gallery close the account and remove the works."""
from __future__ import annotations

import logging

import redis
from sqlalchemy import delete

from shared.db import Database, after_commit
from shared.events import announce_user_deleted
from shared.storage import Storage
from shared.tokens import Claims
from services.auth.models import ExternalIdentity, PasswordResetToken, RefreshToken
from services.auth.revocation import Revocations
from services.auth.users import get_user, remove_avatar_after_commit, verify_own_password

log = logging.getLogger(__name__)


class AccountDeletion:
    def __init__(self, db: Database, storage: Storage, revocations: Revocations, events: redis.Redis) -> None:
        self.db = db
        self.storage = storage
        self.revocations = revocations
        self.events = events

    def delete_account(self, claims: Claims, password: str) -> None:
        """Delete the user, their sessions and avatar; every token stops at once, and
        ``user.deleted`` is announced after commit."""
        verify_own_password(self.db, claims.user_id, password, "password")
        with self.db.transaction() as session:
            user = get_user(session, claims.user_id, lock=True)
            if user.avatar_key:
                remove_avatar_after_commit(session, self.storage, user.avatar_key, user.id)
            session.execute(delete(RefreshToken).where(RefreshToken.user_id == user.id))
            session.execute(delete(PasswordResetToken).where(PasswordResetToken.user_id == user.id))
            session.execute(delete(ExternalIdentity).where(ExternalIdentity.user_id == user.id))
            session.delete(user)
            session.flush()
            self.revocations.revoke_user(claims.user_id)
            after_commit(session, lambda: self._announce(claims.user_id))

    def _announce(self, user_id: int) -> None:
        try:
            announce_user_deleted(self.events, user_id)
        except redis.RedisError:
            # The account is gone either way; an operator replays the event from this line.
            log.error("user.deleted for user %s NOT announced on platform:events; replay it", user_id,
                      exc_info=True)
