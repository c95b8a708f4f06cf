"""Application factory: routes under / and /api, the origin check, and the executor's lifetime."""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from services.comfyui_emulator.catalog import Catalog
from services.comfyui_emulator.config import EmulatorConfig
from services.comfyui_emulator.engine import Engine
from services.comfyui_emulator.hub import Hub
from services.comfyui_emulator.routes import routes
from services.comfyui_emulator.state import CATALOG, CONFIG, ENGINE, HUB, STORAGE
from services.comfyui_emulator.storage import Storage
from services.comfyui_emulator.websocket import websocket_handler

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(hostname: str | None) -> bool:
    if hostname is None:
        return False
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


@web.middleware
async def origin_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Reject browser requests whose Origin differs from Host, as ComfyUI does on loopback."""
    host = request.headers.get("Host", "").lower()
    origin = request.headers.get("Origin")
    if host and origin:
        origin_host = urlsplit(origin).netloc.lower()
        if origin_host and origin_host != host and _is_loopback(urlsplit(f"//{host}").hostname):
            return web.Response(status=403)
    return await handler(request)


def create_app(config: EmulatorConfig | None = None) -> web.Application:
    config = config or EmulatorConfig()
    data_dir = config.data_dir or Path(tempfile.mkdtemp(prefix="comfyui-emulator-"))
    storage = Storage(data_dir)
    hub = Hub()
    catalog = Catalog(config, storage)
    app = web.Application(middlewares=[origin_only], client_max_size=104857600)
    app[CONFIG] = config
    app[STORAGE] = storage
    app[HUB] = hub
    app[CATALOG] = catalog
    app[ENGINE] = Engine(config, catalog, storage, hub)
    app.router.add_routes(routes)
    app.router.add_get("/ws", websocket_handler)
    api = web.Application()
    api.router.add_routes(routes)
    api.router.add_get("/ws", websocket_handler)
    api[CONFIG], api[STORAGE], api[HUB], api[CATALOG], api[ENGINE] = config, storage, hub, catalog, app[ENGINE]
    app.add_subapp("/api", api)
    app.cleanup_ctx.append(_run_executor)
    app.on_shutdown.append(_close_sockets)
    return app


async def _run_executor(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(app[ENGINE].run_forever())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application) -> None:
    await app[HUB].close_all()
