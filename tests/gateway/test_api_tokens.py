"""API tokens at the edge: ``Bearer pat_…`` is exchanged once (auth stand-in) for a scoped
access token, which every route then sees; revocation stops it at once despite the cache."""
from __future__ import annotations

import datetime as dt
import uuid
from typing import Iterator

import json

import jwt
import pytest
import websocket
from flask import Flask, jsonify, request

from shared.events import EventBus
from shared.tokens import revoked_api_token_key
from tests.conftest import RunningServer, serve
from tests.gateway.conftest import build_app, close_app

GOOD = "pat_good_token_of_the_stand_in"
READ_ONLY = "pat_read_only_token_of_the_stand_in"
SCOPES = {GOOD: ["generate"], READ_ONLY: ["works:read"]}


class AuthStandIn:
    """Auth's exchange route (signing with the tests' key) and an echo of what reaches auth."""

    def __init__(self, private_key: str, user_id: int) -> None:
        self.private_key = private_key
        self.user_id = user_id
        self.exchanges = 0
        self.token_id = uuid.uuid4().hex

    def app(self) -> Flask:
        app = Flask("auth-stand-in")

        @app.post("/internal/tokens/exchange")
        def exchange():
            self.exchanges += 1
            presented = request.get_json()["token"]
            if presented not in SCOPES:
                return jsonify({"success": False, "error": {"code": "TOKEN_INVALID", "message": "no",
                                                            "details": None}}), 401
            now = dt.datetime.now(dt.timezone.utc)
            expires = now + dt.timedelta(minutes=15)
            token = jwt.encode({"sub": str(self.user_id), "username": "bot", "role": "user", "type": "access",
                                "jti": uuid.uuid4().hex, "iat": now, "exp": expires, "scopes": SCOPES[presented],
                                "pat": self.token_id, "kind": "service"}, self.private_key, algorithm="RS256")
            return jsonify({"success": True, "data": {"accessToken": token, "expiresAt": int(expires.timestamp()),
                                                      "tokenId": self.token_id, "userId": self.user_id,
                                                      "scopes": SCOPES[presented]}})

        @app.route("/api/<path:path>", methods=["GET", "POST"])
        def echo(path: str):
            return jsonify({"success": True, "data": {"authorization": request.headers.get("Authorization")}})

        return app


@pytest.fixture
def stand_in(gateway_settings, unique) -> Iterator[tuple[AuthStandIn, RunningServer]]:
    auth = AuthStandIn(gateway_settings.jwt_private_key_path.read_text(), 5_000_000 + int(unique[:5], 16))
    server = serve(auth.app())
    yield auth, server
    server.stop()


@pytest.fixture
def gateway(gateway_env, stand_in) -> Iterator[Flask]:
    app = build_app({**gateway_env, "AUTH_URL": stand_in[1].url})
    yield app
    close_app(app)


def test_an_api_token_is_exchanged_once_and_scoped(gateway, stand_in):
    auth, _ = stand_in
    client = gateway.test_client()
    headers = {"Authorization": f"Bearer {GOOD}"}
    for _ in range(3):
        assert client.get("/api/jobs", headers=headers).status_code == 200
    assert auth.exchanges == 1, "kept until shortly before it expires"
    forwarded = client.get("/api/users/profile", headers=headers).get_json()["data"]["authorization"]
    assert forwarded.startswith("Bearer ey") and GOOD not in forwarded, "services never see the API token"
    refused = client.get("/api/admin/jobs", headers=headers)
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "INSUFFICIENT_SCOPE"


def test_a_revoked_api_token_stops_at_once_despite_the_cache(gateway, stand_in):
    auth, _ = stand_in
    client = gateway.test_client()
    headers = {"Authorization": f"Bearer {GOOD}"}
    assert client.get("/api/jobs", headers=headers).status_code == 200
    redis = gateway.extensions["redis"]
    redis.set(revoked_api_token_key(auth.token_id), "1", ex=60)
    try:
        answer = client.get("/api/jobs", headers=headers)
    finally:
        redis.delete(revoked_api_token_key(auth.token_id))
    assert answer.status_code == 401 and answer.get_json()["error"]["code"] == "TOKEN_REVOKED"


def test_an_unknown_api_token_gets_auths_answer(gateway, stand_in):
    answer = gateway.test_client().get("/api/jobs", headers={"Authorization": "Bearer pat_unknown"})
    assert answer.status_code == 401 and answer.get_json()["error"]["code"] == "TOKEN_INVALID"


@pytest.fixture
def socket_url(gateway) -> Iterator[str]:
    server = serve(gateway)
    yield f"ws://127.0.0.1:{server.server.server_port}/ws"
    server.stop()


def _first_frame_and_close(ws: websocket.WebSocket) -> tuple[dict, int]:
    frame = json.loads(ws.recv())
    opcode, payload = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    return frame, int.from_bytes(payload[:2], "big")


@pytest.mark.parametrize("where", ["query", "header"])
def test_an_integrator_receives_its_events_on_the_socket_with_its_api_token(gateway, stand_in, socket_url, where):
    auth, _ = stand_in
    if where == "query":
        ws = websocket.create_connection(f"{socket_url}?token={GOOD}", timeout=5)
    else:
        ws = websocket.create_connection(socket_url, timeout=5, header=[f"Authorization: Bearer {GOOD}"])
    try:
        assert json.loads(ws.recv()) == {"type": "ready", "data": {"userId": auth.user_id}}
        EventBus(gateway.extensions["redis"]).publish(auth.user_id, "credits.changed", {"available": 485, "held": 15})
        assert json.loads(ws.recv())["data"] == {"available": 485, "held": 15}
    finally:
        ws.close()
        ws.shutdown()


@pytest.mark.parametrize("token,close_code,code", [("pat_unknown", 4401, "TOKEN_INVALID"),
                                                   (READ_ONLY, 4403, "INSUFFICIENT_SCOPE")])
def test_a_socket_refuses_an_unknown_or_unscoped_api_token(socket_url, token, close_code, code):
    ws = websocket.create_connection(f"{socket_url}?token={token}", timeout=5)
    try:
        frame, closed_with = _first_frame_and_close(ws)
    finally:
        ws.close()
        ws.shutdown()
    assert frame["type"] == "error" and frame["data"]["code"] == code and closed_with == close_code
