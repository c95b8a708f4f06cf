"""Sessions: sign-in, refresh-token rotation with reuse detection, and sign-out.

A session is one refresh-token family (``refresh_tokens``) and the access tokens issued
with it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.errors import Forbidden, ServiceError, Unauthorized
from shared.tokens import Claims
from services.auth import refresh_tokens
from services.auth.config import AuthConfig
from services.auth.hashing import hash_password, verify_password
from services.auth.models import User
from services.auth.revocation import Revocations
from services.auth.tokens import TokenSigner
from services.auth.users import get_user

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user: what register, login, refresh and password change answer with."""

    user: dict[str, Any]
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    credits: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "accessToken": self.access_token, "tokenType": "Bearer",
                "expiresIn": self.expires_in, "refreshToken": self.refresh_token,
                "refreshExpiresIn": self.refresh_expires_in, "credits": self.credits}


class Sessions:
    def __init__(self, db: Database, config: AuthConfig, signer: TokenSigner, revocations: Revocations) -> None:
        self.db = db
        self.config = config
        self.signer = signer
        self.revocations = revocations
        # Verified against when the user is unknown, so both failures cost the same time.
        self._dummy_hash = hash_password("not a real password 0", config.bcrypt_rounds)

    def login(self, login: str, password: str, remember_me: bool) -> SignedIn:
        # bcrypt runs outside any transaction: on SQLite a transaction holds the write lock.
        with self.db.read() as session:
            user = session.scalar(select(User).where(_login_matches(login)))
        if user is None or user.password_hash is None or user.kind == "service":  # unknown, no password, or a service account
            verify_password(password, self._dummy_hash)
            raise _invalid_credentials()
        if not verify_password(password, user.password_hash):
            raise _invalid_credentials()
        if not user.is_active:
            raise Forbidden("This account is disabled.", code="ACCOUNT_DISABLED")
        with self.db.transaction() as session:
            user = get_user(session, user.id, lock=True)
            if not user.is_active:  # disabled while the password was being checked
                raise Forbidden("This account is disabled.", code="ACCOUNT_DISABLED")
            user.last_login_at = utcnow()
            return self.sign_in(session, user, remember_me=remember_me)

    def refresh(self, secret: str) -> SignedIn:
        """Rotate a refresh token: the presented one is spent and a new pair is issued. A spent
        token presented again means it was copied: the whole family is revoked."""
        now = utcnow()
        failure: ServiceError | None = None
        with self.db.transaction() as session:
            owner_id = refresh_tokens.owner_of_refresh_token(session, secret)
            user = get_user(session, owner_id, lock=True, missing_ok=True) if owner_id is not None else None
            row = refresh_tokens.find_refresh_token(session, secret) if user is not None else None
            if row is None:
                failure = Unauthorized("The refresh token is invalid.", code="REFRESH_TOKEN_INVALID")
            elif row.revoked_at is not None:
                failure = Unauthorized("This session has ended; sign in again.", code="TOKEN_REVOKED")
            elif row.used_at is not None:
                self._end_family(session, row.user_id, now, family_id=row.family_id)
                log.warning("refresh token reused for user %s; family %s revoked", row.user_id, row.family_id)
                failure = Unauthorized("This refresh token was already used; sign in again.", code="TOKEN_REUSED")
            elif row.expires_at <= now:
                failure = Unauthorized("Your session has expired; sign in again.", code="REFRESH_TOKEN_EXPIRED")
            elif not user.is_active:
                failure = Forbidden("This account is disabled.", code="ACCOUNT_DISABLED")
            else:
                row.used_at = now
                return self.sign_in(session, user, remember_me=row.remember_me, family_id=row.family_id)
        raise failure  # after the commit, so a reuse's revocation sticks

    def logout(self, claims: Claims | None, secret: str | None) -> None:
        """End the caller's session: its refresh family and its access token."""
        if claims is None and secret is None:
            raise Unauthorized("Sign in to continue.", code="NO_TOKEN")
        now = utcnow()
        with self.db.transaction() as session:
            families: set[tuple[int, str]] = set()
            owner_id = refresh_tokens.owner_of_refresh_token(session, secret) if secret else None
            for user_id in sorted({owner_id, claims.user_id if claims else None} - {None}):
                get_user(session, user_id, lock=True, missing_ok=True)
            row = refresh_tokens.find_refresh_token(session, secret) if owner_id is not None else None
            if row is not None:
                families.add((row.user_id, row.family_id))
            row = refresh_tokens.family_of_access_token(session, claims.token_id) if claims else None
            if row is not None:
                families.add((row.user_id, row.family_id))
            for user_id, family_id in families:
                self._end_family(session, user_id, now, family_id=family_id)
            if claims is not None:
                self.revocations.revoke_tokens([claims.token_id])

    def sign_in(self, session: Session, user: User, *, remember_me: bool,
                family_id: str | None = None) -> SignedIn:
        """Issue an access token and a refresh token (in ``family_id``, or a new family) in the
        caller's unit of work, which holds the user's row locked."""
        days = self.config.remember_me_days if remember_me else self.config.refresh_token_days
        lifetime = timedelta(days=days)
        access = self.signer.access_token(user.id, user.username, user.role)
        refresh = refresh_tokens.issue_refresh_token(session, user_id=user.id, family_id=family_id,
                                                     access_token_id=access.token_id, remember_me=remember_me,
                                                     lifetime=lifetime, now=utcnow())
        return SignedIn(user.summary(), access.token, self.signer.expires_in, refresh,
                        int(lifetime.total_seconds()))

    def _end_family(self, session: Session, user_id: int, now: datetime, *, family_id: str) -> None:
        since = now - timedelta(seconds=self.signer.expires_in)
        self.revocations.revoke_tokens(refresh_tokens.revoke_sessions(session, user_id, now=now, since=since,
                                                                      family_id=family_id))


def _login_matches(login: str):
    if "@" in login:
        return User.email == login.strip().lower()
    return User.username_lower == login.lower()


def _invalid_credentials() -> Unauthorized:
    return Unauthorized("The username or password is incorrect.", code="INVALID_CREDENTIALS")
