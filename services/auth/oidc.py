"""An OpenID Connect provider (Keycloak, Entra ID, Google Workspace, Okta, Authing, …):
discovery, the Authorization Code flow with PKCE, and the verification of the ID token.

Authlib builds the authorization request and redeems the code (``OAuth2Session`` with S256
PKCE), validates the discovery document (``OpenIDProviderMetadata``) and the ID token's
claims (``CodeIDToken``: nonce, azp, at_hash); joserfc, which Authlib itself uses, checks the
signature against the provider's JWKS. The audience and issuer are required explicitly; the
issuer is compared exactly as discovery names it (some, like Auth0, end it with a slash).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Mapping
from urllib.parse import urlencode

import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.common.errors import AuthlibBaseError
from authlib.oidc.core import CodeIDToken
from authlib.oidc.discovery import OpenIDProviderMetadata
from joserfc import jwt
from joserfc.errors import (BadSignatureError, ExpiredTokenError, InvalidClaimError, InvalidKeyIdError,
                            JoseError, MissingClaimError)
from joserfc.jwk import KeySet
from joserfc.jws import JWSRegistry

from services.auth.config import OidcProviderConfig
from services.auth.external import (CodeRejected, ExternalProfile, IdTokenInvalid, ProviderDenied,
                                    ProviderUnavailable, SignInFlow, suggested_username, web_url)

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10  # seconds, for every call to the provider
METADATA_SECONDS = 3600  # discovery and JWKS are read again after an hour (and JWKS at an unknown key id)
CLOCK_LEEWAY = 60  # seconds of clock difference allowed on exp, iat, nbf
# Asymmetric algorithms only: "none" and HMAC (keyed with the client secret) are never accepted.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


class OidcProvider:
    kind = "oidc"

    def __init__(self, config: OidcProviderConfig, redirect_uri: str, post_logout_redirect_uri: str) -> None:
        self.config = config
        self.key = config.key
        self.name = config.name
        self.icon = config.icon
        self.auto_link_verified_email = config.auto_link_verified_email
        self.redirect_uri = redirect_uri
        self.post_logout_redirect_uri = post_logout_redirect_uri
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None
        self._loaded_at = 0.0

    def authorization_url(self, flow: SignInFlow, user_agent: str) -> str:
        url, _state = self._client().create_authorization_url(
            self.metadata()["authorization_endpoint"], state=flow.state, code_verifier=flow.code_verifier,
            nonce=flow.nonce)
        return url

    def complete(self, flow: SignInFlow, params: Mapping[str, str]) -> ExternalProfile:
        if params.get("error"):
            raise ProviderDenied(f"{self.name} did not sign you in: {params.get('error_description') or params['error']}",
                                 details={"error": params["error"][:100]})
        code = params.get("code")
        if not code:
            raise CodeRejected("The provider sent no authorization code.")
        metadata = self.metadata()
        try:
            with self._client() as client:
                token = client.fetch_token(metadata["token_endpoint"], code=code, code_verifier=flow.code_verifier)
        except AuthlibBaseError as exc:
            raise CodeRejected(f"{self.name} refused the authorization code ({exc.error}); start again.",
                               details={"error": exc.error}) from exc
        except requests.RequestException as exc:
            raise ProviderUnavailable(f"{self.name} did not answer the token request.") from exc
        if not token.get("id_token"):
            raise IdTokenInvalid(f"{self.name} sent no ID token (is 'openid' among the scopes?).")
        claims = self.verify_id_token(token["id_token"], nonce=flow.nonce, access_token=token.get("access_token"))
        return self._profile(claims)

    def verify_id_token(self, id_token: str, *, nonce: str, access_token: str | None) -> dict[str, Any]:
        """The ID token's claims once its signature (JWKS), issuer, audience, expiry and nonce hold."""
        allowed = [alg for alg in self.metadata().get("id_token_signing_alg_values_supported", ["RS256"])
                   if alg in SIGNING_ALGORITHMS]
        registry = JWSRegistry(algorithms=allowed or ["RS256"])
        try:
            try:
                decoded = jwt.decode(id_token, self._key_set(), registry=registry)
            except InvalidKeyIdError:  # the provider rotated its keys since we read them
                decoded = jwt.decode(id_token, self._key_set(refresh=True), registry=registry)
        except BadSignatureError as exc:
            raise IdTokenInvalid("The ID token's signature does not match the provider's keys.",
                                 code="ID_TOKEN_SIGNATURE_INVALID") from exc
        except (JoseError, ValueError) as exc:
            raise IdTokenInvalid(f"The ID token could not be read ({exc}).") from exc
        issuer = self.metadata()["issuer"]
        params = {"nonce": nonce, "client_id": self.config.client_id}
        if access_token:
            params["access_token"] = access_token
        claims = CodeIDToken(decoded.claims, decoded.header, {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": self.config.client_id},
            "sub": {"essential": True}}, params)
        try:
            claims.validate(leeway=CLOCK_LEEWAY)
        except ExpiredTokenError as exc:
            raise IdTokenInvalid("The ID token has expired; sign in again.", code="ID_TOKEN_EXPIRED") from exc
        except (InvalidClaimError, MissingClaimError) as exc:
            raise _claim_error(exc) from exc
        return dict(claims)

    def logout_url(self) -> str | None:
        """The provider's end-session URL (RP-initiated logout), where discovery names one."""
        try:
            endpoint = self.metadata().get("end_session_endpoint")
        except ProviderUnavailable:
            return None
        if not endpoint:
            return None
        query = urlencode({"client_id": self.config.client_id,
                           "post_logout_redirect_uri": self.post_logout_redirect_uri})
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"

    def metadata(self) -> dict[str, Any]:
        """The discovery document, read at first use and again after an hour."""
        with self._lock:
            if self._metadata is None or time.monotonic() - self._loaded_at > METADATA_SECONDS:
                self._metadata = self._discover()
                self._keys = None
                self._loaded_at = time.monotonic()
            return self._metadata

    def _discover(self) -> dict[str, Any]:
        url = f"{self.config.issuer}/.well-known/openid-configuration"
        data = _get_json(url, self.name)
        metadata = OpenIDProviderMetadata(data)
        try:
            metadata.validate()
        except ValueError as exc:
            log.error("the discovery document of %s (%s) is invalid: %s", self.key, url, exc)
            raise ProviderUnavailable(f"{self.name}'s discovery document is invalid.") from exc
        if metadata["issuer"].rstrip("/") != self.config.issuer:
            log.error("%s: discovery names the issuer %r, configured %r", self.key, metadata["issuer"],
                      self.config.issuer)
            raise ProviderUnavailable(f"{self.name}'s discovery document names another issuer.")
        return dict(metadata)

    def _key_set(self, refresh: bool = False) -> KeySet:
        jwks_uri = self.metadata()["jwks_uri"]
        with self._lock:
            if self._keys is None or refresh:
                try:
                    self._keys = KeySet.import_key_set(_get_json(jwks_uri, self.name))
                except (JoseError, ValueError, KeyError, TypeError) as exc:
                    raise ProviderUnavailable(f"{self.name}'s signing keys (JWKS) are unreadable.") from exc
            return self._keys

    def _client(self) -> OAuth2Session:
        return OAuth2Session(self.config.client_id, self.config.client_secret, scope=self.config.scopes,
                             redirect_uri=self.redirect_uri, code_challenge_method="S256",
                             timeout=HTTP_TIMEOUT)

    def _profile(self, claims: dict[str, Any]) -> ExternalProfile:
        config = self.config
        email = _text(claims.get(config.email_claim))
        admin = None
        if config.admin_groups:
            groups = claims.get(config.groups_claim) or []
            groups = [groups] if isinstance(groups, str) else groups
            admin = bool(config.admin_groups & {str(group) for group in groups if isinstance(group, (str, int))})
        return ExternalProfile(
            provider=self.key, subject=str(claims["sub"])[:255],
            username=suggested_username(_text(claims.get(config.username_claim)), email),
            display_name=(_text(claims.get(config.name_claim)) or "")[:100],
            email=email.strip().lower()[:254] if email and "@" in email else None,
            email_verified=claims.get("email_verified") in (True, "true"),
            avatar_url=web_url(claims.get(config.avatar_claim)), admin=admin, logout_url=self.logout_url())


def _claim_error(exc: JoseError) -> IdTokenInvalid:
    claim = getattr(exc, "claim", None) or str(exc)
    if "nonce" in claim:
        return IdTokenInvalid("The ID token does not belong to this sign-in (nonce).", code="NONCE_MISMATCH")
    if "aud" in claim or "azp" in claim:
        return IdTokenInvalid("The ID token was issued to another application (audience).",
                              code="AUDIENCE_MISMATCH")
    if "iss" in claim:
        return IdTokenInvalid("The ID token comes from another issuer.", code="ISSUER_MISMATCH")
    return IdTokenInvalid(f"The ID token's claim {claim!r} is missing or invalid.")


def _get_json(url: str, what: str) -> dict[str, Any]:
    try:
        response = requests.get(url, timeout=HTTP_TIMEOUT, headers={"Accept": "application/json"})
        response.raise_for_status()
        data = response.json()
    except (requests.RequestException, ValueError) as exc:
        log.warning("%s: GET %s failed: %s", what, url, exc)
        raise ProviderUnavailable(f"{what} did not answer; try again later.") from exc
    if not isinstance(data, dict):
        raise ProviderUnavailable(f"{what} answered something other than a JSON object.")
    return data


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


