"""Settings only the auth service reads: refresh-token lifetimes, password reset and outgoing mail.

The access-token lifetime is the platform's ``Settings.access_token_minutes`` (shared/config.py):
every service's revocation marks and the tokens auth signs must agree on it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from shared.config import ConfigError, Settings, env_bool, env_int, env_str


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str
    password: str
    starttls: bool


@dataclass(frozen=True)
class AuthConfig:
    refresh_token_days: int
    remember_me_days: int
    password_reset_minutes: int
    bcrypt_rounds: int
    mail_from: str
    public_url: str
    smtp: SmtpConfig | None  # None: messages go to the log and DATA_DIR/mail (not in production)


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
        public_url=env_str(env, "PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/"),
        smtp=smtp,
    )
    for name in ("refresh_token_days", "remember_me_days", "password_reset_minutes"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{name.upper()} must be at least 1")
    if not 4 <= config.bcrypt_rounds <= 16:
        raise ConfigError("BCRYPT_ROUNDS must be between 4 and 16")
    return config
