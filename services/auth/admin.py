"""Administrators' management of users: listing and searching, disabling and enabling,
and changing roles."""
from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select

from shared.db import Database, isoformat, utcnow
from shared.errors import Conflict
from shared.tokens import Claims
from services.auth import refresh_tokens
from services.auth.models import User
from services.auth.revocation import Revocations
from services.auth.users import get_user


class Administration:
    def __init__(self, db: Database, revocations: Revocations) -> None:
        self.db = db
        self.revocations = revocations

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
            user = get_user(session, user_id, lock=True)
            user.is_active, user.updated_at = active, now
            if not active:
                refresh_tokens.revoke_sessions(session, user.id, now=now, since=now)
                self.revocations.revoke_user(user.id)
            return _admin_view(user)

    def set_role(self, admin: Claims, user_id: int, role: str) -> dict[str, Any]:
        """Change a role; the user's access tokens (which carry the old role) stop at once and
        the next refresh carries the new one."""
        if admin.user_id == user_id:
            raise Conflict("You cannot change your own role.", code="CANNOT_CHANGE_OWN_ROLE")
        with self.db.transaction() as session:
            user = get_user(session, user_id, lock=True)
            if user.role != role:
                user.role, user.updated_at = role, utcnow()
                self.revocations.revoke_user(user.id)
            return _admin_view(user)


def _admin_view(user: User) -> dict[str, Any]:
    return {**user.summary(), "isActive": user.is_active, "lastLoginAt": isoformat(user.last_login_at)}
