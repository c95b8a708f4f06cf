"""The gateway's HTTP/1.1 client for the internal hop: keep-alive connections to one service.

urllib3 over ``http.client`` spent most of a proxied request's client-side CPU on things a
fixed hop between our own services does not need: ``email``-parser header parsing, header
dictionaries built twice, retry and redirect machinery. This client writes the request in
one ``sendall`` and reads the status line and headers with the buffered reader's
``readline`` (C), keeping them as the list of pairs the gateway passes on.

What it keeps from the pools it replaces (``shared.internal_http``): a connection idle longer
than ``POOL_IDLE_SECONDS`` is never reused (the service may be closing it), nor one the
service has visibly closed (checked without blocking before reuse); a connection closed
before any byte of an answer raises ``ClosedEarly`` so the caller may retry a request safe
to repeat; a connection goes back to the pool only once its answer has been read to the
end. Bodies are framed as HTTP/1.1 says: none for HEAD, 1xx, 204 and 304, chunked, by
``Content-Length``, or up to the close of a connection that is then not reused.
"""
from __future__ import annotations

import re
import socket
import ssl
import time
from typing import Iterator

from shared.internal_http import POOL_IDLE_SECONDS

MAX_LINE = 65_536  # longest status or header line accepted from a service
MAX_HEADERS = 200
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
    __slots__ = ("sock", "file", "idle_since")

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
        self.file = sock.makefile("rb")
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
        self.file.close()
        self.sock.close()


class Answer:
    """A service's answer: status, reason, headers as sent; the body read with ``read`` or
    ``stream``. ``close`` drops the connection unless the body was read to the end."""

    def __init__(self, pool: Pool, conn: Connection, status: int, reason: str, headers: Headers,
                 length: int | None, chunked: bool, reusable: bool) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._pool = pool
        self._conn: Connection | None = conn
        self._length = length  # None: chunked, or up to the close
        self._chunked = chunked
        self._reusable = reusable

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def read(self) -> bytes:
        """The whole body; the connection goes back to the pool."""
        return b"".join(self.stream(MAX_LINE * 16))

    def stream(self, chunk: int) -> Iterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            if self._chunked:
                yield from self._chunks(conn, chunk)
            elif self._length is not None:
                remaining = self._length
                while remaining:
                    data = conn.file.read(min(chunk, remaining))
                    if not data:
                        raise Broken("the answer was broken off")
                    remaining -= len(data)
                    yield data
            else:
                while data := conn.file.read1(chunk):
                    yield data
                self._reusable = False
        except socket.timeout as exc:
            self.close()
            raise ReadTimedOut(str(exc)) from exc
        except OSError as exc:
            self.close()
            raise Broken(str(exc)) from exc
        except BaseException:
            self.close()
            raise
        self._finish()

    @staticmethod
    def _chunks(conn: Connection, chunk: int) -> Iterator[bytes]:
        while True:
            line = conn.file.readline(MAX_LINE)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise Broken("a malformed chunk") from None
            if size == 0:
                break
            while size:
                data = conn.file.read(min(chunk, size))
                if not data:
                    raise Broken("the answer was broken off")
                size -= len(data)
                yield data
            if conn.file.readline(MAX_LINE) not in (b"\r\n", b"\n"):
                raise Broken("a malformed chunk")
        while (line := conn.file.readline(MAX_LINE)) not in (b"\r\n", b"\n"):  # trailers, ignored
            if not line:
                raise Broken("the answer was broken off")

    def _finish(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if self._reusable:
                self._pool.put(conn)
            else:
                conn.close()

    def close(self) -> None:
        """Drop the connection if the body was not read to the end (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


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
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

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
            return self._answer(conn, method)
        except BaseException:
            conn.close()
            raise

    def _answer(self, conn: Connection, method: str) -> Answer:
        readline = conn.file.readline
        while True:
            try:
                line = readline(MAX_LINE)
            except socket.timeout as exc:
                raise ReadTimedOut(str(exc)) from exc
            except OSError as exc:
                raise ClosedEarly(str(exc)) from exc
            if not line:
                raise ClosedEarly("closed without an answer")
            parts = line.decode("latin-1").split(None, 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise Broken(f"not an HTTP status line: {line[:80]!r}")
            status = int(parts[1])
            headers = self._headers(readline)
            if not 100 <= status < 200 or status == 101:
                break  # an interim answer (100 Continue) is skipped
        reason = parts[2].strip() if len(parts) > 2 else ""
        keep_alive = parts[0] == "HTTP/1.1"
        length: int | None = None
        chunked = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == "connection" and "close" in value.lower():
                keep_alive = False
            elif lowered == "transfer-encoding" and value.lower().endswith("chunked"):
                chunked = True
            elif lowered == "content-length":
                if not value.isdigit():
                    raise Broken(f"a malformed Content-Length: {value!r}")
                length = int(value)
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            length, chunked = 0, False
        elif chunked:
            length = None
        return Answer(self, conn, status, reason, headers, length, chunked,
                      reusable=keep_alive and (chunked or length is not None))

    @staticmethod
    def _headers(readline) -> Headers:
        headers: Headers = []
        try:
            while (line := readline(MAX_LINE)) not in (b"\r\n", b"\n"):
                if not line:
                    raise Broken("the answer was broken off")
                if len(headers) >= MAX_HEADERS:
                    raise Broken("too many headers")
                text = line.decode("latin-1")
                if text[0] in " \t" and headers:  # an obsolete folded line continues the last value
                    name, value = headers.pop()
                    headers.append((name, f"{value} {text.strip()}"))
                    continue
                name, colon, value = text.partition(":")
                if not colon:
                    raise Broken(f"a malformed header line: {line[:80]!r}")
                headers.append((name.strip(), value.strip()))
        except socket.timeout as exc:
            raise ReadTimedOut(str(exc)) from exc
        except OSError as exc:
            raise Broken(str(exc)) from exc
        return headers
