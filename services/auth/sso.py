"""Single sign-on: the flow from the web client to a provider and back, and what follows.

1. ``start``: the web client asks to sign in (or to link, signed in) with a provider. A
   ``state``, ``nonce``, PKCE verifier and a browser *binding* secret are made; the flow is kept
   in Redis under the state's digest; the client keeps the binding in its tab and sends the
   browser to the provider.
2. ``callback``: the provider sends the browser back to ``/api/auth/sso/<key>/callback``. The
   state is spent (once), the provider verifies the code (and, for OIDC, the ID token), and the
   browser goes on to the web client's ``/sso/callback`` with a one-time *ticket* in the URL
   fragment, which browsers never send to a server (so no log holds it), or an error code.
3. ``exchange``: the web client presents ticket and binding. A browser that did not start the
   sign-in has no binding, so a ticket pushed into someone else's browser is worthless. A
   known identity signs in (the platform's own session, ``Sessions.sign_in``); so does one whose
   provider vouches for the e-mail of an existing account, when the operator allowed linking by
   verified e-mail for that provider. Anything else needs the person's word: ``register``
   makes a new account (no password; rate-limited by the gateway like registration), and
   ``link`` adds the identity to the signed-in account that started the link.
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import replace
from datetime import datetime
from typing import Any, Mapping, Sequence
from urllib.parse import urlencode

import redis
from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import Database, utcnow
from shared.errors import Conflict, Forbidden, ServiceError, Unauthorized
from shared.tokens import Claims
from services.auth.config import AuthConfig
from services.auth.external import (ExternalProfile, IdentityProvider, SignInFlow, StateInvalid, TicketInvalid,
                                    provider_disabled, provider_not_found)
from services.auth import refresh_tokens
from services.auth.identities import LinkedIdentities, ProviderSwitches, describe
from services.auth.models import ExternalIdentity, User
from services.auth.revocation import Revocations
from services.auth.schemas import DISPLAY_NAME_MAX, DisplayName
from services.auth.service import Accounts
from services.auth.sessions import Sessions, SignedIn
from services.auth.users import add_user, get_user
from services.safety.client import ContentRejected

log = logging.getLogger(__name__)

LANDING_PATH = "/sso/callback"  # the web client's page that finishes a sign-in


class SingleSignOn:
    def __init__(self, db: Database, config: AuthConfig, sessions: Sessions, accounts: Accounts,
                 revocations: Revocations, store: redis.Redis, providers: Sequence[IdentityProvider],
                 switches: ProviderSwitches, identities: LinkedIdentities) -> None:
        self.db = db
        self.config = config
        self.sessions = sessions
        self.accounts = accounts
        self.revocations = revocations
        self.store = store
        self.providers = {provider.key: provider for provider in providers}
        self.switches = switches
        self.identities = identities
        self.ttl = config.sso_flow_minutes * 60

    def public_providers(self) -> list[dict[str, Any]]:
        enabled = self.switches.enabled_keys() if self.providers else set()
        return [describe(provider) for key, provider in self.providers.items() if key in enabled]

    def start(self, key: str, intent: str, claims: Claims | None, remember_me: bool, next_path: str,
              user_agent: str) -> dict[str, Any]:
        provider = self._usable(key)
        if intent == "link" and claims is None:
            raise Unauthorized("Sign in to link an identity to your account.", code="NO_TOKEN")
        binding = secrets.token_urlsafe(32)
        flow = SignInFlow(provider=key, state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                          code_verifier=secrets.token_urlsafe(48), binding_hash=_digest(binding), intent=intent,
                          user_id=claims.user_id if intent == "link" else None, remember_me=remember_me,
                          next=next_path)
        url = provider.authorization_url(flow, user_agent)
        self.store.set(_flow_key(flow.state), json.dumps(flow.to_dict()), ex=self.ttl)
        return {"provider": key, "authorizeUrl": url, "binding": binding}

    def callback(self, key: str, params: Mapping[str, str]) -> str:
        """The web client's landing URL: with a ticket, or with the error that stopped the sign-in."""
        try:
            ticket = self._complete(key, params)
        except ServiceError as exc:
            log.info("single sign-on with %s refused: %s (%s)", key, exc.code, exc.message)
            return self._landing({"error": exc.code, "message": exc.message, "provider": key})
        return self._landing({"ticket": ticket, "provider": key})

    def exchange(self, ticket: str, binding: str) -> dict[str, Any]:
        """Spend a callback's ticket: a session, or what the person must confirm (sign-up or link)."""
        raw = self.store.getdel(_ticket_key(ticket))
        flow, profile = self._open(raw, binding, "callback")
        self._usable(flow.provider)
        if flow.intent == "link":
            self._check_linkable(flow.user_id, profile)
            return {"status": "link", "ticket": self._pending("link", flow, profile), "next": flow.next,
                    "identity": _preview(profile, self.providers[flow.provider])}
        signed_in = self._sign_in_known(flow, profile)
        if signed_in is not None:
            return self._signed_in(signed_in, flow, profile)
        with self.db.read() as session:
            email_in_use = bool(profile.email) and session.scalar(
                select(User.id).where(User.email == profile.email)) is not None
        return {"status": "signup", "ticket": self._pending("signup", flow, profile), "next": flow.next,
                "identity": _preview(profile, self.providers[flow.provider]),
                "suggestedUsername": profile.username, "emailInUse": email_in_use}

    def register(self, ticket: str, binding: str, username: str) -> dict[str, Any]:
        """Make a new account (no password) for an identity no account has, and sign it in."""
        flow, profile = self._open(self.store.get(_pending_key(ticket)), binding, "signup")
        self._usable(flow.provider)
        self.accounts.check_text({"username": username}, None, username)
        display_name = self._checked_display_name(profile.display_name, username)
        now = utcnow()

        def write(session: Session) -> SignedIn:
            if _identity(session, profile) is not None:
                raise Conflict("This identity already has an account; sign in with it.", code="IDENTITY_LINKED")
            email = profile.email if profile.email_verified else None
            if email and session.scalar(select(User.id).where(User.email == email)) is not None:
                email = None  # that account's owner links it from their profile; this one sets its own
            user = add_user(session, username, email, None, role="admin" if profile.admin else "user",
                            display_name=display_name)
            session.add(_new_identity(user.id, profile, now))
            user.last_login_at = now
            return self.sessions.sign_in(session, user, remember_me=flow.remember_me)

        signed_in = self._unique(lambda: self.accounts.write_names(write, username, None))
        self.store.delete(_pending_key(ticket))
        signed_in = replace(signed_in, credits=self.accounts.open_credits(signed_in.user["id"]))
        return self._signed_in(signed_in, flow, profile)

    def _checked_display_name(self, claimed: str | None, username: str) -> str | None:
        """The provider's name as the display name, unless it matches a ``block`` entry of the
        term list: then the account starts without one (the block is audited; the person
        cannot change the provider's name here, so the sign-up is not refused for it)."""
        name = _display_name(claimed)
        try:
            self.accounts.check_text({"displayName": name}, None, username)
        except ContentRejected:
            return None
        return name

    def link(self, claims: Claims, ticket: str, binding: str) -> dict[str, Any]:
        """Link the identity of a link flow to the signed-in account that started it."""
        flow, profile = self._open(self.store.get(_pending_key(ticket)), binding, "link")
        if flow.user_id != claims.user_id:
            raise TicketInvalid("This link was started by another account.")
        self._usable(flow.provider)

        def write() -> None:
            with self.db.transaction() as session:
                get_user(session, claims.user_id, lock=True)
                self._check_linkable(claims.user_id, profile, session)
                session.add(_new_identity(claims.user_id, profile, utcnow()))

        self._unique(write)
        self.store.delete(_pending_key(ticket))
        return self.identities.of_user(claims.user_id)

    def _complete(self, key: str, params: Mapping[str, str]) -> str:
        state = params.get("state") or ""
        raw = self.store.getdel(_flow_key(state)) if 0 < len(state) <= 200 else None
        if raw is None:
            raise StateInvalid()
        flow = SignInFlow(**json.loads(raw))
        if flow.provider != key:
            raise StateInvalid()
        profile = self._usable(key).complete(flow, params)
        ticket = secrets.token_urlsafe(32)
        record = {"stage": "callback", "flow": flow.to_dict(), "profile": profile.to_dict()}
        self.store.set(_ticket_key(ticket), json.dumps(record), ex=self.ttl)
        return ticket

    def _sign_in_known(self, flow: SignInFlow, profile: ExternalProfile) -> SignedIn | None:
        """Sign in the account the identity is linked to (or, by the provider's word on a verified
        e-mail, may be linked to); None when no account is known for it."""
        auto_link = self.providers[flow.provider].auto_link_verified_email
        now = utcnow()

        def write() -> SignedIn | None:
            with self.db.transaction() as session:
                identity = _identity(session, profile)
                if identity is None and auto_link and profile.email and profile.email_verified:
                    owner = session.scalar(select(User).where(User.email == profile.email))
                    if owner is not None and not _has_provider(session, owner.id, profile.provider):
                        identity = _new_identity(owner.id, profile, now)
                        session.add(identity)
                        session.flush()
                        _hand_to_the_address_owner(session, owner, now)
                        self.revocations.revoke_user(owner.id)
                        log.info("identity %s:%s linked to user %s by verified e-mail; its password and "
                                 "sessions ended", profile.provider, profile.subject, owner.id)
                if identity is None:
                    return None
                user = get_user(session, identity.user_id, lock=True)
                if not user.is_active:
                    raise Forbidden("This account is disabled.", code="ACCOUNT_DISABLED")
                _refresh_identity(identity, profile, now)
                if profile.admin is not None and user.role != ("admin" if profile.admin else "user"):
                    user.role, user.updated_at = ("admin" if profile.admin else "user"), now
                    self.revocations.revoke_user(user.id)  # tokens carrying the old role stop
                user.last_login_at = now
                return self.sessions.sign_in(session, user, remember_me=flow.remember_me)

        return self._unique(write)

    def _check_linkable(self, user_id: int | None, profile: ExternalProfile, session: Session | None = None) -> None:
        if session is None:
            with self.db.read() as own:
                return self._check_linkable(user_id, profile, own)
        identity = _identity(session, profile)
        if identity is not None and identity.user_id == user_id:
            raise Conflict("This identity is already linked to your account.", code="ALREADY_LINKED")
        if identity is not None:
            raise Conflict("This identity is linked to another account.", code="IDENTITY_LINKED_ELSEWHERE")
        if _has_provider(session, user_id, profile.provider):
            raise Conflict("Your account already has an identity at this provider; remove it first.",
                           code="PROVIDER_ALREADY_LINKED")
        return None

    def _usable(self, key: str) -> IdentityProvider:
        provider = self.providers.get(key)
        if provider is None:
            raise provider_not_found(key)
        if not self.switches.is_enabled(key):
            raise provider_disabled(key)
        return provider

    def _pending(self, stage: str, flow: SignInFlow, profile: ExternalProfile) -> str:
        ticket = secrets.token_urlsafe(32)
        record = {"stage": stage, "flow": flow.to_dict(), "profile": profile.to_dict()}
        self.store.set(_pending_key(ticket), json.dumps(record), ex=self.ttl)
        return ticket

    def _open(self, raw: str | None, binding: str, stage: str) -> tuple[SignInFlow, ExternalProfile]:
        record = json.loads(raw) if raw else None
        if record is None or record.get("stage") != stage:
            raise TicketInvalid()
        flow = SignInFlow(**record["flow"])
        if not secrets.compare_digest(_digest(binding), flow.binding_hash):
            raise TicketInvalid("This sign-in was started in another browser; start it again here.",
                                code="BROWSER_MISMATCH")
        return flow, ExternalProfile.from_dict(record["profile"])

    def _signed_in(self, signed_in: SignedIn, flow: SignInFlow, profile: ExternalProfile) -> dict[str, Any]:
        return {"status": "signedIn", **signed_in.to_dict(), "provider": flow.provider,
                "providerName": self.providers[flow.provider].name, "rememberMe": flow.remember_me,
                "logoutUrl": profile.logout_url, "next": flow.next}

    @staticmethod
    def _unique(write):
        """Run ``write``; a unique-key race lost to a concurrent sign-in of the same identity is a 409."""
        try:
            return write()
        except IntegrityError as exc:
            raise Conflict("This identity was linked at the same moment; sign in again.",
                           code="IDENTITY_CONFLICT") from exc

    def _landing(self, params: dict[str, str]) -> str:
        return f"{self.config.public_url}{LANDING_PATH}#{urlencode(params)}"


def _identity(session: Session, profile: ExternalProfile) -> ExternalIdentity | None:
    return session.scalar(select(ExternalIdentity).where(ExternalIdentity.provider == profile.provider,
                                                         ExternalIdentity.subject == profile.subject))


def _hand_to_the_address_owner(session: Session, owner: User, now: datetime) -> None:
    """The provider vouched that the person signing in owns the account's e-mail address; the
    platform never confirmed that whoever chose the account's password does (anyone may register
    with someone else's address first). So the password stops working and every session ends:
    the address's owner keeps the account and may set a password again."""
    owner.password_hash = None
    owner.updated_at = now
    refresh_tokens.revoke_sessions(session, owner.id, now=now, since=now)


def _has_provider(session: Session, user_id: int | None, provider: str) -> bool:
    return session.scalar(select(ExternalIdentity.id).where(ExternalIdentity.user_id == user_id,
                                                            ExternalIdentity.provider == provider)) is not None


def _new_identity(user_id: int, profile: ExternalProfile, now) -> ExternalIdentity:
    identity = ExternalIdentity(user_id=user_id, provider=profile.provider, subject=profile.subject, created_at=now)
    _refresh_identity(identity, profile, now)
    return identity


def _refresh_identity(identity: ExternalIdentity, profile: ExternalProfile, now) -> None:
    """What the provider says now replaces what it said at the last sign-in."""
    identity.email, identity.email_verified = profile.email, profile.email_verified
    identity.display_name, identity.avatar_url = profile.display_name, profile.avatar_url
    identity.department, identity.position = profile.department, profile.position
    identity.last_login_at = now


def _preview(profile: ExternalProfile, provider: IdentityProvider) -> dict[str, Any]:
    return {"provider": profile.provider, "providerName": provider.name, "displayName": profile.display_name,
            "email": profile.email, "emailVerified": profile.email_verified, "avatarUrl": profile.avatar_url,
            "department": profile.department, "position": profile.position}


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _flow_key(state: str) -> str:
    return f"sso:flow:{_digest(state)}"


def _ticket_key(ticket: str) -> str:
    return f"sso:ticket:{_digest(ticket)}"


def _pending_key(ticket: str) -> str:
    return f"sso:pending:{_digest(ticket)}"


def _display_name(claimed: str | None) -> str | None:
    """The provider's name for the person as the account's display name, when it is one we accept."""
    try:
        return DisplayName().deserialize((claimed or "")[:DISPLAY_NAME_MAX])
    except ValidationError:
        return None
