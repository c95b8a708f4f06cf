"""The gateway under gunicorn as production starts it (deploy/processes.py, gevent's server in
each worker, deploy/gevent_worker.py): kept-alive connections, their closing, the access line."""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest
import requests

from deploy.processes import BY_NAME
from shared.embedded import free_port
from tests.conftest import answers, running_process

KEEP_ALIVE_SECONDS = 1
WAIT = 30  # generous: only a server that never closes the connection takes this long


def _command(port: int, access_log: Path) -> list[str]:
    command = BY_NAME["gateway"].command(host="127.0.0.1", port=port, python=sys.executable)
    return [*command[:-1], "--workers", "1", "--keep-alive", str(KEEP_ALIVE_SECONDS),
            "--access-logfile", str(access_log), command[-1]]


def _read_answer(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One answer with a Content-Length from ``sock``: (head, body, bytes read beyond it)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed before an answer"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed inside a body"
        rest += chunk
    return head, rest[:length], rest[length:]


@pytest.fixture
def served(gateway_env, db_backend, tmp_path):
    if db_backend != "sqlite":
        pytest.skip("the HTTP server reads no database: one backend is enough")
    port, access_log = free_port(), tmp_path / "access.log"
    with running_process(_command(port, access_log), answers(f"http://127.0.0.1:{port}/healthz"),
                         "the gateway under gunicorn", env={**os.environ, **gateway_env}):
        yield port, access_log


def test_a_kept_alive_connection_answers_in_turn_then_closes_when_idle(served):
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\nGET /api/credits/pricing HTTP/1.1\r\nHost: gw\r\n\r\n")
        first_head, _, rest = _read_answer(sock)
        second_head, second_body, rest = _read_answer(sock, rest)
        assert first_head.startswith(b"HTTP/1.1 200") and second_head.startswith(b"HTTP/1.1 200")
        assert b'"path":"/api/credits/pricing"' in second_body.replace(b" ", b"")
        assert rest == b"" and sock.recv(1) == b""  # closed after --keep-alive seconds without a request


def test_a_connection_that_sends_nothing_is_closed(served):
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")  # a head that never ends
        assert sock.recv(1) == b""


def test_the_access_line_names_the_body_bytes_and_the_request_id(served):
    port, access_log = served
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        sock.sendall(b"GET /api/credits/pricing?x=1 HTTP/1.1\r\nHost: gw\r\nUser-Agent: probe/1\r\n\r\n")
        head, body, _ = _read_answer(sock)
    request_id = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                      if line.lower().startswith(b"x-request-id:"))
    deadline = time.monotonic() + WAIT  # the line is written after the answer is sent
    while not (lines := [line for line in access_log.read_text().splitlines() if request_id in line]):
        assert time.monotonic() < deadline, "no access line"
        time.sleep(0.05)
    assert len(lines) == 1
    assert f'"GET /api/credits/pricing?x=1 HTTP/1.1" 200 {len(body)} ' in lines[0] and '"probe/1"' in lines[0]
    assert lines[0].endswith(f"[{request_id}]")


@pytest.mark.parametrize("query, length", [("size=200000", 200_000), ("size=5000&stream=1", 5_000),
                                           ("size=0", 0)])
def test_large_streamed_and_empty_bodies_arrive_whole(served, query, length):
    port, _ = served
    with requests.Session() as session:
        for _ in range(2):  # twice on one kept-alive connection: the first answer ended where it should
            response = session.get(f"http://127.0.0.1:{port}/api/works/large?{query}", timeout=WAIT)
            assert response.status_code == 200
            assert len(response.content) == length and set(response.content) <= {ord("x"), ord("y")}
