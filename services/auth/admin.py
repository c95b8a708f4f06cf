"""Administrators' management of users: listing and searching (with each user's balance,
read from credits in one call per page), disabling and enabling, and changing roles."""
from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, or_, select

from shared.db import Database, isoformat, utcnow
from shared.errors import Conflict, ServiceError
from shared.tokens import Claims
from services.auth import refresh_tokens
from services.auth.models import User
from services.auth.revocation import Revocations
from services.auth.users import get_user
from services.credits.client import CreditsClient

log = logging.getLogger(__name__)


class Administration:
    def __init__(self, db: Database, revocations: Revocations, credits: CreditsClient) -> None:
        self.db = db
        self.revocations = revocations
        self.credits = credits

    def list_users(self, search: str, page: int, page_size: int, ids: list[int] | None = None) -> dict[str, Any]:
        """A page of users matching ``search`` (login name, display name or e-mail), or those of ``ids``."""
        conditions = []
        if search:
            term = search.strip().lower()
            conditions.append(or_(User.username_lower.contains(term, autoescape=True),
                                  User.display_name.contains(search.strip(), autoescape=True),
                                  User.email.contains(term, autoescape=True)))
        if ids is not None:
            conditions.append(User.id.in_(ids))
        with self.db.read() as session:
            total = session.scalar(select(func.count()).select_from(User).where(*conditions))
            users = session.scalars(select(User).where(*conditions).order_by(User.id)
                                    .offset((page - 1) * page_size).limit(page_size)).all()
        balances = self._balances([user.id for user in users])
        return {"items": [{**_admin_view(user), "credits": balances.get(user.id)} for user in users],
                "page": page, "pageSize": page_size, "total": total}

    def _balances(self, user_ids: list[int]) -> dict[int, dict[str, int]]:
        """``{user id: {available, held}}`` of the users with a credit account; empty (with a
        warning) when credits cannot answer, so the list still shows."""
        if not user_ids:
            return {}
        try:
            return self.credits.balances(user_ids)
        except (ServiceError, KeyError, TypeError, ValueError) as exc:
            log.warning("balances of %s users unavailable (%s); listed without them", len(user_ids),
                        getattr(exc, "code", exc.__class__.__name__))
            return {}

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
