"""A small WebSocket client plus the graph priming used by the conformance tests."""
from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import websocket

CHECKPOINT = "sd15_demo.safetensors"
OTHER_CHECKPOINT = "sdxl_demo.safetensors"


class Socket:
    def __init__(self, ws_url: str, client_id: str | None = None, features: dict | None = None) -> None:
        self.client_id = client_id or uuid.uuid4().hex
        self.conn = websocket.create_connection(f"{ws_url}?clientId={self.client_id}", timeout=10, suppress_origin=True)
        self.received: list[Any] = []
        if features is not None:
            self.conn.send(json.dumps({"type": "feature_flags", "data": features}))

    def recv(self, timeout: float = 10) -> Any:
        self.conn.settimeout(timeout)
        frame = self.conn.recv()
        if frame == "":
            raise websocket.WebSocketConnectionClosedException("server closed the socket")
        message = frame if isinstance(frame, bytes) else json.loads(frame)
        self.received.append(message)
        return message

    def until(self, predicate: Any, timeout: float = 10) -> list[Any]:
        start = len(self.received)
        while True:
            message = self.recv(timeout)
            if predicate(message):
                return self.received[start:]

    def until_finished(self, prompt_id: str, timeout: float = 10) -> list[Any]:
        return self.until(lambda m: isinstance(m, dict) and m["type"] == "executing"
                          and m["data"]["node"] is None and m["data"].get("prompt_id") == prompt_id, timeout)

    def close(self) -> None:
        self.conn.close()
        self.conn.shutdown()


def shape(message: Any) -> dict[str, Any]:
    """The same reduction make_fixtures.message_shape applies to recorded frames."""
    if isinstance(message, bytes):
        return {"binary": int.from_bytes(message[:4], "big")}
    data = message["data"]
    result: dict[str, Any] = {"type": message["type"], "keys": sorted(data)}
    if "node" in data:
        result["node"] = data["node"]
    if message["type"] == "progress_state":
        result["nodes"] = {node_id: state["state"] for node_id, state in data["nodes"].items()}
    if message["type"] == "execution_cached":
        result["nodes"] = data["nodes"]
    if message["type"] == "status":
        result["queue_remaining"] = data["status"]["exec_info"]["queue_remaining"]
    return result


def localise(graph: dict[str, Any], **replacements: str) -> dict[str, Any]:
    """Swap the trace's model and file names for the emulator's."""
    graph = copy.deepcopy(graph)
    for node in graph.values():
        if "ckpt_name" in node["inputs"]:
            node["inputs"]["ckpt_name"] = CHECKPOINT
        for name, value in replacements.items():
            if name in node["inputs"]:
                node["inputs"][name] = value
    return graph


def priming_graph(graph: dict[str, Any], cached: list[str]) -> dict[str, Any]:
    """A text2img graph after whose run exactly `cached` of `graph`'s nodes are cached."""
    base = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": OTHER_CHECKPOINT}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "priming positive", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "priming negative", "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 24, "height": 24, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {
            "seed": 987654, "steps": 1, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "prime/p"}},
    }
    for node_id in cached:
        if node_id in graph:
            base[node_id] = copy.deepcopy(graph[node_id])
    return base
