"""Derive the small conformance fixtures from recorded ComfyUI traces.

The committed ``fixtures/*.json`` were made from the traces recorded on a real ComfyUI
0.3.64 server (commit a125cd84, see docs/comfyui-protocol.md), which are kept outside the
project. To remake them, point this script at a folder holding those traces:

    python tests/comfyui_emulator/make_fixtures.py /path/to/traces
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"

WS_TRACES = [
    "ws_a_text2img_cold.json",
    "ws_a2_text2img_latent2rgb_legacy_frames.json",
    "ws_a3_text2img_latent2rgb_metadata_frames.json",
    "ws_b_text2img_cached_resubmit.json",
    "ws_c_execution_error.json",
    "ws_d_interrupted.json",
    "ws_e_two_prompts_back_to_back.json",
    "ws_f_observer_other_client.json",
    "ws_f2_prompt_without_client_id_seen_by_other.json",
    "ws_g_reconnect_old_socket.json",
    "ws_g_reconnect_new_socket.json",
    "ws_partial_execution_targets.json",
]

HTTP_TRACES = [
    "http_post_prompt_ok.json",
    "http_post_prompt_err_bad_ckpt_name.json",
    "http_post_prompt_err_bad_sampler.json",
    "http_post_prompt_err_bad_value_type.json",
    "http_post_prompt_err_link_to_missing_node.json",
    "http_post_prompt_err_missing_image_file.json",
    "http_post_prompt_err_missing_input.json",
    "http_post_prompt_err_no_outputs.json",
    "http_post_prompt_err_no_prompt_key.json",
    "http_post_prompt_err_unknown_class.json",
    "http_post_prompt_err_value_below_min.json",
    "http_post_prompt_err_wrong_link_type.json",
    "http_get_queue_busy_running.json",
    "http_get_history_prompt_success.json",
]


def message_shape(frame: dict[str, Any]) -> dict[str, Any]:
    """Reduce one recorded frame to what the emulator must reproduce."""
    if frame["kind"] == "binary":
        return {"binary": frame["data"]["event_type"]}
    message = frame["data"]
    data = message["data"]
    shape: dict[str, Any] = {"type": message["type"], "keys": sorted(data)}
    if "node" in data:
        shape["node"] = data["node"]
    if message["type"] == "progress_state":
        shape["nodes"] = {node_id: state["state"] for node_id, state in data["nodes"].items()}
    if message["type"] == "execution_cached":
        shape["nodes"] = data["nodes"]
    if message["type"] == "status":
        shape["queue_remaining"] = data["status"]["exec_info"]["queue_remaining"]
    return shape


def cached_nodes(frames: list[dict[str, Any]], graph: dict[str, Any]) -> list[str]:
    """Nodes that were cached before the first prompt of the trace ran."""
    for frame in frames:
        if frame["kind"] == "text" and frame["data"]["type"] == "execution_cached":
            return frame["data"]["data"]["nodes"]
    touched = {
        node_id for frame in frames if frame["kind"] == "text" and frame["data"]["type"] == "progress_state"
        for node_id in frame["data"]["data"]["nodes"]
    }
    return [node_id for node_id in graph if node_id not in touched]


def body_shape(body: Any) -> Any:
    """Key structure of a JSON body, values dropped except error types."""
    if isinstance(body, dict):
        return {key: ("type:" + value if key == "type" and isinstance(value, str) else body_shape(value))
                for key, value in body.items()}
    if isinstance(body, list):
        return [body_shape(item) for item in body[:1]]
    return None


def ws_fixture(traces: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    frames = json.loads((traces / name).read_text())
    bodies = entry.get("request_body") or []
    bodies = bodies if isinstance(bodies, list) else [bodies]
    return {
        "preview_method": entry.get("preview_method"),
        "feature_flags_sent": entry.get("feature_flags_sent"),
        "with_client_id": all("client_id" in body for body in bodies),
        "requests": [{key: value for key, value in body.items() if key != "client_id"} for body in bodies],
        "cached_before": cached_nodes(frames, bodies[0]["prompt"]),
        "messages": [message_shape(frame) for frame in frames],
    }


def http_fixture(traces: Path, name: str) -> dict[str, Any]:
    exchange = json.loads((traces / name).read_text())
    request = exchange["request"]
    response = exchange["response"]
    return {
        "request": {key: request[key] for key in ("method", "path", "query", "json") if key in request},
        "status": response["status"],
        "body_shape": body_shape(response.get("body")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("traces", type=Path, help="folder with the recorded traces and their index.json")
    traces = parser.parse_args().traces
    index = json.loads((traces / "index.json").read_text())["files"]
    FIXTURES.mkdir(exist_ok=True)
    ws = {name.removesuffix(".json"): ws_fixture(traces, name, index[name]) for name in WS_TRACES}
    http = {name.removesuffix(".json"): http_fixture(traces, name) for name in HTTP_TRACES}
    (FIXTURES / "ws_sequences.json").write_text(json.dumps(ws, indent=1) + "\n")
    (FIXTURES / "http_shapes.json").write_text(json.dumps(http, indent=1) + "\n")


if __name__ == "__main__":
    main()
