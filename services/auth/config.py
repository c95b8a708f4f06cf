"""Settings only the auth service reads: refresh-token lifetimes, password reset, outgoing mail
and the single sign-on providers (OpenID Connect issuers and WeCom).

The access-token lifetime is the platform's ``Settings.access_token_minutes`` (shared/config.py):
every service's revocation marks and the tokens auth signs must agree on it.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from shared.config import ConfigError, Settings, env_bool, env_int, env_positive, env_str


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str
    password: str
    starttls: bool


@dataclass(frozen=True)
class OidcProviderConfig:
    """One OpenID Connect provider: where it is, who we are to it, and how its claims map."""

    key: str  # in URLs and in the identities table
    name: str
    icon: str
    issuer: str
    client_id: str
    client_secret: str
    scopes: str
    username_claim: str
    name_claim: str
    email_claim: str
    avatar_claim: str
    groups_claim: str
    admin_groups: frozenset[str]  # empty: the provider never decides roles
    auto_link_verified_email: bool


@dataclass(frozen=True)
class WeComConfig:
    """The WeCom (企业微信) self-built app that signs staff in."""

    corp_id: str
    agent_id: str
    secret: str
    api_url: str        # qyapi: gettoken, auth/getuserinfo, user/get
    oauth_url: str      # 网页授权 inside the WeCom client
    qr_login_url: str   # 扫码登录 in any other browser


@dataclass(frozen=True)
class AuthConfig:
    refresh_token_days: int
    remember_me_days: int
    password_reset_minutes: int
    bcrypt_rounds: int
    mail_from: str
    public_url: str
    smtp: SmtpConfig | None  # None: messages go to the log and DATA_DIR/mail (not in production)
    oidc_providers: tuple[OidcProviderConfig, ...] = ()
    wecom: WeComConfig | None = None
    sso_flow_minutes: int = 10  # how long a started sign-in and its hand-over to the web client live
    outbox_interval_seconds: float = 5.0  # how often the relay sends what Redis did not take at once


def load_config(settings: Settings, env: Mapping[str, str] | None = None) -> AuthConfig:
    env = os.environ if env is None else env
    smtp = None
    if env_str(env, "SMTP_HOST", ""):
        smtp = SmtpConfig(host=env_str(env, "SMTP_HOST", ""), port=env_int(env, "SMTP_PORT", 587),
                          username=env_str(env, "SMTP_USERNAME", ""), password=env_str(env, "SMTP_PASSWORD", ""),
                          starttls=env_bool(env, "SMTP_STARTTLS", True))
    elif settings.is_production:
        raise ConfigError("SMTP_HOST must be set in production (password-reset mail)")
    config = AuthConfig(
        refresh_token_days=env_int(env, "REFRESH_TOKEN_DAYS", 1),
        remember_me_days=env_int(env, "REMEMBER_ME_DAYS", 30),
        password_reset_minutes=env_int(env, "PASSWORD_RESET_MINUTES", 30),
        # The lowest bcrypt cost keeps the test suite fast; every other environment pays full cost.
        bcrypt_rounds=env_int(env, "BCRYPT_ROUNDS", 4 if settings.env == "test" else 12),
        mail_from=env_str(env, "MAIL_FROM", "AIGC Platform <no-reply@localhost>"),
        public_url=env_str(env, "PUBLIC_URL", f"http://127.0.0.1:{settings.gateway_port}").rstrip("/"),
        smtp=smtp,
        oidc_providers=_oidc_providers(env),
        wecom=_wecom(env),
        sso_flow_minutes=env_int(env, "SSO_FLOW_MINUTES", 10),
        outbox_interval_seconds=env_positive(env, "AUTH_OUTBOX_INTERVAL_SECONDS", 5),
    )
    for name in ("refresh_token_days", "remember_me_days", "password_reset_minutes", "sso_flow_minutes"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name.upper()} must be at least 1")
    if not 4 <= config.bcrypt_rounds <= 16:
        raise ConfigError("BCRYPT_ROUNDS must be between 4 and 16")
    return config


PROVIDER_KEY = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}\Z")
WECOM_KEY = "wecom"
# Fields of one OIDC provider: JSON key in OIDC_PROVIDERS -> suffix of its own variable OIDC_<KEY>_<SUFFIX>.
_OIDC_FIELDS = {"issuer": "ISSUER", "clientId": "CLIENT_ID", "clientSecret": "CLIENT_SECRET", "scopes": "SCOPES",
                "name": "NAME", "icon": "ICON", "usernameClaim": "USERNAME_CLAIM", "nameClaim": "NAME_CLAIM",
                "emailClaim": "EMAIL_CLAIM", "avatarClaim": "AVATAR_CLAIM", "groupsClaim": "GROUPS_CLAIM",
                "adminGroups": "ADMIN_GROUPS", "autoLinkVerifiedEmail": "AUTO_LINK_VERIFIED_EMAIL"}


def _oidc_providers(env: Mapping[str, str]) -> tuple[OidcProviderConfig, ...]:
    """``OIDC_PROVIDERS`` is a JSON list of provider objects, or a comma-separated list of keys;
    either way ``OIDC_<KEY>_<FIELD>`` variables fill in or override a provider's fields (so a
    client secret can live in a variable of its own)."""
    raw = env_str(env, "OIDC_PROVIDERS", "").strip()
    if not raw:
        return ()
    if raw.startswith("["):
        try:
            entries = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"OIDC_PROVIDERS is not valid JSON: {exc}") from exc
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ConfigError("OIDC_PROVIDERS must be a JSON list of objects")
    else:
        entries = [{"key": key.strip()} for key in raw.split(",") if key.strip()]
    default_admin_groups = env_str(env, "OIDC_ADMIN_GROUPS", "")
    default_auto_link = env_bool(env, "OIDC_AUTO_LINK_VERIFIED_EMAIL", False)
    providers = [_oidc_provider(entry, env, default_admin_groups, default_auto_link) for entry in entries]
    keys = [provider.key for provider in providers]
    if len(set(keys)) != len(keys) or WECOM_KEY in keys:
        raise ConfigError(f"OIDC_PROVIDERS: keys must be unique and not {WECOM_KEY!r}, got {keys}")
    return tuple(providers)


def _oidc_provider(entry: dict[str, Any], env: Mapping[str, str], default_admin_groups: str,
                   default_auto_link: bool) -> OidcProviderConfig:
    key = str(entry.get("key", "")).strip().lower()
    if not PROVIDER_KEY.match(key):
        raise ConfigError(f"OIDC_PROVIDERS: provider key {key!r} must be 1-40 lower-case letters, digits or '-'")
    unknown = sorted(set(entry) - set(_OIDC_FIELDS) - {"key"})
    if unknown:
        raise ConfigError(f"OIDC_PROVIDERS: provider {key!r} has unknown fields {unknown}")
    prefix = "OIDC_" + key.upper().replace("-", "_") + "_"

    def field(name: str, default: Any) -> Any:
        variable = prefix + _OIDC_FIELDS[name]
        if variable in env:
            return env[variable]
        return entry.get(name, default)

    def groups(value: Any) -> frozenset[str]:
        items = value if isinstance(value, list) else str(value).split(",")
        return frozenset(str(item).strip() for item in items if str(item).strip())

    auto_link_variable = prefix + _OIDC_FIELDS["autoLinkVerifiedEmail"]
    auto_link = (env_bool(env, auto_link_variable, default_auto_link) if auto_link_variable in env
                 else entry.get("autoLinkVerifiedEmail", default_auto_link))
    if not isinstance(auto_link, bool):
        raise ConfigError(f"OIDC provider {key!r}: autoLinkVerifiedEmail must be true or false")
    provider = OidcProviderConfig(
        key=key, name=str(field("name", key)), icon=str(field("icon", "")),
        issuer=str(field("issuer", "")).rstrip("/"), client_id=str(field("clientId", "")),
        client_secret=str(field("clientSecret", "")), scopes=str(field("scopes", "openid profile email")),
        username_claim=str(field("usernameClaim", "preferred_username")), name_claim=str(field("nameClaim", "name")),
        email_claim=str(field("emailClaim", "email")), avatar_claim=str(field("avatarClaim", "picture")),
        groups_claim=str(field("groupsClaim", "groups")), admin_groups=groups(field("adminGroups", default_admin_groups)),
        auto_link_verified_email=auto_link)
    if provider.icon and not provider.icon.startswith(("/", "data:image/")):
        # The page's Content-Security-Policy loads pictures only from this site or data: URLs.
        raise ConfigError(f"OIDC provider {key!r}: its icon must be a path of this site or a data:image URL")
    missing = [name for name in ("issuer", "client_id", "client_secret") if not getattr(provider, name)]
    if missing:
        raise ConfigError(f"OIDC provider {key!r}: set {', '.join(prefix + name.upper() for name in missing)} "
                          "(or the fields in OIDC_PROVIDERS)")
    if "openid" not in provider.scopes.split():
        raise ConfigError(f"OIDC provider {key!r}: its scopes must include 'openid'")
    return provider


def _wecom(env: Mapping[str, str]) -> WeComConfig | None:
    """WeCom sign-in is on when its corp id, agent id and secret are all set."""
    corp_id, agent_id = env_str(env, "WECHAT_CORP_ID", ""), env_str(env, "WECHAT_AGENT_ID", "")
    secret = env_str(env, "WECHAT_SECRET", "")
    given = [name for name, value in (("WECHAT_CORP_ID", corp_id), ("WECHAT_AGENT_ID", agent_id),
                                      ("WECHAT_SECRET", secret)) if value]
    if not given:
        return None
    if len(given) < 3:
        raise ConfigError("WeCom sign-in needs WECHAT_CORP_ID, WECHAT_AGENT_ID and WECHAT_SECRET together")
    return WeComConfig(
        corp_id=corp_id, agent_id=agent_id, secret=secret,
        api_url=env_str(env, "WECHAT_API_URL", "https://qyapi.weixin.qq.com").rstrip("/"),
        oauth_url=env_str(env, "WECHAT_OAUTH_URL", "https://open.weixin.qq.com/connect/oauth2/authorize"),
        qr_login_url=env_str(env, "WECHAT_QR_LOGIN_URL", "https://login.work.weixin.qq.com/wwlogin/sso/login"))
