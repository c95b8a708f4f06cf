"""The emulator's WebSocket traffic matches the recorded ComfyUI traces, message for message."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from tests.comfyui_emulator.emulator_ws import Socket, localise, priming_graph, shape

FIXTURES = json.loads((Path(__file__).parent / "fixtures" / "ws_sequences.json").read_text())
CORRUPT_UPLOAD = "corrupt_upload.png"


def post(emu: Any, body: dict[str, Any]) -> dict[str, Any]:
    response = requests.post(f"{emu.base_url}/prompt", json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()


def prime(emu: Any, fixture: dict[str, Any], graph: dict[str, Any]) -> None:
    """Leave the emulator's cache as it was when the trace was recorded."""
    watcher = Socket(emu.ws_url)
    watcher.recv()
    prompt_id = post(emu, {"prompt": priming_graph(graph, fixture["cached_before"]), "client_id": watcher.client_id})["prompt_id"]
    watcher.until_finished(prompt_id)
    watcher.close()


def expected(name: str) -> list[dict[str, Any]]:
    return FIXTURES[name]["messages"]


def run_single(emu: Any, name: str, **replacements: str) -> tuple[list[dict[str, Any]], list[Any]]:
    fixture = FIXTURES[name]
    request = fixture["requests"][0]
    graph = localise(request["prompt"], **replacements)
    emu.configure(preview_method=fixture["preview_method"])
    prime(emu, fixture, graph)
    socket = Socket(emu.ws_url, features=fixture["feature_flags_sent"])
    socket.recv()
    if fixture["feature_flags_sent"]:
        socket.recv()
    body = {**request, "prompt": graph, "client_id": socket.client_id}
    prompt_id = post(emu, body)["prompt_id"]
    messages = socket.until_finished(prompt_id)
    socket.close()
    return [shape(m) for m in socket.received], messages


@pytest.mark.parametrize("name", [
    "ws_a_text2img_cold",
    "ws_a2_text2img_latent2rgb_legacy_frames",
    "ws_a3_text2img_latent2rgb_metadata_frames",
    "ws_b_text2img_cached_resubmit",
    "ws_partial_execution_targets",
])
def test_successful_runs_match_trace(emu: Any, name: str) -> None:
    shapes, _ = run_single(emu, name)
    assert shapes == expected(name)


def test_execution_error_matches_trace(emu: Any) -> None:
    files = {"image": (CORRUPT_UPLOAD, b"this is not an image", "image/png")}
    assert requests.post(f"{emu.base_url}/upload/image", files=files, timeout=5).status_code == 200
    shapes, messages = run_single(emu, "ws_c_execution_error", image=CORRUPT_UPLOAD)
    assert shapes == expected("ws_c_execution_error")
    error = next(m for m in messages if isinstance(m, dict) and m["type"] == "execution_error")["data"]
    assert error["exception_type"] == "PIL.UnidentifiedImageError"
    assert error["node_type"] == "LoadImage"


def test_interrupt_by_prompt_id_matches_trace(emu: Any) -> None:
    name = "ws_d_interrupted"
    fixture = FIXTURES[name]
    graph = localise(fixture["requests"][0]["prompt"])
    emu.configure(preview_method="latent2rgb")
    prime(emu, fixture, graph)
    emu.configure(step_delay=0.2)
    socket = Socket(emu.ws_url)
    socket.recv()
    prompt_id = post(emu, {"prompt": graph, "client_id": socket.client_id})["prompt_id"]
    socket.until(lambda m: isinstance(m, bytes) and socket.received[-2]["data"].get("value") == 2)
    requests.post(f"{emu.base_url}/interrupt", json={"prompt_id": prompt_id}, timeout=5)
    socket.until_finished(prompt_id)
    socket.close()
    assert [shape(m) for m in socket.received] == expected(name)
    history = requests.get(f"{emu.base_url}/history/{prompt_id}", timeout=5).json()[prompt_id]
    assert history["status"]["status_str"] == "error"
    assert history["status"]["messages"][-1][0] == "execution_interrupted"


def test_two_prompts_back_to_back_match_trace(emu: Any) -> None:
    name = "ws_e_two_prompts_back_to_back"
    fixture = FIXTURES[name]
    graphs = [localise(r["prompt"]) for r in fixture["requests"]]
    emu.configure(preview_method="latent2rgb")
    prime(emu, fixture, graphs[0])
    socket = Socket(emu.ws_url)
    socket.recv()
    post(emu, {"prompt": graphs[0], "client_id": socket.client_id})
    second = post(emu, {"prompt": graphs[1], "client_id": socket.client_id})["prompt_id"]
    socket.until_finished(second)
    socket.close()
    without_status = [s for s in map(shape, socket.received) if s.get("type") != "status"]
    assert without_status == [s for s in expected(name) if s.get("type") != "status"]


def test_observer_sees_only_status(emu: Any) -> None:
    observer = Socket(emu.ws_url)
    observer.recv()
    submitter = Socket(emu.ws_url)
    submitter.recv()
    graph = localise(FIXTURES["ws_a_text2img_cold"]["requests"][0]["prompt"], text="observed run")
    prompt_id = post(emu, {"prompt": graph, "client_id": submitter.client_id})["prompt_id"]
    submitter.until_finished(prompt_id)
    observer.until(lambda m: m["type"] == "status" and m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
    assert [shape(m) for m in observer.received] == expected("ws_f_observer_other_client")
    observer.close()
    submitter.close()


def test_prompt_without_client_id_is_broadcast_partially(emu: Any) -> None:
    name = "ws_f2_prompt_without_client_id_seen_by_other"
    fixture = FIXTURES[name]
    graph = localise(fixture["requests"][0]["prompt"])
    emu.configure(preview_method="latent2rgb")
    prime(emu, fixture, graph)
    observer = Socket(emu.ws_url)
    observer.recv()
    post(emu, {"prompt": graph})
    observer.until(lambda m: isinstance(m, dict) and m["type"] == "status"
                   and m["data"]["status"]["exec_info"]["queue_remaining"] == 0)
    observer.close()
    assert [shape(m) for m in observer.received[1:]] == expected(name)


def test_reconnect_moves_delivery_to_the_new_socket(emu: Any) -> None:
    fixture = FIXTURES["ws_g_reconnect_old_socket"]
    graph = localise(fixture["requests"][0]["prompt"])
    emu.configure(preview_method="latent2rgb")
    prime(emu, fixture, graph)
    emu.configure(step_delay=0.15)
    old = Socket(emu.ws_url)
    old.recv()
    prompt_id = post(emu, {"prompt": graph, "client_id": old.client_id})["prompt_id"]
    old.until(lambda m: isinstance(m, bytes) and old.received[-2]["data"].get("value") == 2)
    new = Socket(emu.ws_url, client_id=old.client_id)
    new.until_finished(prompt_id)
    assert [shape(m) for m in old.received] == expected("ws_g_reconnect_old_socket")
    new_expected = expected("ws_g_reconnect_new_socket")
    new_shapes = [shape(m) for m in new.received]
    assert new_shapes[:2] == new_expected[:2]
    assert new_shapes[-12:] == new_expected[-12:]
    assert all(s.get("type") != "executing" or s.get("node") in (None, "8", "9") for s in new_shapes[2:])
    old.conn.settimeout(0.3)
    with pytest.raises(websocket.WebSocketTimeoutException):
        old.conn.recv()
    old.close()
    new.close()


def test_connect_without_client_id_gets_invented_sid(emu: Any) -> None:
    conn = websocket.create_connection(emu.ws_url, timeout=5, suppress_origin=True)
    status = json.loads(conn.recv())
    conn.close()
    assert status["type"] == "status"
    assert len(status["data"]["sid"]) == 32 and int(status["data"]["sid"], 16) >= 0


def test_websocket_upgrade_with_foreign_origin_is_rejected(emu: Any) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as rejected:
        websocket.create_connection(f"{emu.ws_url}?clientId={uuid.uuid4().hex}", timeout=5,
                                    origin="http://localhost:5173")
    assert rejected.value.status_code == 403
