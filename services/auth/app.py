"""The auth service: users, passwords and access tokens (the only signer of JWTs)."""
from __future__ import annotations

from flask import Flask
from sqlalchemy import text

from shared.config import Settings, load_settings
from shared.db import Database
from shared.tokens import ensure_dev_keys
from shared.web import init_service_app
from services.auth import api
from services.auth.cli import auth_cli
from services.auth.service import AuthService
from services.auth.tokens import TokenSigner
from services.credits.client import CreditsClient


def create_app(settings: Settings | None = None) -> Flask:
    settings = settings or load_settings()
    ensure_dev_keys(settings)
    app = Flask(__name__)
    db = Database(settings.auth_database_url)
    signer = TokenSigner(settings.jwt_private_key_path.read_text(), settings.access_token_minutes)
    credits = CreditsClient(settings.credits_url, settings.service_token)
    # The lowest bcrypt cost keeps the test suite fast; every other environment pays full cost.
    rounds = 4 if settings.env == "test" else 12
    app.extensions["db"] = db
    app.extensions["auth"] = AuthService(db, signer, credits, bcrypt_rounds=rounds)

    def database_ready() -> None:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    init_service_app(app, settings, internal=True, ready_checks={"database": database_ready})
    app.register_blueprint(api.bp)
    app.cli.add_command(auth_cli)
    return app
