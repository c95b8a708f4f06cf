"""Fixtures for the gateway: tiny real upstream services and a gateway pointed at them."""
from __future__ import annotations

from pathlib import Path

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, request

from services.gateway.app import create_app
from services.gateway.config import load_config
from shared.config import Settings, load_settings
from shared.embedded import free_port
from shared.tokens import ensure_dev_keys
from tests.conftest import RunningServer, serve


def echo_app(name: str) -> Flask:
    """An upstream that answers with what it received, or with the status in ``?status=``."""
    app = Flask(f"echo_{name}")

    @app.get("/readyz")
    def readyz():
        return jsonify({"success": True, "data": {"status": "ready"}})

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def echo(path: str):
        body = {
            "service": name,
            "method": request.method,
            "path": request.path,
            "query": request.query_string.decode(),
            "headers": dict(request.headers),
            "body": request.get_data(as_text=True),
        }
        response = jsonify(body)
        response.status_code = int(request.args.get("status", 200))
        response.headers["X-Upstream"] = name
        response.headers["Keep-Alive"] = "timeout=5"
        response.headers["Proxy-Authenticate"] = "Basic"
        return response

    @app.route("/api/users/own-headers", methods=["GET", "POST"])
    def own_headers():
        """Headers the gateway writes itself, set by the service too."""
        return Response("{}", content_type="application/json",
                        headers={"X-Request-ID": "the-service-own", "X-Frame-Options": "SAMEORIGIN", "Vary": "Accept"})

    @app.get("/api/users/plain")
    def plain():
        return Response("not json", status=418, content_type="text/plain; charset=utf-8")

    @app.get("/api/works/large")
    def large():
        """``size`` bytes, with a length, or streamed without one (``?stream=1``)."""
        size = int(request.args["size"])
        if request.args.get("stream"):
            return Response((b"y" * 1000 for _ in range(size // 1000)), content_type="application/octet-stream")
        return Response(b"x" * size, content_type="application/octet-stream")

    return app


@pytest.fixture(scope="session")
def upstreams() -> Iterator[dict[str, RunningServer]]:
    servers = {name: serve(echo_app(name)) for name in ("auth", "credits", "gallery")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def web_root(tmp_path) -> Path:
    """A stand-in for the built web client: its page and one hashed asset."""
    root = tmp_path / "web"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text('<!doctype html><script type="module" src="/assets/index-abc123.js"></script>')
    (root / "assets" / "index-abc123.js").write_text("console.log('client')")
    return root


@pytest.fixture
def gateway_env(settings_env, upstreams, unique, web_root) -> dict[str, str]:
    settings_env.update({
        "WEB_ROOT": str(web_root),
        "AUTH_URL": upstreams["auth"].url,
        "CREDITS_URL": upstreams["credits"].url,
        "GALLERY_URL": upstreams["gallery"].url,
        # Each test counts its requests apart, so limits never leak between tests or runs.
        "RATE_LIMIT_NAMESPACE": f"ratelimit-test-{unique}",
        # The echo upstreams answer with what they received: the edge cache is off for them
        # (test_edge_cache.py turns it on in front of a real gallery).
        "EDGE_CACHE_SECONDS": "0",
        "EDGE_CACHE_NAMESPACE": f"edge-test-{unique}",
    })
    return settings_env


def build_settings(env: dict[str, str]) -> Settings:
    loaded = load_settings(env)
    loaded.data_dir.mkdir(parents=True, exist_ok=True)
    ensure_dev_keys(loaded)
    return loaded


@pytest.fixture
def gateway_settings(gateway_env) -> Settings:
    return build_settings(gateway_env)


def build_app(env: dict[str, str]) -> Flask:
    """A gateway built from ``env`` alone (settings and the gateway's own settings)."""
    settings = build_settings(env)
    return create_app(settings, load_config(settings, env))


@pytest.fixture
def app(gateway_env) -> Iterator[Flask]:
    app = build_app(gateway_env)
    yield app
    close_app(app)


def close_app(app: Flask) -> None:
    app.extensions["gateway_token_exchange"].close()
    app.extensions["gateway_fanout"].close()
    app.extensions["gateway_proxy"].close()
    app.extensions["gateway_public_reads"].close()
    app.extensions["gateway_probes"].close()
    app.extensions["render"].db.dispose()
    app.extensions["redis"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def closed_url() -> str:
    """A local address nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


@pytest.fixture(scope="session")
def stranger_private_key() -> str:
    """An RSA key that is not the platform's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@pytest.fixture
def attack_tokens(settings, stranger_private_key, unique) -> dict[str, tuple[str, str]]:
    """Forged or unusable access tokens → the error code each must be refused with."""
    private_key = settings.jwt_private_key_path.read_text()
    public_key = settings.jwt_public_key_path.read_text()
    now = int(time.time())
    claims = {"sub": "4242", "username": f"mallory_{unique}", "role": "admin", "type": "access",
              "jti": uuid.uuid4().hex, "iat": now, "exp": now + 900}
    valid = jwt.encode(claims, private_key, algorithm="RS256")
    header, _, signature = valid.split(".")
    hs_input = _unsigned({"alg": "HS256", "typ": "JWT"}, claims)
    hs_signature = _b64(hmac.new(public_key.encode(), hs_input.encode(), hashlib.sha256).digest())
    without_exp = {name: value for name, value in claims.items() if name != "exp"}
    return {
        "alg none": (_unsigned({"alg": "none", "typ": "JWT"}, claims) + ".", "TOKEN_INVALID"),
        "alg None with our signature": (_unsigned({"alg": "None", "typ": "JWT"}, claims) + "." + signature,
                                        "TOKEN_INVALID"),
        "HS256 keyed with the public key": (f"{hs_input}.{hs_signature}", "TOKEN_INVALID"),
        "tampered claims": (f"{header}.{_b64(json.dumps({**claims, 'sub': '1'}).encode())}.{signature}",
                            "TOKEN_INVALID"),
        "another RSA key": (jwt.encode(claims, stranger_private_key, algorithm="RS256"), "TOKEN_INVALID"),
        "RS512 with our key": (jwt.encode(claims, private_key, algorithm="RS512"), "TOKEN_INVALID"),
        "expired": (jwt.encode({**claims, "iat": now - 1000, "exp": now - 60}, private_key, algorithm="RS256"),
                    "TOKEN_EXPIRED"),
        "refresh token": (jwt.encode({**claims, "type": "refresh"}, private_key, algorithm="RS256"),
                          "TOKEN_INVALID"),
        "no expiry": (jwt.encode(without_exp, private_key, algorithm="RS256"), "TOKEN_INVALID"),
        "truncated": (valid[:-12], "TOKEN_INVALID"),
        "not a JWT": ("not-a-jwt", "TOKEN_INVALID"),
    }


ATTACKS = ["alg none", "alg None with our signature", "HS256 keyed with the public key", "tampered claims",
           "another RSA key", "RS512 with our key", "expired", "refresh token", "no expiry", "truncated",
           "not a JWT"]
