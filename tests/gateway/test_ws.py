"""The live event socket over a real server and a real WebSocket client."""
from __future__ import annotations

import json
import time
from typing import Iterator

import jwt
import pytest
import websocket

from shared.events import EventBus, redis_client, user_channel
from shared.tokens import revoked_token_key, revoked_user_key
from tests.conftest import RunningServer, serve
from tests.gateway.conftest import ATTACKS, build_app, close_app


@pytest.fixture
def server(app) -> Iterator[RunningServer]:
    running = serve(app)
    yield running
    running.stop()


@pytest.fixture
def bus(redis_url) -> Iterator[EventBus]:
    client = redis_client(redis_url)
    yield EventBus(client)
    client.close()


def _connector(server: RunningServer) -> Iterator:
    sockets: list[websocket.WebSocket] = []

    def _connect(query: str = "") -> websocket.WebSocket:
        ws = websocket.create_connection(f"ws://127.0.0.1:{server.server.server_port}/ws{query}", timeout=5)
        sockets.append(ws)
        return ws

    yield _connect
    for ws in sockets:
        ws.close()
        ws.shutdown()


@pytest.fixture
def connect(server):
    yield from _connector(server)


def receive(ws: websocket.WebSocket) -> dict:
    return json.loads(ws.recv())


def expect_close(ws: websocket.WebSocket) -> int:
    opcode, payload = ws.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    return int.from_bytes(payload[:2], "big")


@pytest.mark.parametrize("query", ["", "?token=", "?token=not-a-jwt"])
def test_missing_or_invalid_token_gets_an_error_frame_and_close_4401(connect, query):
    ws = connect(query)
    frame = receive(ws)
    assert frame["type"] == "error"
    assert frame["data"]["code"] in ("NO_TOKEN", "TOKEN_INVALID")
    assert frame["data"]["message"]
    assert expect_close(ws) == 4401


def test_expired_token_is_refused(connect, issue_token, unique):
    ws = connect(f"?token={issue_token(1, f'old_{unique}', minutes=-1)}")
    assert receive(ws)["data"]["code"] == "TOKEN_EXPIRED"
    assert expect_close(ws) == 4401


def test_attack_tokens_are_refused_with_4401(connect, attack_tokens):
    for attack in ATTACKS:
        token, code = attack_tokens[attack]
        ws = connect(f"?token={token}")
        frame = receive(ws)
        assert (frame["type"], frame["data"]["code"]) == ("error", code), attack
        assert expect_close(ws) == 4401, attack


@pytest.fixture
def rechecking_connect(gateway_env) -> Iterator:
    """``rechecking_connect(seconds)``: how to connect to a gateway of its own whose sockets
    re-check revocation every ``seconds``."""
    gateways = []

    def _gateway(seconds: str):
        app = build_app({**gateway_env, "WS_RECHECK_SECONDS": seconds})
        running = serve(app)
        connector = _connector(running)
        gateways.append((app, running, connector))
        return next(connector)

    yield _gateway
    for app, running, connector in gateways:
        next(connector, None)  # closes its sockets
        running.stop()
        close_app(app)


# How long a test waits for a frame that should come within a second: only a wait that
# would last far longer (a re-check or an expiry not acted on) fails it.
PATIENCE = 60


def receive_within(ws: websocket.WebSocket, seconds: float) -> dict:
    """The next data frame, if it comes within ``seconds`` (the server's pings do not extend the wait)."""
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no frame within {seconds} s"
        ws.settimeout(left)
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            return json.loads(data)


def test_socket_closes_when_its_token_expires_not_at_the_next_recheck(rechecking_connect, issue_token, unique):
    token = issue_token(11, f"short_{unique}", minutes=2 / 60)
    ws = rechecking_connect("3600")(f"?token={token}")  # hourly: the most the gateway allows
    assert receive(ws)["type"] == "ready"
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws) == {"type": "pong"}
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    frame = receive_within(ws, PATIENCE)
    assert frame == {"type": "error", "data": {"code": "TOKEN_EXPIRED", "message": frame["data"]["message"]}}
    assert time.time() >= expires_at, "not before the token expired"
    assert expect_close(ws) == 4401


@pytest.mark.parametrize("mark", ["token", "user"])
def test_socket_closes_when_its_token_is_revoked(rechecking_connect, issue_token, bus, unique, mark):
    """The 0.2 s re-check notices the revocation: with the default 30 s one, the token (20 s)
    would expire first and the socket close with TOKEN_EXPIRED instead."""
    user_id = 4_000_000 + int(unique[:5], 16)
    token = issue_token(user_id, f"rev_{unique}", minutes=20 / 60)
    claims = jwt.decode(token, options={"verify_signature": False})
    key = revoked_token_key(claims["jti"]) if mark == "token" else revoked_user_key(user_id)
    recheck_connect = rechecking_connect("0.2")
    ws = recheck_connect(f"?token={token}")
    assert receive(ws)["type"] == "ready"
    bus.redis.set(key, str(claims["iat"] + 1), ex=60)
    try:
        assert receive_within(ws, PATIENCE)["data"]["code"] == "TOKEN_REVOKED"
        assert expect_close(ws) == 4401
        assert receive(recheck_connect(f"?token={token}"))["data"]["code"] == "TOKEN_REVOKED"
    finally:
        bus.redis.delete(key)


def test_valid_token_gets_ready_then_only_its_own_events(connect, issue_token, bus, unique):
    user_id, other_id = 7_000_000 + int(unique[:5], 16), 8_000_000 + int(unique[:5], 16)
    ws = connect(f"?token={issue_token(user_id, f'u_{unique}')}")
    assert receive(ws) == {"type": "ready", "data": {"userId": user_id}}

    bus.publish(other_id, "credits.changed", {"available": 1, "held": 0})
    bus.publish(user_id, "credits.changed", {"available": 470, "held": 30})
    event = receive(ws)
    assert event["type"] == "credits.changed"
    assert event["data"] == {"available": 470, "held": 30}

    job_event = bus.publish(user_id, "job.progress", {"jobId": f"job-{unique}", "step": 3,
                                                      "totalSteps": 20, "percent": 15}, job_id=f"job-{unique}")
    forwarded = receive(ws)
    assert forwarded["type"] == "job.progress"
    assert forwarded["id"] == job_event["id"]

    ws.settimeout(0.8)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv()


def test_ping_gets_pong_and_bad_frames_get_errors(connect, issue_token, unique):
    # A user id of its own: pub/sub channels are shared by every test run on this Redis.
    ws = connect(f"?token={issue_token(2_000_000 + int(unique[:5], 16), f'p_{unique}')}")
    assert receive(ws)["type"] == "ready"
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws) == {"type": "pong"}
    ws.send("not json")
    assert receive(ws)["data"]["code"] == "BAD_FRAME"
    ws.send("[" * 30_000 + "]" * 30_000)  # within the 64-KB frame limit, deeper than any parser's recursion
    assert receive(ws)["data"]["code"] == "BAD_FRAME"
    ws.send(json.dumps({"type": "subscribe", "userId": 1}))
    assert receive(ws)["data"]["code"] == "UNKNOWN_FRAME"
    ws.send(json.dumps({"type": "resume", "jobId": "j", "after": "not-an-id"}))
    assert receive(ws)["data"]["code"] == "BAD_FRAME"
    ws.send(json.dumps({"type": "ping"}))
    assert receive(ws) == {"type": "pong"}


def test_client_disconnect_unsubscribes(connect, issue_token, bus, unique):
    user_id = 9_000_000 + int(unique[:5], 16)
    ws = connect(f"?token={issue_token(user_id, f'd_{unique}')}")
    assert receive(ws)["type"] == "ready"
    channel = user_channel(user_id, bus.db)
    assert bus.redis.pubsub_numsub(channel)[0][1] == 1
    ws.close()
    deadline = time.monotonic() + 3
    while bus.redis.pubsub_numsub(channel)[0][1] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert bus.redis.pubsub_numsub(channel)[0][1] == 0


def test_resume_replays_own_job_events_only(app, connect, issue_token, bus, unique):
    from services.render import jobs
    from services.render.workflows import load_templates

    owner_id, stranger_id = 5_000_000 + int(unique[:5], 16), 6_000_000 + int(unique[:5], 16)
    job_id = jobs.new_job_id()
    with app.extensions["render"].db.transaction() as session:
        jobs.create_job(session.connection(), job_id=job_id, user_id=owner_id, template=load_templates()["text2img"],
                        params={"prompt": "a cat", "batchSize": 1}, price_per_image=15, queue="render")
    first = bus.publish(owner_id, "job.started", {"jobId": job_id}, job_id=job_id)
    second = bus.publish(owner_id, "job.progress", {"jobId": job_id, "step": 1, "totalSteps": 2,
                                                    "percent": 50}, job_id=job_id)

    owner = connect(f"?token={issue_token(owner_id, f'o_{unique}')}")
    assert receive(owner)["type"] == "ready"
    owner.send(json.dumps({"type": "resume", "jobId": job_id, "after": first["id"]}))
    replayed = receive(owner)
    assert (replayed["type"], replayed["id"]) == ("job.progress", second["id"])
    for after in ("٣", "1-٣", "18446744073709551616", "1-99999999999999999999",  # no stream id Redis reads
                  "18446744073709551615-18446744073709551615"):  # nothing can come after the last id
        owner.send(json.dumps({"type": "resume", "jobId": job_id, "after": after}))
        assert receive(owner)["data"]["code"] == "BAD_FRAME", after
    owner.send(json.dumps({"type": "ping"}))
    assert receive(owner) == {"type": "pong"}, "the socket stays open"

    stranger = connect(f"?token={issue_token(stranger_id, f's_{unique}')}")
    assert receive(stranger)["type"] == "ready"
    stranger.send(json.dumps({"type": "resume", "jobId": job_id, "after": "0"}))
    assert receive(stranger) == {"type": "error", "data": {"code": "JOB_NOT_FOUND", "message": "No such job."}}


def _limited_servers(gateway_env, ping_seconds: str) -> Iterator[list[RunningServer]]:
    """Two gateway processes' worth of apps, each allowing a user two sockets in all and
    holding three sockets at most."""
    env = {**gateway_env, "WS_MAX_PER_USER": "2", "WS_MAX_PER_PROCESS": "3", "WS_PING_SECONDS": ping_seconds}
    apps = [build_app(env), build_app(env)]
    servers = [serve(app) for app in apps]
    yield servers
    for server in servers:
        server.stop()
    for app in apps:
        close_app(app)


@pytest.fixture
def limited_servers(gateway_env) -> Iterator[list[RunningServer]]:
    """Pings far apart: a socket the test does not read from meanwhile stays open."""
    yield from _limited_servers(gateway_env, ping_seconds="60")


@pytest.fixture
def eager_pinging_servers(gateway_env) -> Iterator[list[RunningServer]]:
    """Pings every 0.2 s, so a peer that does not answer is found dead quickly."""
    yield from _limited_servers(gateway_env, ping_seconds="0.2")


def _open(server: RunningServer, query: str, opened: list) -> websocket.WebSocket:
    ws = websocket.create_connection(f"ws://127.0.0.1:{server.server.server_port}/ws{query}", timeout=5)
    opened.append(ws)
    return ws


@pytest.fixture
def opened() -> Iterator[list]:
    sockets: list[websocket.WebSocket] = []
    yield sockets
    for ws in sockets:
        ws.close()
        ws.shutdown()


def _subscribers(bus: EventBus, user_id: int) -> int:
    return bus.redis.pubsub_numsub(user_channel(user_id, bus.db))[0][1]


def _wait_for(predicate, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_users_oldest_socket_gives_way_beyond_the_limit_even_in_another_process(
        limited_servers, opened, issue_token, bus, unique):
    user_id = 10_000_000 + int(unique[:5], 16)
    token = issue_token(user_id, f"many_{unique}")
    first = _open(limited_servers[0], f"?token={token}", opened)
    assert receive(first)["type"] == "ready"
    second = _open(limited_servers[1], f"?token={token}", opened)
    assert receive(second)["type"] == "ready"
    third = _open(limited_servers[1], f"?token={token}", opened)
    assert receive(third)["type"] == "ready"

    frame = receive(first)
    assert (frame["type"], frame["data"]["code"]) == ("error", "TOO_MANY_SOCKETS")
    assert expect_close(first) == 4429
    bus.publish(user_id, "credits.changed", {"available": 1, "held": 0})
    assert receive(second)["type"] == receive(third)["type"] == "credits.changed"


def test_a_full_process_refuses_a_socket_with_try_again_later(limited_servers, opened, issue_token, unique):
    for index in range(3):
        ws = _open(limited_servers[0], f"?token={issue_token(11_000_000 + index, f'full{index}_{unique}')}", opened)
        assert receive(ws)["type"] == "ready"
    refused = _open(limited_servers[0], f"?token={issue_token(11_000_009, f'late_{unique}')}", opened)
    assert receive(refused)["data"]["code"] == "GATEWAY_BUSY"
    assert expect_close(refused) == 1013


def test_a_peer_that_stops_answering_pings_is_closed(eager_pinging_servers, opened, issue_token, bus, unique):
    user_id = 12_000_000 + int(unique[:5], 16)
    ws = _open(eager_pinging_servers[0], f"?token={issue_token(user_id, f'dead_{unique}')}", opened)
    assert receive(ws)["type"] == "ready"
    assert _subscribers(bus, user_id) == 1
    # The client reads nothing more, so it never answers the server's pings (every 0.2 s).
    _wait_for(lambda: _subscribers(bus, user_id) == 0, "the dead peer's socket to be closed")


def test_one_redis_subscriber_per_process_serves_every_socket(app, connect, issue_token, bus, unique):
    base = 13_000_000 + int(unique[:5], 16)
    sockets = [connect(f"?token={issue_token(base + index, f'fan{index}_{unique}')}") for index in range(5)]
    sockets.append(connect(f"?token={issue_token(base, f'fan0b_{unique}')}"))  # a second socket of one user
    for ws in sockets:
        assert receive(ws)["type"] == "ready"
    name = f"gateway-fanout-{app.extensions['gateway_fanout'].process_id}"
    subscribers = [client for client in bus.redis.client_list(_type="pubsub") if client["name"] == name]
    assert len(subscribers) == 1
    assert int(subscribers[0]["sub"]) == 6  # five users' channels and the process's control channel

    bus.publish(base, "credits.changed", {"available": 5, "held": 0})
    assert receive(sockets[0])["data"] == receive(sockets[5])["data"] == {"available": 5, "held": 0}


def test_open_sockets_are_counted_for_metrics(connect, issue_token, unique):
    from prometheus_client import REGISTRY

    def open_sockets() -> float:
        return REGISTRY.get_sample_value("gateway_open_websockets")

    before = open_sockets()
    ws = connect(f"?token={issue_token(1, f'gauge_{unique}')}")
    assert receive(ws)["type"] == "ready"
    assert open_sockets() == before + 1
    ws.close()
    deadline = time.monotonic() + 10
    while open_sockets() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_sockets() == before


def test_a_final_event_sent_twice_reaches_the_socket_with_one_event_id(app, connect, issue_token, bus, unique):
    """The relay decides nothing: a final event the outbox sent twice (after a crash) arrives twice,
    live and on resume, each time with the same ``eventId``, on which the client drops the second."""
    from services.render import jobs
    from services.render.workflows import load_templates

    user_id = 7_000_000 + int(unique[:5], 16)
    job_id = jobs.new_job_id()
    with app.extensions["render"].db.transaction() as session:
        jobs.create_job(session.connection(), job_id=job_id, user_id=user_id, template=load_templates()["text2img"],
                        params={"prompt": "a cat", "batchSize": 1}, price_per_image=15, queue="render")
    ws = connect(f"?token={issue_token(user_id, f'u_{unique}')}")
    assert receive(ws)["type"] == "ready"
    started = bus.publish(user_id, "job.started", {"jobId": job_id}, job_id=job_id)
    data = {"jobId": job_id, "images": 1, "charged": 15, "refunded": 0}
    sent = [bus.publish(user_id, "job.succeeded", {**data, "settled": settled}, job_id=job_id)
            for settled in (False, True)]

    live = [receive(ws) for _ in range(3)]
    assert [(event["type"], event["id"]) for event in live] == [
        ("job.started", started["id"]), ("job.succeeded", sent[0]["id"]), ("job.succeeded", sent[1]["id"])]
    assert live[1]["eventId"] == live[2]["eventId"] == f"job.succeeded:{job_id}" and "eventId" not in live[0]
    ws.send(json.dumps({"type": "resume", "jobId": job_id, "after": started["id"]}))
    assert [receive(ws)["eventId"] for _ in range(2)] == [f"job.succeeded:{job_id}"] * 2
