"""Client for one ComfyUI server (HTTP + WebSocket), following PROTOCOL.md.

``run`` connects the WebSocket first, submits the graph under a prompt id we chose,
follows only that prompt's messages until ``executing`` with ``node: null``, then reads
``/history/<id>`` and downloads the images of the template's output nodes. It never
sends an Origin header (ComfyUI rejects foreign origins with 403).
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import requests
import websocket

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 10.0
VIEW_TIMEOUT = 60.0
WS_POLL_SECONDS = 0.5
# With no message about our prompt for this long, ask /history whether it finished.
SILENCE_CHECK_SECONDS = 5.0
INTERRUPT_GRACE_SECONDS = 30.0

ProgressCallback = Callable[[int, int], None]
CancelCheck = Callable[[], bool]


class ComfyUIError(Exception):
    """A failed run. ``error_class`` is "user" (the request was wrong) or "system"."""

    def __init__(self, message: str, *, code: str, error_class: str = "system") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.error_class = error_class


class PromptRejected(ComfyUIError):
    """ComfyUI refused the graph at validation (400)."""

    def __init__(self, message: str, node_errors: dict[str, Any] | None = None) -> None:
        super().__init__(message, code="PROMPT_REJECTED", error_class="user")
        self.node_errors = node_errors or {}


class ComfyUIUnavailable(ComfyUIError):
    def __init__(self, message: str) -> None:
        super().__init__(message, code="COMFYUI_UNAVAILABLE")


class PromptInterrupted(Exception):
    """The prompt was interrupted or removed from the queue at our request."""


@dataclass(frozen=True)
class ImageRef:
    node_id: str
    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class FetchedImage:
    ref: ImageRef
    data: bytes


def combo_choices(spec: Any) -> list[str]:
    """Choices of a combo input in either spelling: ``[[...], {...}]`` or ``["COMBO", {"options": [...]}]``."""
    if not isinstance(spec, list) or not spec:
        return []
    if isinstance(spec[0], list):
        return [str(choice) for choice in spec[0]]
    if spec[0] == "COMBO" and len(spec) > 1 and isinstance(spec[1], dict):
        return [str(choice) for choice in spec[1].get("options", [])]
    return []


class ComfyUIClient:
    def __init__(self, base_url: str, *, timeout: float = HTTP_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _ws_url(self, client_id: str) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", f"clientId={client_id}", ""))

    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> requests.Response:
        try:
            return self.session.request(method, self._url(path), timeout=timeout or self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ComfyUIUnavailable(f"ComfyUI at {self.base_url} is unreachable ({exc.__class__.__name__}).") from exc

    def _get_json(self, path: str, **kwargs: Any) -> Any:
        response = self._request("GET", path, **kwargs)
        if response.status_code != 200:
            raise ComfyUIUnavailable(f"GET {path} answered {response.status_code}.")
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyUIUnavailable(f"GET {path} did not answer JSON.") from exc

    def object_info(self, node_class: str) -> dict[str, Any]:
        """The node class's spec, or {} when the server does not know it."""
        return self._get_json(f"/object_info/{node_class}").get(node_class, {})

    def system_stats(self) -> dict[str, Any]:
        return self._get_json("/system_stats")

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The finished prompt's history entry, or None while it is unknown/unfinished."""
        return self._get_json(f"/history/{prompt_id}").get(prompt_id)

    def interrupt(self, prompt_id: str) -> None:
        """Stop our prompt if it runs (targeted interrupt) and drop it if still pending."""
        self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
        self._request("POST", "/queue", json={"delete": [prompt_id]})

    def is_queued(self, prompt_id: str) -> bool:
        queue = self._get_json("/queue")
        items = queue.get("queue_running", []) + queue.get("queue_pending", [])
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    def submit(self, graph: dict[str, Any], prompt_id: str, client_id: str) -> None:
        response = self._request("POST", "/prompt", json={"prompt": graph, "client_id": client_id,
                                                          "prompt_id": prompt_id})
        if response.status_code == 200:
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 400 and isinstance(body, dict):
            raise PromptRejected(describe_rejection(body), body.get("node_errors"))
        raise ComfyUIUnavailable(f"POST /prompt answered {response.status_code}.")

    def fetch_image(self, ref: ImageRef) -> bytes:
        response = self._request("GET", "/view", timeout=VIEW_TIMEOUT,
                                 params={"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type})
        if response.status_code != 200:
            raise ComfyUIError(f"GET /view of {ref.filename} answered {response.status_code}.",
                               code="OUTPUT_MISSING")
        return response.content

    def run(self, graph: dict[str, Any], output_nodes: list[str], *, deadline: float,
            prompt_id: str | None = None, on_progress: ProgressCallback | None = None,
            should_cancel: CancelCheck | None = None) -> list[FetchedImage]:
        """Execute ``graph`` and return the images of ``output_nodes`` in order.

        ``deadline`` is a ``time.monotonic()`` value. Raises PromptRejected, ComfyUIError
        (execution error, deadline, lost connection) or PromptInterrupted.
        """
        prompt_id = prompt_id or str(uuid.uuid4())
        run = _PromptRun(self, prompt_id, deadline, on_progress, should_cancel)
        run.execute(graph)
        entry = self._history_after_finish(prompt_id)
        refs = [ImageRef(node_id, image["filename"], image.get("subfolder", ""), image.get("type", "output"))
                for node_id in output_nodes
                for image in (entry.get("outputs", {}).get(node_id, {}).get("images", []))]
        return [FetchedImage(ref, self.fetch_image(ref)) for ref in refs]

    def _history_after_finish(self, prompt_id: str) -> dict[str, Any]:
        for _ in range(20):
            entry = self.history(prompt_id)
            if entry is not None:
                return entry
            time.sleep(0.1)
        raise ComfyUIError("ComfyUI reported the prompt finished but has no history for it.",
                           code="HISTORY_MISSING")


def describe_rejection(body: dict[str, Any]) -> str:
    """A readable message from a 400 ``{"error", "node_errors"}`` body, naming node and reason."""
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
    messages = status.get("messages") or []
    for kind, payload in reversed(messages):
        if kind == "execution_error":
            return "error", payload
        if kind == "execution_interrupted":
            return "interrupted", payload
    if status.get("status_str") == "success" or status.get("completed"):
        return "success", {}
    return "error", {"exception_message": f"ComfyUI ended the prompt with status {status.get('status_str')!r}"}


def _close(ws: websocket.WebSocket) -> None:
    """Close politely if still open, and always release the socket."""
    try:
        ws.close(timeout=1)
    except (websocket.WebSocketException, OSError):
        pass  # the peer is already gone; shutdown below frees the socket
    ws.shutdown()


class _PromptRun:
    """One prompt's life on the WebSocket: submit, follow, reconcile after a drop."""

    def __init__(self, client: ComfyUIClient, prompt_id: str, deadline: float,
                 on_progress: ProgressCallback | None, should_cancel: CancelCheck | None) -> None:
        self.client = client
        self.prompt_id = prompt_id
        self.deadline = deadline
        self.on_progress = on_progress
        self.should_cancel = should_cancel
        self.client_id = uuid.uuid4().hex
        self.outcome: str | None = None
        self.ending = "success"  # what the final ``executing: null`` will mean
        self.payload: dict[str, Any] = {}
        self.cancelling = False
        self.interrupt_sent_at = 0.0
        self.last_heard = time.monotonic()

    def _connect(self) -> websocket.WebSocket:
        try:
            return websocket.create_connection(self.client._ws_url(self.client_id), timeout=self.client.timeout,
                                               suppress_origin=True)
        except (websocket.WebSocketException, OSError) as exc:
            raise ComfyUIUnavailable(f"ComfyUI WebSocket is unreachable ({exc.__class__.__name__}).") from exc

    def execute(self, graph: dict[str, Any]) -> None:
        ws = self._connect()
        reconnected = False
        try:
            self.client.submit(graph, self.prompt_id, self.client_id)
            while self.outcome is None:
                try:
                    self._follow(ws)
                except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError) as exc:
                    if reconnected:
                        raise ComfyUIError("Lost the ComfyUI WebSocket twice during one job.",
                                           code="COMFYUI_CONNECTION_LOST") from exc
                    log.warning("ComfyUI socket dropped during prompt %s; reconnecting", self.prompt_id)
                    reconnected = True
                    _close(ws)
                    ws = self._connect()
                    self._reconcile()
        finally:
            _close(ws)
        self._raise_for_outcome()

    def _follow(self, ws: websocket.WebSocket) -> None:
        """Read messages until the prompt finishes; check cancel, silence and the deadline meanwhile."""
        ws.settimeout(WS_POLL_SECONDS)
        while self.outcome is None:
            try:
                opcode, frame = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                self._on_idle()
                continue
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise websocket.WebSocketConnectionClosedException("server closed the socket")
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue  # binary preview frames are not used yet
            self._on_message(json.loads(frame))

    def _on_message(self, message: dict[str, Any]) -> None:
        kind, data = message.get("type"), message.get("data") or {}
        if data.get("prompt_id") != self.prompt_id:
            return
        self.last_heard = time.monotonic()
        if kind == "progress" and self.on_progress is not None:
            self.on_progress(int(data.get("value", 0)), int(data.get("max", 0)))
            self._check_cancel()
        elif kind == "execution_error":
            self.payload, self.ending = data, "error"
        elif kind == "execution_interrupted":
            self.ending = "interrupted"
        elif kind == "executing" and data.get("node") is None:
            self.outcome = self.ending

    def _on_idle(self) -> None:
        now = time.monotonic()
        self._check_cancel()
        if now > self.deadline and not self.cancelling:
            self.client.interrupt(self.prompt_id)
            raise ComfyUIError("The job ran past its deadline and was stopped.", code="DEADLINE_EXCEEDED")
        if now - self.last_heard > SILENCE_CHECK_SECONDS:
            self.last_heard = now
            self._reconcile()
        if self.cancelling and now - self.interrupt_sent_at > INTERRUPT_GRACE_SECONDS:
            raise ComfyUIError("ComfyUI did not stop the prompt after an interrupt.", code="INTERRUPT_TIMEOUT")

    def _check_cancel(self) -> None:
        if self.cancelling or self.should_cancel is None or not self.should_cancel():
            return
        self.cancelling = True
        self.interrupt_sent_at = time.monotonic()
        self.client.interrupt(self.prompt_id)
        self._reconcile()

    def _reconcile(self) -> None:
        """Learn the outcome from /history (after a socket drop, silence or a cancel)."""
        entry = self.client.history(self.prompt_id)
        if entry is not None:
            self.outcome, self.payload = outcome_from_history(entry)
        elif self.cancelling and not self.client.is_queued(self.prompt_id):
            self.outcome = "interrupted"  # deleted from the queue before it started: no message will come

    def _raise_for_outcome(self) -> None:
        if self.outcome == "interrupted":
            raise PromptInterrupted(self.prompt_id)
        if self.outcome == "error":
            node = self.payload.get("node_type") or self.payload.get("node_id") or "?"
            message = self.payload.get("exception_message") or "ComfyUI failed while running the workflow."
            raise ComfyUIError(f"{str(message).strip()} (node {node})", code="EXECUTION_ERROR")
