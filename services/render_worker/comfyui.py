"""Client for one ComfyUI server (HTTP + WebSocket), as docs/comfyui-protocol.md describes it.

``run`` opens the WebSocket first (or reuses the one this thread kept from its last prompt,
see ``EventSocket``), submits the graph under a prompt id we chose and with the socket's
client id, follows only that prompt's messages (state keyed by prompt id, never by arrival
order) until ``executing`` with ``node: null``, and returns the output images of the
template's save nodes, from the ``executed`` messages or ``/history/<id>``. A dropped socket or an
unreachable server is retried with backoff and reconciled through ``/history`` and
``/queue``. It never sends an Origin header (ComfyUI rejects foreign origins with 403).
"""
from __future__ import annotations

import json
import logging
import select
import socket
import ssl
import struct
import threading
import time
import uuid
import weakref
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import urllib3
import websocket

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0
# Connections kept to one ComfyUI (shared by the worker's threads; more are opened when busy).
HTTP_CONNECTIONS = 8
VIEW_TIMEOUT = 60.0
WS_POLL_SECONDS = 0.25
# With no message about our prompt for this long, ask /history and /queue how it is doing.
SILENCE_CHECK_SECONDS = 5.0
INTERRUPT_GRACE_SECONDS = 30.0
# Bytes asked of ComfyUI's socket at a time (``BufferedWebSocket``).
RECV_CHUNK = 65536
# While a node reporting steps (a sampler) has more than PACE_AHEAD_SECONDS of them left at its pace
# so far, its socket is read at most every PACE_SECONDS (``PromptRun._pace``): ComfyUI sends two
# frames a step (``progress``, ``progress_state``), each a wake-up of the worker's thread when read as
# it comes, and read a few steps at a time they cost about a fifth less of the thread's CPU over a
# 2-s job. Live progress goes out at most twice a second anyway; a cancel is read twice a second; the
# sampler's last steps and every other node's messages are read as they come.
PACE_SECONDS = 0.2
PACE_AHEAD_SECONDS = 0.5
PACE_MIN_STEPS = 4
MAX_SOCKET_DROPS = 5
HISTORY_READS = 4
PREVIEW_LEGACY, PREVIEW_WITH_METADATA = 1, 4
# Text frames of no use to a run, recognised by how ComfyUI spells their start
# (``json.dumps({"type": ..., "data": ...})``) and not decoded: the status broadcasts, and
# ``progress_state``, which repeats the map of every node run so far on each step (about half
# of a job's frames). A frame spelled any other way is decoded and ignored as before.
UNUSED_FRAMES = (b'{"type": "status"', b'{"type": "progress_state"')


class ComfyUIError(Exception):
    """A failed run. ``error_class`` is "user" (the request was wrong) or "system"."""

    def __init__(self, message: str, *, code: str, error_class: str = "system") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.error_class = error_class


class ExecutionFailed(ComfyUIError):
    """A node failed while the prompt ran (``execution_error``): ``node_id`` and ``node_type`` name
    it (None when ComfyUI's history did not say), ``exception_message`` is ComfyUI's."""

    def __init__(self, message: str, node_id: str | None, node_type: str | None, exception_message: str) -> None:
        super().__init__(message, code="EXECUTION_ERROR")
        self.node_id, self.node_type, self.exception_message = node_id, node_type, exception_message


class PromptRejected(ComfyUIError):
    """ComfyUI refused the graph at validation (``node_errors``)."""

    def __init__(self, message: str, node_errors: dict[str, Any] | None = None) -> None:
        super().__init__(message, code="PROMPT_REJECTED", error_class="user")
        self.node_errors = node_errors or {}


class ComfyUIUnavailable(ComfyUIError):
    def __init__(self, message: str, code: str = "COMFYUI_UNAVAILABLE") -> None:
        super().__init__(message, code=code)


class PromptInterrupted(Exception):
    """The prompt was interrupted or removed from the queue at our request."""


@dataclass(frozen=True)
class ImageRef:
    node_id: str
    filename: str
    subfolder: str
    type: str


@dataclass
class RunHooks:
    """Callbacks of one run; each is optional."""

    on_submitted: Callable[[], None] | None = None
    on_progress: Callable[[int, int, int], None] | None = None  # step, total steps, overall percent
    on_preview: Callable[[bytes], None] | None = None  # JPEG/PNG bytes of a preview frame
    should_cancel: Callable[[], bool] | None = None


def combo_choices(spec: Any) -> list[str]:
    """Choices of a combo input in either spelling: ``[[...], {...}]`` or ``["COMBO", {"options": [...]}]``."""
    if not isinstance(spec, list) or not spec:
        return []
    if isinstance(spec[0], list):
        return [str(choice) for choice in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return [str(choice) for choice in spec[1].get("options", [])]
    return []


def preview_image(frame: bytes, prompt_id: str) -> bytes | None:
    """The image of a binary preview frame (event 1, or event 4 naming our prompt), else None."""
    if len(frame) < 8:
        return None
    event, second = struct.unpack(">II", frame[:8])
    if event == PREVIEW_LEGACY:
        return frame[8:]
    if event == PREVIEW_WITH_METADATA:
        try:
            metadata = json.loads(frame[8:8 + second])
        except ValueError:
            return None
        return frame[8 + second:] if metadata.get("prompt_id") == prompt_id else None
    return None


def describe_rejection(body: dict[str, Any]) -> str:
    """A readable message from a ``{"error", "node_errors"}`` body, naming node and reason."""
    error = body.get("error") or {}
    parts = []
    for node_id, node in (body.get("node_errors") or {}).items():
        for problem in node.get("errors", []):
            reason = problem.get("details") or problem.get("message", "")
            parts.append(f"node {node_id} ({node.get('class_type', '?')}): {problem.get('message', '')}: {reason}")
    if not parts:
        parts.append(f"{error.get('message', 'invalid prompt')} {error.get('details', '')}".strip())
    return "ComfyUI rejected the workflow: " + "; ".join(parts)


def outcome_from_history(entry: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """("success" | "error" | "interrupted", payload) from a history entry."""
    status = entry.get("status") or {}
    for kind, payload in reversed(status.get("messages") or []):
        if kind == "execution_error":
            return "error", payload
        if kind == "execution_interrupted":
            return "interrupted", payload
    if status.get("status_str") == "success" or status.get("completed"):
        return "success", {}
    return "error", {"exception_message": f"ComfyUI ended the prompt with status {status.get('status_str')!r}"}


def image_refs(outputs: dict[str, Any], output_nodes: list[str]) -> list[ImageRef]:
    """The images of ``output_nodes`` in order, from a history/executed ``outputs`` dict."""
    return [ImageRef(node_id, str(image["filename"]), str(image.get("subfolder", "")), str(image.get("type", "output")))
            for node_id in output_nodes
            for image in (outputs.get(node_id) or {}).get("images", [])
            if isinstance(image, dict) and "filename" in image]


def _direct_connection(ws_url: str, timeout: float) -> socket.socket:
    """The TCP (or TLS) connection for ComfyUI's WebSocket, made here so that it goes directly
    to ComfyUI, as its HTTP calls do: websocket-client would go through a proxy named in the
    environment (``HTTP_PROXY``), whatever ``http_no_proxy`` it is given."""
    parts = urlsplit(ws_url)
    secure = parts.scheme == "wss"
    sock = socket.create_connection((parts.hostname, parts.port or (443 if secure else 80)), timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ssl.create_default_context().wrap_socket(sock, server_hostname=parts.hostname) if secure else sock


# A frame's 7-bit length 126 or 127 says its real length follows in 2 or 8 bytes (RFC 6455, 5.2).
_EXTENDED_LENGTH_BYTES = {126: 2, 127: 8}


class BufferedWebSocket(websocket.WebSocket):
    """websocket-client's WebSocket, reading ComfyUI's socket a chunk at a time.

    Its frame parser asks the socket for a frame's header, length and payload apart (a ``recv``
    with its timeout wait for each, and a dozen Python calls), while ComfyUI's frames are small
    and come whole, one or several to a TCP segment. Here a frame that is whole in the chunk read
    last is cut from it at once; websocket-client's parser does the rest (a frame split across
    segments, one half read when a timeout struck), taking its pieces from the chunk. A chunk is
    read when the last is used up, through websocket-client's ``_recv`` (its timeout, TLS and
    closed-socket handling). Relies on the pinned websocket-client's ``frame_buffer``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._chunk = b""
        self._offset = 0

    def buffered(self) -> bool:
        """Whether bytes read from the socket wait to be parsed."""
        return self._offset < len(self._chunk)

    def recv_frame(self) -> websocket.ABNF:
        parser = self.frame_buffer
        if parser.header is None and not parser.recv_buffer:  # between frames
            if not self.buffered():
                self._chunk, self._offset = super()._recv(RECV_CHUNK), 0
            frame = self._whole_frame()
            if frame is not None:
                frame.validate(parser.skip_utf8_validation)
                return frame
        return super().recv_frame()

    def _whole_frame(self) -> websocket.ABNF | None:
        """The next frame, cut from the chunk, if it is whole there and unmasked (a server's)."""
        chunk, start = self._chunk, self._offset
        if len(chunk) - start < 2 or chunk[start + 1] & 0x80:
            return None
        first, length = chunk[start], chunk[start + 1] & 0x7F
        at = start + 2 + _EXTENDED_LENGTH_BYTES.get(length, 0)
        if length >= 126:
            length = int.from_bytes(chunk[start + 2:at], "big")
        end = at + length
        if end > len(chunk):
            return None
        self._offset = end
        return websocket.ABNF(first >> 7 & 1, first >> 6 & 1, first >> 5 & 1, first >> 4 & 1, first & 0xF, 0,
                              chunk[at:end])

    def _recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes for websocket-client's parser, from the chunk."""
        chunk, start = self._chunk, self._offset
        if start >= len(chunk):
            chunk, start = self._chunk, self._offset = super()._recv(RECV_CHUNK), 0
        end = start + bufsize
        self._offset = end
        return chunk if start == 0 and end >= len(chunk) else chunk[start:end]


def connect_socket(url: str, timeout: float) -> BufferedWebSocket:
    """ComfyUI's WebSocket at ``url``. UTF-8 is left to json.loads (websocket-client would check
    each byte in Python)."""
    return websocket.create_connection(url, timeout=timeout, class_=BufferedWebSocket, suppress_origin=True,
                                       enable_multithread=False, skip_utf8_validation=True,
                                       socket=_direct_connection(url, timeout))


class ComfyUIClient:
    def __init__(self, base_url: str, *, timeout: float = HTTP_TIMEOUT, retry_seconds: float = 20.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retry_seconds = retry_seconds
        # urllib3 rather than requests: a third of the CPU per call (no per-request environment,
        # proxy and cookie handling); no retries here, as with requests (``_backoff`` retries).
        self._pool = urllib3.connection_from_url(self.base_url, maxsize=HTTP_CONNECTIONS, block=False,
                                                 retries=urllib3.Retry(0, read=False))
        self._path = urlsplit(self.base_url).path
        self._local = threading.local()
        self._sockets: list[EventSocket] = []  # every thread's, so that close() closes them all
        self._sockets_lock = threading.Lock()
        self._fetches: ThreadPoolExecutor | None = None  # ``start_fetch``'s threads, made on first use (under the lock)
        # As urllib3 does for its pool: a client dropped without close() closes its sockets.
        weakref.finalize(self, _close_sockets, self._sockets)

    @property
    def event_socket(self) -> "EventSocket":
        """This thread's WebSocket, kept from one prompt to the next."""
        events = getattr(self._local, "events", None)
        if events is None:
            events = self._local.events = EventSocket()
            with self._sockets_lock:
                self._sockets.append(events)
        return events

    def close(self) -> None:
        """The HTTP connections and every thread's kept socket (when no run is going)."""
        self._pool.close()
        with self._sockets_lock:
            _close_sockets(self._sockets)
            if self._fetches is not None:
                self._fetches.shutdown(wait=False)
                self._fetches = None  # a fetch after close() fails as fetch_image does, on the closed pool

    def ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", f"clientId={client_id}", ""))

    def _request(self, method: str, path: str, *, timeout: float | None = None,
                 **kwargs: Any) -> urllib3.BaseHTTPResponse:
        """``kwargs``: urllib3's ``json``, or ``fields`` (the query of a GET, else a multipart form)."""
        try:
            return self._pool.request(method, self._path + path, timeout=timeout or self.timeout, redirect=False,
                                      **kwargs)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ComfyUIUnavailable(f"ComfyUI at {self.base_url} did not answer {method} {path} "
                                     f"({exc.__class__.__name__}).") from exc

    def _get_json(self, path: str, **kwargs: Any) -> Any:
        response = self._request("GET", path, **kwargs)
        if response.status != 200:
            raise ComfyUIUnavailable(f"GET {path} answered {response.status}.")
        try:
            return response.json()
        except ValueError as exc:
            kind = response.headers.get("Content-Type", "?")
            raise ComfyUIUnavailable(f"GET {path} did not answer readable JSON ({kind}).",
                                     code="COMFYUI_BAD_RESPONSE") from exc

    def object_info_all(self) -> dict[str, Any]:
        return self._get_json("/object_info")

    def object_info(self, node_class: str) -> dict[str, Any]:
        """The node class's spec, or {} when the server does not know it."""
        return self._get_json(f"/object_info/{node_class}").get(node_class, {})

    def system_stats(self) -> dict[str, Any]:
        return self._get_json("/system_stats")

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None while it is unknown/unfinished."""
        return self._get_json(f"/history/{prompt_id}").get(prompt_id)

    def queue_state(self, prompt_id: str) -> str | None:
        """"running", "pending" or None for our prompt in ``GET /queue``."""
        queue = self._get_json("/queue")
        if any(len(item) > 1 and item[1] == prompt_id for item in queue.get("queue_running", [])):
            return "running"
        if any(len(item) > 1 and item[1] == prompt_id for item in queue.get("queue_pending", [])):
            return "pending"
        return None

    def cancel(self, prompt_id: str) -> str | None:
        """Remove our prompt if still pending, else interrupt it if it runs — only ever the
        targeted interrupt. Returns the state it was found in."""
        state = self.queue_state(prompt_id)
        if state == "pending":
            self._request("POST", "/queue", json={"delete": [prompt_id]})
            if self.queue_state(prompt_id) == "running":  # it started meanwhile
                self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
                return "running"
        elif state == "running":
            self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
        return state

    def upload_image(self, data: bytes, name: str) -> str:
        """Put an input image into ComfyUI's ``input/`` and return the name LoadImage takes."""
        response = self._request("POST", "/upload/image", timeout=VIEW_TIMEOUT,
                                 fields={"image": (name, data, "application/octet-stream"), "type": "input",
                                         "overwrite": "true"})
        try:
            body = response.json() if response.status == 200 else None
        except ValueError:
            body = None
        if not isinstance(body, dict) or "name" not in body:
            raise ComfyUIUnavailable(f"POST /upload/image answered {response.status}.")
        subfolder = body.get("subfolder") or ""
        return f"{subfolder}/{body['name']}" if subfolder else str(body["name"])

    def submit(self, graph: dict[str, Any], prompt_id: str, client_id: str, output_nodes: list[str]) -> None:
        """POST /prompt. 400 and a 200 whose ``node_errors`` touch our outputs → PromptRejected;
        anything else unusable → ComfyUIUnavailable."""
        response = self._request("POST", "/prompt", json={"prompt": graph, "client_id": client_id,
                                                          "prompt_id": prompt_id})
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status == 400 and isinstance(body, dict):
            raise PromptRejected(describe_rejection(body), body.get("node_errors"))
        if response.status != 200 or not isinstance(body, dict):
            kind = response.headers.get("Content-Type", "no content type")
            raise ComfyUIUnavailable(f"POST /prompt answered {response.status} ({kind}).")
        node_errors = body.get("node_errors") or {}
        broken = {node_id for node_id, node in node_errors.items()} | {
            str(out) for node in node_errors.values() for out in node.get("dependent_outputs", [])}
        if broken & set(output_nodes):
            self.cancel(prompt_id)  # it may be queued with other outputs only
            raise PromptRejected(describe_rejection(body), node_errors)

    def start_fetch(self, ref: ImageRef) -> Future[bytes]:
        """``fetch_image`` on a thread of the client's, over a connection of its own: a second file
        of a prompt (an image's thumbnail) comes while the caller fetches the first."""
        with self._sockets_lock:
            if self._fetches is None:
                self._fetches = ThreadPoolExecutor(max_workers=2, thread_name_prefix="comfyui-fetch")
            return self._fetches.submit(self.fetch_image, ref)

    def fetch_image(self, ref: ImageRef) -> bytes:
        response = self._request("GET", "/view", timeout=VIEW_TIMEOUT,
                                 fields={"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type})
        if response.status != 200 or not response.data:
            raise ComfyUIError(f"ComfyUI could not hand over {ref.filename!r}: GET /view answered "
                               f"{response.status}.", code="OUTPUT_MISSING")
        return response.data

    def run(self, graph: dict[str, Any], output_nodes: list[str], *, deadline: float, prompt_id: str,
            hooks: RunHooks | None = None) -> list[ImageRef]:
        """Execute ``graph`` and return the image references of ``output_nodes`` in order.

        ``deadline`` is a ``time.monotonic()`` value. Raises PromptRejected, ExecutionFailed, ComfyUIError
        (deadline, lost connection) or PromptInterrupted.
        """
        run = PromptRun(self, graph, output_nodes, prompt_id, deadline, hooks or RunHooks(), self.event_socket)
        run.execute()
        return run.results()


class EventSocket:
    """One thread's WebSocket to ComfyUI, kept across its prompts so that a job pays for no
    connection. ComfyUI sends a client id's messages to that id's one socket, and every message
    about a prompt names it, so a run follows its own prompt on a socket that served others
    before. Between prompts only the status broadcasts arrive; ``take`` reads and drops them,
    and notices a socket ComfyUI closed meanwhile (a restart), which the run then replaces
    before it submits. A run that ended abnormally (a deadline, a lost prompt, an error) may
    leave its prompt running: the socket is closed and the next one gets a new client id, so
    nothing of that prompt reaches a later run (ComfyUI's reconnect message names no prompt)."""

    def __init__(self) -> None:
        self.client_id = uuid.uuid4().hex
        self.ws: BufferedWebSocket | None = None

    def take(self) -> BufferedWebSocket | None:
        """The kept socket, its idle frames read, or None (none kept, or ComfyUI closed it)."""
        ws, self.ws = self.ws, None
        if ws is None:
            return None
        try:
            while _has_data(ws):
                opcode, _ = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise websocket.WebSocketConnectionClosedException("ComfyUI closed the socket")
        except (websocket.WebSocketException, OSError):
            log.info("ComfyUI closed the kept socket of client %s; reconnecting", self.client_id)
            _close(ws)
            return None
        return ws

    def keep(self, ws: BufferedWebSocket) -> None:
        self.ws = ws

    def renew(self) -> None:
        """A new client id for the next socket (the last run's prompt may still be running)."""
        self.client_id = uuid.uuid4().hex

    def close(self) -> None:
        if self.ws is not None:
            _close(self.ws)
            self.ws = None


class ProgressTracker:
    """Turns node execution and sampler steps into one overall percentage.

    Each node weighs 1, a sampler node weighs its step count; cached nodes count as done.
    """

    def __init__(self, graph: dict[str, Any]) -> None:
        self.weights = {node_id: max(1, int(node["inputs"]["steps"]))
                        if isinstance(node.get("inputs", {}).get("steps"), int) else 1
                        for node_id, node in graph.items()}
        self.done: set[str] = set()
        self.current: str | None = None
        self.fraction = 0.0

    def cached(self, nodes: list[str]) -> None:
        self.done.update(n for n in nodes if n in self.weights)

    def executing(self, node: str) -> None:
        if self.current is not None and self.current != node:
            self.done.add(self.current)
        self.current, self.fraction = node, 0.0

    def step(self, node: str | None, value: int, maximum: int) -> None:
        if node is not None and node != self.current:
            self.executing(node)
        self.fraction = value / maximum if maximum else 0.0

    def percent(self) -> int:
        total = sum(self.weights.values())
        finished = sum(self.weights[n] for n in self.done)
        if self.current in self.weights and self.current not in self.done:
            finished += self.weights[self.current] * self.fraction
        return min(99, int(100 * finished / total)) if total else 0


@dataclass
class PromptRun:
    """One prompt's life: connect, submit, follow, reconcile after a drop or silence."""

    client: ComfyUIClient
    graph: dict[str, Any]
    output_nodes: list[str]
    prompt_id: str
    deadline: float
    hooks: RunHooks
    socket: EventSocket = field(default_factory=EventSocket)
    outcome: str | None = None
    ending: str = "success"  # what the final ``executing: null`` will mean
    payload: dict[str, Any] = field(default_factory=dict)
    executed_outputs: dict[str, Any] = field(default_factory=dict)
    cancelling: bool = False
    interrupt_sent_at: float = 0.0
    history_entry: dict[str, Any] | None = None
    last_step: tuple[int, int] = (0, 0)
    stepping: tuple[str | None, float, int] | None = None  # the node reporting steps: its first step's time and value
    pace_until: float = 0.0  # time.monotonic(): the socket is read again no sooner (``_pace``)

    def __post_init__(self) -> None:
        self.tracker = ProgressTracker(self.graph)
        self.last_heard = time.monotonic()

    @property
    def client_id(self) -> str:
        return self.socket.client_id

    # -- connection -------------------------------------------------------------------
    def _backoff(self, what: str, attempt: Callable[[], Any]) -> Any:
        """Call ``attempt`` until it succeeds or ``retry_seconds`` pass (0.25 s doubling to 4 s)."""
        give_up = time.monotonic() + self.client.retry_seconds
        delay = 0.25
        while True:
            try:
                return attempt()
            except ComfyUIUnavailable as exc:
                if time.monotonic() + delay > min(give_up, self.deadline):
                    raise ComfyUIUnavailable(f"{exc.message} Gave up on {what} after retrying.",
                                             code=exc.code) from exc
                log.warning("%s failed (%s); retrying in %.2f s", what, exc.message, delay)
                time.sleep(delay)
                delay = min(delay * 2, 4.0)

    def _connect(self) -> BufferedWebSocket:
        def attempt() -> BufferedWebSocket:
            try:
                return connect_socket(self.client.ws_url(self.client_id), self.client.timeout)
            except (websocket.WebSocketException, OSError) as exc:
                raise ComfyUIUnavailable(f"ComfyUI's WebSocket is unreachable ({exc.__class__.__name__}).") from exc
        return self._backoff("connecting to ComfyUI's WebSocket", attempt)

    def _submit(self) -> None:
        def attempt() -> None:
            try:
                self.client.submit(self.graph, self.prompt_id, self.client_id, self.output_nodes)
            except ComfyUIUnavailable:
                # The post may have arrived before the answer failed: our own prompt id tells.
                try:
                    if self.client.queue_state(self.prompt_id) or self.client.history(self.prompt_id):
                        return
                except ComfyUIUnavailable:
                    pass
                raise
        self._backoff("submitting the prompt", attempt)
        if self.hooks.on_submitted:
            self.hooks.on_submitted()

    def execute(self) -> None:
        ws = self.socket.take() or self._connect()
        drops = 0
        followed = False
        try:
            self._submit()
            while self.outcome is None:
                try:
                    self._follow(ws)
                except (websocket.WebSocketException, ConnectionError, OSError) as exc:
                    drops += 1
                    if drops > MAX_SOCKET_DROPS:
                        raise ComfyUIError("Lost the connection to ComfyUI too often during one job.",
                                           code="COMFYUI_CONNECTION_LOST") from exc
                    log.warning("ComfyUI socket dropped during prompt %s; reconnecting", self.prompt_id)
                    _close(ws)
                    ws = self._connect()  # same client id: ComfyUI resumes sending our messages
                    self._backoff("reconciling after a dropped socket", self._reconcile)
            followed = True
        finally:
            if followed:  # the prompt is over: the socket serves the thread's next one
                self.socket.keep(ws)
            else:
                _close(ws)
                self.socket.renew()
        self._raise_for_outcome()

    def _follow(self, ws: BufferedWebSocket) -> None:
        ws.settimeout(WS_POLL_SECONDS)
        while self.outcome is None:
            if not ws.buffered() and (pause := self.pace_until - time.monotonic()) > 0:
                time.sleep(pause)
            try:
                opcode, frame = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                self._on_idle()
                continue
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise websocket.WebSocketConnectionClosedException("ComfyUI closed the socket")
            if opcode == websocket.ABNF.OPCODE_BINARY:
                self._on_binary(frame)
            elif opcode == websocket.ABNF.OPCODE_TEXT and not frame.startswith(UNUSED_FRAMES):
                try:
                    message = json.loads(frame)
                except ValueError:
                    continue
                if isinstance(message, dict):
                    self._on_message(message)
            if self.outcome is None and time.monotonic() > self.deadline:
                self._on_idle()

    # -- messages ---------------------------------------------------------------------
    def _on_binary(self, frame: bytes) -> None:
        if self.hooks.on_preview is None:
            return
        image = preview_image(frame, self.prompt_id)
        if image:
            self.hooks.on_preview(image)

    def _on_message(self, message: dict[str, Any]) -> None:
        kind, data = message.get("type"), message.get("data") or {}
        if not isinstance(data, dict):
            return
        if kind == "executing" and "prompt_id" not in data and data.get("node") is not None:
            # After a reconnect ComfyUI names the running node without a prompt id; only our
            # client id receives it, so it is ours.
            self.tracker.executing(str(data["node"]))
            return
        if data.get("prompt_id") != self.prompt_id:
            return  # status broadcasts, other clients' prompts
        self.last_heard = time.monotonic()
        if kind == "execution_cached":
            self.tracker.cached([str(n) for n in data.get("nodes", [])])
        elif kind == "executing" and data.get("node") is None:
            self.outcome = self.ending
        elif kind == "executing":
            self.tracker.executing(str(data["node"]))
            self._report_progress(None)
        elif kind == "progress":
            node, value, maximum = (str(data["node"]) if data.get("node") is not None else None,
                                    int(data.get("value", 0)), int(data.get("max", 0)))
            self.tracker.step(node, value, maximum)
            self._report_progress((value, maximum))
            self._check_cancel()
            self._pace(node, value, maximum)
        elif kind == "executed" and isinstance(data.get("output"), dict):
            self.executed_outputs[str(data.get("node"))] = data["output"]
        elif kind == "execution_success":
            self.ending = "success"
        elif kind == "execution_error":
            self.payload, self.ending = data, "error"
        elif kind == "execution_interrupted":
            self.payload, self.ending = data, "interrupted"

    def _pace(self, node: str | None, value: int, maximum: int) -> None:
        """Read the socket again only after PACE_SECONDS while ``node`` has more than
        PACE_AHEAD_SECONDS of steps left at its pace since its first step read here. The pace is
        measured over PACE_MIN_STEPS steps at least: steps read after a pause make it look slower by
        at most PACE_SECONDS / PACE_MIN_STEPS a step, so a pause can outlast even a 30-steps-a-second
        sampler by a few ms at most. Not while an interrupt waits for its answer."""
        now = time.monotonic()
        if self.stepping is None or self.stepping[0] != node or value < self.stepping[2]:
            self.stepping = node, now, value
            return
        _, first_at, first_value = self.stepping
        if value - first_value < PACE_MIN_STEPS or self.cancelling:
            return
        left = (maximum - value) * (now - first_at) / (value - first_value)
        if left > PACE_AHEAD_SECONDS:
            self.pace_until = now + PACE_SECONDS

    def _report_progress(self, step: tuple[int, int] | None) -> None:
        """Overall percent, with the latest sampler step (kept while other nodes run)."""
        if step is not None:
            self.last_step = step
        if self.hooks.on_progress is not None:
            self.hooks.on_progress(*self.last_step, self.tracker.percent())

    def _on_idle(self) -> None:
        now = time.monotonic()
        self._check_cancel()
        if now > self.deadline and self.outcome is None:
            try:
                self.client.cancel(self.prompt_id)
            except ComfyUIUnavailable:
                log.warning("could not stop prompt %s after its deadline", self.prompt_id)
            raise ComfyUIError("The job ran past its deadline and was stopped.", code="DEADLINE_EXCEEDED")
        if now - self.last_heard > SILENCE_CHECK_SECONDS:
            self.last_heard = now
            self._reconcile()
        if self.cancelling and now - self.interrupt_sent_at > INTERRUPT_GRACE_SECONDS:
            raise ComfyUIError("ComfyUI did not stop the prompt after an interrupt.", code="INTERRUPT_TIMEOUT")

    def _check_cancel(self) -> None:
        if self.cancelling or self.hooks.should_cancel is None or not self.hooks.should_cancel():
            return
        self.cancelling = True
        self.interrupt_sent_at = time.monotonic()
        state = self.client.cancel(self.prompt_id)
        if state == "pending":
            self.outcome = "interrupted"  # removed before it started: ComfyUI will say nothing
        elif state is None:
            self._reconcile()

    def _reconcile(self) -> None:
        """Learn the outcome from /history and /queue (after a drop, silence or a cancel)."""
        try:
            entry = self.client.history(self.prompt_id)
        except ComfyUIUnavailable as exc:
            if exc.code != "COMFYUI_BAD_RESPONSE":
                raise
            entry = None  # unreadable history: the queue still tells whether it is alive
        if entry is not None:
            self.outcome, self.payload = outcome_from_history(entry)
            self.history_entry = entry
            return
        if self.client.queue_state(self.prompt_id) is not None:
            return  # still pending or running: keep following
        if self.cancelling:
            self.outcome = "interrupted"
        elif self.ending in ("error", "interrupted") or self.executed_outputs:
            self.outcome = self.ending  # finished, but its history is gone (ComfyUI restarted)
        else:
            raise ComfyUIError("ComfyUI lost the prompt (it is neither queued nor in its history; "
                               "was ComfyUI restarted?).", code="PROMPT_LOST")

    def _raise_for_outcome(self) -> None:
        if self.outcome == "interrupted":
            if self.cancelling:
                raise PromptInterrupted(self.prompt_id)
            raise ComfyUIError("ComfyUI interrupted the prompt.", code="INTERRUPTED")
        if self.outcome == "error":
            node_id, node_type = self.payload.get("node_id"), self.payload.get("node_type")
            message = str(self.payload.get("exception_message") or "ComfyUI failed while running the workflow.").strip()
            raise ExecutionFailed(f"{message} (node {node_type or node_id or '?'})",
                                  None if node_id is None else str(node_id), node_type, message)

    # -- results ----------------------------------------------------------------------
    def results(self) -> list[ImageRef]:
        """Output images from the ``executed`` messages when every output node sent one (a
        successful run over one socket), else from /history, else from whatever ``executed``
        messages arrived (history is gone)."""
        if self.history_entry is None and all(node in self.executed_outputs for node in self.output_nodes):
            refs = image_refs(self.executed_outputs, self.output_nodes)
            if refs:
                return refs
        entry = self.history_entry
        problem = "ComfyUI has no history for the finished prompt."
        for attempt in range(HISTORY_READS):
            if entry is not None:
                break
            try:
                entry = self.client.history(self.prompt_id)
                if entry is None:
                    break  # {}: lost (restart) — fall back to executed messages
            except ComfyUIUnavailable as exc:
                problem = exc.message
                time.sleep(0.1 * (attempt + 1))
        refs = image_refs(entry.get("outputs") or {}, self.output_nodes) if entry else []
        if not refs:
            refs = image_refs(self.executed_outputs, self.output_nodes)
        if not refs and entry is None:
            raise ComfyUIError(f"Could not read the prompt's outputs: {problem}", code="HISTORY_UNREADABLE")
        return refs


def _close_sockets(sockets: list[EventSocket]) -> None:
    for events in sockets:
        events.close()


def _has_data(ws: BufferedWebSocket) -> bool:
    """Whether a frame (or ComfyUI's close) waits to be read, without waiting."""
    sock = ws.sock
    if sock is None:
        raise websocket.WebSocketConnectionClosedException("the socket is closed")
    if ws.buffered() or isinstance(sock, ssl.SSLSocket) and sock.pending():
        return True
    return bool(select.select([sock], [], [], 0)[0])


def _close(ws: websocket.WebSocket) -> None:
    """Say goodbye (a close frame) if still open, without waiting for ComfyUI's answer (the
    job's images wait behind this), and always release the socket."""
    try:
        if ws.connected:
            ws.send_close()
    except (websocket.WebSocketException, OSError):
        pass  # the peer is already gone; shutdown below frees the socket
    ws.shutdown()
