"""How one service sees another's answers through ``shared.internal_http``."""
from __future__ import annotations

import pytest
from flask import Flask, jsonify, request

from shared.embedded import free_port
from shared.errors import ServiceError, ServiceUnavailable
from shared.internal_http import InternalHttp, is_not_found
from tests.conftest import TEST_SERVICE_TOKEN, serve


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
