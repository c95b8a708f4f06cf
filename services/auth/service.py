"""Accounts of people: registration, sign-in and sessions, the profile and avatar, passwords,
deletion and export, public profiles, administration, and the internal directory.

Revocation marks are written to Redis inside the unit of work, just before it commits:
if Redis cannot take them the change is rolled back (503), so a disabled user or a
changed password never leaves live tokens behind. Other side effects (mail, the
``user.deleted`` announcement, removing files) run after commit.

Every unit of work that signs a token or touches a user's sessions locks the user's row
first (``_user(..., lock=True)``): sign-in, refresh, logout, password change and reset,
disabling and deletion then run one after another per user, always in the order user row
before token rows, so none signs a token for a user being disabled and none deadlocks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Callable

import redis
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, after_commit, isoformat, utcnow
from shared.events import announce_user_deleted
from shared.errors import BadRequest, Conflict, Forbidden, NotFound, ServiceError, Unauthorized
from shared.storage import Storage, content_key
from shared.tokens import Claims
from services.auth import sessions
from services.auth.avatars import render_avatar
from services.auth.config import AuthSettings
from services.auth.mail import Mailer
from services.auth.models import MAX_ID, PasswordResetToken, RefreshToken, User
from services.auth.passwords import hash_password, verify_password
from services.auth.revocation import Revocations
from services.auth.tokens import TokenSigner, new_secret, secret_digest
from services.credits.client import CreditsClient
from services.gallery.client import GalleryClient

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


@dataclass(frozen=True)
class Peers:
    """The other services auth calls."""

    credits: CreditsClient
    gallery: GalleryClient


class AuthService:
    def __init__(self, db: Database, settings: AuthSettings, signer: TokenSigner, revocations: Revocations,
                 storage: Storage, mailer: Mailer, events: redis.Redis, peers: Peers) -> None:
        self.db = db
        self.settings = settings
        self.signer = signer
        self.revocations = revocations
        self.storage = storage
        self.mailer = mailer
        self.events = events
        self.peers = peers
        # Verified against when the user is unknown, so both failures cost the same time.
        self._dummy_hash = hash_password("not a real password 0", settings.bcrypt_rounds)

    # Registration and sign-in

    def register(self, username: str, email: str, password: str) -> SignedIn:
        """Create the user and sign them in, then open their credit account (registration
        survives credits being down: the account opens on first use)."""
        user = self.create_user(username, email, password)
        with self.db.transaction() as session:
            signed_in = self._sign_in(session, self._user(session, user.id), remember_me=False)
        try:
            credits = self.peers.credits.open_account(user.id)
        except ServiceError as exc:
            log.warning("credit account of user %s not opened (%s); it opens on first use", user.id, exc.code)
            credits = None
        return replace(signed_in, credits=credits)

    def create_user(self, username: str, email: str, password: str, role: str = "user") -> User:
        password_hash = hash_password(password, self.settings.bcrypt_rounds)

        def insert(session: Session) -> User:
            _check_available(session, username, email)
            now = utcnow()
            user = User(username=username, username_lower=username.lower(), email=email,
                        password_hash=password_hash, role=role, is_active=True, bio="", website="",
                        location="", new_works_public=True, profile_visible=True,
                        created_at=now, updated_at=now)
            session.add(user)
            session.flush()
            return user

        return self._write_names(insert, username, email)

    def login(self, login: str, password: str, remember_me: bool) -> SignedIn:
        # bcrypt runs outside any transaction: on SQLite a transaction holds the write lock.
        with self.db.read() as session:
            user = session.scalar(select(User).where(_login_matches(login)))
        if user is None:
            verify_password(password, self._dummy_hash)
            raise _invalid_credentials()
        if not verify_password(password, user.password_hash):
            raise _invalid_credentials()
        if not user.is_active:
            raise Forbidden("This account is disabled.", code="ACCOUNT_DISABLED")
        with self.db.transaction() as session:
            user = self._user(session, user.id, lock=True)
            if not user.is_active:  # disabled while the password was being checked
                raise Forbidden("This account is disabled.", code="ACCOUNT_DISABLED")
            user.last_login_at = utcnow()
            return self._sign_in(session, user, remember_me=remember_me)

    def refresh(self, secret: str) -> SignedIn:
        """Rotate a refresh token: the presented one is spent and a new pair is issued. A spent
        token presented again means it was copied: the whole family is revoked."""
        now = utcnow()
        failure: ServiceError | None = None
        with self.db.transaction() as session:
            owner_id = sessions.owner_of_refresh_token(session, secret)
            user = self._user(session, owner_id, lock=True, missing_ok=True) if owner_id is not None else None
            row = sessions.find_refresh_token(session, secret) if user is not None else None
            if row is None:
                failure = Unauthorized("The refresh token is invalid.", code="REFRESH_TOKEN_INVALID")
            elif row.revoked_at is not None:
                failure = Unauthorized("This session has ended; sign in again.", code="TOKEN_REVOKED")
            elif row.used_at is not None:
                self._end_sessions(session, row.user_id, now, family_id=row.family_id)
                log.warning("refresh token reused for user %s; family %s revoked", row.user_id, row.family_id)
                failure = Unauthorized("This refresh token was already used; sign in again.", code="TOKEN_REUSED")
            elif row.expires_at <= now:
                failure = Unauthorized("Your session has expired; sign in again.", code="REFRESH_TOKEN_EXPIRED")
            elif not user.is_active:
                failure = Forbidden("This account is disabled.", code="ACCOUNT_DISABLED")
            else:
                row.used_at = now
                return self._sign_in(session, user, remember_me=row.remember_me, family_id=row.family_id)
        raise failure  # after the commit, so a reuse's revocation sticks

    def logout(self, claims: Claims | None, secret: str | None) -> None:
        """End the caller's session: its refresh family and its access token."""
        if claims is None and secret is None:
            raise Unauthorized("Sign in to continue.", code="NO_TOKEN")
        now = utcnow()
        with self.db.transaction() as session:
            families: set[tuple[int, str]] = set()
            owner_id = sessions.owner_of_refresh_token(session, secret) if secret else None
            for user_id in sorted({owner_id, claims.user_id if claims else None} - {None}):
                self._user(session, user_id, lock=True, missing_ok=True)
            row = sessions.find_refresh_token(session, secret) if owner_id is not None else None
            if row is not None:
                families.add((row.user_id, row.family_id))
            row = sessions.family_of_access_token(session, claims.token_id) if claims else None
            if row is not None:
                families.add((row.user_id, row.family_id))
            for user_id, family_id in families:
                self._end_sessions(session, user_id, now, family_id=family_id)
            if claims is not None:
                self.revocations.revoke_tokens([claims.token_id])

    # Passwords

    def change_password(self, claims: Claims, current_password: str, new_password: str) -> SignedIn:
        """Set a new password, end every other session and every access token issued so far,
        and give the caller a fresh pair in their own session."""
        verified_hash = self._verify_own_password(claims.user_id, current_password)
        new_hash = hash_password(new_password, self.settings.bcrypt_rounds)
        now = utcnow()
        with self.db.transaction() as session:
            user = self._user(session, claims.user_id, lock=True)
            if user.password_hash != verified_hash:
                raise Conflict("The password was changed meanwhile; try again.", code="PASSWORD_CHANGED")
            user.password_hash = new_hash
            user.updated_at = now
            current = sessions.family_of_access_token(session, claims.token_id)
            keep = current.family_id if current is not None else None
            sessions.revoke_sessions(session, user.id, now=now, since=now, keep_family=keep)
            if keep is not None:
                sessions.retire_family_tokens(session, keep, now)
            self.revocations.revoke_user(user.id)
            return self._sign_in(session, user, remember_me=bool(current and current.remember_me), family_id=keep)

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
                                           expires_at=now + timedelta(minutes=self.settings.password_reset_minutes)))
            after_commit(session, lambda: self._mail_reset_link(user.email, user.username, secret))

    def _mail_reset_link(self, to: str, username: str, secret: str) -> None:
        link = f"{self.settings.public_url}/reset-password?token={secret}"
        body = (f"Hello {username},\n\nSomeone asked to reset the password of your account. To choose a new "
                f"password, open this link within {self.settings.password_reset_minutes} minutes:\n\n{link}\n\n"
                f"If it was not you, ignore this message; your password stays as it is.\n")
        try:
            self.mailer.send(to, "Reset your password", body)
        except ServiceError:
            # Answering differently would tell the caller the address has an account.
            log.error("password-reset mail to user %s could not be sent", username, exc_info=True)

    def reset_password(self, secret: str, new_password: str) -> None:
        """Spend a reset token: set the password and end every session of the user."""
        new_hash = hash_password(new_password, self.settings.bcrypt_rounds)
        now = utcnow()
        with self.db.transaction() as session:
            row = session.scalar(select(PasswordResetToken)
                                 .where(PasswordResetToken.token_hash == secret_digest(secret)).with_for_update())
            if row is None or row.used_at is not None:
                raise BadRequest("This reset link is invalid or was already used.", code="RESET_TOKEN_INVALID")
            if row.expires_at <= now:
                raise BadRequest("This reset link has expired; ask for a new one.", code="RESET_TOKEN_EXPIRED")
            user = self._user(session, row.user_id, lock=True)
            user.password_hash = new_hash
            user.updated_at = now
            session.execute(update(PasswordResetToken)
                            .where(PasswordResetToken.user_id == user.id, PasswordResetToken.used_at.is_(None))
                            .values(used_at=now).execution_options(synchronize_session=False))
            sessions.revoke_sessions(session, user.id, now=now, since=now)
            self.revocations.revoke_user(user.id)

    # Profile and avatar

    def profile(self, user_id: int) -> dict[str, Any]:
        with self.db.read() as session:
            return self._user(session, user_id).profile(self.storage)

    def update_profile(self, user_id: int, changes: dict[str, Any]) -> dict[str, Any]:
        def apply(session: Session) -> dict[str, Any]:
            user = self._user(session, user_id)
            username, email = changes.get("username"), changes.get("email")
            if username is not None and username.lower() != user.username_lower:
                _check_available(session, username, None)
            if email is not None and email != user.email:
                _check_available(session, None, email)
            if username is not None:
                user.username, user.username_lower = username, username.lower()
            for field in ("email", "bio", "website", "location"):
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
            user = self._user(session, user_id)
            old_key, user.avatar_key, user.updated_at = user.avatar_key, key, utcnow()
            if old_key and old_key != key:
                self._remove_avatar_after_commit(session, old_key, user.id)
            return user.profile(self.storage)

    def _remove_avatar_after_commit(self, session: Session, key: str, owner_id: int) -> None:
        shared = session.scalar(select(func.count()).select_from(User)
                                .where(User.avatar_key == key, User.id != owner_id))
        if not shared:
            after_commit(session, lambda: self.storage.delete(key))

    # Deletion and export

    def delete_account(self, claims: Claims, password: str) -> None:
        """Delete the user, their sessions and avatar, and announce ``user.deleted`` so credits
        and gallery close the account and remove the works."""
        self._verify_own_password(claims.user_id, password)
        with self.db.transaction() as session:
            user = self._user(session, claims.user_id, lock=True)
            if user.avatar_key:
                self._remove_avatar_after_commit(session, user.avatar_key, user.id)
            session.execute(delete(RefreshToken).where(RefreshToken.user_id == user.id))
            session.execute(delete(PasswordResetToken).where(PasswordResetToken.user_id == user.id))
            session.delete(user)
            session.flush()
            self.revocations.revoke_user(claims.user_id)
            after_commit(session, lambda: self._announce_deletion(claims.user_id))

    def _announce_deletion(self, user_id: int) -> None:
        try:
            announce_user_deleted(self.events, user_id)
        except redis.RedisError:
            # The account is gone either way; an operator replays the event from this line.
            log.error("user.deleted for user %s NOT announced on platform:events; replay it", user_id,
                      exc_info=True)

    def export(self, claims: Claims, access_token: str) -> dict[str, Any]:
        """Everything the platform holds about the caller, as JSON: profile, credit history, works."""
        profile = self.profile(claims.user_id)
        return {"exportedAt": isoformat(utcnow()), "profile": profile,
                "credits": {"transactions": self.peers.credits.transactions(access_token)},
                "works": self.peers.gallery.my_works(access_token)}

    # Public profile

    def public_profile(self, username: str, viewer: Claims | None) -> dict[str, Any]:
        with self.db.read() as session:
            user = session.scalar(select(User).where(User.username_lower == username.lower()))
        may_see_hidden = viewer is not None and user is not None and (viewer.is_admin or viewer.user_id == user.id)
        if user is None or not user.is_active or not (user.profile_visible or may_see_hidden):
            raise NotFound("This user does not exist.", code="USER_NOT_FOUND")
        return {"id": user.id, "username": user.username, "avatarUrl": user.avatar_url(self.storage),
                "bio": user.bio, "joinedAt": isoformat(user.created_at),
                "counts": self._public_counts(user.id)}

    def _public_counts(self, user_id: int) -> dict[str, int]:
        """The gallery's counts of a user; zeros (with a warning) when the gallery cannot say."""
        try:
            return self.peers.gallery.user_stats(user_id)
        except (ServiceError, KeyError, TypeError, ValueError) as exc:
            log.warning("gallery stats of user %s unavailable (%s); showing zeros", user_id,
                        getattr(exc, "code", exc.__class__.__name__))
            return {"works": 0, "likesReceived": 0}

    # Administration

    def list_users(self, search: str, page: int, page_size: int) -> dict[str, Any]:
        conditions = []
        if search:
            term = search.strip().lower()
            conditions.append(or_(User.username_lower.contains(term, autoescape=True),
                                  User.email.contains(term, autoescape=True)))
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(User).where(*conditions))
            users = session.scalars(select(User).where(*conditions).order_by(User.id)
                                    .offset((page - 1) * page_size).limit(page_size)).all()
        return {"items": [_admin_view(user) for user in users], "page": page, "pageSize": page_size,
                "total": total}

    def set_active(self, admin: Claims, user_id: int, active: bool) -> dict[str, Any]:
        """Enable or disable an account; disabling ends its sessions and tokens at once."""
        if admin.user_id == user_id and not active:
            raise Conflict("You cannot disable your own account.", code="CANNOT_DISABLE_SELF")
        now = utcnow()
        with self.db.transaction() as session:
            user = self._user(session, user_id, lock=True)
            user.is_active, user.updated_at = active, now
            if not active:
                sessions.revoke_sessions(session, user.id, now=now, since=now)
                self.revocations.revoke_user(user.id)
            return _admin_view(user)

    def set_role(self, admin: Claims, user_id: int, role: str) -> dict[str, Any]:
        """Change a role; the user's access tokens (which carry the old role) stop at once and
        the next refresh carries the new one."""
        if admin.user_id == user_id:
            raise Conflict("You cannot change your own role.", code="CANNOT_CHANGE_OWN_ROLE")
        with self.db.transaction() as session:
            user = self._user(session, user_id, lock=True)
            if user.role != role:
                user.role, user.updated_at = role, utcnow()
                self.revocations.revoke_user(user.id)
            return _admin_view(user)

    # Internal directory (service token only)

    def user_ids(self, after: int, limit: int) -> dict[str, Any]:
        with self.db.read() as session:
            ids = list(session.scalars(select(User.id).where(User.id > after).order_by(User.id).limit(limit)))
        return {"ids": ids, "next": ids[-1] if len(ids) == limit else None}

    def directory_entry(self, user_id: int) -> dict[str, Any]:
        with self.db.read() as session:
            user = self._user(session, user_id)
        return {"id": user.id, "username": user.username, "avatarUrl": user.avatar_url(self.storage),
                "role": user.role, "isActive": user.is_active, "newWorksPublic": user.new_works_public}

    # Helpers

    def _sign_in(self, session: Session, user: User, *, remember_me: bool,
                 family_id: str | None = None) -> SignedIn:
        days = self.settings.remember_me_days if remember_me else self.settings.refresh_token_days
        lifetime = timedelta(days=days)
        access = self.signer.access_token(user.id, user.username, user.role)
        refresh = sessions.issue_refresh_token(session, user_id=user.id, family_id=family_id,
                                               access_token_id=access.token_id, remember_me=remember_me,
                                               lifetime=lifetime, now=utcnow())
        return SignedIn(user.summary(), access.token, self.signer.expires_in, refresh,
                        int(lifetime.total_seconds()))

    def _end_sessions(self, session: Session, user_id: int, now: datetime, *, family_id: str) -> None:
        since = now - timedelta(seconds=self.signer.expires_in)
        self.revocations.revoke_tokens(sessions.revoke_sessions(session, user_id, now=now, since=since,
                                                                family_id=family_id))

    def _verify_own_password(self, user_id: int, password: str) -> str:
        """Check the caller's password (outside any transaction); returns the verified hash."""
        with self.db.read() as session:
            user = self._user(session, user_id)
        if not verify_password(password, user.password_hash):
            raise Forbidden("The password is incorrect.", code="INVALID_PASSWORD")
        return user.password_hash

    def _write_names(self, write: Callable[[Session], Any], username: str | None, email: str | None) -> Any:
        """Run ``write`` in a unit of work; a unique-name race lost at commit becomes a 409."""
        try:
            with self.db.transaction() as session:
                return write(session)
        except IntegrityError:
            with self.db.read() as session:
                _check_available(session, username, email)
            raise

    @staticmethod
    def _user(session: Session, user_id: int, *, lock: bool = False, missing_ok: bool = False) -> User | None:
        user = session.get(User, user_id, with_for_update=lock) if 0 < user_id <= MAX_ID else None
        if user is None and not missing_ok:
            raise NotFound("This user does not exist.", code="USER_NOT_FOUND")
        return user


def _check_available(session: Session, username: str | None, email: str | None) -> None:
    if username is not None and session.scalar(
            select(User.id).where(User.username_lower == username.lower())) is not None:
        raise Conflict("This username is taken.", code="USERNAME_TAKEN")
    if email is not None and session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("An account with this e-mail already exists.", code="EMAIL_TAKEN")


def _admin_view(user: User) -> dict[str, Any]:
    return {**user.summary(), "isActive": user.is_active, "lastLoginAt": isoformat(user.last_login_at)}


def _login_matches(login: str):
    if "@" in login:
        return User.email == login.strip().lower()
    return User.username_lower == login.lower()


def _invalid_credentials() -> Unauthorized:
    return Unauthorized("The username or password is incorrect.", code="INVALID_CREDENTIALS")
