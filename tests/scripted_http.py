"""A raw HTTP/1.1 server whose answers a test scripts byte by byte, for the clients of the
internal hop: connections closed unanswered, closed while idle, reused, answered badly, never
answered (``tests/shared/test_http_transport.py``, ``tests/shared/test_internal_http.py``,
``tests/gateway/test_edge.py``); and what timeout a client's reads from it waited with
(``read_timeouts``)."""
from __future__ import annotations

import socket
import threading

import pytest


class Silence:
    """An answer that never comes: the connection stays open, unanswered, until ``stop()``."""


SILENCE = Silence()


class ScriptedServer:
    """Answers each request with the next of ``answers`` (raw bytes; ``None`` closes the
    connection unanswered; ``SILENCE`` holds it open unanswered). ``close_after_answer`` closes
    each connection once it answered; ``per_connection`` plays the whole script on every
    connection (else they share one)."""

    def __init__(self, answers: list[bytes | Silence | None], close_after_answer: bool = False,
                 per_connection: bool = False) -> None:
        self.answers = list(answers)
        self.close_after_answer = close_after_answer
        self.per_connection = per_connection
        self.requests: list[bytes] = []  # the head of every request received
        self.answered: list[bytes] = []  # the request line of every request answered
        self.connections = 0
        self.closed = threading.Semaphore(0)  # released as each connection is closed
        self.stopped = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._answer(conn, list(self.answers) if self.per_connection else self.answers)
        except OSError:  # the client went away mid-answer
            conn.close()
        self.closed.release()

    def _answer(self, conn: socket.socket, script: list[bytes | Silence | None]) -> None:
        with conn:
            buffered = b""
            while script:
                while b"\r\n\r\n" not in buffered:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, _, buffered = buffered.partition(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(buffered) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buffered += data
                buffered = buffered[length:]
                self.requests.append(head)
                answer = script.pop(0)
                if answer is None:
                    return
                if answer is SILENCE:
                    self.stopped.wait()
                    return
                self.answered.append(head.split(b"\r\n", 1)[0])
                conn.sendall(answer)
                if self.close_after_answer:
                    return

    def stop(self) -> None:
        self.listener.close()
        self.stopped.set()


def read_timeouts(monkeypatch: pytest.MonkeyPatch, port: int) -> list[float | None]:
    """The timeout set on the socket at each read a client of 127.0.0.1:``port`` makes, from now
    to the end of the test: what a test of a client's configured timeout asserts, rather than
    how long the client took (which load stretches)."""
    waited: list[float | None] = []

    def spying(read):
        def reading(sock: socket.socket, *args, **kwargs):
            try:
                if sock.getpeername()[1] == port:
                    waited.append(sock.gettimeout())
            except OSError:  # not connected
                pass
            return read(sock, *args, **kwargs)
        return reading

    for name in ("recv", "recv_into"):  # our transport reads with recv, http.client with recv_into
        monkeypatch.setattr(socket.socket, name, spying(getattr(socket.socket, name)))
    return waited
