"""The auth service's tables: users (people and service accounts), their refresh tokens,
password-reset tokens and API tokens, the external identities (OpenID Connect, WeCom) linked to
them and the operator's sign-in provider switches."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, isoformat, new_metadata, utcnow
from shared.storage import Storage

# SQLite only autoincrements a column declared exactly INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
USER_KINDS = ("person", "service")  # a service account never signs in with a password


class Base(DeclarativeBase):
    metadata = new_metadata()


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(20))
    # Usernames are unique regardless of case; the display form keeps the user's casing.
    username_lower: Mapped[str] = mapped_column(String(20), unique=True)
    # The name people read (any script); None shows the username.
    display_name: Mapped[str | None] = mapped_column(String(30))
    # None for an account made by single sign-on whose provider gave no verified, free address.
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    # None: no password (an account made by single sign-on, until its owner sets one).
    password_hash: Mapped[str | None] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(10), default="user")
    kind: Mapped[str] = mapped_column(String(10), default="person")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    bio: Mapped[str] = mapped_column(Text, default="")
    website: Mapped[str] = mapped_column(String(200), default="")
    location: Mapped[str] = mapped_column(String(100), default="")
    avatar_key: Mapped[str | None] = mapped_column(String(255))
    new_works_public: Mapped[bool] = mapped_column(Boolean, default=True)
    profile_visible: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def avatar_url(self, storage: Storage) -> str | None:
        return storage.url(self.avatar_key) if self.avatar_key else None

    def summary(self) -> dict:
        return {"id": self.id, "username": self.username, "displayName": self.display_name, "email": self.email,
                "role": self.role, "kind": self.kind, "hasPassword": self.password_hash is not None,
                "createdAt": isoformat(self.created_at)}

    def profile(self, storage: Storage) -> dict:
        return {**self.summary(), "bio": self.bio, "website": self.website, "location": self.location,
                "avatarUrl": self.avatar_url(storage),
                "privacy": {"newWorksPublic": self.new_works_public, "profileVisible": self.profile_visible},
                "isActive": self.is_active, "updatedAt": isoformat(self.updated_at),
                "lastLoginAt": isoformat(self.last_login_at)}


class RefreshToken(Base):
    """One issued refresh token. A sign-in starts a family; each refresh marks the presented
    token used and adds the next one to the same family, so presenting a used token again
    reveals a copy and revokes the whole family."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # SHA-256 hex of the token
    access_token_id: Mapped[str] = mapped_column(String(32), index=True)  # jti issued alongside
    remember_me: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PasswordResetToken(Base):
    __tablename__ = "password_reset_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ExternalIdentity(Base):
    """An account at an outside identity provider (an OpenID Connect issuer, or WeCom) linked
    to a user: one per provider and subject, and at most one per provider and user."""

    __tablename__ = "external_identities"
    __table_args__ = (UniqueConstraint("provider", "subject"), UniqueConstraint("user_id", "provider"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str] = mapped_column(String(255))  # OIDC "sub", WeCom "userid"
    email: Mapped[str | None] = mapped_column(String(254))
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    display_name: Mapped[str] = mapped_column(String(100), default="")
    avatar_url: Mapped[str | None] = mapped_column(String(500))
    department: Mapped[str] = mapped_column(String(200), default="")  # WeCom department ids
    position: Mapped[str] = mapped_column(String(100), default="")    # WeCom job title
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    def view(self) -> dict:
        return {"id": self.id, "provider": self.provider, "subject": self.subject, "email": self.email,
                "emailVerified": self.email_verified, "displayName": self.display_name,
                "avatarUrl": self.avatar_url, "department": self.department, "position": self.position,
                "createdAt": isoformat(self.created_at), "lastLoginAt": isoformat(self.last_login_at)}


class ProviderSwitch(Base):
    """An operator's switch for one configured sign-in provider; a provider without a row is on."""

    __tablename__ = "sso_provider_switches"

    provider: Mapped[str] = mapped_column(String(40), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean)
    updated_by: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A long-lived, scoped token (``pat_…``) of a person or a service account. Only its
    SHA-256 is kept; the gateway exchanges it for a short-lived access token carrying its
    scopes. Revoked at once everywhere through ``revoked:pat:<id>``."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the first characters, to recognise it in a list
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OutboxEntry(Base):
    """An announcement for ``platform:events`` written in the transaction that makes it true
    (a deleted user), so it is sent even if Redis is down at that moment
    (``services.auth.outbox``). ``fields`` is the announcement's fields as a JSON object."""

    __tablename__ = "auth_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_type: Mapped[str] = mapped_column(String(40))
    fields: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
