"""The edge: client addresses, forwarded headers, CORS, CSP, request ids in logs, and
failing upstreams that must answer 503 quickly rather than hang."""
from __future__ import annotations

import io
import json
import logging
import time
from typing import Iterator

import pytest
import requests

from services.gateway.clientaddr import parse_networks, parse_request_start, resolve_client
from services.render.catalog import catalog_key
from services.gateway.config import load_config
from shared.config import ConfigError
from shared.web import log_handler
from tests.conftest import serve
from tests.gateway.conftest import build_app, close_app
from tests.scripted_http import SILENCE, ScriptedServer, read_timeouts

TRUSTED = parse_networks("10.0.0.0/8, 192.168.1.7 fd00::/8")


@pytest.mark.parametrize(("peer", "forwarded", "trusted", "client"), [
    # No trusted proxies (the default): the header is never read.
    ("203.0.113.5", ["1.2.3.4"], (), "203.0.113.5"),
    ("10.0.0.1", ["1.2.3.4"], (), "10.0.0.1"),
    # An untrusted peer cannot claim another address.
    ("203.0.113.5", ["1.2.3.4"], TRUSTED, "203.0.113.5"),
    # Behind one trusted proxy: the address it saw.
    ("10.1.2.3", ["1.2.3.4"], TRUSTED, "1.2.3.4"),
    ("192.168.1.7", ["1.2.3.4"], TRUSTED, "1.2.3.4"),
    ("192.168.1.8", ["1.2.3.4"], TRUSTED, "192.168.1.8"),
    # A client's own forged entries, left of what our proxy appended, are ignored.
    ("10.1.2.3", ["6.6.6.6, 1.2.3.4"], TRUSTED, "1.2.3.4"),
    ("10.1.2.3", ["6.6.6.6", "1.2.3.4"], TRUSTED, "1.2.3.4"),
    # A chain of trusted proxies is walked from the right.
    ("10.0.0.2", ["6.6.6.6, 1.2.3.4, 10.9.9.9, 192.168.1.7"], TRUSTED, "1.2.3.4"),
    # Every hop trusted: the farthest one is the client.
    ("10.0.0.2", ["10.0.0.3, 10.0.0.4"], TRUSTED, "10.0.0.3"),
    # A malformed hop stops the walk at the trusted proxy that passed it on.
    ("10.0.0.2", ["1.2.3.4, not-an-ip"], TRUSTED, "10.0.0.2"),
    ("10.0.0.2", ["1.2.3.4, 1.2.3.5:8080"], TRUSTED, "10.0.0.2"),
    ("10.0.0.2", [" 1.2.3.4 ,, "], TRUSTED, "1.2.3.4"),
    ("10.0.0.2", [], TRUSTED, "10.0.0.2"),
    ("10.0.0.2", [""], TRUSTED, "10.0.0.2"),
    # IPv6, and IPv4 peers seen as IPv4-mapped IPv6.
    ("fd00::1", ["2001:db8::7"], TRUSTED, "2001:db8::7"),
    ("::ffff:10.0.0.1", ["1.2.3.4"], TRUSTED, "1.2.3.4"),
    ("2001:db8::1", ["1.2.3.4"], TRUSTED, "2001:db8::1"),
    # A peer that is not an IP address (a unix socket) is reported as it is.
    ("", ["1.2.3.4"], TRUSTED, ""),
])
def test_client_address_resolution(peer, forwarded, trusted, client):
    assert resolve_client(peer, forwarded, trusted) == client


@pytest.mark.parametrize(("name", "value"), [
    ("TRUSTED_PROXIES", "10.0.0.0/33"), ("TRUSTED_PROXIES", "proxy.local"),
    ("CORS_ORIGINS", "*"), ("CORS_ORIGINS", "example.com"),
    ("RATE_LIMIT_LOGIN", "lots"), ("UPSTREAM_READ_TIMEOUT", "0"), ("UPSTREAM_GET_READ_TIMEOUT", "soon"),
    ("DEMO_BACKEND", "maybe"),
])
def test_bad_edge_settings_stop_start_up(name, value, settings):
    with pytest.raises(ConfigError, match=name):
        load_config(settings, {name: value})


def test_edge_settings_defaults(settings):
    config = load_config(settings, {})
    assert config.trusted_proxies == () and config.cors_origins == frozenset()
    limits = config.rate_limits
    assert [rate.text for rate in (limits.global_ip, limits.login, limits.register, limits.generate)] == [
        "300/minute", "5/minute", "3/hour", "20/minute"]


def echoed_headers(response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.get_json()["headers"].items()}


def test_trusted_proxy_client_address_and_extra_headers_reach_the_service(gateway_env):
    app = build_app({**gateway_env, "TRUSTED_PROXIES": "127.0.0.0/8"})
    try:
        response = app.test_client().post("/api/works/save", json={}, headers={
            "X-Forwarded-For": "6.6.6.6, 198.51.100.23", "Accept-Language": "zh-CN,zh;q=0.9",
            "Idempotency-Key": "save-1"})
    finally:
        close_app(app)
    headers = echoed_headers(response)
    assert headers["x-forwarded-for"] == "198.51.100.23"
    assert headers["x-real-ip"] == "198.51.100.23"
    assert headers["accept-language"] == "zh-CN,zh;q=0.9"
    assert headers["idempotency-key"] == "save-1"


NOW = 1_800_000_000.0


@pytest.mark.parametrize(("header", "seconds"), [
    ("t=1799999990.5", 1799999990.5), ("t=1799999990", 1799999990.0), ("1799999990123", 1799999990.123),
    ("t=1799999990123456", 1799999990.123456),
    ("t=1800000100", None), ("t=1790000000", None), ("t=abc", None), ("", None), ("t=-5", None),
])
def test_a_proxys_request_start_is_read_in_seconds_milliseconds_or_microseconds(header, seconds):
    assert parse_request_start(header, NOW) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.fixture
def text2img_worker(unique, redis_url):
    from shared.events import redis_client
    client = redis_client(redis_url)
    key = catalog_key(f"edge-{unique}")
    client.set(key, json.dumps({"workerId": f"edge-{unique}", "workflows": ["text2img"], "slots": 1,
                                "checkpoints": ["demo.safetensors"], "samplers": ["euler"],
                                "schedulers": ["normal"]}), ex=30)
    yield
    client.delete(key)
    client.close()


@pytest.mark.parametrize(("trusted", "code"), [("127.0.0.0/8", "ADMISSION_EXPIRED"), ("10.0.0.0/8", "CREDITS_UNAVAILABLE")])
def test_a_generate_request_a_trusted_proxy_queued_too_long_is_refused_before_any_hold(
        gateway_env, issue_token, unique, text2img_worker, trusted, code):
    """Stamped 60 s ago by a trusted proxy: past the admission deadline, refused before credits
    are asked for anything. From an untrusted peer the stamp means nothing, and admission goes on
    to the hold (here an upstream that answers no envelope: CREDITS_UNAVAILABLE)."""
    app = build_app({**gateway_env, "TRUSTED_PROXIES": trusted})
    try:
        response = app.test_client().post(
            "/api/generate", json={"prompt": "late", "model": "demo.safetensors"},
            headers={"Authorization": f"Bearer {issue_token(4242, f'late_{unique}')}",
                     "X-Request-Start": f"t={time.time() - 60:.3f}"})
    finally:
        close_app(app)
    assert (response.status_code, response.get_json()["error"]["code"]) == (503, code)


@pytest.mark.parametrize(("sent", "kept"), [
    ("req-123", True), ("a" * 64, True), ("trace:9.f_x-1", True),
    ("a" * 65, False), ("id] ERROR forged", False), ("a\tb", False), ("bad id", False), ("新", False),
])
def test_only_plain_request_ids_are_kept(client, sent, kept):
    response = client.get("/api/works/gallery", headers={"X-Request-ID": sent})
    forwarded = echoed_headers(response)["x-request-id"]
    assert response.headers["X-Request-ID"] == forwarded
    assert (forwarded == sent) is kept
    if not kept:
        assert len(forwarded) == 32


@pytest.fixture
def cors_client(gateway_env):
    app = build_app({**gateway_env, "CORS_ORIGINS": "https://app.example.com, http://localhost:5173"})
    yield app.test_client()
    close_app(app)


def test_cors_allows_configured_origins_with_credentials(cors_client):
    response = cors_client.get("/api/works/gallery", headers={"Origin": "http://localhost:5173"})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "http://localhost:5173"
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]
    assert "Origin" in response.headers["Vary"]


def test_every_answer_varies_by_origin_when_cors_is_on(cors_client):
    for path in ("/api/users/profile", "/api/users/own-headers"):
        response = cors_client.get(path)
        assert response.status_code == 200
        assert "Origin" in response.headers["Vary"]
        assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_headers_also_on_errors_so_the_client_can_read_them(cors_client):
    response = cors_client.get("/api/nothing", headers={"Origin": "https://app.example.com"})
    assert response.status_code == 404
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"


@pytest.mark.parametrize("origin", ["https://evil.example", "https://app.example.com.evil.example",
                                    "http://app.example.com", "null"])
def test_cors_ignores_other_origins(cors_client, origin):
    response = cors_client.get("/api/works/gallery", headers={"Origin": origin})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_cors_preflight_for_an_allowed_origin(cors_client):
    response = cors_client.options("/api/works/save", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    for header in ("authorization", "content-type", "idempotency-key"):
        assert header in allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize("origin", ["https://evil.example", None])
def test_cors_preflight_for_another_origin_is_refused(cors_client, origin):
    headers = {"Access-Control-Request-Method": "DELETE"}
    if origin:
        headers["Origin"] = origin
    response = cors_client.options("/api/works/5", headers=headers)
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "CORS_ORIGIN_DENIED"
    assert "Access-Control-Allow-Origin" not in response.headers


def test_no_cors_headers_at_all_by_default(client):
    response = client.get("/api/works/gallery", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert client.options("/api/works/gallery", headers={
        "Origin": "https://app.example.com", "Access-Control-Request-Method": "GET"}).status_code == 403


@pytest.mark.parametrize("path", ["/", "/api/health", "/api/works/gallery", "/api/x", "/healthz"])
def test_csp_lets_a_vite_element_plus_client_work(client, path):
    with client.get(path) as response:
        policy = response.headers["Content-Security-Policy"]
    csp = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert csp["default-src"] == "'self'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self' 'unsafe-inline'"
    assert csp["img-src"] == "'self' data: blob:"
    assert csp["font-src"] == "'self' data:"
    assert csp["connect-src"] == "'self' ws: wss:"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"


def test_json_body_limit_also_binds_chunked_bodies(app):
    def chunks(count: int):  # requests sends a generator chunked, without a length
        for _ in range(count):
            yield b"x" * (64 * 1024)

    server = serve(app)
    try:
        url = f"{server.url}/api/works/save"
        refused = requests.post(url, data=chunks(17), headers={"Content-Type": "application/json"}, timeout=10)
        accepted = requests.post(url, data=chunks(16), headers={"Content-Type": "application/json"}, timeout=10)
    finally:
        server.stop()
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert accepted.status_code == 200
    assert len(accepted.json()["body"]) == 16 * 64 * 1024


# Faulty upstreams: one reads the request and never answers (a black hole), one reads it and
# closes the connection unanswered.
FAULTS = {"black-hole": SILENCE, "close": None}


@pytest.fixture
def faulty() -> Iterator:
    servers: list[ScriptedServer] = []

    def _start(behaviour: str) -> ScriptedServer:
        servers.append(ScriptedServer([FAULTS[behaviour]], per_connection=True))
        return servers[-1]

    yield _start
    for server in servers:
        server.stop()


@pytest.mark.parametrize(("method", "upstream", "fragment"), [
    ("GET", "dead", "is unreachable"),
    ("POST", "dead", "is unreachable"),
    ("GET", "black-hole", "did not answer within 0.4 s"),
    ("POST", "black-hole", "did not answer within 0.8 s"),
    ("GET", "close", "closed the connection"),
    ("POST", "close", "closed the connection"),
])
def test_failing_upstream_answers_503_after_the_configured_timeout(gateway_env, faulty, closed_url, monkeypatch,
                                                                   method, upstream, fragment):
    url = closed_url if upstream == "dead" else faulty(upstream).url
    waited = read_timeouts(monkeypatch, int(url.rsplit(":", 1)[1]))
    app = build_app({**gateway_env, "AUTH_URL": url, "UPSTREAM_GET_READ_TIMEOUT": "0.4",
                     "UPSTREAM_READ_TIMEOUT": "0.8"})
    try:
        response = app.test_client().open("/api/users/profile", method=method, json={})
    finally:
        close_app(app)
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert fragment in error["message"] and "auth" in error["message"]
    assert error["details"] == {"service": "auth"}
    # Every wait for the service's answer used the configured timeout, not the defaults (10 s
    # for a GET, 30 s for a write); a GET the service hung up on is tried once more.
    timeout = 0.4 if method == "GET" else 0.8
    reads = {"dead": 0, "black-hole": 1, "close": 2 if method == "GET" else 1}[upstream]
    assert waited == [timeout] * reads


def test_readyz_is_503_not_a_hang_with_a_black_hole_service(gateway_env, faulty, monkeypatch):
    black_hole = faulty("black-hole")
    waited = read_timeouts(monkeypatch, black_hole.port)
    app = build_app({**gateway_env, "CREDITS_URL": black_hole.url})
    try:
        response = app.test_client().get("/readyz")
    finally:
        close_app(app)
    assert response.status_code == 503
    body = response.get_json()
    assert body["error"]["code"] == "NOT_READY"
    assert body["error"]["details"]["credits"].startswith("down")
    assert body["error"]["details"]["auth"] == "ok"
    assert waited and set(waited) == {2.0}, "the probe waited its 2 s read timeout, not the upstream's 30 s"


def test_gateway_log_lines_carry_the_request_id(gateway_env, closed_url):
    stream = io.StringIO()
    handler = log_handler("gateway", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    app = build_app({**gateway_env, "GALLERY_URL": closed_url})
    try:
        app.test_client().get("/api/works/gallery", headers={"X-Request-ID": "trace-edge-1"})
    finally:
        root.removeHandler(handler)
        close_app(app)
    lines = [line for line in stream.getvalue().splitlines() if "gallery service is unreachable" in line]
    assert lines and " gateway WARNING [trace-edge-1] services.gateway.proxy: GET /api/works/gallery" in lines[0]
