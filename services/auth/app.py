"""The auth service: users, passwords, sessions and access tokens (the only signer of JWTs)."""
from __future__ import annotations

import os

from flask import Flask

from shared.config import ConfigError, Settings, load_settings
from shared.db import Database
from shared.events import redis_client
from shared.storage import make_storage
from shared.tokens import ensure_dev_keys
from shared.web import init_service_app
from services.auth import api
from services.auth.avatars import MAX_AVATAR_BYTES
from services.auth.cli import auth_cli
from services.auth.config import AuthSettings, load_auth_settings
from services.auth.mail import Mailer, OutboxMailer, SmtpMailer
from services.auth.revocation import Revocations
from services.auth.service import AuthService, Peers
from services.auth.tokens import TokenSigner
from services.credits.client import CreditsClient
from services.gallery.client import GalleryClient

# The avatar plus multipart framing; anything larger is refused with 413 before it is read.
MAX_REQUEST_BYTES = MAX_AVATAR_BYTES + 64 * 1024


def create_app(settings: Settings | None = None, auth_settings: AuthSettings | None = None) -> Flask:
    settings = settings or load_settings()
    auth_settings = auth_settings or load_auth_settings({**os.environ, "APP_ENV": settings.env})
    if settings.is_production and not settings.jwt_private_key_path.is_file():
        raise ConfigError(f"the JWT private key {settings.jwt_private_key_path} is missing; "
                          "auth signs tokens and cannot start without it")
    ensure_dev_keys(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    db = Database(settings.auth_database_url)
    redis = redis_client(settings.redis_url)
    peers = Peers(credits=CreditsClient(settings.credits_url, settings.service_token),
                  gallery=GalleryClient(settings.gallery_url, settings.service_token))
    mailer: Mailer = (SmtpMailer(auth_settings.smtp, auth_settings.mail_from) if auth_settings.smtp
                      else OutboxMailer(settings.data_dir / "mail", auth_settings.mail_from))
    app.extensions["db"] = db
    app.extensions["redis"] = redis  # shared.tokens checks revocations with it on every request
    signer = TokenSigner(settings.jwt_private_key_path.read_text(), settings.access_token_minutes)
    app.extensions["auth"] = AuthService(db, auth_settings, signer, Revocations(redis, signer.expires_in),
                                         make_storage(settings), mailer, redis, peers)

    init_service_app(app, settings, internal=True,
                     ready_checks={"database": db.ping, "redis": redis.ping})
    app.register_blueprint(api.bp)
    app.cli.add_command(auth_cli)
    return app
