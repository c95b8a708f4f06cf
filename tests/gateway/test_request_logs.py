"""A service started the way ``make run`` starts it writes the caller's request id into
its access log line and its own log lines."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
import uuid

import jwt
import requests

from deploy.local import service_commands
from shared.config import load_settings
from shared.embedded import free_port
from shared.tokens import ensure_dev_keys
from tests.conftest import TEST_SERVICE_TOKEN


def test_service_log_lines_carry_the_request_id(tmp_path, redis_url, keys_dir):
    # The database has no tables, so reading a balance fails and the service logs the error.
    env = {"APP_ENV": "development", "DATA_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}",
           "REDIS_URL": redis_url, "SERVICE_TOKEN": TEST_SERVICE_TOKEN, "CREDITS_PORT": str(free_port()),
           "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem"), "LOG_LEVEL": "INFO"}
    settings = load_settings(env)
    ensure_dev_keys(settings)
    now = dt.datetime.now(dt.timezone.utc)
    token = jwt.encode({"sub": "77", "username": "logger", "role": "user", "type": "access", "jti": uuid.uuid4().hex,
                        "iat": now, "exp": now + dt.timedelta(minutes=5)},
                       settings.jwt_private_key_path.read_text(), algorithm="RS256")
    log_path = tmp_path / "credits.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(service_commands(settings)["credits"], env={**os.environ, **env},
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"{settings.credits_url}/healthz", timeout=1)
                break
            except requests.RequestException:
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        response = requests.get(f"{settings.credits_url}/api/users/credits", timeout=5, headers={
            "X-Service-Token": TEST_SERVICE_TOKEN, "Authorization": f"Bearer {token}",
            "X-Request-ID": "trace-svc-1"})
        assert response.headers["X-Request-ID"] == "trace-svc-1"
        time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    lines = log_path.read_text().splitlines()
    own = [line for line in lines if " credits ERROR [trace-svc-1] " in line]
    access = [line for line in lines if '"GET /api/users/credits HTTP/1.1" 500' in line]
    assert own, "\n".join(lines[-30:])
    assert access and access[0].endswith("[trace-svc-1]"), "\n".join(lines[-30:])
