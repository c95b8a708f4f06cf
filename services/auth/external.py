"""What single sign-on passes between its parts: a started sign-in (``SignInFlow``), what a
provider tells about the person who came back (``ExternalProfile``), the interface each
provider implements (``IdentityProvider``) and the errors of the flow."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Protocol

from shared.errors import Forbidden, ServiceError

INTENTS = ("login", "link")


@dataclass(frozen=True)
class SignInFlow:
    """A sign-in started by the web client, kept in Redis under its ``state`` until the
    provider sends the browser back (once)."""

    provider: str
    state: str
    nonce: str
    code_verifier: str   # PKCE (RFC 7636, S256)
    binding_hash: str    # SHA-256 of the secret only the starting browser tab holds
    intent: str          # "login" or "link"
    user_id: int | None  # who links (intent "link")
    remember_me: bool
    next: str            # where the web client goes afterwards (a path of this site)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExternalProfile:
    """The person a provider vouched for, and what it says about them."""

    provider: str
    subject: str           # stable id at the provider: OIDC "sub", WeCom "userid"
    username: str          # a suggestion for a new account's name (any characters)
    display_name: str
    email: str | None
    email_verified: bool   # only ever true when the provider asserted it
    avatar_url: str | None = None
    department: str = ""
    position: str = ""
    admin: bool | None = None  # None: this provider does not decide roles
    logout_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExternalProfile:
        return cls(**data)


class IdentityProvider(Protocol):
    key: str
    kind: str   # "oidc" or "wecom"
    name: str
    icon: str
    auto_link_verified_email: bool  # the operator trusts its verified e-mails to find accounts

    def authorization_url(self, flow: SignInFlow, user_agent: str) -> str:
        """Where to send the browser to sign in."""

    def complete(self, flow: SignInFlow, params: Mapping[str, str]) -> ExternalProfile:
        """Turn the provider's answer (the callback's query) into a verified profile, or raise SsoError."""


class SsoError(ServiceError):
    status, code, message = 400, "SSO_FAILED", "Single sign-on failed; try again."


class ProviderDenied(SsoError):
    code, message = "PROVIDER_DENIED", "The provider did not sign you in."


class StateInvalid(SsoError):
    code = "STATE_INVALID"
    message = "This sign-in link is invalid, expired or was already used; start again."


class CodeRejected(SsoError):
    code, message = "CODE_REJECTED", "The provider refused the authorization code; start again."


class IdTokenInvalid(SsoError):
    status, code, message = 401, "ID_TOKEN_INVALID", "The provider's ID token could not be verified."


class ProviderUnavailable(SsoError):
    status, code, message = 502, "PROVIDER_UNAVAILABLE", "The sign-in provider did not answer; try again later."


class TicketInvalid(SsoError):
    code, message = "TICKET_INVALID", "This sign-in has expired or was already used; start again."


def provider_not_found(key: str) -> ServiceError:
    return ServiceError("No sign-in provider by this name.", status=404, code="PROVIDER_NOT_FOUND",
                        details={"provider": key})


def provider_disabled(key: str) -> Forbidden:
    return Forbidden("Sign-in with this provider is turned off.", code="PROVIDER_DISABLED",
                     details={"provider": key})


_NOT_NAME = re.compile(r"[^A-Za-z0-9_]+")


def suggested_username(*candidates: str | None) -> str:
    """A platform username (3-20 ASCII letters, digits, underscores) made from the first usable
    candidate: an e-mail's local part or a provider name, with other characters dropped."""
    for candidate in candidates:
        if not candidate:
            continue
        name = _NOT_NAME.sub("_", candidate.split("@")[0]).strip("_")[:20]
        if len(name) >= 3:
            return name
    return ""


def web_url(value: Any) -> str | None:
    """A provider's picture address, when it is an http(s) URL that fits the identities table."""
    text = value.strip() if isinstance(value, str) else ""
    return text if text.startswith(("https://", "http://")) and len(text) <= 500 else None
