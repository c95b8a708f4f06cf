"""Requests take turns on a gevent worker's event loop.

A greenlet gives the loop back only when it must wait: a socket read that finds its bytes
already there returns at once. Under load the gateway's peers answer that fast (the client
sends its next request while the gateway is still logging the last one, the service answers
while the gateway is still reading the head), so one connection's greenlet could serve request
after request without ever waiting, holding its process for tens of milliseconds of CPU
(up to 98 ms, measured) while the other connections' requests sat unread in their sockets
and their services' answers unread in theirs: a p99 of 0.8-1.4 s and requests over 2 s
through the gateway while its median stayed near 100 ms (docs/benchmarks.md, "The gateway hop").

``TakeTurns`` makes every request start at the back of the queue: it waits for the loop's
next iteration (a timer, not ``sleep(0)``, whose callbacks may run again before the loop
polls the sockets), so each connection with work ready is served once per turn. It costs
a few microseconds per request. Outside gevent (tests, threads) it is not installed.
"""
from __future__ import annotations

from typing import Callable, Iterable

import gevent
from gevent import monkey

# Any positive delay: the greenlet resumes in the loop's next iteration, after the sockets are polled.
NEXT_TURN = 1e-6


def under_gevent() -> bool:
    return monkey.is_module_patched("socket")


class TakeTurns:
    def __init__(self, app: Callable[[dict, Callable], Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, wsgi_env: dict, start_response: Callable) -> Iterable[bytes]:
        gevent.sleep(NEXT_TURN)
        return self.app(wsgi_env, start_response)
