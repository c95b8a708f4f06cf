"""The prompt queue, the single executor, history and the output cache."""
from __future__ import annotations

import asyncio
import dataclasses
import os
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from services.comfyui_emulator import images
from services.comfyui_emulator.catalog import Catalog
from services.comfyui_emulator.config import EmulatorConfig, Faults
from services.comfyui_emulator.graph import ExecutionList, signatures
from services.comfyui_emulator.hub import Hub
from services.comfyui_emulator.nodes import NODE_FUNCTIONS, random_preview_letters
from services.comfyui_emulator.storage import Storage
from services.comfyui_emulator.validation import is_link

CRASH_EXIT_CODE = 70
EXECUTED_TIMES_KEPT = 1000


class Interrupted(Exception):
    pass


def now_ms() -> int:
    return int(time.time() * 1000)


def exception_type_name(exc: BaseException) -> str:
    module = type(exc).__module__
    return type(exc).__qualname__ if module == "builtins" else f"{module}.{type(exc).__qualname__}"


@dataclass(order=True)
class QueueItem:
    number: float
    sequence: int
    prompt_id: str = field(compare=False)
    prompt: dict[str, Any] = field(compare=False)
    extra_data: dict[str, Any] = field(compare=False)
    outputs: list[str] = field(compare=False)

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")

    def as_list(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


@dataclass
class CachedNode:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None


class Run:
    """One prompt's execution: sends its messages and implements NodeContext for its nodes."""

    def __init__(self, engine: Engine, item: QueueItem, faults: Faults) -> None:
        self.engine = engine
        self.item = item
        self.faults = faults
        self.storage = engine.storage
        self.graph = item.prompt
        self.extra_data = item.extra_data
        self.node_id = ""
        self.progress: dict[str, dict[str, Any]] = {}
        self.messages: list[list[Any]] = []
        self.outputs: dict[str, Any] = {}
        self.meta: dict[str, Any] = {}
        self.executed: list[str] = []

    async def to_client(self, event: str, data: dict[str, Any], record: bool = False) -> None:
        if record:
            self.messages.append([event, data])
        if self.item.client_id is not None:
            await self.engine.hub.send(event, data, self.item.client_id)

    async def to_client_or_all(self, event: str, data: dict[str, Any]) -> None:
        await self.engine.hub.send(event, data, self.item.client_id)

    async def send_progress_state(self) -> None:
        nodes = {node_id: dict(state) for node_id, state in self.progress.items()}
        await self.to_client_or_all("progress_state", {"prompt_id": self.item.prompt_id, "nodes": nodes})

    def set_progress(self, node_id: str, value: float, maximum: float, state: str) -> None:
        self.progress[node_id] = {
            "value": value, "max": maximum, "state": state, "node_id": node_id, "prompt_id": self.item.prompt_id,
            "display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id,
        }

    async def load_model(self, name: str) -> None:
        if name not in self.engine.loaded_models:
            await asyncio.sleep(self.engine.config.load_delay)
            self.engine.loaded_models.add(name)

    async def switch_checkpoint(self, name: str) -> None:
        """One checkpoint (or diffusion model) is resident at a time, as in a GPU's VRAM: another
        one costs ``model_load_seconds``. Real ComfyUI does not tell which one is loaded
        (neither ``/system_stats`` nor ``/object_info``), so neither does the emulator; the
        render worker remembers the last one it ran, and ``/emulator/stats`` tells tests."""
        engine = self.engine
        if engine.resident_checkpoint != name:
            await asyncio.sleep(engine.config.model_load_seconds)
            engine.resident_checkpoint = name
            engine.checkpoint_loads += 1
        await self.load_model(name)

    def preview_prefix(self) -> str:
        letters = self.engine.preview_letters.setdefault(self.node_id, random_preview_letters())
        return f"ComfyUI_temp_{letters}"

    async def sampler_step(self, step: int, total: int, picture: Image.Image) -> None:
        if step == 1 and self.faults.execution_error:
            raise RuntimeError(self.faults.execution_error)
        self._raise_if_interrupted()
        await asyncio.sleep(self.engine.config.step_delay)
        self._raise_if_interrupted()
        self.set_progress(self.node_id, step, total, "running")
        await self.send_progress_state()
        progress = {"value": step, "max": total, "prompt_id": self.item.prompt_id, "node": self.node_id}
        await self._send_step_messages(progress, picture, step, total)
        await self._apply_step_faults(step)

    async def _send_step_messages(self, progress: dict[str, Any], picture: Image.Image, step: int, total: int) -> None:
        if self.engine.config.preview_method == "none":
            await self.to_client_or_all("progress", progress)
            return
        jpeg = images.preview_jpeg(picture, step, total, hash(self.item.prompt_id) & 0xFFFF)
        client_id = self.item.client_id
        if self.engine.hub.supports_preview_metadata(client_id):
            metadata = {
                "node_id": self.node_id, "prompt_id": self.item.prompt_id, "display_node_id": self.node_id,
                "parent_node_id": None, "real_node_id": self.node_id, "image_type": "image/jpeg",
            }
            await self.engine.hub.send_preview(jpeg, client_id, metadata)
            await self.to_client_or_all("progress", progress)
        else:
            await self.to_client_or_all("progress", progress)
            await self.engine.hub.send_preview(jpeg, client_id, None)

    async def _apply_step_faults(self, step: int) -> None:
        if self.faults.drop_socket_after_steps == step:
            await self.engine.hub.close_all()
        if self.faults.crash:
            await asyncio.sleep(0.05)
            os._exit(CRASH_EXIT_CODE)
        while self.faults.hang:
            self._raise_if_interrupted()
            await asyncio.sleep(0.02)

    def _raise_if_interrupted(self) -> None:
        if self.engine.interrupt_requested:
            raise Interrupted()

    async def execute(self) -> str:
        """Run the graph; returns the final message type."""
        item, engine = self.item, self.engine
        await self.to_client("execution_start", {"prompt_id": item.prompt_id, "timestamp": now_ms()}, record=True)
        node_signatures = signatures(item.prompt)
        cached = [node_id for node_id in item.prompt if node_signatures[node_id] in engine.cache]
        await self.to_client("execution_cached", {"nodes": cached, "prompt_id": item.prompt_id, "timestamp": now_ms()},
                             record=True)
        order = ExecutionList(item.prompt, self._is_output, lambda n: node_signatures[n] in engine.cache)
        for output_id in item.outputs:
            order.add_node(output_id)
        outcome = "execution_success"
        try:
            for node_id in order:
                await self._execute_node(node_id, node_signatures)
        except Interrupted:
            outcome = "execution_interrupted"
            await self._report_interrupt()
        except Exception as exc:
            outcome = "execution_error"
            await self._report_error(exc, list(order.pending) + self.executed)
        else:
            await self.to_client("execution_success", {"prompt_id": item.prompt_id, "timestamp": now_ms()}, record=True)
        engine.prune_cache(set(node_signatures.values()))
        return outcome

    def _is_output(self, node_id: str) -> bool:
        return self.engine.catalog.is_output_node(self.item.prompt[node_id]["class_type"])

    async def _execute_node(self, node_id: str, node_signatures: dict[str, str]) -> None:
        node = self.item.prompt[node_id]
        cached = self.engine.cache.get(node_signatures[node_id])
        if cached is not None:
            await self._publish_ui(node_id, cached.ui)
            self.set_progress(node_id, 1, 1, "finished")
            await self.send_progress_state()
            return
        self.node_id = node_id
        self._raise_if_interrupted()
        self.set_progress(node_id, 0.0, 1.0, "running")
        await self.send_progress_state()
        self.engine.last_node_id = node_id
        await self.to_client("executing", {"node": node_id, "display_node": node_id, "prompt_id": self.item.prompt_id})
        inputs = {
            name: self.engine.cache[node_signatures[value[0]]].outputs[value[1]] if is_link(value) else value
            for name, value in node["inputs"].items()
        }
        if node["class_type"] == self.faults.fail_node_class:
            raise RuntimeError(f"{node['class_type']} failed (injected)")
        outputs, ui = await NODE_FUNCTIONS[node["class_type"]](self, **inputs)
        self.engine.cache[node_signatures[node_id]] = CachedNode(outputs, ui)
        self.executed.append(node_id)
        await self._publish_ui(node_id, ui)
        state = self.progress[node_id]
        self.set_progress(node_id, state["max"], state["max"], "finished")
        await self.send_progress_state()

    async def _publish_ui(self, node_id: str, ui: dict[str, Any] | None) -> None:
        if ui is None:
            return
        self.outputs[node_id] = ui
        self.meta[node_id] = {"node_id": node_id, "display_node": node_id, "parent_node": None, "real_node_id": node_id}
        await self.to_client("executed", {
            "node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.item.prompt_id,
        })
        self.engine.note_executed(self.item.prompt_id)

    async def _report_interrupt(self) -> None:
        data = {
            "prompt_id": self.item.prompt_id, "node_id": self.node_id,
            "node_type": self.item.prompt[self.node_id]["class_type"] if self.node_id else None,
            "executed": list(self.executed), "timestamp": now_ms(),
        }
        self.messages.append(["execution_interrupted", data])
        await self.to_client_or_all("execution_interrupted", data)

    async def _report_error(self, exc: Exception, current_outputs: list[str]) -> None:
        node = self.item.prompt[self.node_id]
        current_inputs = {
            name: [value if isinstance(value, (str, int, float, bool, type(None))) else str(value)]
            for name, value in node["inputs"].items() if not is_link(value)
        }
        await self.to_client("execution_error", {
            "prompt_id": self.item.prompt_id, "node_id": self.node_id, "node_type": node["class_type"],
            "executed": list(self.executed), "exception_message": f"{exc}\n",
            "exception_type": exception_type_name(exc), "traceback": traceback.format_tb(exc.__traceback__),
            "current_inputs": current_inputs, "current_outputs": current_outputs, "timestamp": now_ms(),
        }, record=True)


class Engine:
    def __init__(self, config: EmulatorConfig, catalog: Catalog, storage: Storage, hub: Hub) -> None:
        self.config = config
        self.catalog = catalog
        self.storage = storage
        self.hub = hub
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, CachedNode] = {}
        self.loaded_models: set[str] = set()
        self.resident_checkpoint: str | None = None
        self.checkpoint_loads = 0
        self.preview_letters: dict[str, str] = {}
        self.interrupt_requested = False
        self.last_node_id: str | None = None
        self.next_number = 0
        self._sequence = 0
        self.executed_sent_at: dict[str, float] = {}
        self._wake = asyncio.Event()

    def note_executed(self, prompt_id: str) -> None:
        """When the prompt's latest ``executed`` message left (wall clock), for
        ``/emulator/stats``: benches time what follows ComfyUI's last message. The last
        EXECUTED_TIMES_KEPT prompts are kept."""
        self.executed_sent_at.pop(prompt_id, None)
        self.executed_sent_at[prompt_id] = time.time()
        while len(self.executed_sent_at) > EXECUTED_TIMES_KEPT:
            del self.executed_sent_at[next(iter(self.executed_sent_at))]

    def take_number(self, front: bool) -> int:
        """The server-wide counter; it advances on every parsed POST /prompt, accepted or not."""
        number = self.next_number
        self.next_number += 1
        return -number if front else number

    def queue_remaining(self) -> int:
        return len(self.pending) + (1 if self.running else 0)

    def status_data(self) -> dict[str, Any]:
        return {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}}

    async def broadcast_status(self) -> None:
        await self.hub.send("status", self.status_data())

    async def enqueue(self, number: float, prompt_id: str, prompt: dict[str, Any], extra_data: dict[str, Any],
                      outputs: list[str]) -> None:
        self._sequence += 1
        self.pending.append(QueueItem(number, self._sequence, prompt_id, prompt, extra_data, outputs))
        self.pending.sort()
        await self.broadcast_status()
        self._wake.set()

    async def delete_pending(self, prompt_ids: list[str]) -> None:
        self.pending = [item for item in self.pending if item.prompt_id not in prompt_ids]
        await self.broadcast_status()

    async def clear_pending(self) -> None:
        self.pending.clear()
        await self.broadcast_status()

    def interrupt(self, prompt_id: str | None) -> None:
        if self.running is not None and prompt_id in (None, self.running.prompt_id):
            self.interrupt_requested = True

    def prune_cache(self, keep: set[str]) -> None:
        """Like ComfyUI's classic cache: only the latest prompt's nodes stay cached."""
        self.cache = {key: value for key, value in self.cache.items() if key in keep}

    def history_page(self, max_items: int | None, offset: int = -1) -> dict[str, Any]:
        """ComfyUI's paging: a negative offset with max_items means "the most recent max_items"."""
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        entries = list(self.history.items())[max(offset, 0):]
        return dict(entries if max_items is None else entries[:max_items])

    def consume_faults(self) -> Faults:
        """Snapshot the armed faults for one run; disarm them unless persistent."""
        faults = dataclasses.replace(self.config.faults)
        if not faults.persistent:
            self.config.faults = Faults(**{name: getattr(faults, name) for name in Faults.REQUEST_FAULTS})
        return faults

    async def run_forever(self) -> None:
        while True:
            await self._wake.wait()
            if not self.pending:
                self._wake.clear()
                continue
            item = self.pending.pop(0)
            self.running = item
            self.interrupt_requested = False
            await self.broadcast_status()
            run = Run(self, item, self.consume_faults())
            outcome = await run.execute()
            entry = {
                "prompt": item.as_list(),
                "outputs": run.outputs if outcome == "execution_success" or run.outputs else {},
                "status": {
                    "status_str": "success" if outcome == "execution_success" else "error",
                    "completed": outcome == "execution_success",
                    "messages": run.messages,
                },
                "meta": run.meta,
            }
            if not run.faults.lose_history:
                self.history[item.prompt_id] = entry
            self.running = None
            self.last_node_id = None
            await self.broadcast_status()
            if item.client_id is not None:
                await self.hub.send("executing", {"node": None, "prompt_id": item.prompt_id}, item.client_id)
