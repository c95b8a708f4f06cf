"""Fault injection through /emulator/config, and the less common graphs."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket
from PIL import Image

from tests.comfyui_emulator.conftest import start_emulator, stop_emulator
from tests.comfyui_emulator.emulator_ws import Socket, localise
from tests.comfyui_emulator.test_ws_conformance import FIXTURES


def text2img(seed: int, steps: int = 4) -> dict[str, Any]:
    graph = localise(FIXTURES["ws_a_text2img_cold"]["requests"][0]["prompt"])
    graph["3"]["inputs"].update(seed=seed, steps=steps)
    return graph


def submit(emu: Any, graph: dict[str, Any]) -> tuple[Socket, str]:
    socket = Socket(emu.ws_url)
    socket.recv()
    response = requests.post(f"{emu.base_url}/prompt", json={"prompt": graph, "client_id": socket.client_id}, timeout=5)
    return socket, response.json()["prompt_id"]


def types(messages: list[Any]) -> list[str]:
    return [m["type"] for m in messages if isinstance(m, dict)]


def test_config_reads_back(emu: Any) -> None:
    config = emu.configure(step_delay=0.02, execution_error="boom")
    assert config["step_delay"] == 0.02 and config["faults"]["execution_error"] == "boom"
    assert requests.get(f"{emu.base_url}/emulator/config", timeout=5).json() == config
    assert requests.post(f"{emu.base_url}/emulator/config", json={"nope": 1}, timeout=5).status_code == 400


def test_a_checkpoint_switch_costs_the_model_load_time_and_is_counted(emu: Any) -> None:
    """One checkpoint is resident at a time; /system_stats and /object_info do not tell which
    (as real ComfyUI), /emulator/stats does."""
    emu.configure(model_load_seconds=0.2)
    before = requests.get(f"{emu.base_url}/emulator/stats", timeout=5).json()["checkpoint_loads"]
    loads = []
    for seed, checkpoint in enumerate(["sd15_demo.safetensors", "sd15_demo.safetensors", "sdxl_demo.safetensors",
                                       "sd15_demo.safetensors"], start=4100):
        graph = text2img(seed=seed)
        loader = next(node for node in graph.values() if node["class_type"] == "CheckpointLoaderSimple")
        loader["inputs"]["ckpt_name"] = checkpoint
        socket, prompt_id = submit(emu, graph)
        assert "execution_success" in types(socket.until_finished(prompt_id))
        socket.close()
        stats = requests.get(f"{emu.base_url}/emulator/stats", timeout=5).json()
        loads.append((stats["resident_checkpoint"], stats["checkpoint_loads"] - before))
    assert [resident for resident, _ in loads] == ["sd15_demo.safetensors", "sd15_demo.safetensors",
                                                  "sdxl_demo.safetensors", "sd15_demo.safetensors"]
    assert loads[-1][1] - loads[0][1] == 2, "the same checkpoint twice in a row is not loaded again"
    system = requests.get(f"{emu.base_url}/system_stats", timeout=5).json()
    assert "sd15" not in str(system) and set(system) == {"system", "devices"}


def test_execution_error_is_one_shot(emu: Any) -> None:
    emu.configure(execution_error="CUDA out of memory")
    socket, prompt_id = submit(emu, text2img(seed=3001))
    messages = socket.until_finished(prompt_id)
    error = next(m["data"] for m in messages if isinstance(m, dict) and m["type"] == "execution_error")
    assert (error["node_type"], error["exception_message"]) == ("KSampler", "CUDA out of memory\n")
    assert types(messages)[-2:] == ["status", "executing"]
    retry = requests.post(f"{emu.base_url}/prompt", json={"prompt": text2img(seed=3002), "client_id": socket.client_id}, timeout=5)
    assert "execution_success" in types(socket.until_finished(retry.json()["prompt_id"]))
    socket.close()


def test_hang_until_interrupted(emu: Any) -> None:
    emu.configure(hang=True)
    socket, prompt_id = submit(emu, text2img(seed=3003))
    socket.until(lambda m: isinstance(m, dict) and m["type"] == "progress")
    with pytest.raises(websocket.WebSocketTimeoutException):
        socket.recv(timeout=0.3)
    requests.post(f"{emu.base_url}/interrupt", json={"prompt_id": prompt_id}, timeout=5)
    assert "execution_interrupted" in types(socket.until_finished(prompt_id))
    socket.close()


def test_drop_socket_after_steps(emu: Any) -> None:
    emu.configure(drop_socket_after_steps=2)
    socket, prompt_id = submit(emu, text2img(seed=3004))
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        socket.until_finished(prompt_id)
    progress = [m["data"]["value"] for m in socket.received if isinstance(m, dict) and m["type"] == "progress"]
    socket.close()
    assert progress == [1, 2]
    for _ in range(200):
        if requests.get(f"{emu.base_url}/history/{prompt_id}", timeout=5).json():
            break
    assert requests.get(f"{emu.base_url}/history/{prompt_id}", timeout=5).json()[prompt_id]["status"]["completed"]


def test_reject_with_html_once(emu: Any) -> None:
    emu.configure(reject_with_html=True)
    rejected = requests.post(f"{emu.base_url}/prompt", json={"prompt": text2img(seed=3005)}, timeout=5)
    assert rejected.status_code == 502 and rejected.headers["Content-Type"].startswith("text/html")
    assert requests.post(f"{emu.base_url}/prompt", json={"prompt": text2img(seed=3005)}, timeout=5).status_code == 200


def _finish(emu: Any, seed: int) -> str:
    socket, prompt_id = submit(emu, text2img(seed=seed))
    socket.until(lambda m: isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is None)
    socket.close()
    return prompt_id


def test_truncated_history_once(emu: Any) -> None:
    prompt_id = _finish(emu, 3101)
    emu.configure(truncate_history=True)
    cut = requests.get(f"{emu.base_url}/history/{prompt_id}", timeout=5)
    assert cut.status_code == 200 and cut.headers["Content-Type"].startswith("application/json")
    with pytest.raises(ValueError):
        cut.json()
    assert prompt_id in requests.get(f"{emu.base_url}/history/{prompt_id}", timeout=5).json()


def test_view_not_found_and_lost_history(emu: Any) -> None:
    prompt_id = _finish(emu, 3102)
    image = requests.get(f"{emu.base_url}/history/{prompt_id}", timeout=5).json()[prompt_id]["outputs"]["9"]["images"][0]
    emu.configure(view_not_found=True)
    assert requests.get(f"{emu.base_url}/view", params=image, timeout=5).status_code == 404
    assert requests.get(f"{emu.base_url}/view", params=image, timeout=5).status_code == 200
    emu.configure(lose_history=True)
    lost = _finish(emu, 3103)
    assert requests.get(f"{emu.base_url}/history/{lost}", timeout=5).json() == {}, "as after a restart"


def test_model_lists_change_at_run_time(emu: Any) -> None:
    emu.configure(checkpoints=["only.safetensors"], upscale_models=[])
    info = requests.get(f"{emu.base_url}/object_info/CheckpointLoaderSimple", timeout=5).json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == ["only.safetensors"]
    rejected = requests.post(f"{emu.base_url}/prompt", json={"prompt": text2img(seed=3105)}, timeout=5)
    assert rejected.status_code == 400 and "4" in rejected.json()["node_errors"]
    emu.configure(upscale_models=["demo_x4.safetensors"])


def test_flux_graph_with_conditioning_zero_out_runs(emu: Any) -> None:
    from services.render.workflows import load_templates
    graph = load_templates()["flux_text2img"].variants[0].graph
    graph = {**graph, "286": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux_demo.safetensors",
                                                                     "weight_dtype": "default"}},
             "285": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                                "clip_name2": "t5xxl_demo.safetensors",
                                                                "type": "flux", "device": "default"}},
             "288": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
             "287": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    socket, prompt_id = submit(emu, graph)
    finished = socket.until(lambda m: isinstance(m, dict) and m["type"] == "executing" and m["data"]["node"] is None)
    socket.close()
    assert "execution_success" in types(finished)


def test_crash_exits_the_process(tmp_path: Path) -> None:
    own = start_emulator(tmp_path)
    try:
        own.configure(crash=True)
        socket, _ = submit(own, text2img(seed=3006))
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            socket.until(lambda m: False)
        socket.close()
        assert own.process.wait(timeout=10) != 0
    finally:
        stop_emulator(own)


def test_img2img_and_upscales_follow_sizes(emu: Any) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 56), (30, 120, 200)).save(buffer, format="PNG")
    name = requests.post(f"{emu.base_url}/upload/image", files={"image": ("i2i_src.png", buffer.getvalue())}, timeout=5).json()["name"]
    graph = text2img(seed=3007)
    del graph["5"]
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": name}}
    graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    graph["3"]["inputs"].update(latent_image=["11", 0], denoise=0.6)
    graph["12"] = {"class_type": "ImageScaleBy", "inputs": {"image": ["8", 0], "upscale_method": "bilinear", "scale_by": 2.0}}
    graph["13"] = {"class_type": "SaveImage", "inputs": {"images": ["12", 0], "filename_prefix": "i2i/x2"}}
    graph["14"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "demo_x4.safetensors"}}
    graph["15"] = {"class_type": "ImageUpscaleWithModel", "inputs": {"upscale_model": ["14", 0], "image": ["8", 0]}}
    graph["16"] = {"class_type": "PreviewImage", "inputs": {"images": ["15", 0]}}
    socket, prompt_id = submit(emu, graph)
    messages = socket.until_finished(prompt_id)
    socket.close()
    outputs = {m["data"]["node"]: m["data"]["output"]["images"][0] for m in messages if isinstance(m, dict) and m["type"] == "executed"}
    sizes = {node: Image.open(io.BytesIO(requests.get(f"{emu.base_url}/view", params=ref, timeout=5).content)).size
             for node, ref in outputs.items()}
    assert sizes == {"9": (80, 56), "13": (160, 112), "16": (320, 224)}
    assert outputs["16"]["type"] == "temp" and outputs["16"]["filename"].startswith("ComfyUI_temp_")


def test_flux_graph_runs(emu: Any) -> None:
    graph = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "flux_demo.safetensors", "weight_dtype": "default"}},
        "2": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors", "clip_name2": "t5xxl_demo.safetensors", "type": "flux"}},
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["2", 0]}},
        "5": {"class_type": "FluxGuidance", "inputs": {"conditioning": ["4", 0], "guidance": 3.5}},
        "6": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 96, "height": 64, "batch_size": 1}},
        "7": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "simple",
                                                   "denoise": 1.0, "model": ["1", 0], "positive": ["5", 0], "negative": ["4", 0], "latent_image": ["6", 0]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0], "vae": ["3", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "flux/f"}},
    }
    socket, prompt_id = submit(emu, graph)
    messages = socket.until_finished(prompt_id)
    socket.close()
    assert "execution_success" in types(messages)
