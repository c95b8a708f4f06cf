"""The thumbnail chain the render worker adds: ImageFromBatch -> ImageScaleToMaxDimension -> SaveAnimatedWEBP."""
from __future__ import annotations

import io
import json
import uuid
from typing import Any

import requests
from PIL import Image

from tests.comfyui_emulator.emulator_ws import Socket, localise
from tests.comfyui_emulator.test_ws_conformance import FIXTURES, post


def batch_graph(width: int, height: int, batch: int) -> dict[str, Any]:
    """text2img up to VAEDecode (node 8), without its SaveImage."""
    graph = localise(FIXTURES["ws_a_text2img_cold"]["requests"][0]["prompt"])
    graph["5"]["inputs"].update(width=width, height=height, batch_size=batch)
    graph["3"]["inputs"]["seed"] = uuid.uuid4().int % 10**9
    del graph["9"]
    return graph


def save_webp(images: list[Any], prefix: str, lossless: bool = False) -> dict[str, Any]:
    return {"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": images, "filename_prefix": prefix, "fps": 6.0, "lossless": lossless, "quality": 80,
        "method": "fastest"}}


def run(emu: Any, graph: dict[str, Any], extra_data: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Post the graph; returns its prompt id and each output node's `executed` output."""
    socket = Socket(emu.ws_url)
    try:
        socket.recv()
        body = {"prompt": graph, "client_id": socket.client_id, "extra_data": extra_data or {}}
        prompt_id = post(emu, body)["prompt_id"]
        messages = socket.until_finished(prompt_id, timeout=30)
    finally:
        socket.close()
    assert [m["type"] for m in messages if isinstance(m, dict) and m["type"].startswith("execution_")][-1] == "execution_success"
    return prompt_id, {m["data"]["node"]: m["data"]["output"] for m in messages if isinstance(m, dict) and m["type"] == "executed"}


def view(emu: Any, ref: dict[str, str]) -> requests.Response:
    response = requests.get(f"{emu.base_url}/view", params=ref, timeout=5)
    assert response.status_code == 200
    return response


def test_thumbnail_chain_saves_a_still_webp(emu: Any) -> None:
    graph = batch_graph(256, 128, 2)
    graph["20"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["8", 0], "batch_index": 1, "length": 1}}
    graph["21"] = {"class_type": "ImageScaleToMaxDimension",
                   "inputs": {"image": ["20", 0], "upscale_method": "area", "largest_size": 512}}
    graph["22"] = save_webp(["21", 0], "thumbs/t")
    workflow = {"nodes": [{"id": 22}]}
    prompt_id, outputs = run(emu, graph, {"extra_pnginfo": {"workflow": workflow}})

    output = outputs["22"]
    assert output["animated"] == [False]
    [ref] = output["images"]
    assert ref["filename"].startswith("t_") and ref["filename"].endswith("_.webp")
    assert (ref["subfolder"], ref["type"]) == ("thumbs", "output")
    assert requests.get(f"{emu.base_url}/history/{prompt_id}", timeout=5).json()[prompt_id]["outputs"]["22"] == output

    response = view(emu, ref)
    assert response.headers["Content-Type"] == "image/webp"
    picture = Image.open(io.BytesIO(response.content))
    assert (picture.format, picture.size, picture.n_frames, picture.is_animated) == ("WEBP", (512, 256), 1, False)
    exif = picture.getexif()
    assert json.loads(exif[0x0110].removeprefix("prompt:")) == graph
    assert exif[0x010F] == f"workflow:{json.dumps(workflow)}"


def test_a_batch_saves_one_animated_webp(emu: Any) -> None:
    graph = batch_graph(64, 48, 2)
    graph["22"] = save_webp(["8", 0], "anim/a")
    _, outputs = run(emu, graph)

    assert outputs["22"]["animated"] == [True]
    [ref] = outputs["22"]["images"]
    picture = Image.open(io.BytesIO(view(emu, ref).content))
    assert (picture.format, picture.size, picture.n_frames, picture.is_animated) == ("WEBP", (64, 48), 2, True)


def test_image_from_batch_clamps_to_the_last_image(emu: Any) -> None:
    graph = batch_graph(40, 32, 2)
    graph["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "clamp/all"}}
    graph["20"] = {"class_type": "ImageFromBatch", "inputs": {"image": ["8", 0], "batch_index": 5, "length": 3}}
    graph["30"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "clamp/picked"}}
    _, outputs = run(emu, graph)

    whole = [Image.open(io.BytesIO(view(emu, ref).content)).tobytes() for ref in outputs["9"]["images"]]
    [picked_ref] = outputs["30"]["images"]
    picked = Image.open(io.BytesIO(view(emu, picked_ref).content)).tobytes()
    assert len(whole) == 2 and whole[0] != whole[1]
    assert picked == whole[1]


def _run_messages(emu: Any, graph: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Post the graph; its prompt id and the text messages until it finished, whatever its outcome."""
    socket = Socket(emu.ws_url)
    try:
        socket.recv()
        prompt_id = post(emu, {"prompt": graph, "client_id": socket.client_id})["prompt_id"]
        return prompt_id, [m for m in socket.until_finished(prompt_id, timeout=30) if isinstance(m, dict)]
    finally:
        socket.close()


def test_fail_node_class_fails_that_node_at_execution_keeping_what_ran_before(emu: Any) -> None:
    """As ComfyUI does when a node raises (a Pillow without WebP, memory running out): an
    ``execution_error`` naming the node, history status error with the outputs of the output
    nodes that finished before it (SaveImage here). One-shot unless persistent."""
    graph = batch_graph(64, 64, 1)
    graph["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "fail/img"}}
    graph["21"] = {"class_type": "ImageScaleToMaxDimension",
                   "inputs": {"image": ["8", 0], "upscale_method": "area", "largest_size": 512}}
    graph["22"] = save_webp(["21", 0], "fail/thumb")
    emu.configure(faults={"fail_node_class": "SaveAnimatedWEBP", "persistent": True})
    for attempt in range(2):
        prompt_id, messages = _run_messages(emu, graph)
        kinds = [m["type"] for m in messages]
        error = next(m["data"] for m in messages if m["type"] == "execution_error")
        assert (error["node_id"], error["node_type"]) == ("22", "SaveAnimatedWEBP")
        assert "SaveAnimatedWEBP" in error["exception_message"] and error["exception_type"] == "RuntimeError"
        assert "22" not in error["executed"] and ("21" in error["executed"]) == (attempt == 0), \
            "the nodes that ran stay cached"
        assert "execution_success" not in kinds and kinds[-2:] == ["status", "executing"]
        entry = requests.get(f"{emu.base_url}/history/{prompt_id}", timeout=5).json()[prompt_id]
        assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
        assert entry["status"]["messages"][-1][0] == "execution_error"
        assert set(entry["outputs"]) == {"9"}, "SaveImage ran first and its output stays in history"

    emu.configure(faults={"persistent": False})  # armed still: it fails the next run, then is disarmed
    _, messages = _run_messages(emu, graph)
    assert "execution_error" in [m["type"] for m in messages]
    _, outputs = run(emu, graph)
    assert set(outputs) == {"9", "22"}
