"""The live event socket: authenticate, subscribe to the caller's channel, relay.

The browser cannot set headers on a WebSocket, so the access token comes in the
``token`` query parameter. The socket holds no business logic: it forwards the
user's events and answers ``ping`` and ``resume`` frames.

A socket lives no longer than its token: when the token expires the client gets a
``TOKEN_EXPIRED`` error frame and close code 4401, and reconnects with a fresh token.
A signed-out or disabled user's socket is closed the same way (``TOKEN_REVOKED``)
within ``WS_RECHECK_SECONDS``.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import redis
from flask import current_app, request
from flask_sock import Sock
from simple_websocket import Server

from shared.errors import NotFound, ServiceError, ServiceUnavailable, Unauthorized
from shared.events import EventBus
from shared.tokens import Claims, check_not_revoked, decode_access_token

POLICY_CLOSE_UNAUTHORIZED = 4401
CLOSE_INTERNAL_ERROR = 1011
STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")
# How long the Redis listener waits before the loop looks at client frames again.
LISTEN_TIMEOUT = 0.25

sock = Sock()


def _send(ws: Server, event_type: str, data: dict[str, Any] | None = None) -> None:
    frame: dict[str, Any] = {"type": event_type}
    if data is not None:
        frame["data"] = data
    ws.send(json.dumps(frame))


def _send_error(ws: Server, error: ServiceError) -> None:
    _send(ws, "error", {"code": error.code, "message": error.message})


def _refuse(ws: Server, error: Unauthorized) -> None:
    _send_error(ws, error)
    ws.close(reason=POLICY_CLOSE_UNAUTHORIZED, message=error.code)


@dataclass(frozen=True)
class SocketSession:
    claims: Claims
    expires_at: float  # the token's "exp", Unix seconds


def _authenticate(ws: Server, redis_client: redis.Redis) -> SocketSession | None:
    """The caller's verified session, or None after telling the client why and closing with 4401."""
    token = request.args.get("token", "")
    try:
        if not token:
            raise Unauthorized("Sign in to receive live events.", code="NO_TOKEN")
        claims = decode_access_token(token)  # flask-jwt-extended's decode_token, in this app's context
        check_not_revoked(redis_client, claims)
    except Unauthorized as error:
        _refuse(ws, error)
        return None
    return SocketSession(claims, claims.expires_at)


def _still_valid(session: SocketSession, redis_client: redis.Redis) -> Unauthorized | None:
    if time.time() >= session.expires_at:
        return Unauthorized("Your session has expired; reconnect with a fresh token.", code="TOKEN_EXPIRED")
    try:
        check_not_revoked(redis_client, session.claims)
    except Unauthorized as error:
        return error
    return None


def _handle_frame(ws: Server, raw: str | bytes, claims: Claims, bus: EventBus) -> None:
    try:
        frame = json.loads(raw)
    except ValueError:
        frame = None
    if not isinstance(frame, dict):
        _send(ws, "error", {"code": "BAD_FRAME", "message": "Frames must be JSON objects."})
        return
    kind = frame.get("type")
    if kind == "ping":
        _send(ws, "pong")
    elif kind == "resume":
        _resume(ws, frame, claims, bus)
    else:
        _send(ws, "error", {"code": "UNKNOWN_FRAME", "message": f"Unknown frame type {kind!r}."})


def _check_job_owner(user_id: int, job_id: str) -> None:
    """Raise NotFound unless the job is the user's (the socket's one database read)."""
    current_app.extensions["render"].check_job_owner(user_id, job_id)


def _resume(ws: Server, frame: dict[str, Any], claims: Claims, bus: EventBus) -> None:
    job_id, after = frame.get("jobId"), frame.get("after") or "0"
    if not isinstance(job_id, str) or not isinstance(after, str) or not STREAM_ID.fullmatch(after):
        _send(ws, "error", {"code": "BAD_FRAME", "message": "resume needs a jobId and an event id."})
        return
    try:
        _check_job_owner(claims.user_id, job_id)
    except NotFound as error:
        _send_error(ws, error)
        return
    for event in bus.job_events_after(job_id, after):
        ws.send(json.dumps(event))


@sock.route("/ws")
def events_socket(ws: Server) -> None:
    redis_client: redis.Redis = current_app.extensions["redis"]
    recheck_every: float = current_app.extensions["gateway_config"].ws_recheck_seconds
    try:
        session = _authenticate(ws, redis_client)
    except ServiceUnavailable as error:  # revocation cannot be checked: Redis is down
        _send_error(ws, error)
        ws.close(reason=CLOSE_INTERNAL_ERROR, message=error.code)
        return
    if session is None:
        return
    claims = session.claims
    bus = EventBus(redis_client)
    listener = bus.listen(claims.user_id, timeout=LISTEN_TIMEOUT)
    try:
        # The first step subscribes, so nothing published after "ready" can be missed.
        pending = next(listener)
        _send(ws, "ready", {"userId": claims.user_id})
        next_check = time.monotonic() + recheck_every
        while True:
            if pending is not None:
                ws.send(json.dumps(pending))
            while (raw := ws.receive(timeout=0)) is not None:
                _handle_frame(ws, raw, claims, bus)
            if time.time() >= session.expires_at or time.monotonic() >= next_check:
                if (error := _still_valid(session, redis_client)) is not None:
                    _refuse(ws, error)
                    return
                next_check = time.monotonic() + recheck_every
            pending = next(listener)
    except (redis.RedisError, ServiceUnavailable):
        # Without the event bus the socket is useless; the client reconnects with back-off.
        _send(ws, "error", {"code": "EVENTS_UNAVAILABLE", "message": "Live events are unavailable."})
        ws.close(reason=CLOSE_INTERNAL_ERROR, message="EVENTS_UNAVAILABLE")
    finally:
        listener.close()
