"""Graph helpers: cache signatures and ComfyUI's execution order (comfy_execution.graph)."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

from services.comfyui_emulator.validation import is_link


def signatures(prompt: dict[str, Any]) -> dict[str, str]:
    """Per node, a digest of its class and inputs with links replaced by their source's digest."""
    result: dict[str, str] = {}

    def signature(node_id: str) -> str:
        if node_id not in result:
            node = prompt[node_id]
            inputs = {
                name: ["link", signature(value[0]), value[1]] if is_link(value) else value
                for name, value in sorted(node["inputs"].items())
            }
            body = json.dumps([node["class_type"], inputs], sort_keys=True, default=str)
            result[node_id] = hashlib.sha256(body.encode()).hexdigest()
        return result[node_id]

    for node_id in prompt:
        signature(node_id)
    return result


class ExecutionList:
    """Mirrors ComfyUI's ExecutionList so node order matches a real server's."""

    def __init__(self, prompt: dict[str, Any], is_output: Callable[[str], bool], is_cached: Callable[[str], bool]) -> None:
        self.prompt = prompt
        self.is_output = is_output
        self.is_cached = is_cached
        self.pending: dict[str, None] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, None]] = {}

    def add_node(self, node_id: str) -> None:
        stack = [node_id]
        links: list[tuple[str, str]] = []
        while stack:
            current = stack.pop()
            if current in self.pending:
                continue
            self.pending[current] = None
            self.block_count[current] = 0
            self.blocking[current] = {}
            for value in self.prompt[current]["inputs"].values():
                if is_link(value):
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], current))
        for source, target in links:
            if self.is_cached(source) or target in self.blocking.get(source, {}):
                continue
            self.blocking[source][target] = None
            self.block_count[target] += 1

    def __iter__(self) -> Iterator[str]:
        while self.pending:
            available = [node for node in self.pending if self.block_count[node] == 0]
            node = self._ux_friendly_pick(available)
            yield node
            del self.pending[node]
            for blocked in self.blocking.pop(node, {}):
                self.block_count[blocked] -= 1

    def _ux_friendly_pick(self, available: list[str]) -> str:
        for node in available:
            if self.is_output(node):
                return node
        for node in available:
            if any(self.is_output(blocked) for blocked in self.blocking[node]):
                return node
        for node in available:
            for blocked in self.blocking[node]:
                if any(self.is_output(further) for further in self.blocking[blocked]):
                    return node
        return available[0]
