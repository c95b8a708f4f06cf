"""Generated images: real PNGs of the requested size, deterministic in their inputs."""
from __future__ import annotations

import io
import json
from typing import Any

import requests
from PIL import Image

from tests.comfyui_emulator.emulator_ws import Socket, localise
from tests.comfyui_emulator.test_ws_conformance import FIXTURES


def render(emu: Any, width: int = 64, height: int = 48, batch: int = 2, seed: int = 5, text: str = "a red fox") -> list[Image.Image]:
    graph = localise(FIXTURES["ws_a_text2img_cold"]["requests"][0]["prompt"])
    graph["5"]["inputs"].update(width=width, height=height, batch_size=batch)
    graph["3"]["inputs"]["seed"] = seed
    graph["6"]["inputs"]["text"] = text
    graph["9"]["inputs"]["filename_prefix"] = f"det/{width}x{height}_{seed}"
    socket = Socket(emu.ws_url)
    socket.recv()
    prompt_id = requests.post(f"{emu.base_url}/prompt", json={"prompt": graph, "client_id": socket.client_id}, timeout=5).json()["prompt_id"]
    messages = socket.until_finished(prompt_id)
    socket.close()
    executed = [m for m in messages if isinstance(m, dict) and m["type"] == "executed"]
    pictures = []
    for ref in executed[-1]["data"]["output"]["images"]:
        body = requests.get(f"{emu.base_url}/view", params=ref, timeout=5).content
        assert body[:8] == b"\x89PNG\r\n\x1a\n"
        pictures.append(Image.open(io.BytesIO(body)))
    return pictures


def test_size_batch_and_naming(emu: Any) -> None:
    pictures = render(emu, width=72, height=40, batch=3)
    assert [p.size for p in pictures] == [(72, 40)] * 3
    assert json.loads(pictures[0].text["prompt"])["6"]["inputs"]["text"] == "a red fox", "ComfyUI's metadata"
    assert len({p.tobytes() for p in pictures}) == 3


def test_identical_inputs_give_identical_pixels(emu: Any) -> None:
    first = render(emu, seed=11, batch=1)[0]
    render(emu, seed=12, batch=1)
    again = render(emu, seed=11, batch=1)[0]
    assert first.tobytes() == again.tobytes()


def test_seed_and_prompt_change_the_image(emu: Any) -> None:
    base = render(emu, seed=21, batch=1)[0].tobytes()
    assert render(emu, seed=22, batch=1)[0].tobytes() != base
    assert render(emu, seed=21, batch=1, text="a blue whale")[0].tobytes() != base

