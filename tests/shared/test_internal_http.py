"""How one service sees another's answers through ``shared.internal_http``."""
from __future__ import annotations

import time

import pytest
from flask import Flask, jsonify, request

from shared.embedded import free_port
from shared.errors import ServiceError, ServiceUnavailable
from shared.http_transport import POOL_IDLE_SECONDS, SERVER_KEEPALIVE_SECONDS
from shared.internal_http import InternalHttp, is_not_found
from tests.conftest import TEST_SERVICE_TOKEN, serve
from tests.scripted_http import ScriptedServer


def _callee() -> Flask:
    app = Flask("callee")

    @app.get("/echo")
    def echo():
        return jsonify({"success": True, "data": {
            "serviceToken": request.headers.get("X-Service-Token"),
            "authorization": request.headers.get("Authorization"), "args": request.args.to_dict()}})

    @app.post("/refuse")
    def refuse():
        return jsonify({"success": False, "error": {"code": "INSUFFICIENT_CREDITS", "message": "Not enough.",
                                                    "details": {"available": 3}}}), 402

    @app.get("/missing")
    def missing():
        return jsonify({"success": False, "error": {"code": "JOB_NOT_FOUND", "message": "No such job.",
                                                    "details": None}}), 404

    @app.get("/broken")
    def broken():
        return "<html>proxy error</html>", 502

    @app.get("/pages")
    def pages():
        page, size = int(request.args["page"]), int(request.args["pageSize"])
        everything = list(range(250))
        return jsonify({"success": True, "data": {"items": everything[(page - 1) * size:page * size],
                                                  "total": len(everything)}})

    return app


@pytest.fixture(scope="module")
def callee():
    running = serve(_callee())
    http = InternalHttp(running.url, TEST_SERVICE_TOKEN, 5.0, unavailable_code="CALLEE_UNAVAILABLE")
    yield http
    http.close()
    running.stop()


def test_a_call_carries_the_service_token_and_the_forwarded_user_token(callee):
    data = callee.get("/echo", params={"q": "1"}, access_token="user-token")
    assert data == {"serviceToken": TEST_SERVICE_TOKEN, "authorization": "Bearer user-token", "args": {"q": "1"}}
    assert callee.get("/echo")["authorization"] is None


def test_an_enveloped_error_keeps_the_callees_status_code_and_details(callee):
    with pytest.raises(ServiceError) as raised:
        callee.post("/refuse", {})
    assert (raised.value.status, raised.value.code, raised.value.details) == (402, "INSUFFICIENT_CREDITS",
                                                                              {"available": 3})
    assert raised.value.message == "Not enough."


def test_a_not_found_is_recognised_by_its_code(callee):
    with pytest.raises(ServiceError) as raised:
        callee.get("/missing")
    assert is_not_found(raised.value, "JOB_NOT_FOUND")
    assert not is_not_found(raised.value, "OUTPUT_NOT_FOUND")


def test_a_reply_without_an_envelope_is_the_callee_being_unavailable(callee):
    with pytest.raises(ServiceUnavailable) as raised:
        callee.get("/broken")
    assert (raised.value.status, raised.value.code) == (503, "CALLEE_UNAVAILABLE")
    assert raised.value.details == {"upstreamStatus": 502}


def test_an_unreachable_callee_is_unavailable():
    http = InternalHttp(f"http://127.0.0.1:{free_port()}", TEST_SERVICE_TOKEN, 2.0, unavailable_code="X_UNAVAILABLE")
    with pytest.raises(ServiceUnavailable) as raised:
        http.get("/anything")
    assert (raised.value.status, raised.value.code) == (503, "X_UNAVAILABLE")


def test_every_page_of_a_listing_is_read(callee):
    assert callee.get_all_pages("/pages") == list(range(250))


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 39\r\n\r\n{"success": true, "data": {"ok": true}}'


@pytest.fixture
def race():
    """A server that answers the first request of each connection and keeps it alive, then
    closes it without an answer when the next request arrives: the moment a server's
    keep-alive timer fires just as a pooled connection is reused (gunicorn closes idle
    connections after its --keep-alive; calls spaced that far apart meet it)."""
    server = ScriptedServer([OK, None], per_connection=True)
    http = InternalHttp(server.url, TEST_SERVICE_TOKEN, 5.0, unavailable_code="RACE_UNAVAILABLE")
    yield server, http
    http.close()
    server.stop()


def test_an_idempotent_call_on_a_connection_closed_under_it_is_sent_again(race):
    server, http = race
    assert http.get("/first") == {"ok": True}
    assert http.get("/second") == {"ok": True}  # the pooled connection is closed unanswered; a fresh one answers
    assert http.post("/hold", {"idempotencyKey": "hold:j1"}, idempotent=True) == {"ok": True}
    assert server.answered == [b"GET /first HTTP/1.1", b"GET /second HTTP/1.1", b"POST /hold HTTP/1.1"]


def test_a_call_that_is_not_idempotent_is_never_sent_twice(race):
    server, http = race
    http.get("/first")
    with pytest.raises(ServiceUnavailable) as raised:
        http.post("/notify", {"title": "hello"})
    assert raised.value.code == "RACE_UNAVAILABLE"
    assert server.answered == [b"GET /first HTTP/1.1"]


def test_a_connection_idle_past_half_the_servers_keep_alive_is_not_reused(race):
    server, http = race
    http._pool.max_idle = 0.05
    assert SERVER_KEEPALIVE_SECONDS >= 2 * POOL_IDLE_SECONDS
    http.get("/first")
    time.sleep(0.2)
    # Not idempotent, so not retried: it succeeds only because no stale connection is reused.
    assert http.post("/notify", {"title": "hello"}) == {"ok": True}
    assert server.connections == 2
