"""The socket side of ``bench/sockets.py``, run as its own process: asyncio (aiohttp) clients.

    python bench/_socket_clients.py WS_URL TOKENS_FILE

Opens one socket per token (a line of TOKENS_FILE), prints ``ready <n>`` once every socket
has had its "ready" frame, then, until a line arrives on stdin, records when each
``job.progress`` event arrived and its delivery latency (arrival − the event's ``ts``, the
publisher's clock, the same machine). Finally prints one JSON line: ``progress`` as
[arrival time, latency in ms] pairs, sockets that dropped, frames seen.
"""
from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp

CONNECT_AT_ONCE = 100


class Clients:
    def __init__(self, url: str, tokens: list[str]) -> None:
        self.url = url
        self.tokens = tokens
        self.progress: list[tuple[float, float]] = []
        self.dropped = 0
        self.frames = 0
        self.closing = False

    async def run(self) -> None:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            gate = asyncio.Semaphore(CONNECT_AT_ONCE)
            sockets = await asyncio.gather(*(self._open(session, gate, token) for token in self.tokens))
            print(f"ready {len(sockets)}", flush=True)
            readers = [asyncio.create_task(self._read(ws)) for ws in sockets]
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            self.closing = True
            await asyncio.gather(*(ws.close() for ws in sockets))
            await asyncio.gather(*readers)
        print(json.dumps({"progress": self.progress, "dropped": self.dropped, "frames": self.frames}),
              flush=True)

    async def _open(self, session: aiohttp.ClientSession, gate: asyncio.Semaphore,
                    token: str) -> aiohttp.ClientWebSocketResponse:
        async with gate:
            ws = await session.ws_connect(f"{self.url}?token={token}", autoping=True)
            first = json.loads((await ws.receive(timeout=60)).data)
            if first.get("type") != "ready":
                raise SystemExit(f"socket refused: {first}")
            return ws

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            received = time.time()
            self.frames += 1
            event = json.loads(message.data)
            if event.get("type") == "job.progress":
                self.progress.append((received, (received - event["ts"]) * 1000))
        if not self.closing:
            self.dropped += 1


def main() -> None:
    url, tokens_file = sys.argv[1], sys.argv[2]
    with open(tokens_file) as lines:
        tokens = [line.strip() for line in lines if line.strip()]
    asyncio.run(Clients(url, tokens).run())


if __name__ == "__main__":
    main()
