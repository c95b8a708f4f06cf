"""HTTP routes answer with the traced statuses, body shapes and headers."""
from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from tests.comfyui_emulator.emulator_ws import Socket, localise

SHAPES = json.loads((Path(__file__).parent / "fixtures" / "http_shapes.json").read_text())


def key_shape(body: Any) -> Any:
    """Same reduction as make_fixtures.body_shape."""
    if isinstance(body, dict):
        return {k: ("type:" + v if k == "type" and isinstance(v, str) else key_shape(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [key_shape(item) for item in body[:1]]
    return None


def drop_input_config(shape: Any) -> Any:
    """input_config echoes the spec, whose option keys (tooltips) we deliberately strip."""
    if isinstance(shape, dict):
        return {k: (None if k == "input_config" else drop_input_config(v)) for k, v in shape.items()}
    if isinstance(shape, list):
        return [drop_input_config(item) for item in shape]
    return shape


@pytest.mark.parametrize("name", [n for n in SHAPES if n.startswith("http_post_prompt_err_") and n != "http_post_prompt_err_malformed_json"])
def test_prompt_errors_match_trace(emu: Any, name: str) -> None:
    fixture = SHAPES[name]
    body = dict(fixture["request"]["json"])
    if "prompt" in body:
        body["prompt"] = localise(body["prompt"])
        if name == "http_post_prompt_err_bad_ckpt_name":
            body["prompt"]["4"]["inputs"]["ckpt_name"] = "does_not_exist.safetensors"
    response = requests.post(f"{emu.base_url}/prompt", json=body, timeout=5)
    assert response.status_code == fixture["status"]
    assert drop_input_config(key_shape(response.json())) == drop_input_config(fixture["body_shape"])


def test_malformed_json_is_500_text(emu: Any) -> None:
    response = requests.post(f"{emu.base_url}/prompt", data=b'{"prompt": {', timeout=5)
    assert response.status_code == 500
    assert response.headers["Content-Type"].startswith("text/plain")


def test_prompt_ok_honours_client_choices_and_counts(emu: Any) -> None:
    graph = localise(SHAPES["http_post_prompt_ok"]["request"]["json"]["prompt"])
    chosen = str(uuid.uuid4())
    socket = Socket(emu.ws_url)
    socket.recv()
    first = requests.post(f"{emu.base_url}/prompt", json={"prompt": graph, "prompt_id": chosen, "client_id": socket.client_id}, timeout=5).json()
    assert key_shape(first) == SHAPES["http_post_prompt_ok"]["body_shape"]
    assert first["prompt_id"] == chosen
    requests.post(f"{emu.base_url}/prompt", json={}, timeout=5)
    front = requests.post(f"{emu.base_url}/prompt", json={"prompt": graph, "front": True, "client_id": socket.client_id}, timeout=5).json()
    assert front["number"] == -(first["number"] + 2)
    socket.until_finished(front["prompt_id"])
    socket.close()
    entry = requests.get(f"{emu.base_url}/history/{chosen}", timeout=5).json()
    assert key_shape(entry[chosen]) == next(iter(SHAPES["http_get_history_prompt_success"]["body_shape"].values()))
    assert entry[chosen]["prompt"][3] == {"client_id": socket.client_id}
    assert requests.get(f"{emu.base_url}/history/unknown", timeout=5).json() == {}
    assert list(requests.get(f"{emu.base_url}/history", params={"max_items": 1}, timeout=5).json()) == [front["prompt_id"]]


def test_queue_item_shape_and_control(emu: Any) -> None:
    emu.configure(step_delay=0.05)
    graph = localise(SHAPES["http_post_prompt_ok"]["request"]["json"]["prompt"])
    graph["3"]["inputs"]["seed"] = 424242
    graph["3"]["inputs"]["steps"] = 40
    running = requests.post(f"{emu.base_url}/prompt", json={"prompt": graph}, timeout=5).json()["prompt_id"]
    graph["3"]["inputs"]["seed"] = 1
    pending = requests.post(f"{emu.base_url}/prompt", json={"prompt": graph}, timeout=5).json()["prompt_id"]
    queue = requests.get(f"{emu.base_url}/api/queue", timeout=5).json()
    assert [item[1] for item in queue["queue_running"]] == [running]
    assert len(queue["queue_running"][0]) == 5 and queue["queue_running"][0][4] == ["9"]
    assert requests.get(f"{emu.base_url}/prompt", timeout=5).json() == {"exec_info": {"queue_remaining": 2}}
    deleted = requests.post(f"{emu.base_url}/queue", json={"delete": [pending]}, timeout=5)
    assert deleted.status_code == 200 and deleted.content == b""
    interrupted = requests.post(f"{emu.base_url}/interrupt", timeout=5)
    assert interrupted.status_code == 200 and interrupted.content == b""
    for _ in range(100):
        if requests.get(f"{emu.base_url}/history/{running}", timeout=5).json():
            break
    assert requests.get(f"{emu.base_url}/history/{pending}", timeout=5).json() == {}
    assert requests.post(f"{emu.base_url}/history", json={"delete": [running]}, timeout=5).content == b""
    assert requests.post(f"{emu.base_url}/free", json={"unload_models": True}, timeout=5).content == b""


def _png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_dedupe_clash_overwrite_and_subfolder(emu: Any) -> None:
    url = f"{emu.base_url}/upload/image"
    name = f"up_{uuid.uuid4().hex[:6]}.png"
    first = requests.post(url, files={"image": (name, _png((1, 2, 3)))}, timeout=5).json()
    assert first == {"name": name, "subfolder": "", "type": "input"}
    assert requests.post(url, files={"image": (name, _png((1, 2, 3)))}, timeout=5).json()["name"] == name
    clash = requests.post(url, files={"image": (name, _png((9, 9, 9)))}, timeout=5).json()
    assert clash["name"] == name.replace(".png", " (1).png")
    overwritten = requests.post(url, files={"image": (name, _png((7, 7, 7)))}, data={"overwrite": "true"}, timeout=5)
    assert overwritten.json()["name"] == name
    sub = requests.post(url, files={"image": (name, _png((5, 5, 5)))}, data={"subfolder": "sub", "type": "input"}, timeout=5)
    assert sub.json() == {"name": name, "subfolder": "sub", "type": "input"}
    missing = requests.post(url, data={"type": "input"}, timeout=5)
    assert missing.status_code == 400 and missing.content == b""
    listed = requests.get(f"{emu.base_url}/object_info/LoadImage", timeout=5).json()
    assert name in listed["LoadImage"]["input"]["required"]["image"][0]


def test_view_headers_and_errors(emu: Any) -> None:
    name = f"view_{uuid.uuid4().hex[:6]}.png"
    requests.post(f"{emu.base_url}/upload/image", files={"image": (name, _png((200, 10, 10)))}, timeout=5)
    view = f"{emu.base_url}/view"
    ok = requests.get(view, params={"filename": name, "type": "input"}, timeout=5)
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "image/png"
    assert ok.headers["Content-Disposition"] == f'filename="{name}"'
    assert {"Etag", "Last-Modified", "Accept-Ranges"} <= set(ok.headers)
    webp = requests.get(view, params={"filename": name, "type": "input", "preview": "webp;50"}, timeout=5)
    assert webp.headers["Content-Type"] == "image/webp" and Image.open(io.BytesIO(webp.content)).format == "WEBP"
    jpeg = requests.get(view, params={"filename": name, "type": "input", "preview": "jpeg;90"}, timeout=5)
    assert Image.open(io.BytesIO(jpeg.content)).format == "JPEG"
    rgb = requests.get(view, params={"filename": name, "type": "input", "channel": "rgb"}, timeout=5)
    assert Image.open(io.BytesIO(rgb.content)).mode == "RGB"
    for params, status in [
        ({"filename": "missing.png"}, 404),
        ({"filename": "../x.png"}, 400),
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": name, "type": "bogus"}, 400),
        ({"filename": name, "subfolder": "../models"}, 403),
    ]:
        response = requests.get(view, params=params, timeout=5)
        assert (response.status_code, response.content) == (status, b"")


def test_discovery_routes(emu: Any) -> None:
    base = emu.base_url
    assert requests.get(f"{base}/object_info/NoSuchNode", timeout=5).json() == {}
    unknown = requests.get(f"{base}/models/nosuchfolder", timeout=5)
    assert (unknown.status_code, unknown.content) == (404, b"")
    assert requests.get(f"{base}/models/checkpoints", timeout=5).json() == ["sd15_demo.safetensors", "sdxl_demo.safetensors"]
    assert "upscale_models" in requests.get(f"{base}/api/models", timeout=5).json()
    assert requests.get(f"{base}/embeddings", timeout=5).json() == []
    assert requests.get(f"{base}/features", timeout=5).json() == {"supports_preview_metadata": True, "max_upload_size": 104857600}
    stats = requests.get(f"{base}/system_stats", timeout=5).json()
    assert stats["system"]["comfyui_version"] == "0.3.64" and stats["devices"][0]["type"] == "cpu"
    info = requests.get(f"{base}/object_info", timeout=5).json()
    assert len(info["KSampler"]["input"]["required"]["sampler_name"][0]) == 42
    assert "tooltip" not in json.dumps(info)


def test_foreign_origin_is_forbidden(emu: Any) -> None:
    response = requests.get(f"{emu.base_url}/queue", headers={"Origin": "http://localhost:5173"}, timeout=5)
    assert (response.status_code, response.content) == (403, b"")
    same = requests.get(f"{emu.base_url}/queue", headers={"Origin": emu.base_url}, timeout=5)
    assert same.status_code == 200
