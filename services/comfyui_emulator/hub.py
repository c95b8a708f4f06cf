"""WebSocket registry and delivery, with ComfyUI's one-socket-per-client-id rule."""
from __future__ import annotations

import json
import struct
from typing import Any

from aiohttp import web

SERVER_FEATURES = {"supports_preview_metadata": True, "max_upload_size": 104857600}
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
JPEG_FORMAT = 1


class Hub:
    def __init__(self) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.client_features: dict[str, dict[str, Any]] = {}

    def register(self, sid: str, socket: web.WebSocketResponse) -> None:
        self.sockets[sid] = socket

    def unregister(self, sid: str) -> None:
        """Like ComfyUI, closing any socket of an id drops the id, even if a newer socket holds it."""
        self.sockets.pop(sid, None)
        self.client_features.pop(sid, None)

    def supports_preview_metadata(self, sid: str | None) -> bool:
        return sid is not None and bool(self.client_features.get(sid, {}).get("supports_preview_metadata"))

    async def send(self, event: str, data: dict[str, Any], sid: str | None = None) -> None:
        """Send to one client id, or to every socket when sid is None."""
        await self._deliver(json.dumps({"type": event, "data": data}), sid)

    async def send_preview(self, jpeg: bytes, sid: str | None, metadata: dict[str, Any] | None) -> None:
        if metadata is None:
            frame = struct.pack(">II", PREVIEW_IMAGE, JPEG_FORMAT) + jpeg
        else:
            encoded = json.dumps(metadata).encode()
            frame = struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(encoded)) + encoded + jpeg
        await self._deliver(frame, sid)

    async def close_all(self) -> None:
        for socket in list(self.sockets.values()):
            await socket.close()

    async def _deliver(self, message: str | bytes, sid: str | None) -> None:
        targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
        for socket in targets:
            if socket.closed:
                continue
            try:
                if isinstance(message, bytes):
                    await socket.send_bytes(message)
                else:
                    await socket.send_str(message)
            except ConnectionError:
                continue
