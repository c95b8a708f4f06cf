"""The gateway's HTTP/1.1 client for the internal hop, against a scripted server: how it frames
bodies, when it reuses a connection and when it must not."""
from __future__ import annotations

import gc
import warnings
from typing import Iterator

import pytest

from shared.http_transport import Broken, ClosedEarly, Pool
from tests.scripted_http import ScriptedServer

CONNECT, READ = 2.0, 5.0


@pytest.fixture
def scripted() -> Iterator:
    servers: list[ScriptedServer] = []
    pools: list[Pool] = []

    def start(answers: list[bytes | None], close_after_answer: bool = False) -> tuple[ScriptedServer, Pool]:
        servers.append(ScriptedServer(answers, close_after_answer))
        pools.append(Pool("127.0.0.1", servers[-1].port, maxsize=4))
        return servers[-1], pools[-1]

    yield start
    for pool in pools:
        pool.close()
    for server in servers:
        server.stop()


def ok(body: bytes, *headers: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), b"".join(h + b"\r\n" for h in headers), body)


def test_a_kept_alive_connection_serves_request_after_request(scripted):
    server, pool = scripted([ok(b"one", b"X-Echo: a"), ok(b"two")])
    first = pool.request("GET", "/a?x=1", [("Accept", "application/json")], None, CONNECT, READ)
    assert (first.status, first.reason, first.header("x-echo"), first.read()) == (200, "OK", "a", b"one")
    assert pool.request("GET", "/b", [], None, CONNECT, READ).read() == b"two"
    assert server.connections == 1
    assert server.requests[0].split(b"\r\n")[0] == b"GET /a?x=1 HTTP/1.1"
    assert b"Accept: application/json" in server.requests[0]


def test_a_chunked_body_is_joined_and_the_connection_reused(scripted):
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n")
    server, pool = scripted([chunked, ok(b"next")])
    answer = pool.request("GET", "/stream", [], None, CONNECT, READ)
    assert b"".join(answer.stream(3)) == b"hello, world"
    assert answer.header("x-trailer") is None  # trailers are not passed on as headers
    assert pool.request("GET", "/next", [], None, CONNECT, READ).read() == b"next"
    assert server.connections == 1


def test_a_body_without_length_is_read_to_the_close_and_the_connection_not_reused(scripted):
    server, pool = scripted([b"HTTP/1.1 200 OK\r\n\r\nuntil the end", ok(b"fresh")], close_after_answer=True)
    assert pool.request("GET", "/old", [], None, CONNECT, READ).read() == b"until the end"
    assert pool.request("GET", "/new", [], None, CONNECT, READ).read() == b"fresh"
    assert server.connections == 2


def test_no_body_is_read_after_a_204_or_a_head(scripted):
    server, pool = scripted([b"HTTP/1.1 204 No Content\r\n\r\n",
                             b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", ok(b"third")])
    assert pool.request("DELETE", "/x", [], None, CONNECT, READ).read() == b""
    assert pool.request("HEAD", "/x", [], None, CONNECT, READ).read() == b""
    assert pool.request("GET", "/x", [], None, CONNECT, READ).read() == b"third"
    assert server.connections == 1


def test_a_head_answer_announcing_a_chunked_body_ends_with_its_head(scripted):
    server, pool = scripted([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", ok(b"next")])
    answer = pool.request("HEAD", "/x", [], None, CONNECT, READ)
    assert (answer.status, answer.header("transfer-encoding"), answer.read()) == (200, "chunked", b"")
    assert pool.request("GET", "/x", [], None, CONNECT, READ).read() == b"next"
    assert server.connections == 1


def test_an_interim_answer_is_skipped(scripted):
    _, pool = scripted([b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n" + ok(b"final")])
    answer = pool.request("POST", "/x", [], b"{}", CONNECT, READ)
    assert (answer.status, answer.reason, answer.header("x-interim")) == (200, "OK", None)
    assert answer.read() == b"final"


def test_a_body_shorter_than_its_length_is_broken_off_not_ended(scripted):
    _, pool = scripted([b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\nshort"],
                       close_after_answer=True)
    answer = pool.request("GET", "/x", [], None, CONNECT, READ)
    with pytest.raises(Broken):
        answer.read()


@pytest.mark.parametrize("answer", [
    b"not http\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",  # obsolete line folding
])
def test_a_malformed_answer_is_broken_not_closed_early(scripted, answer):
    _, pool = scripted([answer])
    with pytest.raises(Broken):
        pool.request("GET", "/x", [], None, CONNECT, READ)


def test_a_body_is_sent_with_its_length(scripted):
    server, pool = scripted([ok(b"done"), ok(b"empty")])
    pool.request("POST", "/save", [("Content-Type", "application/json")], b'{"a": 1}', CONNECT, READ).read()
    pool.request("POST", "/empty", [], None, CONNECT, READ).read()
    assert b"Content-Length: 8" in server.requests[0]
    assert b"Content-Length: 0" in server.requests[1]


def test_a_connection_the_service_closed_while_idle_is_not_reused(scripted):
    server, pool = scripted([ok(b"one"), ok(b"two")], close_after_answer=True)
    assert pool.request("GET", "/a", [], None, CONNECT, READ).read() == b"one"
    assert server.closed.acquire(timeout=10)
    # Not even a POST (never sent twice) meets the closed connection: it is seen closed before reuse.
    assert pool.request("POST", "/b", [], b"{}", CONNECT, READ).read() == b"two"
    assert server.connections == 2


def test_a_connection_closed_before_any_answer_raises_closed_early(scripted):
    _, pool = scripted([None])
    with pytest.raises(ClosedEarly):
        pool.request("GET", "/a", [], None, CONNECT, READ)


def test_a_body_not_read_to_the_end_never_goes_back_to_the_pool(scripted):
    server, pool = scripted([ok(b"x" * 100_000), ok(b"after")])
    answer = pool.request("GET", "/big", [], None, CONNECT, READ)
    stream = answer.stream(1000)
    next(stream)
    stream.close()  # the client went away
    answer.close()
    assert pool.request("GET", "/after", [], None, CONNECT, READ).read() == b"after"
    assert server.connections == 2


@pytest.mark.parametrize(("target", "headers"), [
    ("/a b", []), ("/a\r\nX-Injected: 1", []), ("/a", [("Authorization", "Bearer x\r\nX-Injected: 1")]),
])
def test_a_target_or_header_that_would_split_the_request_is_refused(scripted, target, headers):
    server, pool = scripted([ok(b"never")])
    with pytest.raises(ValueError):
        pool.request("GET", target, headers, None, CONNECT, READ)
    assert server.requests == []


def test_a_pool_dropped_without_close_closes_its_idle_connections():
    """A short-lived client (one call, then dropped) leaves no socket open behind it."""
    server = ScriptedServer([ok(b"one"), ok(b"never asked for")])
    try:
        pool = Pool("127.0.0.1", server.port, maxsize=4)
        assert pool.request("GET", "/once", [], None, CONNECT, READ).read() == b"one"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del pool
            gc.collect()
        assert not [w for w in caught if issubclass(w.category, ResourceWarning)]
        assert server.closed.acquire(timeout=10), "the server saw the connection closed"
    finally:
        server.stop()
