"""The worker's reading of ComfyUI's WebSocket, byte by byte as TCP delivers it: frames that
arrive together, a frame split across segments, a timeout with half a frame read, a close."""
from __future__ import annotations

import base64
import hashlib
import json
import socket
import threading
import time

import pytest
import websocket

from services.render_worker.comfyui import EventSocket, connect_socket

ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes, opcode: int = websocket.ABNF.OPCODE_TEXT) -> bytes:
    """A server's frame (unmasked), with the length in whichever of its three spellings fits."""
    size = len(payload)
    if size < 126:
        head = bytes([0x80 | opcode, size])
    elif size < 1 << 16:
        head = bytes([0x80 | opcode, 126]) + size.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 127]) + size.to_bytes(8, "big")
    return head + payload


def message(kind: str, **data) -> bytes:
    return json.dumps({"type": kind, "data": data}).encode()


@pytest.fixture
def server():
    """A connected pair: the worker's socket, and the server's end of the TCP connection, which
    the test writes raw bytes to (``TCP_NODELAY``: each ``sendall`` leaves as its own segment)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = {}

    def accept():
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept_key = base64.b64encode(hashlib.sha1(key + ACCEPT_GUID).digest())
        conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_key + b"\r\n\r\n")
        accepted["conn"] = conn

    thread = threading.Thread(target=accept)
    thread.start()
    ws = connect_socket(f"ws://127.0.0.1:{listener.getsockname()[1]}/ws?clientId=c1", 5.0)
    thread.join()
    ws.settimeout(2.0)
    yield ws, accepted["conn"]
    ws.shutdown()
    accepted["conn"].close()
    listener.close()


def test_frames_that_arrive_in_one_segment_are_read_in_order(server):
    ws, peer = server
    small, medium, large = message("progress", value=1, max=20), message("executed", node="9", blob="m" * 300), \
        message("executed", node="9", blob="l" * 70_000)
    peer.sendall(frame(small) + frame(b"\x00\x00\x00\x01jpeg", websocket.ABNF.OPCODE_BINARY) + frame(medium)
                 + frame(large) + frame(message("executing", node=None)))
    assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, small)
    assert ws.recv_data() == (websocket.ABNF.OPCODE_BINARY, b"\x00\x00\x00\x01jpeg")
    assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, medium), "a 16-bit length"
    assert ws.recv_data() == (websocket.ABNF.OPCODE_TEXT, large), "a 64-bit length"
    assert json.loads(ws.recv_data()[1])["data"] == {"node": None}


@pytest.mark.parametrize("cuts", [(1,), (3,), (2, 5), (30, 31, 200)],
                         ids=["in the header", "in the length", "header and payload", "payload thrice"])
def test_a_frame_split_across_segments_is_put_together(server, cuts):
    ws, peer = server
    whole = frame(message("executed", node="9", output={"images": [{"filename": "x" * 200}]}))
    rest = frame(message("executing", node=None))
    pieces = [whole[start:end] for start, end in zip((0, *cuts), (*cuts, len(whole)))]
    pieces[-1] += rest  # the next frame behind the split one, in the same segment

    def send():
        for piece in pieces:
            peer.sendall(piece)
            time.sleep(0.05)
    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert ws.recv_data()[1] == whole[4:]
        assert json.loads(ws.recv_data()[1])["data"] == {"node": None}
    finally:
        sender.join()


@pytest.mark.parametrize("cut", [1, 3, 40], ids=["in the header", "in the length", "in the payload"])
def test_a_timeout_with_half_a_frame_read_keeps_it(server, cut):
    ws, peer = server
    whole = frame(message("progress", value=3, max=20, pad="p" * 150))
    peer.sendall(frame(message("progress", value=2, max=20)) + whole[:cut])
    ws.settimeout(0.2)
    assert json.loads(ws.recv_data()[1])["data"]["value"] == 2
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv_data()
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv_data()  # still nothing more: the part read stays put
    peer.sendall(whole[cut:] + frame(message("progress", value=4, max=20)))
    assert json.loads(ws.recv_data()[1])["data"]["value"] == 3
    assert json.loads(ws.recv_data()[1])["data"]["value"] == 4


def test_a_timeout_between_frames_leaves_the_socket_usable(server):
    ws, peer = server
    ws.settimeout(0.1)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv_data()
    peer.sendall(frame(message("progress", value=1, max=2)))
    assert json.loads(ws.recv_data()[1])["data"]["value"] == 1


def test_a_kept_socket_is_drained_of_every_status_frame_that_came_together(server):
    ws, peer = server
    peer.sendall(b"".join(frame(message("status", status={"exec_info": {"queue_remaining": n}}))
                          for n in range(3)))
    time.sleep(0.1)
    events = EventSocket()
    events.keep(ws)
    assert events.take() is ws
    ws.settimeout(0.1)
    with pytest.raises(websocket.WebSocketTimeoutException):
        ws.recv_data()  # nothing left over to be mistaken for the next prompt's messages


@pytest.mark.parametrize("goodbye", [b"", frame(b"\x03\xe8", websocket.ABNF.OPCODE_CLOSE)],
                         ids=["connection closed", "close frame"])
def test_a_kept_socket_closed_behind_its_status_frames_is_noticed(server, goodbye):
    ws, peer = server
    peer.sendall(frame(message("status", status={})) * 2 + goodbye)
    peer.shutdown(socket.SHUT_WR)
    time.sleep(0.1)
    events = EventSocket()
    events.keep(ws)
    assert events.take() is None


def test_a_connection_closed_while_following_is_an_error(server):
    ws, peer = server
    peer.sendall(frame(message("progress", value=1, max=2)) + frame(message("progress", value=2, max=2))[:6])
    peer.close()
    assert json.loads(ws.recv_data()[1])["data"]["value"] == 1
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        ws.recv_data()
