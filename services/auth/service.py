"""Accounts of people: registration, sign-in and the profile."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.errors import Conflict, Forbidden, NotFound, ServiceError, Unauthorized
from services.auth.models import User
from services.auth.passwords import hash_password, verify_password
from services.auth.tokens import TokenSigner
from services.credits.client import CreditsClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignedIn:
    """A signed-in user: what register and login answer with."""

    user: dict[str, Any]
    access_token: str
    expires_in: int
    credits: dict[str, int] | None

    def to_dict(self) -> dict[str, Any]:
        return {"user": self.user, "accessToken": self.access_token, "tokenType": "Bearer",
                "expiresIn": self.expires_in, "credits": self.credits}


class AuthService:
    def __init__(self, db: Database, signer: TokenSigner, credits: CreditsClient,
                 bcrypt_rounds: int = 12) -> None:
        self.db = db
        self.signer = signer
        self.credits = credits
        self.bcrypt_rounds = bcrypt_rounds
        # Verified against when the user is unknown, so both failures cost the same time.
        self._dummy_hash = hash_password("not a real password 0", bcrypt_rounds)

    def register(self, username: str, email: str, password: str) -> SignedIn:
        """Create the user, then open their credit account (registration survives credits being down)."""
        user = self.create_user(username, email, password)
        try:
            credits = self.credits.open_account(user.id)
        except ServiceError as exc:
            log.warning("credit account of user %s not opened (%s); it opens on first use", user.id, exc.code)
            credits = None
        return self._session_for(user, credits)

    def create_user(self, username: str, email: str, password: str, role: str = "user") -> User:
        password_hash = hash_password(password, self.bcrypt_rounds)
        try:
            with self.db.transaction() as session:
                self._check_available(session, username, email)
                now = utcnow()
                user = User(username=username, username_lower=username.lower(), email=email,
                            password_hash=password_hash, role=role, is_active=True, bio="",
                            created_at=now, updated_at=now)
                session.add(user)
                session.flush()
                return user
        except IntegrityError:
            # A concurrent registration took the name between our check and our insert.
            with self.db.transaction() as session:
                self._check_available(session, username, email)
            raise

    def login(self, login: str, password: str) -> SignedIn:
        # bcrypt runs outside any transaction: on SQLite a transaction holds the write lock.
        with self.db.transaction() as session:
            user = session.scalar(select(User).where(_login_matches(login)))
        if user is None:
            verify_password(password, self._dummy_hash)
            raise _invalid_credentials()
        if not verify_password(password, user.password_hash):
            raise _invalid_credentials()
        if not user.is_active:
            raise Forbidden("This account is disabled.", code="ACCOUNT_DISABLED")
        with self.db.transaction() as session:
            user = self._user(session, user.id)
            user.last_login_at = utcnow()
        return self._session_for(user, None)

    def profile(self, user_id: int) -> dict[str, Any]:
        with self.db.transaction() as session:
            return self._user(session, user_id).profile()

    def update_profile(self, user_id: int, bio: str) -> dict[str, Any]:
        with self.db.transaction() as session:
            user = self._user(session, user_id)
            user.bio = bio
            user.updated_at = utcnow()
            session.flush()
            return user.profile()

    def _session_for(self, user: User, credits: dict[str, int] | None) -> SignedIn:
        token = self.signer.access_token(user.id, user.username, user.role)
        return SignedIn(user.summary(), token, self.signer.expires_in, credits)

    @staticmethod
    def _check_available(session: Session, username: str, email: str) -> None:
        if session.scalar(select(User.id).where(User.username_lower == username.lower())) is not None:
            raise Conflict("This username is taken.", code="USERNAME_TAKEN")
        if session.scalar(select(User.id).where(User.email == email)) is not None:
            raise Conflict("An account with this e-mail already exists.", code="EMAIL_TAKEN")

    @staticmethod
    def _user(session: Session, user_id: int) -> User:
        user = session.get(User, user_id)
        if user is None:
            raise NotFound("This user does not exist.", code="USER_NOT_FOUND")
        return user


def _login_matches(login: str):
    if "@" in login:
        return User.email == login.strip().lower()
    return User.username_lower == login.lower()


def _invalid_credentials() -> Unauthorized:
    return Unauthorized("The username or password is incorrect.", code="INVALID_CREDENTIALS")
