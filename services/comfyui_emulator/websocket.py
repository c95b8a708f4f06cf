"""The /ws endpoint: status on connect, feature negotiation, reconnect catch-up."""
from __future__ import annotations

import json
import uuid

from aiohttp import WSMsgType, web

from services.comfyui_emulator.engine import Engine
from services.comfyui_emulator.hub import SERVER_FEATURES, Hub
from services.comfyui_emulator.state import ENGINE, HUB


async def websocket_handler(request: web.Request) -> web.WebSocketResponse:
    hub: Hub = request.app[HUB]
    engine: Engine = request.app[ENGINE]
    socket = web.WebSocketResponse()
    await socket.prepare(request)
    sid = request.rel_url.query.get("clientId") or uuid.uuid4().hex
    hub.register(sid, socket)
    try:
        await hub.send("status", {**engine.status_data(), "sid": sid}, sid)
        running = engine.running
        if running is not None and running.client_id == sid and engine.last_node_id is not None:
            await hub.send("executing", {"node": engine.last_node_id}, sid)
        first_message = True
        async for message in socket:
            if message.type != WSMsgType.TEXT:
                continue
            if first_message:
                await _negotiate_features(hub, sid, message.data)
            first_message = False
    finally:
        hub.unregister(sid)
    return socket


async def _negotiate_features(hub: Hub, sid: str, text: str) -> None:
    try:
        payload = json.loads(text)
    except ValueError:
        return
    if isinstance(payload, dict) and payload.get("type") == "feature_flags":
        hub.client_features[sid] = dict(payload.get("data") or {})
        await hub.send("feature_flags", SERVER_FEATURES, sid)
