"""Under gevent, a connection whose peers answer at once cannot keep the gateway's process to itself."""
from __future__ import annotations

import os
import subprocess
import sys

from shared.config import PROJECT_ROOT
from tests.gateway.conftest import build_settings

# A greenlet waits on a socket whose bytes have arrived; another greenlet then answers three
# requests whose own reads would never wait. The waiting one must run before the second request
# (the loop runs the turn's timer and the ready sockets in one iteration, the timer first).
SOCKET_READY_MEANWHILE = """
from gevent import monkey; monkey.patch_all()
import socket
import gevent
from services.gateway.turns import TakeTurns

order = []
reader, writer = socket.socketpair()
waiting = gevent.spawn(lambda: order.append(reader.recv(10).decode()))
gevent.sleep(0.01)  # it now waits on its socket
writer.send(b"answer")  # ready: only the loop's next poll hands it over
app = TakeTurns(lambda env, start_response: order.append("request") or [b""])
for _ in range(3):
    app({}, None)
print(" ".join(order))
"""

BUILT_UNDER_GEVENT = """
from gevent import monkey; monkey.patch_all()
from services.gateway.app import create_app
print(type(create_app().wsgi_app).__name__)
"""


def _run(script: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_a_request_lets_a_greenlet_whose_socket_is_ready_run_first():
    order = _run(SOCKET_READY_MEANWHILE).split()
    assert order.count("request") == 3
    assert order.index("answer") <= 1


def test_the_gateway_under_gevent_takes_turns(gateway_env):
    build_settings(gateway_env)
    assert _run(BUILT_UNDER_GEVENT, {**os.environ, **gateway_env}) == "TakeTurns"


def test_without_gevent_the_gateway_is_not_wrapped(gateway_settings):
    from services.gateway.app import create_app
    from services.gateway.turns import TakeTurns

    assert not isinstance(create_app(gateway_settings).wsgi_app, TakeTurns)
