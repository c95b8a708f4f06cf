"""Rate limits at the edge, counted in the real Redis."""
from __future__ import annotations

import time

import pytest

from services.gateway.ratelimit import Rate, parse_rate
from shared.embedded import free_port
from tests.gateway.conftest import build_app, close_app


@pytest.mark.parametrize(("text", "count", "period"), [
    ("5/minute", 5, 60),
    ("3/hour", 3, 3600),
    ("20/min", 20, 60),
    ("300 per minute", 300, 60),
    ("10/30 seconds", 10, 30),
    ("2/1.5 sec", 2, 1.5),
    ("1000/day", 1000, 86400),
    (" 7/Hours ", 7, 3600),
])
def test_rates_parse(text, count, period):
    assert parse_rate(text) == Rate(count=count, period=period, text=text.strip())


@pytest.mark.parametrize("text", ["", "5", "five/minute", "5/fortnight", "0/minute", "5/0 seconds",
                                  "-1/minute", "5/ms", "5/minute; drop"])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.fixture
def limited(gateway_env):
    """Build a gateway with these settings (trusting 127.0.0.1 so tests can vary the client)."""
    apps = []

    def _build(**env: str):
        app = build_app({**gateway_env, "TRUSTED_PROXIES": "127.0.0.1/32", **env})
        apps.append(app)
        return app.test_client()

    yield _build
    for app in apps:
        close_app(app)


def assert_limited(response, limit: str, scope: str) -> int:
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["code"] == "RATE_LIMITED"
    assert error["details"]["limit"] == limit
    assert error["details"]["scope"] == scope
    retry_after = int(response.headers["Retry-After"])
    assert retry_after == error["details"]["retryAfter"] >= 1
    assert response.headers["X-Request-ID"]
    return retry_after


def login(client, ip: str, username: str = "alice"):
    return client.post("/api/users/login", json={"username": username, "password": "x"},
                       headers={"X-Forwarded-For": ip})


def test_sign_in_is_limited_per_address(limited):
    client = limited()
    for attempt in range(5):
        assert login(client, "203.0.113.1", f"user{attempt}").status_code == 200
    retry_after = assert_limited(login(client, "203.0.113.1", "someone_else"), "5/minute", "login:ip")
    assert 1 <= retry_after <= 12  # one more attempt is earned every 12 s
    assert login(client, "203.0.113.2", "someone_else").status_code == 200


def test_sign_in_is_limited_per_account_whatever_the_address(limited):
    client = limited()
    for attempt in range(5):
        name = "Carol" if attempt % 2 else "carol"
        assert login(client, f"198.51.100.{attempt}", name).status_code == 200
    assert_limited(login(client, "198.51.100.99", " CAROL "), "5/minute", "login:account")
    assert login(client, "198.51.100.99", "dave").status_code == 200


def test_a_refused_attempt_does_not_use_up_another_limit(limited):
    client = limited(RATE_LIMIT_LOGIN="2/minute")
    assert login(client, "192.0.2.1", "erin").status_code == 200
    assert login(client, "192.0.2.1", "frank").status_code == 200
    assert_limited(login(client, "192.0.2.1", "grace"), "2/minute", "login:ip")
    # grace's account was not charged by the refused attempt: two tries remain for it.
    assert login(client, "192.0.2.2", "grace").status_code == 200
    assert login(client, "192.0.2.3", "grace").status_code == 200
    assert_limited(login(client, "192.0.2.4", "grace"), "2/minute", "login:account")


def test_limit_recovers_after_retry_after(limited):
    client = limited(RATE_LIMIT_LOGIN="2/1 second")
    assert login(client, "192.0.2.10").status_code == 200
    assert login(client, "192.0.2.10").status_code == 200
    retry_after = assert_limited(login(client, "192.0.2.10"), "2/1 second", "login:ip")
    assert retry_after == 1
    time.sleep(0.6)  # one attempt is earned every 0.5 s
    assert login(client, "192.0.2.10").status_code == 200
    assert login(client, "192.0.2.10").status_code == 429


def test_registration_is_limited_per_address(limited):
    client = limited()
    body = {"username": "x", "email": "x@example.com", "password": "secret123"}
    for _ in range(3):
        assert client.post("/api/users/register", json=body, headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 200
    refused = client.post("/api/users/register", json=body, headers={"X-Forwarded-For": "203.0.113.7"})
    retry_after = assert_limited(refused, "3/hour", "register:ip")
    assert 1000 < retry_after <= 1200  # the next registration is earned 20 min after the first
    assert client.post("/api/users/register", json=body, headers={"X-Forwarded-For": "203.0.113.8"}).status_code == 200


def test_accounts_made_by_single_sign_on_share_the_registration_limit(limited):
    client = limited()
    address = {"X-Forwarded-For": "203.0.113.9"}
    register = {"username": "x", "email": "x@example.com", "password": "secret123"}
    sso = {"ticket": "t", "binding": "b", "username": "x"}
    assert client.post("/api/users/register", json=register, headers=address).status_code == 200
    assert client.post("/api/auth/sso/register", json=sso, headers=address).status_code == 200
    assert client.post("/api/auth/sso/register", json=sso, headers=address).status_code == 200
    assert_limited(client.post("/api/auth/sso/register", json=sso, headers=address), "3/hour", "register:ip")
    assert_limited(client.post("/api/users/register", json=register, headers=address), "3/hour", "register:ip")


def test_sign_in_by_single_sign_on_counts_as_a_sign_in(limited):
    client = limited(RATE_LIMIT_LOGIN="2/minute")
    address = {"X-Forwarded-For": "203.0.113.10"}
    assert login(client, "203.0.113.10").status_code == 200
    assert client.post("/api/auth/sso/exchange", json={"ticket": "t", "binding": "b"},
                       headers=address).status_code == 200
    assert_limited(client.post("/api/auth/sso/exchange", json={"ticket": "t", "binding": "b"}, headers=address),
                   "2/minute", "login:ip")


def test_password_reset_mail_is_limited_per_address(limited):
    client = limited(RATE_LIMIT_PASSWORD_FORGOT="1/hour")
    body = {"email": "x@example.com"}
    assert client.post("/api/users/password/forgot", json=body).status_code == 200
    assert_limited(client.post("/api/users/password/forgot", json=body), "1/hour", "password-forgot:ip")


def test_label_verification_is_limited_per_address(limited):
    client = limited(RATE_LIMIT_LABEL_VERIFY="1/hour")
    upload = {"data": b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\nx\r\n--b--\r\n",
              "content_type": "multipart/form-data; boundary=b"}
    assert client.post("/api/works/verify-label", headers={"X-Forwarded-For": "203.0.113.7"}, **upload).status_code != 429
    assert_limited(client.post("/api/works/verify-label", headers={"X-Forwarded-For": "203.0.113.7"}, **upload),
                   "1/hour", "label-verify:ip")
    assert client.post("/api/works/verify-label", headers={"X-Forwarded-For": "203.0.113.8"}, **upload).status_code != 429


def test_generation_is_limited_per_user(limited, issue_token, unique):
    client = limited(RATE_LIMIT_GENERATE="2/minute")
    first = {"Authorization": f"Bearer {issue_token(1, f'a_{unique}')}"}
    second = {"Authorization": f"Bearer {issue_token(2, f'b_{unique}')}"}
    for _ in range(2):
        # The body is invalid on purpose: the limit counts attempts, before any admission work.
        assert client.post("/api/generate", json={"workflow": "nope"}, headers=first).status_code == 422
    assert_limited(client.post("/api/generate", json={"workflow": "nope"}, headers=first), "2/minute",
                   "generate:user")
    assert client.post("/api/generate", json={"workflow": "nope"}, headers=second).status_code == 422
    # Without a valid token there is no user to count: the route answers 401.
    assert client.post("/api/generate", json={}).status_code == 401
    assert client.post("/api/generate", json={}, headers={"Authorization": "Bearer x.y.z"}).status_code == 401


def test_global_ceiling_per_address_covers_every_route(limited):
    client = limited(RATE_LIMIT_GLOBAL="3/minute")

    def get(path: str, address: str, **headers: str):
        # buffered: the response is closed as a server closes it, which is when it is counted.
        return client.get(path, headers={"X-Forwarded-For": address, **headers}, buffered=True)

    for path in ("/api/works/gallery", "/api/health", "/media/missing.png"):
        assert get(path, "203.0.113.20").status_code != 429
    retry_after = assert_limited(get("/", "203.0.113.20"), "3/minute", "global:ip")
    assert 1 <= retry_after <= 20
    assert get("/api/works/gallery", "203.0.113.21").status_code == 200
    # Probes and calls from other platform processes (service token) are not clients.
    assert get("/healthz", "203.0.113.20").status_code == 200
    assert get("/internal/outputs/none", "203.0.113.20", **{"X-Service-Token": "test-service-token"}).status_code == 404
    assert get("/internal/outputs/none", "203.0.113.20", **{"X-Service-Token": "forged"}).status_code == 429
    # A token of any characters (a header is Latin-1) is a wrong one, not a server error.
    assert get("/internal/outputs/none", "203.0.113.20", **{"X-Service-Token": "t\u00e9st"}).status_code == 429
    # Sign-in counts against the ceiling too, checked in Redis before it is routed.
    assert_limited(login(client, "203.0.113.20"), "3/minute", "global:ip")


def test_global_ceiling_is_shared_by_gateway_processes(limited):
    # Two gateways built from one environment: the same Redis namespace, separate processes' memory.
    first, second = limited(RATE_LIMIT_GLOBAL="2/minute"), limited(RATE_LIMIT_GLOBAL="2/minute")
    headers = {"X-Forwarded-For": "203.0.113.50"}
    assert first.get("/api/works/gallery", headers=headers, buffered=True).status_code == 200
    assert first.get("/api/works/gallery", headers=headers, buffered=True).status_code == 200
    # The second process has not seen this address run out: its first request passes and is
    # refused by Redis when charged, after which it refuses the address too.
    assert second.get("/api/works/gallery", headers=headers, buffered=True).status_code == 200
    assert_limited(second.get("/api/works/gallery", headers=headers, buffered=True), "2/minute", "global:ip")


def test_untrusted_peer_cannot_dodge_limits_with_x_forwarded_for(gateway_env):
    app = build_app({**gateway_env, "RATE_LIMIT_LOGIN": "1/minute"})  # no trusted proxies
    try:
        client = app.test_client()
        assert login(client, "203.0.113.30").status_code == 200
        assert_limited(login(client, "203.0.113.31", "other"), "1/minute", "login:ip")
    finally:
        close_app(app)


def test_without_redis_the_site_stays_up_but_guarded_routes_refuse(gateway_env):
    app = build_app({**gateway_env, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    try:
        client = app.test_client()
        assert client.get("/api/works/gallery").status_code == 200
        refused = login(client, "203.0.113.40")
        assert refused.status_code == 503
        assert refused.get_json()["error"]["code"] == "RATE_LIMIT_UNAVAILABLE"
    finally:
        close_app(app)
