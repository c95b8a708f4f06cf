"""The gateway as production runs it (gunicorn with gevent's server): far more sockets than the
old thread pool had threads, while HTTP requests are still answered and events still arrive."""
from __future__ import annotations

import asyncio
import json
import os
import sys

import aiohttp
import pytest
import requests

from deploy.processes import GATEWAY_WORKER
from services.gateway.config import load_config
from shared.embedded import free_port
from shared.events import EventBus, redis_client
from tests.conftest import answers, running_process
from tests.gateway.conftest import build_settings

SOCKETS = 300  # the thread pool this replaces (2 workers × 64 threads) held 128 at most


async def _hold_sockets(url: str, tokens: list[str], http_url: str, publish) -> tuple[int, int, dict]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        sockets = [await session.ws_connect(f"{url}?token={token}", timeout=aiohttp.ClientWSTimeout(ws_close=10))
                   for token in tokens]
        ready = sum([json.loads((await ws.receive(timeout=30)).data)["type"] == "ready" for ws in sockets])
        async with session.get(http_url, timeout=aiohttp.ClientTimeout(total=30)) as response:
            status = response.status
        publish()
        event = json.loads((await sockets[-1].receive(timeout=30)).data)
        for ws in sockets:
            await ws.close()
        return ready, status, event


def test_hundreds_of_sockets_leave_http_answering(gateway_env, db_backend, issue_token, redis_url, unique):
    if db_backend != "sqlite":
        pytest.skip("sockets read no database: one backend is enough")
    settings = build_settings(gateway_env)
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--worker-class", GATEWAY_WORKER, "--workers", "1",
               "--worker-connections", str(load_config(settings, gateway_env).worker_connections),
               "--bind", f"127.0.0.1:{port}", "services.gateway.app:create_app()"]
    base = 20_000_000 + int(unique[:5], 16) * 1000
    tokens = [issue_token(base + index, f"many{index}_{unique}") for index in range(SOCKETS)]
    bus = EventBus(redis_client(redis_url))
    with running_process(command, answers(f"http://127.0.0.1:{port}/healthz"), "the gevent gateway",
                         env={**os.environ, **gateway_env}):
        ready, status, event = asyncio.run(_hold_sockets(
            f"ws://127.0.0.1:{port}/ws", tokens, f"http://127.0.0.1:{port}/api/users/credits",
            lambda: bus.publish(base + SOCKETS - 1, "credits.changed", {"available": 7, "held": 0})))
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200
    bus.redis.close()
    assert ready == SOCKETS
    assert status == 200  # proxied to the credits stand-in while every socket stays open
    assert (event["type"], event["data"]) == ("credits.changed", {"available": 7, "held": 0})
