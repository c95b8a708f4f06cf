"""The auth service's app: users, passwords, sessions and access tokens (the only signer of JWTs)."""
from __future__ import annotations

import redis
from flask import Flask

from shared.config import ConfigError, Settings, load_settings
from shared.db import Database
from shared.events import redis_client
from shared.storage import make_storage
from shared.tokens import ensure_dev_keys
from shared.web import init_service_app
from services.auth import api
from services.auth.admin import Administration
from services.auth.api_tokens import ApiTokens
from services.auth.avatars import MAX_AVATAR_BYTES
from services.auth.cli import auth_cli
from services.auth.config import AuthConfig, load_config
from services.auth.deletion import AccountDeletion
from services.auth.directory import Directory
from services.auth.external import IdentityProvider
from services.auth.identities import LinkedIdentities, ProviderSwitches
from services.auth.mail import Mailer, OutboxMailer, SmtpMailer
from services.auth.outbox import Outbox
from services.auth.passwords import Passwords
from services.auth.revocation import Revocations
from services.auth.service import Accounts
from services.auth.oidc import OidcProvider
from services.auth.service_accounts import ServiceAccounts
from services.auth.sessions import Sessions
from services.auth.sso import SingleSignOn
from services.auth.tokens import TokenSigner
from services.auth.wecom import WeComProvider
from services.credits.client import CreditsClient
from services.gallery.client import GalleryClient
from services.safety.client import ContentFilter

# The avatar plus multipart framing; anything larger is refused with 413 before it is read.
MAX_REQUEST_BYTES = MAX_AVATAR_BYTES + 64 * 1024


def create_app(settings: Settings | None = None, config: AuthConfig | None = None) -> Flask:
    settings = settings or load_settings()
    config = config or load_config(settings)
    if settings.is_production and not settings.jwt_private_key_path.is_file():
        raise ConfigError(f"the JWT private key {settings.jwt_private_key_path} is missing; "
                          "auth signs tokens and cannot start without it")
    ensure_dev_keys(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.config["JWT_PRIVATE_KEY"] = settings.jwt_private_key_path.read_text()  # only auth signs
    db = Database(settings.auth_database_url)
    redis = redis_client(settings.redis_url)
    storage = make_storage(settings)
    credits = CreditsClient(settings.credits_url, settings.service_token)
    gallery = GalleryClient(settings.gallery_url, settings.service_token)
    mailer: Mailer = (SmtpMailer(config.smtp, config.mail_from) if config.smtp
                      else OutboxMailer(settings.data_dir / "mail", config.mail_from))
    signer = TokenSigner(settings.access_token_minutes)
    revocations = Revocations(redis, signer.expires_in)
    sessions = Sessions(db, config, signer, revocations)
    app.extensions["db"] = db
    app.extensions["redis"] = redis  # shared.tokens checks revocations with it on every request
    accounts = Accounts(db, config, sessions, storage, credits, ContentFilter.from_settings(settings, redis))
    providers = identity_providers(config, redis)
    switches = ProviderSwitches(db, providers)
    identities = LinkedIdentities(db, providers)
    app.extensions["auth"] = accounts
    app.extensions["auth_sessions"] = sessions
    app.extensions["auth_passwords"] = Passwords(db, config, sessions, revocations, mailer)
    outbox = Outbox(db, redis)
    app.extensions["auth_outbox"] = outbox
    app.extensions["auth_deletion"] = AccountDeletion(db, storage, revocations, outbox)
    app.extensions["auth_directory"] = Directory(db, storage, credits, gallery)
    app.extensions["auth_admin"] = Administration(db, revocations, credits)
    app.extensions["auth_sso"] = SingleSignOn(db, config, sessions, accounts, revocations, redis, providers,
                                              switches, identities)
    app.extensions["auth_identities"] = identities
    app.extensions["auth_provider_switches"] = switches
    app.extensions["auth_api_tokens"] = ApiTokens(db, signer, revocations)
    app.extensions["auth_service_accounts"] = ServiceAccounts(db, config)

    init_service_app(app, settings, internal=True,
                     ready_checks={"database": db.ping, "redis": redis.ping})
    app.register_blueprint(api.bp)
    app.cli.add_command(auth_cli)
    return app


def identity_providers(config: AuthConfig, cache: redis.Redis) -> list[IdentityProvider]:
    """The configured single sign-on providers, OpenID Connect ones first, in configured order."""
    def callback(key: str) -> str:
        return f"{config.public_url}/api/auth/sso/{key}/callback"

    providers: list[IdentityProvider] = [OidcProvider(provider, callback(provider.key), f"{config.public_url}/login")
                                         for provider in config.oidc_providers]
    if config.wecom is not None:
        providers.append(WeComProvider(config.wecom, callback("wecom"), cache))
    return providers
