"""Accounts: registration, and the owner's profile, privacy settings and avatar (the other
concerns of the service have their own classes, listed in ``services/auth/__init__.py``)."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.errors import Conflict, ServiceError
from shared.storage import Storage, content_key
from services.auth.avatars import render_avatar
from services.auth.config import AuthConfig
from services.auth.hashing import hash_password
from services.auth.models import User
from services.auth.sessions import Sessions, SignedIn
from services.auth.users import get_user, remove_avatar_after_commit
from services.credits.client import CreditsClient

log = logging.getLogger(__name__)


class Accounts:
    def __init__(self, db: Database, config: AuthConfig, sessions: Sessions, storage: Storage,
                 credits: CreditsClient) -> None:
        self.db = db
        self.config = config
        self.sessions = sessions
        self.storage = storage
        self.credits = credits

    def register(self, username: str, email: str, password: str, display_name: str | None = None,
                 remember_me: bool = True) -> SignedIn:
        """Create the user and sign them in, then open their credit account (registration
        survives credits being down: the account opens on first use)."""
        user = self.create_user(username, email, password, display_name=display_name)
        with self.db.transaction() as session:
            signed_in = self.sessions.sign_in(session, get_user(session, user.id), remember_me=remember_me)
        try:
            credits = self.credits.open_account(user.id)
        except ServiceError as exc:
            log.warning("credit account of user %s not opened (%s); it opens on first use", user.id, exc.code)
            credits = None
        return replace(signed_in, credits=credits)

    def create_user(self, username: str, email: str, password: str, role: str = "user",
                    display_name: str | None = None) -> User:
        password_hash = hash_password(password, self.config.bcrypt_rounds)

        def insert(session: Session) -> User:
            _check_available(session, username, email)
            now = utcnow()
            user = User(username=username, username_lower=username.lower(), display_name=display_name, email=email,
                        password_hash=password_hash, role=role, is_active=True, bio="", website="",
                        location="", new_works_public=True, profile_visible=True,
                        created_at=now, updated_at=now)
            session.add(user)
            session.flush()
            return user

        return self._write_names(insert, username, email)

    def profile(self, user_id: int) -> dict[str, Any]:
        with self.db.read() as session:
            return get_user(session, user_id).profile(self.storage)

    def update_profile(self, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        def apply(session: Session) -> dict[str, Any]:
            user = get_user(session, user_id)
            username, email = changes.get("username"), changes.get("email")
            if username is not None and username.lower() != user.username_lower:
                _check_available(session, username, None)
            if email is not None and email != user.email:
                _check_available(session, None, email)
            if username is not None:
                user.username, user.username_lower = username, username.lower()
            for field in ("display_name", "email", "bio", "website", "location"):
                if field in changes:
                    setattr(user, field, changes[field])
            for field, value in changes.get("privacy", {}).items():
                setattr(user, field, value)
            user.updated_at = utcnow()
            session.flush()
            return user.profile(self.storage)

        return self._write_names(apply, changes.get("username"), changes.get("email"))

    def set_avatar(self, user_id: int, upload: bytes) -> dict[str, Any]:
        """Store the re-encoded picture as the user's avatar; the previous file goes unless
        another account uses the same picture (files are content-addressed)."""
        avatar = render_avatar(upload)
        key = self.storage.put(content_key(avatar, "webp", "avatars"), avatar)
        with self.db.transaction() as session:
            user = get_user(session, user_id)
            old_key, user.avatar_key, user.updated_at = user.avatar_key, key, utcnow()
            if old_key and old_key != key:
                remove_avatar_after_commit(session, self.storage, old_key, user.id)
            return user.profile(self.storage)

    def _write_names(self, write: Callable[[Session], Any], username: str | None, email: str | None) -> Any:
        """Run ``write`` in a unit of work; a unique-name race lost at commit becomes a 409."""
        try:
            with self.db.transaction() as session:
                return write(session)
        except IntegrityError:
            with self.db.read() as session:
                _check_available(session, username, email)
            raise


def _check_available(session: Session, username: str | None, email: str | None) -> None:
    if username is not None and session.scalar(
            select(User.id).where(User.username_lower == username.lower())) is not None:
        raise Conflict("This username is taken.", code="USERNAME_TAKEN")
    if email is not None and session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("An account with this e-mail already exists.", code="EMAIL_TAKEN")
