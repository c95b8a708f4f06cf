"""Deleting an account: the user, their sessions, linked identities and avatar, and the
``user.deleted`` announcement (through the outbox, in the same unit of work) on which credits
and gallery close the account and remove the works."""
from __future__ import annotations

from sqlalchemy import delete

from shared.db import Database, after_commit
from shared.events import USER_DELETED
from shared.storage import Storage
from shared.tokens import Claims
from services.auth.models import ExternalIdentity, PasswordResetToken, RefreshToken
from services.auth.outbox import Outbox
from services.auth.revocation import Revocations
from services.auth.users import get_user, remove_avatar_after_commit, verify_own_password


class AccountDeletion:
    def __init__(self, db: Database, storage: Storage, revocations: Revocations, outbox: Outbox) -> None:
        self.db = db
        self.storage = storage
        self.revocations = revocations
        self.outbox = outbox

    def delete_account(self, claims: Claims, password: str) -> None:
        """Delete the user, their sessions and avatar; every token stops at once, and
        ``user.deleted`` is announced after commit (or later by the outbox relay)."""
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
            self.outbox.add(session, USER_DELETED, userId=str(user.id))
            self.revocations.revoke_user(claims.user_id)
            after_commit(session, self.outbox.relay_now)
