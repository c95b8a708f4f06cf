"""Reading a user inside a unit of work, and the checks several auth classes share.

Every unit of work that signs a token or touches a user's sessions locks the user's row
first (``get_user(..., lock=True)``): sign-in, refresh, logout, password change and reset,
disabling and deletion then run one after another per user, always in the order user row
before token rows, so none signs a token for a user being disabled and none deadlocks.
"""
from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db import MAX_ID, Database, after_commit, utcnow
from shared.errors import Conflict, Forbidden, NotFound, Unprocessable
from shared.storage import Storage
from services.auth.hashing import verify_password
from services.auth.models import User


def get_user(session: Session, user_id: int, *, lock: bool = False, missing_ok: bool = False) -> User | None:
    user = session.get(User, user_id, with_for_update=lock) if 0 < user_id <= MAX_ID else None
    if user is None and not missing_ok:
        raise NotFound("This user does not exist.", code="USER_NOT_FOUND")
    return user


def add_user(session: Session, username: str, email: str | None, password_hash: str | None,
             role: str = "user", display_name: str | None = None) -> User:
    """Add a user (no password when ``password_hash`` is None) after checking the names are free."""
    check_available(session, username, email)
    now = utcnow()
    user = User(username=username, username_lower=username.lower(), display_name=display_name, email=email,
                password_hash=password_hash, role=role, is_active=True, bio="", website="", location="",
                new_works_public=True, profile_visible=True, created_at=now, updated_at=now)
    session.add(user)
    session.flush()
    return user


def check_available(session: Session, username: str | None, email: str | None) -> None:
    if username is not None and session.scalar(
            select(User.id).where(User.username_lower == username.lower())) is not None:
        raise Conflict("This username is taken.", code="USERNAME_TAKEN")
    if email is not None and session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Conflict("An account with this e-mail already exists.", code="EMAIL_TAKEN")


def verify_own_password(db: Database, user_id: int, password: str | None, field: str, *,
                        unset_ok: bool = False) -> str | None:
    """Check the caller's password (outside any transaction); returns the verified hash. A wrong
    one is a 422 on ``field``, the form field that holds it. An account without a password (made
    by single sign-on) passes only when ``unset_ok``."""
    with db.read() as session:
        user = get_user(session, user_id)
    if user.password_hash is None:
        if unset_ok:
            return None
        raise Forbidden("This account has no password yet; set one on your profile first.",
                        code="PASSWORD_NOT_SET")
    if password is None or not verify_password(password, user.password_hash):
        raise Unprocessable("The password is incorrect.", code="INVALID_PASSWORD",
                            details={field: ["The password is incorrect."]})
    return user.password_hash


def remove_avatar_after_commit(session: Session, storage: Storage, key: str, owner_id: int) -> None:
    """Delete the avatar file once the unit of work commits, unless another account uses the
    same picture (files are content-addressed)."""
    shared = session.scalar(select(func.count()).select_from(User)
                            .where(User.avatar_key == key, User.id != owner_id))
    if not shared:
        after_commit(session, lambda: storage.delete(key))
