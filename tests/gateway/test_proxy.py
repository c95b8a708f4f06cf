"""The reverse proxy against real upstream HTTP servers."""
from __future__ import annotations

import pytest
import requests
from prometheus_client import REGISTRY

from tests.conftest import TEST_SERVICE_TOKEN
from tests.conftest import serve
from tests.gateway.conftest import build_app, close_app


@pytest.mark.parametrize(("path", "service"), [
    ("/api/users/login", "auth"),
    ("/api/users/register", "auth"),
    ("/api/users/profile", "auth"),
    ("/api/admin/users", "auth"),
    ("/api/admin/users/7/ban", "auth"),
    ("/api/users/credits", "credits"),
    ("/api/users/credits/transactions", "credits"),
    ("/api/admin/credits/grant", "credits"),
    ("/api/credits/packages", "credits"),
    ("/api/works", "gallery"),
    ("/api/works/gallery", "gallery"),
    ("/api/works/12/like", "gallery"),
    ("/api/admin/works/3", "gallery"),
])
def test_each_prefix_reaches_its_service(client, path, service):
    response = client.get(path)
    assert response.status_code == 200
    echoed = response.get_json()
    assert echoed["service"] == service
    assert echoed["path"] == path


def test_method_query_body_and_headers_are_forwarded(client):
    response = client.post(
        "/api/works/save?draft=1&tag=a%20b", data='{"title": "猫"}',
        headers={"Content-Type": "application/json", "Authorization": "Bearer abc.def",
                 "Accept": "application/json", "User-Agent": "pytest-browser",
                 "X-Request-ID": "req-123", "X-Service-Token": "forged",
                 "X-Forwarded-For": "6.6.6.6", "Cookie": "session=secret",
                 "Proxy-Authorization": "Basic eA==", "TE": "trailers"})
    assert response.status_code == 200
    echoed = response.get_json()
    headers = {name.lower(): value for name, value in echoed["headers"].items()}
    assert echoed["method"] == "POST"
    assert echoed["query"] == "draft=1&tag=a%20b"
    assert echoed["body"] == '{"title": "猫"}'
    assert headers["authorization"] == "Bearer abc.def"
    assert headers["content-type"] == "application/json"
    assert headers["accept"] == "application/json"
    assert headers["user-agent"] == "pytest-browser"
    assert headers["x-service-token"] == TEST_SERVICE_TOKEN
    assert headers["x-request-id"] == "req-123"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-real-ip"] == "127.0.0.1"
    for stripped in ("cookie", "proxy-authorization", "te"):
        assert stripped not in headers
    assert response.headers["X-Request-ID"] == "req-123"


def test_gateway_request_id_is_sent_when_the_client_has_none(client):
    response = client.get("/api/users/profile")
    sent = {name.lower(): value for name, value in response.get_json()["headers"].items()}
    assert sent["x-request-id"] == response.headers["X-Request-ID"]
    assert len(sent["x-request-id"]) == 32


def test_upstream_status_body_and_content_type_pass_through(client):
    response = client.get("/api/users/plain")
    assert response.status_code == 418
    assert response.data == b"not json"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"

    failed = client.delete("/api/works/5?status=409")
    assert failed.status_code == 409
    assert failed.get_json()["method"] == "DELETE"


@pytest.mark.parametrize("query", ["size=1000", "size=2000000", "size=2000000&stream=1"])
def test_small_large_and_unsized_bodies_pass_through_whole(app, query):
    """Small bodies are buffered, large or unsized ones streamed; the pool stays usable."""
    server = serve(app)
    try:
        session = requests.Session()
        for _ in range(3):
            response = session.get(f"{server.url}/api/works/large?{query}", timeout=10)
            assert response.status_code == 200
            assert len(response.content) == int(query.split("&")[0].split("=")[1])
            assert session.get(f"{server.url}/api/works/gallery", timeout=10).json()["service"] == "gallery"
        session.close()
    finally:
        server.stop()


def test_hop_by_hop_response_headers_are_stripped(client):
    response = client.get("/api/works/gallery")
    assert response.headers["X-Upstream"] == "gallery"
    assert "Keep-Alive" not in response.headers
    assert "Proxy-Authenticate" not in response.headers


def test_unreachable_upstream_answers_503_naming_the_service(gateway_env, closed_url):
    gateway_env["AUTH_URL"] = closed_url
    app = build_app(gateway_env)
    try:
        response = app.test_client().post("/api/users/login", json={"username": "x", "password": "y"})
        assert response.status_code == 503
        error = response.get_json()["error"]
        assert error["code"] == "SERVICE_UNAVAILABLE"
        assert "auth" in error["message"]
        # The other services are still reachable.
        assert app.test_client().get("/api/works/gallery").status_code == 200
    finally:
        close_app(app)


def test_json_body_over_one_megabyte_is_refused(client):
    response = client.post("/api/works/save", data=b"x" * (1024 * 1024 + 1),
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_multipart_body_may_be_larger_than_one_megabyte_but_not_ten(client):
    boundary = "b0undary"

    def multipart(size: int) -> bytes:
        return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + b"x" * size + f"\r\n--{boundary}--\r\n".encode()

    content_type = f"multipart/form-data; boundary={boundary}"
    accepted = client.post("/api/users/avatar", data=multipart(2 * 1024 * 1024),
                           headers={"Content-Type": content_type})
    assert accepted.status_code == 200
    assert len(accepted.get_json()["body"]) > 2 * 1024 * 1024

    refused = client.post("/api/users/avatar", data=multipart(10 * 1024 * 1024),
                          headers={"Content-Type": content_type})
    assert refused.status_code == 413
    assert refused.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_unknown_api_path_is_a_404_envelope(client):
    response = client.get("/api/x")
    assert response.status_code == 404
    body = response.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == "NOT_FOUND"


DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("path", ["/api/users/login", "/api/generate", "/api/works/save", "/api/users/register"])
def test_json_nested_too_deep_is_refused_at_the_edge(client, path):
    response = client.post(path, data=DEEP, content_type="application/json")
    assert (response.status_code, response.get_json()["error"]["code"]) == (400, "JSON_TOO_DEEP")


def test_json_nested_a_little_still_passes(client):
    body = '{"a": ' * 20 + '"[[[[" ' + "}" * 20
    response = client.post("/api/works/save", data=body, content_type="application/json")
    assert response.status_code == 200
    assert response.get_json()["body"] == body


@pytest.mark.parametrize("method", ["GET", "POST"])  # a GET is answered in front of Flask, a POST through it
def test_the_gateway_writes_its_own_request_id_and_security_headers_once(client, method):
    response = client.open("/api/users/own-headers", method=method, headers={"X-Request-ID": "req-own"})
    assert response.status_code == 200
    assert response.headers.getlist("X-Request-ID") == ["req-own"]
    assert response.headers.getlist("X-Frame-Options") == ["DENY"]
    assert response.headers["Vary"] == "Accept"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_proxied_reads_are_counted_in_the_request_metrics(client):
    def answered(status: str) -> float:
        return REGISTRY.get_sample_value("http_requests_total", {
            "service": "gateway", "method": "GET", "route": "/api/users/<path:rest>", "status": status}) or 0.0

    before_ok, before_teapot = answered("200"), answered("418")
    client.get("/api/users/profile")
    client.get("/api/users/profile")
    client.get("/api/users/plain")
    assert (answered("200") - before_ok, answered("418") - before_teapot) == (2, 1)


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_header_value_that_would_split_the_request_is_refused_with_400(client, method):
    response = client.open("/api/users/profile", method=method, environ_overrides={"HTTP_ACCEPT": "a\nX-Injected: 1"})
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "BAD_REQUEST"
