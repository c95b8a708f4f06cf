"""API tokens (``pat_…``): created by their owner (or, for a service account, by an
administrator), shown once, kept as a SHA-256 digest, listed with their last use, revoked
at once everywhere; and their exchange, at the gateway, for a short-lived access token.

The exchanged access token carries ``scopes``, ``pat`` (this token's id) and ``kind``; it
lives no longer than an ordinary access token nor past the API token's expiry. Revoking
writes ``revoked:pat:<id>`` for one access-token lifetime, so the tokens already exchanged
stop at the next request in every service.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import func, select, update

from shared.db import Database, isoformat, utcnow
from shared.errors import Conflict, Forbidden, NotFound, Unauthorized
from shared.tokens import Claims
from services.auth.models import ApiToken, User
from services.auth.revocation import Revocations
from services.auth.tokens import TokenSigner, secret_digest
from services.auth.users import get_user

TOKEN_PREFIX = "pat_"
SHOWN_PREFIX = 12  # characters kept to recognise a token in a list ("pat_AbCdEfGh")
MAX_ACTIVE_TOKENS = 50
LAST_USE_PRECISION = timedelta(seconds=60)  # the exchange records a use at most once a minute


class ApiTokens:
    def __init__(self, db: Database, signer: TokenSigner, revocations: Revocations) -> None:
        self.db = db
        self.signer = signer
        self.revocations = revocations

    def create(self, caller: Claims, owner_id: int | None, name: str, scopes: list[str],
               expires_in_days: int | None) -> dict[str, Any]:
        """A new token of the caller, or of a service account (administrators only); the
        token itself is in the answer and nowhere else."""
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        with self.db.transaction() as session:
            owner = self._owner(session, caller, owner_id, lock=True)
            active = session.scalar(select(func.count()).select_from(ApiToken).where(
                ApiToken.user_id == owner.id, ApiToken.revoked_at.is_(None))) or 0
            if active >= MAX_ACTIVE_TOKENS:
                raise Conflict(f"An account may hold at most {MAX_ACTIVE_TOKENS} API tokens; revoke one first.",
                               code="TOKEN_LIMIT")
            row = ApiToken(id=secrets.token_hex(16), user_id=owner.id, name=name, scopes=sorted(set(scopes)),
                           token_hash=secret_digest(secret), prefix=secret[:SHOWN_PREFIX], created_by=caller.user_id,
                           created_at=now,
                           expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None)
            session.add(row)
            session.flush()
            return {"token": secret, "apiToken": token_json(row)}

    def list_tokens(self, caller: Claims, owner_id: int | None) -> dict[str, Any]:
        with self.db.read() as session:
            owner = self._owner(session, caller, owner_id)
            rows = session.scalars(select(ApiToken).where(ApiToken.user_id == owner.id)
                                   .order_by(ApiToken.created_at.desc(), ApiToken.id)).all()
            return {"items": [token_json(row) for row in rows]}

    def revoke(self, caller: Claims, owner_id: int | None, token_id: str) -> dict[str, Any]:
        """Revoke one token; the mark is written before the commit (503 rolls it back)."""
        with self.db.transaction() as session:
            owner = self._owner(session, caller, owner_id, lock=True)
            row = session.get(ApiToken, token_id, with_for_update=True) if len(token_id) <= 32 else None
            if row is None or row.user_id != owner.id:
                raise NotFound("No such API token.", code="TOKEN_NOT_FOUND")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                self.revocations.revoke_api_token(row.id)
            return token_json(row)

    def exchange(self, secret: str) -> dict[str, Any]:
        """An access token for a valid API token (the gateway's edge calls this)."""
        now = utcnow()
        with self.db.transaction() as session:
            row = session.scalar(select(ApiToken).where(ApiToken.token_hash == secret_digest(secret)))
            if row is None:
                raise Unauthorized("The API token is invalid.", code="TOKEN_INVALID")
            if row.revoked_at is not None:
                raise Unauthorized("This API token was revoked.", code="TOKEN_REVOKED")
            if row.expires_at is not None and row.expires_at <= now:
                raise Unauthorized("This API token has expired.", code="TOKEN_EXPIRED")
            user = get_user(session, row.user_id)
            if not user.is_active:
                raise Unauthorized("This account is disabled.", code="TOKEN_REVOKED")
            if row.last_used_at is None or now - row.last_used_at >= LAST_USE_PRECISION:
                session.execute(update(ApiToken).where(ApiToken.id == row.id).values(last_used_at=now))
            access = self.signer.access_token(user.id, user.username, user.role,
                                              expires_at=_unix(row.expires_at) if row.expires_at else None,
                                              extra={"scopes": list(row.scopes), "pat": row.id, "kind": user.kind})
            return {"accessToken": access.token, "expiresAt": access.expires_at, "tokenId": row.id,
                    "userId": user.id, "scopes": list(row.scopes)}

    def _owner(self, session, caller: Claims, owner_id: int | None, lock: bool = False) -> User:
        """The caller, or the service account an administrator names."""
        if owner_id is None or owner_id == caller.user_id:
            return get_user(session, caller.user_id, lock=lock)
        if not caller.is_admin:
            raise Forbidden("Only administrators manage another account's tokens.", code="ADMIN_REQUIRED")
        owner = get_user(session, owner_id, lock=lock)
        if owner.kind != "service":
            raise Forbidden("Administrators manage the tokens of service accounts only.",
                            code="NOT_A_SERVICE_ACCOUNT")
        return owner


def _unix(value: datetime) -> float:
    """A stored naive-UTC time as Unix seconds."""
    return value.replace(tzinfo=timezone.utc).timestamp()


def token_json(row: ApiToken) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "scopes": list(row.scopes), "prefix": row.prefix,
            "userId": row.user_id, "createdAt": isoformat(row.created_at), "expiresAt": isoformat(row.expires_at),
            "lastUsedAt": isoformat(row.last_used_at), "revokedAt": isoformat(row.revoked_at)}
