"""The live event socket: authenticate, receive the caller's events, relay.

The browser cannot set headers on a WebSocket, so the access token comes in the
``token`` query parameter; other clients may send ``Authorization: Bearer`` instead. An API
token (``pat_…``, with the ``generate`` scope: the events are its jobs' and credits') is
accepted in either place and exchanged like on any route. The socket holds no business
logic: it forwards the user's events and answers ``ping`` and ``resume`` frames.

The gateway runs on gevent (``deploy/gevent_worker.py``): every socket and every HTTP request is
a greenlet, so sockets never wait for (or hold) a slot of a bounded thread pool. Events
reach a socket through its process's one Redis subscriber (``services.gateway.fanout``).
Per socket, one greenlet reads the client's frames into the socket's mailbox and the
handler below is the only writer of data frames.

How a socket ends (error frame ``{"type": "error", "data": {"code", "message"}}`` first):

| close code | error code | when |
|---|---|---|
| 4401 | ``NO_TOKEN``, ``TOKEN_INVALID``, ``TOKEN_EXPIRED``, ``TOKEN_REVOKED`` | the token is missing or bad, expired, or was revoked (re-checked every ``WS_RECHECK_SECONDS``): reconnect with a fresh token |
| 4403 | ``INSUFFICIENT_SCOPE`` | an API token without the ``generate`` scope |
| 4429 | ``TOO_MANY_SOCKETS`` | the user opened more than ``WS_MAX_PER_USER`` sockets: the oldest is closed; do not reconnect it |
| 1013 | ``GATEWAY_BUSY``, ``SLOW_CONSUMER`` | the process holds ``WS_MAX_PER_PROCESS`` sockets, or the client fell too far behind: reconnect after a back-off |
| 1011 | ``EVENTS_UNAVAILABLE``, ``REVOCATION_CHECK_UNAVAILABLE``, auth's 503 | Redis cannot be reached, or auth cannot exchange an API token now: reconnect after a back-off |
| 1008 | — | the client did not answer the server's pings (``WS_PING_SECONDS``): a dead peer |
"""
from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import redis
from flask import Flask, current_app, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed, Server

from services.gateway.api_tokens import API_TOKEN_PREFIX
from services.gateway.config import GatewayConfig
from services.gateway.fanout import (CLIENT_GONE, EVENT, EVENTS_DOWN, EVICTED, FRAME, Fanout, Mailbox)
from shared.errors import Forbidden, NotFound, ServiceError, Unauthorized
from shared.events import EventBus
from shared.metrics import Gauge
from shared.tokens import Claims, bearer_token, check_not_revoked, decode_access_token
from shared.web import json_too_deep

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY_SOCKETS = 4429
CLOSE_TRY_AGAIN_LATER = 1013
CLOSE_INTERNAL_ERROR = 1011
# A Redis stream id in ASCII digits (``\d`` would take "٣"); Redis refuses what it cannot read.
STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
BAD_RESUME = {"code": "BAD_FRAME", "message": "resume needs a jobId and an event id."}
MAX_MESSAGE_BYTES = 64 * 1024
# Events waiting for one socket; beyond it the client is too slow and is closed (it resumes).
MAILBOX_CAPACITY = 1000
SUBSCRIBE_TIMEOUT = 5.0
SOCKET_SCOPE = "generate"  # what an API token needs to receive its jobs' events
USER_SOCKETS_TTL_SECONDS = 24 * 3600

sock = Sock()


class WholeWrites:
    """A connection's socket whose every write goes out whole and alone.

    simple-websocket 1.1 writes a frame with ``socket.send``, which under gevent may send
    part of it; and the frame reader (pongs) writes beside the handler (events). Here each
    write is a ``sendall`` under the connection's lock."""

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._lock = threading.Lock()

    def send(self, data: bytes, *args: Any) -> int:
        with self._lock:
            self._raw.sendall(data, *args)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _prepare_socket() -> None:
    """Before flask-sock accepts ``/ws``: whole writes, and no per-message compression (events
    are small JSON or already-compressed previews; a deflate context costs ~300 KB a socket)."""
    if request.path != "/ws":
        return
    environ = request.environ
    for key in ("gunicorn.socket", "werkzeug.socket"):
        if key in environ and not isinstance(environ[key], WholeWrites):
            environ[key] = WholeWrites(environ[key])
    environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


class UserSockets:
    """Which sockets each user holds across every gateway process (a Redis sorted set by
    opening time), so the oldest beyond ``limit`` can be closed wherever it lives."""

    def __init__(self, client: redis.Redis, limit: int) -> None:
        self.redis = client
        self.limit = limit

    @staticmethod
    def key(user_id: int) -> str:
        return f"ws:user:{user_id}"

    def register(self, user_id: int, socket_id: str) -> list[str]:
        """Record a new socket; returns the ids of the user's sockets it pushes over the limit."""
        key = self.key(user_id)
        pipe = self.redis.pipeline()
        pipe.zadd(key, {socket_id: time.time()})
        pipe.zrange(key, 0, -(self.limit + 1))
        pipe.zremrangebyrank(key, 0, -(self.limit + 1))
        pipe.expire(key, USER_SOCKETS_TTL_SECONDS)
        return pipe.execute()[1]

    def unregister(self, user_id: int, socket_id: str) -> None:
        self.redis.zrem(self.key(user_id), socket_id)


def init_sockets(app: Flask, config: GatewayConfig, redis_url: str, client: redis.Redis) -> None:
    app.config["SOCK_SERVER_OPTIONS"] = {"ping_interval": config.ws_ping_seconds,
                                         "max_message_size": MAX_MESSAGE_BYTES}
    app.extensions["gateway_fanout"] = Fanout(redis_url)
    app.extensions["gateway_user_sockets"] = UserSockets(client, config.ws_max_per_user)
    app.before_request(_prepare_socket)
    sock.init_app(app)


def _send(ws: Server, event_type: str, data: dict[str, Any] | None = None) -> None:
    frame: dict[str, Any] = {"type": event_type}
    if data is not None:
        frame["data"] = data
    ws.send(json.dumps(frame))


def _close(ws: Server, close_code: int, code: str, message: str) -> None:
    _send(ws, "error", {"code": code, "message": message})
    ws.close(reason=close_code, message=code)


def _authenticate(ws: Server, redis_client: redis.Redis) -> Claims | None:
    """The caller's verified claims, or None after telling the client why and closing (4401, 4403)."""
    try:
        token = _presented_token()
        if not token:
            raise Unauthorized("Sign in to receive live events.", code="NO_TOKEN")
        claims = decode_access_token(token)  # flask-jwt-extended's decode_token, in this app's context
        check_not_revoked(redis_client, claims)
        if claims.scopes is not None and SOCKET_SCOPE not in claims.scopes:
            raise Forbidden(f"This API token lacks the scope {SOCKET_SCOPE!r}.", code="INSUFFICIENT_SCOPE")
    except (Unauthorized, Forbidden) as error:
        _close(ws, CLOSE_FORBIDDEN if error.status == 403 else CLOSE_UNAUTHORIZED, error.code, error.message)
        return None
    except ServiceError as error:
        if error.status != 401:  # auth could not exchange an API token now
            raise
        _close(ws, CLOSE_UNAUTHORIZED, error.code, error.message)  # auth refused the API token
        return None
    return claims


def _presented_token() -> str:
    """The query's token, else the header's (an API token there was exchanged by the edge hook);
    an API token in the query is exchanged here."""
    token = request.args.get("token") or bearer_token() or ""
    if token.startswith(API_TOKEN_PREFIX):
        token = current_app.extensions["gateway_token_exchange"].access_token(token)
    return token


def _read_frames(ws: Server, mailbox: Mailbox) -> None:
    """Move the client's frames into the mailbox until the connection ends."""
    try:
        while True:
            mailbox.put(FRAME, ws.receive())
    except ConnectionClosed:
        mailbox.put(CLIENT_GONE)


class LiveSocket:
    """One authenticated socket: relays the user's events, answers frames, re-checks the token."""

    def __init__(self, ws: Server, claims: Claims, redis_client: redis.Redis, recheck_every: float) -> None:
        self.ws = ws
        self.claims = claims
        self.redis = redis_client
        self.bus = EventBus(redis_client)
        self.recheck_every = recheck_every

    def run(self, mailbox: Mailbox) -> None:
        _send(self.ws, "ready", {"userId": self.claims.user_id})
        threading.Thread(target=_read_frames, args=(self.ws, mailbox), daemon=True).start()
        next_check = time.monotonic() + self.recheck_every
        while True:
            wait = min(next_check - time.monotonic(), self.claims.expires_at - time.time())
            item = mailbox.get(timeout=wait)
            if mailbox.overflowed:
                _close(self.ws, CLOSE_TRY_AGAIN_LATER, "SLOW_CONSUMER",
                       "Live events arrived faster than this connection took them; reconnect.")
                return
            if item is None:
                if (error := self._token_problem()) is not None:
                    _close(self.ws, CLOSE_UNAUTHORIZED, error.code, error.message)
                    return
                next_check = time.monotonic() + self.recheck_every
                continue
            kind, payload = item
            if kind == EVENT:
                self.ws.send(payload)
            elif kind == FRAME:
                self._handle_frame(payload)
            elif kind == EVICTED:
                _close(self.ws, CLOSE_TOO_MANY_SOCKETS, "TOO_MANY_SOCKETS",
                       "You opened live events in too many places; this, the oldest, was closed.")
                return
            elif kind == EVENTS_DOWN:
                raise redis.ConnectionError("the event subscriber failed")
            elif kind == CLIENT_GONE:
                return

    def _token_problem(self) -> Unauthorized | None:
        if time.time() >= self.claims.expires_at:
            return Unauthorized("Your session has expired; reconnect with a fresh token.", code="TOKEN_EXPIRED")
        try:
            check_not_revoked(self.redis, self.claims)
        except Unauthorized as error:
            return error
        return None

    def _handle_frame(self, raw: str | bytes) -> None:
        try:
            frame = None if json_too_deep(raw) else json.loads(raw)  # too deep: the parser would recurse
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            _send(self.ws, "error", {"code": "BAD_FRAME", "message": "Frames must be JSON objects."})
            return
        kind = frame.get("type")
        if kind == "ping":
            _send(self.ws, "pong")
        elif kind == "resume":
            self._resume(frame)
        else:
            _send(self.ws, "error", {"code": "UNKNOWN_FRAME", "message": f"Unknown frame type {kind!r}."})

    def _resume(self, frame: dict[str, Any]) -> None:
        job_id, after = frame.get("jobId"), frame.get("after") or "0"
        if not isinstance(job_id, str) or not isinstance(after, str) or not STREAM_ID.fullmatch(after):
            _send(self.ws, "error", BAD_RESUME)
            return
        try:
            # The socket's one database read: is the job the user's?
            current_app.extensions["render"].check_job_owner(self.claims.user_id, job_id)
        except NotFound as error:
            _send(self.ws, "error", {"code": error.code, "message": error.message})
            return
        try:
            events = self.bus.job_events_after(job_id, after)
        except redis.ResponseError:  # an id beyond 64 bits, or none after it: the frame, not Redis, is wrong
            _send(self.ws, "error", BAD_RESUME)
            return
        for event in events:
            self.ws.send(json.dumps(event))


# Summed over the gateway's gunicorn workers (a dead worker's sockets drop out with it).
OPEN_SOCKETS = Gauge("gateway_open_websockets", "Open live-event WebSockets", multiprocess_mode="livesum")


@sock.route("/ws")
def events_socket(ws: Server) -> None:
    redis_client: redis.Redis = current_app.extensions["redis"]
    config: GatewayConfig = current_app.extensions["gateway_config"]
    fanout: Fanout = current_app.extensions["gateway_fanout"]
    user_sockets: UserSockets = current_app.extensions["gateway_user_sockets"]
    if fanout.socket_count >= config.ws_max_per_process:
        _close(ws, CLOSE_TRY_AGAIN_LATER, "GATEWAY_BUSY", "This gateway holds all the live connections it can; "
               "reconnect shortly.")
        return
    try:
        claims = _authenticate(ws, redis_client)
        if claims is None:
            return
        mailbox = Mailbox(MAILBOX_CAPACITY)
        socket_id = fanout.attach(claims.user_id, mailbox, SUBSCRIBE_TIMEOUT)
        OPEN_SOCKETS.inc()
        try:
            for evicted in user_sockets.register(claims.user_id, socket_id):
                fanout.evict(evicted)
            LiveSocket(ws, claims, redis_client, config.ws_recheck_seconds).run(mailbox)
        finally:
            OPEN_SOCKETS.dec()
            fanout.detach(claims.user_id, socket_id, mailbox)
            try:
                user_sockets.unregister(claims.user_id, socket_id)
            except redis.RedisError:
                pass  # the entry expires, or is pushed out as the user's oldest
    except ServiceError as error:  # revocation cannot be checked (Redis down), or auth cannot exchange now
        _close(ws, CLOSE_INTERNAL_ERROR, error.code, error.message)
    except redis.RedisError:
        # Without the event bus the socket is useless; the client reconnects with back-off.
        _close(ws, CLOSE_INTERNAL_ERROR, "EVENTS_UNAVAILABLE", "Live events are unavailable.")
