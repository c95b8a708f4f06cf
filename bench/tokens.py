"""Authentication cost per request, in one process: CPU milliseconds a service spends on a
request that only checks its caller (``require_user``: the token and the Redis revocation
check), with the token's signature verified on every request versus remembered after the
first (``shared.tokens.VerifiedTokens``).

    .venv/bin/python bench/tokens.py [--requests 3000]

Uses Flask's test client (no sockets), Redis at ``BENCH_REDIS_URL`` for the revocation check.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

from _harness import access_token

import redis
from flask import Flask

from shared.config import Settings, load_settings
from shared.errors import ok
from shared.tokens import ensure_dev_keys, require_user
from shared.web import init_service_app

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")


def probe_app(settings: Settings, remember: bool) -> Flask:
    app = Flask("tokens-bench")
    app.extensions["redis"] = redis.Redis.from_url(REDIS_URL)
    init_service_app(app, settings, internal=False)
    if not remember:
        app.extensions.pop("verified_tokens")

    @app.get("/me")
    def me():
        return ok(require_user().user_id)

    return app


def cpu_ms_per_request(app: Flask, token: str, requests: int) -> float:
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    for _ in range(200):  # warm up
        assert client.get("/me", headers=headers).status_code == 200
    started = time.process_time()
    for _ in range(requests):
        client.get("/me", headers=headers)
    return (time.process_time() - started) / requests * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tokens-bench-"))
    settings = load_settings({"APP_ENV": "test", "DATA_DIR": str(folder), "REDIS_URL": REDIS_URL, "SERVICE_TOKEN": "t",
                              "JWT_PRIVATE_KEY_PATH": str(folder / "keys" / "jwt_private.pem"),
                              "JWT_PUBLIC_KEY_PATH": str(folder / "keys" / "jwt_public.pem")})
    ensure_dev_keys(settings)
    token = access_token(settings.jwt_private_key_path.read_text(), 7, "bench", dt.timedelta(minutes=15))
    print(f"authentication CPU per request, {args.requests} requests (Flask test client, one token)")
    for remember in (False, True):
        figure = cpu_ms_per_request(probe_app(settings, remember), token, args.requests)
        label = "signature remembered" if remember else "signature verified every time"
        print(f"  {label:32} {figure:6.3f} ms")


if __name__ == "__main__":
    main()
