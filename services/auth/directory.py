"""What the platform tells about a user: the public profile, the owner's data export, and
the directory other services read (service token only)."""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from shared.db import Database, isoformat, utcnow
from shared.errors import NotFound, ServiceError
from shared.storage import Storage
from shared.tokens import Claims
from services.auth.models import User
from services.auth.users import get_user
from services.credits.client import CreditsClient
from services.gallery.client import GalleryClient

log = logging.getLogger(__name__)


class Directory:
    def __init__(self, db: Database, storage: Storage, credits: CreditsClient, gallery: GalleryClient) -> None:
        self.db = db
        self.storage = storage
        self.credits = credits
        self.gallery = gallery

    def export(self, claims: Claims, access_token: str) -> dict[str, Any]:
        """Everything the platform holds about the caller, as JSON: profile, credit history, works."""
        with self.db.read() as session:
            profile = get_user(session, claims.user_id).profile(self.storage)
        return {"exportedAt": isoformat(utcnow()), "profile": profile,
                "credits": {"transactions": self.credits.transactions(access_token)},
                "works": self.gallery.my_works(access_token)}

    def public_profile(self, username: str, viewer: Claims | None) -> dict[str, Any]:
        with self.db.read() as session:
            user = session.scalar(select(User).where(User.username_lower == username.lower()))
        may_see_hidden = viewer is not None and user is not None and (viewer.is_admin or viewer.user_id == user.id)
        if user is None or not user.is_active or not (user.profile_visible or may_see_hidden):
            raise NotFound("This user does not exist.", code="USER_NOT_FOUND")
        return {"id": user.id, "username": user.username, "displayName": user.display_name,
                "avatarUrl": user.avatar_url(self.storage), "bio": user.bio, "joinedAt": isoformat(user.created_at),
                "counts": self._public_counts(user.id)}

    def _public_counts(self, user_id: int) -> dict[str, int]:
        """The gallery's counts of a user; zeros (with a warning) when the gallery cannot say."""
        try:
            return self.gallery.user_stats(user_id)
        except (ServiceError, KeyError, TypeError, ValueError) as exc:
            log.warning("gallery stats of user %s unavailable (%s); showing zeros", user_id,
                        getattr(exc, "code", exc.__class__.__name__))
            return {"works": 0, "likesReceived": 0}

    def user_ids(self, after: int, limit: int) -> dict[str, Any]:
        with self.db.read() as session:
            ids = list(session.scalars(select(User.id).where(User.id > after).order_by(User.id).limit(limit)))
        return {"ids": ids, "next": ids[-1] if len(ids) == limit else None}

    def directory_entry(self, user_id: int) -> dict[str, Any]:
        with self.db.read() as session:
            return self._entry(get_user(session, user_id))

    def directory_entries(self, user_ids: list[int]) -> list[dict[str, Any]]:
        """The entries of the known users among ``user_ids``, in one query."""
        with self.db.read() as session:
            return [self._entry(user) for user in session.scalars(select(User).where(User.id.in_(user_ids))
                                                                   .order_by(User.id))]

    def _entry(self, user: User) -> dict[str, Any]:
        return {"id": user.id, "username": user.username, "displayName": user.display_name,
                "avatarUrl": user.avatar_url(self.storage), "role": user.role, "kind": user.kind,
                "isActive": user.is_active, "newWorksPublic": user.new_works_public}
