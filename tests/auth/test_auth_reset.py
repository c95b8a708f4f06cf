"""Password reset by mail, end to end through the development outbox (DATA_DIR/mail)."""
from __future__ import annotations

import email
import email.policy
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from shared.config import ConfigError, load_settings
from shared.db import utcnow
from services.auth.config import load_config
from services.auth.models import PasswordResetToken


def outbox(auth_settings, to: str) -> list[Path]:
    return sorted((auth_settings.data_dir / "mail").glob(f"*-{to}.eml"))


def reset_token(path: Path) -> str:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    return re.search(r"reset-password\?token=([A-Za-z0-9_-]+)", message.get_content()).group(1)


def forgot(client, service_headers, address):
    """The answer, once the server has finished sending it (what follows the answer has run)."""
    response = client.post("/api/users/password/forgot", headers=service_headers, json={"email": address})
    response.close()
    return response


def reset(client, service_headers, token, password):
    return client.post("/api/users/password/reset", headers=service_headers,
                       json={"token": token, "newPassword": password})


def test_reset_flow_end_to_end(make_account, client, service_headers, auth_settings):
    account = make_account()
    other_session = account.login()
    response = forgot(client, service_headers, account.email.upper())
    assert response.status_code == 200
    [mail] = outbox(auth_settings, account.email)
    message = email.message_from_bytes(mail.read_bytes(), policy=email.policy.default)
    assert (message["To"], message["Subject"]) == (account.email, "Reset your password")
    token = reset_token(mail)

    assert reset(client, service_headers, token, "newsecret77").json["data"] == {"reset": True}
    # Every session ended: access tokens and refresh tokens alike.
    assert account.call("GET", "/api/users/profile").json["error"]["code"] == "TOKEN_REVOKED"
    assert client.post("/api/users/token/refresh", headers=service_headers,
                       json={"refreshToken": other_session["refreshToken"]}).status_code == 401
    login = client.post("/api/users/login", headers=service_headers,
                        json={"username": account.username, "password": "newsecret77"})
    assert login.status_code == 200
    # Single use.
    again = reset(client, service_headers, token, "another88")
    assert (again.status_code, again.json["error"]["code"]) == (400, "RESET_TOKEN_INVALID")


def test_unknown_address_gets_the_same_answer_and_no_mail(client, service_headers, auth_settings, unique):
    address = f"nobody{unique}@example.com"
    response = forgot(client, service_headers, address)
    assert response.status_code == 200
    assert response.json["data"]["message"].startswith("If an account uses this address")
    assert outbox(auth_settings, address) == []


def test_the_answer_is_sent_before_the_address_is_even_looked_up(make_account, client, service_headers,
                                                                  auth_settings, auth_app):
    """Known and unknown addresses get the same answer in the same time: the lookup, the
    token and the mail all come after it."""
    account = make_account()
    response = client.post("/api/users/password/forgot", headers=service_headers, json={"email": account.email})
    assert response.status_code == 200
    with auth_app.extensions["db"].read() as session:
        assert session.scalars(select(PasswordResetToken).where(PasswordResetToken.user_id == account.id)).all() == []
    assert outbox(auth_settings, account.email) == []
    response.close()  # the server has sent the answer
    assert len(outbox(auth_settings, account.email)) == 1


def test_expired_and_bad_reset_tokens(make_account, client, service_headers, auth_settings, auth_app):
    account = make_account()
    forgot(client, service_headers, account.email)
    token = reset_token(outbox(auth_settings, account.email)[-1])
    with auth_app.extensions["db"].transaction() as session:
        session.execute(update(PasswordResetToken).where(PasswordResetToken.user_id == account.id)
                        .values(expires_at=utcnow() - timedelta(seconds=1)))
    expired = reset(client, service_headers, token, "newsecret77")
    assert (expired.status_code, expired.json["error"]["code"]) == (400, "RESET_TOKEN_EXPIRED")
    assert account.call("GET", "/api/users/profile").status_code == 200  # nothing changed
    unknown = reset(client, service_headers, "y" * 43, "newsecret77")
    assert unknown.json["error"]["code"] == "RESET_TOKEN_INVALID"
    for body in ({"token": token, "newPassword": "weak"}, {"token": token}, {"email": "x@example.com"},
                 {"token": 5, "newPassword": "newsecret77"}):
        assert client.post("/api/users/password/reset", headers=service_headers, json=body).status_code == 422
    assert forgot(client, service_headers, "not-an-address").status_code == 422


def test_production_needs_smtp(auth_env):
    env = {**auth_env, "APP_ENV": "production"}
    production = load_settings(env)
    with pytest.raises(ConfigError, match="SMTP_HOST"):
        load_config(production, env)
    configured = load_config(production, {**env, "SMTP_HOST": "mail.example.com"})
    assert (configured.smtp.port, configured.smtp.starttls, configured.bcrypt_rounds) == (587, True, 12)
