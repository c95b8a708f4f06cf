"""Accounts: registration, and the owner's profile, privacy settings and avatar (the other
concerns of the service have their own classes, listed in ``services/auth/__init__.py``)."""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any, Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.errors import ServiceError
from shared.storage import Storage, content_key
from services.auth.avatars import render_avatar
from services.auth.config import AuthConfig
from services.auth.hashing import hash_password
from services.auth.models import User
from services.auth.sessions import Sessions, SignedIn
from services.auth.users import add_user, check_available, get_user, remove_avatar_after_commit
from services.credits.client import CreditsClient
from services.safety.client import ContentFilter

log = logging.getLogger(__name__)


class Accounts:
    def __init__(self, db: Database, config: AuthConfig, sessions: Sessions, storage: Storage,
                 credits: CreditsClient, content_filter: ContentFilter) -> None:
        self.db = db
        self.content_filter = content_filter
        self.config = config
        self.sessions = sessions
        self.storage = storage
        self.credits = credits

    def register(self, username: str, email: str, password: str, display_name: str | None = None,
                 remember_me: bool = True) -> SignedIn:
        """Create the user and sign them in, then open their credit account."""
        self.check_text({"username": username, "displayName": display_name}, None, username)
        user = self.create_user(username, email, password, display_name=display_name)
        with self.db.transaction() as session:
            signed_in = self.sessions.sign_in(session, get_user(session, user.id), remember_me=remember_me)
        return replace(signed_in, credits=self.open_credits(user.id))

    def create_user(self, username: str, email: str, password: str, role: str = "user",
                    display_name: str | None = None) -> User:
        password_hash = hash_password(password, self.config.bcrypt_rounds)
        return self.write_names(
            lambda session: add_user(session, username, email, password_hash, role, display_name=display_name),
            username, email)

    def open_credits(self, user_id: int) -> dict[str, int] | None:
        """Open a new user's credit account (the signup bonus, once: credits keys it by user).
        Sign-up survives credits being down: the account opens on first use."""
        try:
            return self.credits.open_account(user_id)
        except ServiceError as exc:
            log.warning("credit account of user %s not opened (%s); it opens on first use", user_id, exc.code)
            return None

    def profile(self, user_id: int) -> dict[str, Any]:
        with self.db.read() as session:
            return get_user(session, user_id).profile(self.storage)

    def check_text(self, fields: dict[str, str | None], user_id: int | None, username: str) -> None:
        """Names and bio against the term list: 422 CONTENT_REJECTED on a ``block`` entry;
        ``review`` matches are recorded for moderators (the profile is saved)."""
        self.content_filter.check(fields, source="auth", actor_id=user_id, actor_name=username,
                                  subject=f"user:{user_id}" if user_id else "user:new")

    def update_profile(self, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        self.check_text({"username": changes.get("username"), "displayName": changes.get("display_name"),
                         "bio": changes.get("bio")}, user_id, changes.get("username") or "")
        def apply(session: Session) -> dict[str, Any]:
            user = get_user(session, user_id)
            username, email = changes.get("username"), changes.get("email")
            if username is not None and username.lower() != user.username_lower:
                check_available(session, username, None)
            if email is not None and email != user.email:
                check_available(session, None, email)
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

        return self.write_names(apply, changes.get("username"), changes.get("email"))

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

    def write_names(self, write: Callable[[Session], Any], username: str | None, email: str | None) -> Any:
        """Run ``write`` in a unit of work; a unique-name race lost at commit becomes a 409."""
        try:
            with self.db.transaction() as session:
                return write(session)
        except IntegrityError:
            with self.db.read() as session:
                check_available(session, username, email)
            raise

