"""Signing keys of service accounts (queue messages) and webhook endpoints.

A key has a public id (``qk_…`` or ``whk_…``) and a secret derived from it with
``INTEGRATIONS_SECRET`` (HMAC-SHA256), so no secret is ever stored: the database holds key
ids only, and the secret is shown once, when the key is made. Rotating the platform's secret
changes every derived secret.

Queue messages carry ``x-signature: v1=<hex HMAC-SHA256(secret, body)>``. Webhook deliveries
carry ``X-Webhook-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from shared.secret_compare import same_secret

SIGNATURE_VERSION = "v1"
QUEUE_KEY = "qk"
WEBHOOK_KEY = "whk"
SECRET_PREFIXES = {QUEUE_KEY: "qsec_", WEBHOOK_KEY: "whsec_"}


class SigningKeys:
    def __init__(self, master: bytes) -> None:
        self.master = master

    @staticmethod
    def new_key_id(kind: str) -> str:
        return f"{kind}_{secrets.token_hex(12)}"

    def secret(self, key_id: str) -> str:
        kind = key_id.split("_", 1)[0]
        digest = hmac.new(self.master, f"signing-key:{key_id}".encode("utf-8"), hashlib.sha256).digest()
        return SECRET_PREFIXES[kind] + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def body_signature(secret: str, body: bytes) -> str:
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify_body(secret: str, body: bytes, presented: str) -> bool:
    return same_secret(presented, body_signature(secret, body))


def webhook_signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},{SIGNATURE_VERSION}={mac}"
