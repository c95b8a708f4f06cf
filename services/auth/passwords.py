"""Setting a new password: changed by the signed-in user, or through a mailed reset link.

Either way every other session of the user ends, and every access token issued so far
stops at once (``revoked:user``), inside the unit of work that sets the password. The
reset mail goes out after commit.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select, update

from shared.db import Database, after_commit, utcnow
from shared.errors import BadRequest, Conflict, ServiceError
from shared.tokens import Claims
from services.auth import refresh_tokens
from services.auth.config import AuthConfig
from services.auth.hashing import hash_password
from services.auth.mail import Mailer
from services.auth.models import PasswordResetToken, User
from services.auth.revocation import Revocations
from services.auth.sessions import Sessions, SignedIn
from services.auth.tokens import new_secret, secret_digest
from services.auth.users import get_user, verify_own_password

log = logging.getLogger(__name__)


class Passwords:
    def __init__(self, db: Database, config: AuthConfig, sessions: Sessions, revocations: Revocations,
                 mailer: Mailer) -> None:
        self.db = db
        self.config = config
        self.sessions = sessions
        self.revocations = revocations
        self.mailer = mailer

    def change_password(self, claims: Claims, current_password: str | None, new_password: str) -> SignedIn:
        """Set a new password, end every other session and every access token issued so far,
        and give the caller a fresh pair in their own session. An account made by single
        sign-on sets its first password without a current one."""
        verified_hash = verify_own_password(self.db, claims.user_id, current_password, "currentPassword",
                                            unset_ok=True)
        new_hash = hash_password(new_password, self.config.bcrypt_rounds)
        now = utcnow()
        with self.db.transaction() as session:
            user = get_user(session, claims.user_id, lock=True)
            if user.password_hash != verified_hash:
                raise Conflict("The password was changed meanwhile; try again.", code="PASSWORD_CHANGED")
            user.password_hash = new_hash
            user.updated_at = now
            current = refresh_tokens.family_of_access_token(session, claims.token_id)
            keep = current.family_id if current is not None else None
            refresh_tokens.revoke_sessions(session, user.id, now=now, since=now, keep_family=keep)
            if keep is not None:
                refresh_tokens.retire_family_tokens(session, keep, now)
            self.revocations.revoke_user(user.id)
            return self.sessions.sign_in(session, user, remember_me=bool(current and current.remember_me),
                                         family_id=keep)

    def request_password_reset(self, email: str) -> None:
        """Mail a single-use reset link if the address belongs to an active account. The
        answer is the same either way, so nobody learns which addresses have accounts."""
        now = utcnow()
        with self.db.transaction() as session:
            user = session.scalar(select(User).where(User.email == email))
            if user is None or not user.is_active:
                log.info("password reset requested for an address without an active account")
                return
            secret, digest = new_secret()
            session.add(PasswordResetToken(user_id=user.id, token_hash=digest, created_at=now,
                                           expires_at=now + timedelta(minutes=self.config.password_reset_minutes)))
            after_commit(session, lambda: self._mail_reset_link(user.email, user.username, secret))

    def _mail_reset_link(self, to: str, username: str, secret: str) -> None:
        link = f"{self.config.public_url}/reset-password?token={secret}"
        body = (f"Hello {username},\n\nSomeone asked to reset the password of your account. To choose a new "
                f"password, open this link within {self.config.password_reset_minutes} minutes:\n\n{link}\n\n"
                f"If it was not you, ignore this message; your password stays as it is.\n")
        try:
            self.mailer.send(to, "Reset your password", body)
        except ServiceError:
            # Answering differently would tell the caller the address has an account.
            log.error("password-reset mail to user %s could not be sent", username, exc_info=True)

    def reset_password(self, secret: str, new_password: str) -> None:
        """Spend a reset token: set the password and end every session of the user."""
        new_hash = hash_password(new_password, self.config.bcrypt_rounds)
        now = utcnow()
        with self.db.transaction() as session:
            row = session.scalar(select(PasswordResetToken)
                                 .where(PasswordResetToken.token_hash == secret_digest(secret)).with_for_update())
            if row is None or row.used_at is not None:
                raise BadRequest("This reset link is invalid or was already used.", code="RESET_TOKEN_INVALID")
            if row.expires_at <= now:
                raise BadRequest("This reset link has expired; ask for a new one.", code="RESET_TOKEN_EXPIRED")
            user = get_user(session, row.user_id, lock=True)
            user.password_hash = new_hash
            user.updated_at = now
            session.execute(update(PasswordResetToken)
                            .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
                            .values(used_at=now).execution_options(synchronize_session=False))
            refresh_tokens.revoke_sessions(session, user.id, now=now, since=now)
            self.revocations.revoke_user(user.id)
