"""The HTTP/1.1 client of the internal hops (the gateway's proxy, ``shared.internal_http``):
keep-alive connections to one service.

Why not urllib3: over ``http.client`` it spent most of a call's client-side CPU on
things a fixed hop between our own services does not need (``email``-parser header parsing,
header dictionaries built twice, retry and redirect machinery). This client writes the request
in one ``sendall``; httptools (llhttp, the parser uvicorn uses) parses the answer: status,
headers kept as the list of pairs the gateway passes on, the body framed as HTTP/1.1 says, and
whether the connection may be kept alive. httptools cannot tell llhttp that an answer is to a
HEAD (MagicStack/httptools#47), so this client ends such an answer with its head. llhttp
refuses what HTTP/1.1 deprecates, such as folded header lines (the gateway then answers 502,
as RFC 9112 allows a gateway to).

What it keeps from the urllib3 pools it replaced: a connection idle longer
than ``POOL_IDLE_SECONDS`` is never reused (the service may be closing it), nor one the
service has visibly closed (checked without blocking before reuse); a connection closed
before any byte of an answer raises ``ClosedEarly`` so the caller may retry a request safe
to repeat; a connection goes back to the pool only once its answer has been read to the
end, the service kept it alive and sent nothing after it.
"""
from __future__ import annotations

import re
import socket
import ssl
import time
import weakref
from typing import Iterator

import httptools

# gunicorn's --keep-alive for every internal service (deploy/local.py), and the longest a
# pooled connection may stay idle before a caller would rather open a new one.
SERVER_KEEPALIVE_SECONDS = 10
POOL_IDLE_SECONDS = SERVER_KEEPALIVE_SECONDS / 2
MAX_HEAD = 262_144  # most bytes read before an answer's head is complete
RECEIVE = 65_536
# Control characters and spaces have no place in a request target (http.client refuses them too).
_BAD_TARGET = re.compile(r"[\x00-\x20\x7f]")
_BAD_VALUE = re.compile(r"[\r\n\x00]")

Headers = list[tuple[str, str]]


class UpstreamError(Exception):
    """The service gave no (complete) answer."""


class Unreachable(UpstreamError):
    """No connection could be made."""


class ConnectTimedOut(UpstreamError):
    pass


class ReadTimedOut(UpstreamError):
    pass


class ClosedEarly(UpstreamError):
    """The connection was closed or reset before any byte of an answer."""


class Broken(UpstreamError):
    """A malformed answer, or one broken off midway."""


class Connection:
    __slots__ = ("sock", "idle_since")

    def __init__(self, host: str, port: int, connect_timeout: float, tls: ssl.SSLContext | None) -> None:
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
        except socket.timeout as exc:
            raise ConnectTimedOut(str(exc)) from exc
        except OSError as exc:
            raise Unreachable(str(exc)) from exc
        self.sock = sock
        self.idle_since = 0.0

    def closed_by_peer(self) -> bool:
        """Whether the service closed this idle connection (or sent something unasked)."""
        self.sock.settimeout(0)
        try:
            self.sock.recv(1, socket.MSG_PEEK)  # b"" when closed; anything else is not ours to read
            return True
        except (BlockingIOError, ValueError):  # nothing to read (ValueError: TLS does not peek)
            return False
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


class Answer:
    """A service's answer: status, reason, headers as sent; the body read with ``read`` or
    ``stream``. ``close`` drops the connection unless the body was read to the end.

    Made once the request is sent: it reads the head. It is the httptools parser's protocol
    (the ``on_*`` methods are its callbacks)."""

    def __init__(self, pool: Pool, conn: Connection, head_only: bool) -> None:
        self.status = 0
        self.reason = ""
        self.headers: Headers = []
        self._pool = pool
        self._conn: Connection | None = conn
        self._head_only = head_only
        self._parser = httptools.HttpResponseParser(self)
        self._received = 0  # bytes of the answer so far
        self._head_done = False
        self._done = False  # the whole answer parsed
        self._reusable = False
        self._body: list[bytes] = []  # parsed, not yet handed out
        while not self._head_done:
            self._receive(RECEIVE)

    def on_message_begin(self) -> None:
        if self._head_done:  # bytes after the answer: the connection is not in a known state
            self._reusable = False
        else:  # the answer, or the final one after an interim 1xx
            self.reason, self.headers = "", []

    def on_status(self, reason: bytes) -> None:
        self.reason = reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._head_done:  # after the head they are a chunked body's trailers, dropped
            self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim answer (100 Continue) is skipped
        self.status = status
        self._head_done = True
        self._reusable = self._parser.should_keep_alive()
        self._done = self._head_only

    def on_body(self, data: bytes) -> None:
        if self._done:  # past the end of an answer to HEAD
            self._reusable = False
        else:
            self._body.append(data)

    def on_message_complete(self) -> None:
        if self._head_done:
            self._done = True

    def _receive(self, size: int) -> None:
        """Wait for what the service sends next and parse it."""
        try:
            data = self._conn.sock.recv(size)
        except socket.timeout as exc:
            raise ReadTimedOut(str(exc)) from exc
        except OSError as exc:
            if not self._received:
                raise ClosedEarly(str(exc)) from exc
            raise Broken(str(exc)) from exc
        if not data:
            if not self._received:
                raise ClosedEarly("closed without an answer")
            if not self._head_done or self.header("content-length") is not None \
                    or "chunked" in (self.header("transfer-encoding") or "").lower():
                raise Broken("the answer was broken off")
            self._done, self._reusable = True, False  # a body without length ends with the connection
            return
        self._received += len(data)
        if not self._head_done and self._received > MAX_HEAD:
            raise Broken("the answer's head is too long")
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # 101: what follows is no longer HTTP
            self._reusable = False
        except httptools.HttpParserError as exc:
            if not self._done:
                raise Broken(f"a malformed answer: {exc}") from exc
            self._reusable = False

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        return b"".join(self.stream(RECEIVE))

    def stream(self, chunk: int) -> Iterator[bytes]:
        if self._conn is None:
            return
        try:
            while True:
                body, self._body = self._body, []
                yield from body
                if self._done:
                    break
                self._receive(chunk)
        except BaseException:
            self.close()
            raise
        conn, self._conn = self._conn, None
        self._parser = None  # it holds this answer's callbacks: let reference counting free both
        if self._reusable:
            self._pool.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection if the body was not read to the end (idempotent)."""
        conn, self._conn = self._conn, None
        self._parser = None
        if conn is not None:
            conn.close()


def _close_all(idle: list[Connection]) -> None:
    while idle:
        try:
            idle.pop().close()
        except IndexError:  # taken meanwhile by another thread
            break


class Pool:
    """Keep-alive connections to one service, the most recently used first; at most
    ``maxsize`` idle (more may be open at once: the extra ones are closed after use)."""

    def __init__(self, host: str, port: int, maxsize: int, tls: bool = False,
                 max_idle: float = POOL_IDLE_SECONDS) -> None:
        self.host = host
        self.port = port
        self.tls = ssl.create_default_context() if tls else None
        self.maxsize = maxsize
        self.max_idle = max_idle
        self._host_header = f"Host: {host}:{port}\r\n"
        self._idle: list[Connection] = []
        # A pool dropped without ``close`` (a short-lived client) closes its idle connections.
        weakref.finalize(self, _close_all, self._idle)

    def _get(self, connect_timeout: float) -> Connection:
        now = time.monotonic()
        while True:
            try:
                conn = self._idle.pop()  # atomic: safe between threads as between greenlets
            except IndexError:
                return Connection(self.host, self.port, connect_timeout, self.tls)
            if now - conn.idle_since <= self.max_idle and not conn.closed_by_peer():
                return conn
            conn.close()

    def put(self, conn: Connection) -> None:
        if len(self._idle) >= self.maxsize:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.append(conn)

    def close(self) -> None:
        _close_all(self._idle)

    def request(self, method: str, target: str, headers: Headers, body: bytes | None,
                connect_timeout: float, read_timeout: float) -> Answer:
        """Send the request and read the answer's head. Raises ``ValueError`` for a target or
        header value that cannot be sent, else an ``UpstreamError``."""
        if _BAD_TARGET.search(target):
            raise ValueError("the request target holds control characters or spaces")
        lines = [f"{method} {target} HTTP/1.1\r\n", self._host_header]
        for name, value in headers:
            if _BAD_VALUE.search(value):
                raise ValueError(f"the {name} header holds a line break")
            lines.append(f"{name}: {value}\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        conn = self._get(connect_timeout)
        try:
            conn.sock.settimeout(read_timeout)
            try:
                conn.sock.sendall(head + body if body else head)
            except socket.timeout as exc:
                raise ReadTimedOut(str(exc)) from exc
            except OSError as exc:
                raise ClosedEarly(str(exc)) from exc
            return Answer(self, conn, head_only=method == "HEAD")
        except BaseException:
            conn.close()
            raise
