"""Refresh-token rows: issue, find and revoke. Helpers add and flush; the caller commits."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.auth.models import RefreshToken
from services.auth.tokens import new_secret, secret_digest


def issue_refresh_token(session: Session, *, user_id: int, family_id: str | None, access_token_id: str,
                        remember_me: bool, lifetime: timedelta, now: datetime) -> str:
    """Add a refresh token (a new family when ``family_id`` is None) and return its secret."""
    secret, digest = new_secret()
    session.add(RefreshToken(user_id=user_id, family_id=family_id or uuid.uuid4().hex, token_hash=digest,
                             access_token_id=access_token_id, remember_me=remember_me, created_at=now,
                             expires_at=now + lifetime))
    session.flush()
    return secret


def owner_of_refresh_token(session: Session, secret: str) -> int | None:
    """The user id of a presented secret, read without loading the row: the caller locks the
    user first and only then loads the token (see ``find_refresh_token``)."""
    return session.scalar(select(RefreshToken.user_id).where(RefreshToken.token_hash == secret_digest(secret)))


def find_refresh_token(session: Session, secret: str) -> RefreshToken | None:
    """The row of a presented secret. Call it with the owner's user row locked, so a concurrent
    rotation of the same token has committed and is seen."""
    return session.scalar(select(RefreshToken).where(RefreshToken.token_hash == secret_digest(secret)))


def family_of_access_token(session: Session, access_token_id: str) -> RefreshToken | None:
    """The refresh token issued together with this access token (its session), if any."""
    return session.scalar(select(RefreshToken).where(RefreshToken.access_token_id == access_token_id))


def revoke_sessions(session: Session, user_id: int, *, now: datetime, since: datetime,
                    family_id: str | None = None, keep_family: str | None = None) -> list[str]:
    """Revoke the user's refresh tokens (one family, or all but ``keep_family``); return the ids of
    access tokens issued with them after ``since`` (the ones that may still be alive)."""
    scope = [RefreshToken.user_id == user_id]
    if family_id is not None:
        scope.append(RefreshToken.family_id == family_id)
    if keep_family is not None:
        scope.append(RefreshToken.family_id != keep_family)
    live_access = list(session.scalars(select(RefreshToken.access_token_id)
                                       .where(*scope, RefreshToken.created_at > since)))
    session.execute(update(RefreshToken).where(*scope, RefreshToken.revoked_at.is_(None))
                    .values(revoked_at=now).execution_options(synchronize_session=False))
    return live_access


def retire_family_tokens(session: Session, family_id: str, now: datetime) -> None:
    """Mark the family's unused tokens used, as a rotation does: presenting one again is reuse."""
    session.execute(update(RefreshToken).where(RefreshToken.family_id == family_id, RefreshToken.used_at.is_(None))
                    .values(used_at=now).execution_options(synchronize_session=False))
