"""The ComfyUI client against the real emulator process."""
from __future__ import annotations

import io
import json
import struct
import sys
import threading
import time
import uuid

import pytest
import requests
import websocket
from PIL import Image

from services.render.catalog import CATALOG_KINDS
from services.render_worker.heartbeat import collect_catalog
from services.render_worker import comfyui
from services.render_worker.comfyui import (ComfyUIClient, ComfyUIError, ExecutionFailed, ProgressTracker,
                                            PromptInterrupted, PromptRejected, PromptRun, RunHooks, combo_choices,
                                            preview_image)
from services.render.workflows import build_graph, load_templates, validate_params

from tests.conftest import answers, running_process
from tests.render_fixtures import MODEL


@pytest.fixture(scope="module")
def template():
    return load_templates()["text2img"]


@pytest.fixture
def client(emulator_url):
    client = ComfyUIClient(emulator_url, retry_seconds=1.0)
    yield client
    client.close()


def graph_for(template, **overrides):
    params = validate_params(template, {"prompt": "a red fox", "model": MODEL, "width": 64, "height": 96,
                                        "steps": 4, **overrides})
    return build_graph(template, template.variants[0], params)


def deadline(seconds: float = 30) -> float:
    return time.monotonic() + seconds


def run(client, template, graph, **kwargs):
    """Run and fetch: (prompt id, images as bytes)."""
    prompt_id = str(uuid.uuid4())
    refs = client.run(graph, template.variants[0].outputs, deadline=kwargs.pop("until", deadline()),
                      prompt_id=prompt_id, hooks=RunHooks(**kwargs))
    return prompt_id, [client.fetch_image(ref) for ref in refs]


def test_a_file_fetched_beside_another_comes_whole_and_after_close_fails_as_comfyui_unavailable(client, template):
    prompt_id = str(uuid.uuid4())
    [ref] = client.run(graph_for(template), template.variants[0].outputs, deadline=deadline(), prompt_id=prompt_id)
    assert client.start_fetch(ref).result(timeout=30) == client.fetch_image(ref)
    client.close()
    with pytest.raises(comfyui.ComfyUIUnavailable):
        client.start_fetch(ref).result(timeout=30)


def test_success_returns_every_png_at_the_requested_size(client, template):
    progress = []
    _, images = run(client, template, graph_for(template, batchSize=2),
                    on_progress=lambda step, total, percent: progress.append((step, total, percent)))
    assert len(images) == 2
    for data in images:
        assert data.startswith(b"\x89PNG")
        assert Image.open(io.BytesIO(data)).size == (64, 96)
    sampler_steps = [(step, total) for step, total, _ in progress if total]
    assert sampler_steps[-1] == (4, 4)
    percents = [percent for *_, percent in progress]
    assert percents == sorted(percents) and percents[-1] < 100


def test_identical_rerun_served_from_cache_still_completes(client, template):
    graph = graph_for(template, seed=12345)
    _, first = run(client, template, graph)
    _, again = run(client, template, graph)
    assert again == first


def test_unknown_checkpoint_is_a_user_error_naming_the_node(client, template):
    graph = graph_for(template)
    graph["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    with pytest.raises(PromptRejected) as caught:
        run(client, template, graph)
    assert caught.value.error_class == "user" and caught.value.code == "PROMPT_REJECTED"
    assert "node 4" in caught.value.message and "missing.safetensors" in caught.value.message
    assert "4" in caught.value.node_errors


def test_execution_error_is_a_system_failure_with_the_exception_message(client, template, emulator_faults):
    emulator_faults(execution_error="CUDA out of memory (injected)")
    graph = graph_for(template, seed=777)
    with pytest.raises(ExecutionFailed) as caught:
        run(client, template, graph)
    assert caught.value.code == "EXECUTION_ERROR" and caught.value.error_class == "system"
    assert "CUDA out of memory (injected)" in caught.value.message
    assert graph[caught.value.node_id]["class_type"] == caught.value.node_type == "KSampler", "names the node"
    assert caught.value.exception_message == "CUDA out of memory (injected)"


def test_cancel_interrupts_the_running_prompt(client, template):
    cancel = threading.Event()
    steps = []

    def on_progress(step, total, percent):
        steps.append(step)
        if step >= 2:
            cancel.set()

    with pytest.raises(PromptInterrupted):
        run(client, template, graph_for(template, steps=100, seed=31337), on_progress=on_progress,
            should_cancel=cancel.is_set)
    assert 2 <= max(steps) < 100


def test_cancel_of_a_pending_prompt_deletes_it_and_leaves_the_running_one(client, emulator_url, template):
    """Two prompts in one ComfyUI: cancelling the waiting one must not touch the running one."""
    results = {}

    def first():
        results["first"] = run(client, template, graph_for(template, steps=40, seed=1))

    runner = threading.Thread(target=first)
    runner.start()
    time.sleep(0.3)
    other = ComfyUIClient(emulator_url)
    try:
        with pytest.raises(PromptInterrupted):
            run(other, template, graph_for(template, steps=40, seed=2), should_cancel=lambda: True)
    finally:
        other.close()
    runner.join(timeout=30)
    prompt_id, images = results["first"]
    assert len(images) == 1, "the running prompt finished undisturbed"


def test_socket_drop_reconnects_and_completes(client, template, emulator_faults):
    emulator_faults(drop_socket_after_steps=2)
    _, images = run(client, template, graph_for(template, steps=6, seed=4242))
    assert len(images) == 1


def test_deadline_stops_a_hung_prompt(client, emulator_url, template, emulator_faults):
    emulator_faults(hang=True)
    with pytest.raises(ComfyUIError) as caught:
        run(client, template, graph_for(template, seed=999), until=deadline(1.5))
    assert caught.value.code == "DEADLINE_EXCEEDED"
    time.sleep(0.2)
    assert requests.get(emulator_url + "/queue", timeout=5).json()["queue_running"] == []


def test_html_answers_are_retried_then_reported(client, template, emulator_faults):
    emulator_faults(reject_with_html=True, persistent=True)
    with pytest.raises(ComfyUIError) as caught:
        run(client, template, graph_for(template, seed=5))
    assert caught.value.code == "COMFYUI_UNAVAILABLE" and "text/html" in caught.value.message


def test_an_unreachable_comfyui_is_a_system_error_after_backoff(template):
    from shared.embedded import free_port
    dead = ComfyUIClient(f"http://127.0.0.1:{free_port()}", retry_seconds=0.5)
    with pytest.raises(ComfyUIError) as caught:
        run(dead, template, graph_for(template))
    assert caught.value.code == "COMFYUI_UNAVAILABLE"


def test_a_comfyui_that_hangs_up_is_retried_for_retry_seconds_only(template):
    """0.5 s of backoff (0.25 s doubling) leaves room for two tries, the 20 s default for nine;
    load only delays tries, so it can never make more of them."""
    from tests.scripted_http import ScriptedServer
    hanging_up = ScriptedServer([None], per_connection=True)  # reads each request, closes unanswered
    try:
        with pytest.raises(ComfyUIError) as caught:
            run(ComfyUIClient(hanging_up.url, retry_seconds=0.5), template, graph_for(template), until=deadline(120))
    finally:
        hanging_up.stop()
    assert caught.value.code == "COMFYUI_UNAVAILABLE"
    assert 1 <= hanging_up.connections <= 2


def test_a_proxy_in_the_environment_is_not_used_for_comfyui(client, template, monkeypatch):
    """HTTP and the WebSocket both reach ComfyUI directly, whatever proxy the host sets."""
    from shared.embedded import free_port
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")  # nothing listens there
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    _, images = run(client, template, graph_for(template, seed=21))
    assert [data[:4] for data in images] == [b"\x89PNG"]


def test_an_uploaded_source_feeds_load_image(client, template, unique):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
    name = client.upload_image(buffer.getvalue(), f"source-{unique}.png")
    assert name == f"source-{unique}.png", "uploaded with overwrite: the name we chose"
    img2img = load_templates()["img2img"]
    params = validate_params(img2img, {"prompt": "a fox", "model": MODEL, "sourceImage": "upload:x", "steps": 2})
    graph = build_graph(img2img, img2img.variants[0], params, {"sourceImage": name})
    refs = client.run(graph, img2img.variants[0].outputs, deadline=deadline(), prompt_id=str(uuid.uuid4()))
    assert [client.fetch_image(ref)[:4] for ref in refs] == [b"\x89PNG"]


@pytest.fixture
def connections(monkeypatch):
    """The WebSocket connections the client opens, in order (the URLs it asked for)."""
    opened = []
    real = websocket.create_connection

    def create_connection(url, *args, **kwargs):
        opened.append(url)
        return real(url, *args, **kwargs)

    monkeypatch.setattr(websocket, "create_connection", create_connection)
    return opened


def test_one_socket_follows_a_thread_s_prompts_one_after_another(client, template, connections):
    progress = []
    for seed in (11, 12, 13):
        _, images = run(client, template, graph_for(template, seed=seed),
                        on_progress=lambda step, total, percent: progress.append(seed))
        assert len(images) == 1 and seed in progress, "each prompt is followed to its end, with its progress"
    assert len(connections) == 1


def test_a_comfyui_restarted_between_prompts_is_reconnected_before_the_next_prompt(template, tmp_path, connections,
                                                                                 caplog):
    from shared.embedded import free_port
    url = f"http://127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "services.comfyui_emulator", "--port", url.rsplit(":", 1)[1],
               "--data-dir", str(tmp_path), "--step-delay", "0.02", "--load-delay", "0"]
    client = ComfyUIClient(url, retry_seconds=5.0)
    try:
        with running_process(command, answers(url + "/system_stats"), "the ComfyUI emulator"):
            assert len(run(client, template, graph_for(template, seed=21))[1]) == 1
        with running_process(command, answers(url + "/system_stats"), "the ComfyUI emulator, again"):
            steps = []
            _, images = run(client, template, graph_for(template, seed=22),
                            on_progress=lambda step, total, percent: steps.append(step))
    finally:
        client.close()
    assert len(images) == 1
    assert steps and max(steps) == 4
    assert "dropped during prompt" not in caplog.text, "the closed socket was replaced before the prompt was sent"
    assert len(connections) == 2 and connections[0] == connections[1], "same client id: no prompt of it runs"


def test_a_run_that_ended_abnormally_leaves_its_client_id_behind(client, template, emulator_faults, connections):
    emulator_faults(hang=True)
    with pytest.raises(ComfyUIError):
        run(client, template, graph_for(template, seed=998), until=deadline(1.0))
    _, images = run(client, template, graph_for(template, seed=997))
    assert len(images) == 1
    assert len(connections) == 2 and connections[0] != connections[1], \
        "the hung prompt may still run: its messages must not reach the next run's socket"


def test_catalog_reads_both_combo_spellings(client):
    templates = load_templates()
    catalog = collect_catalog(client, "render@test", templates, [f"render.{name}" for name in templates], 2)
    assert MODEL in catalog["checkpoints"] and "euler" in catalog["samplers"] and "normal" in catalog["schedulers"]
    assert catalog["upscale_models"] == ["demo_x4.safetensors"], "UpscaleModelLoader uses the COMBO spelling"
    assert catalog["comfyuiVersion"] and catalog["devices"] and "KSampler" in catalog["nodes"]
    assert set(catalog["workflows"]) == {"text2img", "img2img", "upscale", "text2img_lora", "flux_text2img"}
    assert catalog["variants"]["upscale"] == "model"
    assert set(CATALOG_KINDS) <= set(catalog), "the worker reads every kind the render domain lists"
    only = collect_catalog(client, "render@test", templates, ["render.text2img"], 2)
    assert only["workflows"] == ["text2img"], "a worker offers only the workflows whose queues it consumes"
    assert combo_choices(["COMBO", {"options": ["a", "b"], "multiselect": False}]) == ["a", "b"]
    assert combo_choices([["x", "y"], {"tooltip": "t"}]) == ["x", "y"]
    assert combo_choices(["INT", {"min": 1}]) == []


def test_builtin_vae_options_are_listed_apart_from_vae_files(client):
    catalog = collect_catalog(client, "render@test", load_templates(), ["render.flux_text2img"], 1)
    assert catalog["vaes"] == ["ae.safetensors"], "pixel_space and taesd are ComfyUI's options, not files"
    assert catalog["builtin_vaes"] == ["taesd", "pixel_space"]


def test_preview_frames_in_both_layouts():
    jpeg = b"\xff\xd8jpeg"
    assert preview_image(struct.pack(">II", 1, 1) + jpeg, "p1") == jpeg
    metadata = json.dumps({"prompt_id": "p1", "node_id": "3"}).encode()
    assert preview_image(struct.pack(">II", 4, len(metadata)) + metadata + jpeg, "p1") == jpeg
    assert preview_image(struct.pack(">II", 4, len(metadata)) + metadata + jpeg, "p2") is None
    assert preview_image(struct.pack(">II", 3, 1) + b"3text", "p1") is None
    assert preview_image(b"\x00", "p1") is None


def test_progress_counts_cached_nodes_and_weighs_sampler_steps(template):
    tracker = ProgressTracker(graph_for(template, steps=10))
    tracker.cached(["4", "6", "7", "5"])
    start = tracker.percent()
    tracker.executing("3")
    tracker.step("3", 5, 10)
    middle = tracker.percent()
    tracker.executing("8")
    assert 0 < start < middle < tracker.percent() < 100


def _stepping_run(monkeypatch) -> tuple[PromptRun, list[float]]:
    """A prompt run fed sampler steps by hand, and the clock the test moves."""
    clock = [100.0]
    monkeypatch.setattr(comfyui.time, "monotonic", lambda: clock[0])
    graph = {"3": {"class_type": "KSampler", "inputs": {"steps": 20}}}
    return PromptRun(client=None, graph=graph, output_nodes=[], prompt_id="p1", deadline=200.0,
                     hooks=RunHooks()), clock


def test_a_sampler_s_socket_is_read_a_few_steps_at_a_time_until_its_last_half_second(monkeypatch):
    """20 steps 0.125 s apart: from the fifth step (its pace known) the socket waits PACE_SECONDS
    before it is read again, while more than half a second of steps is left; never after."""
    prompt, clock = _stepping_run(monkeypatch)
    paced = []
    for value in range(1, 21):
        clock[0] = 100.0 + 0.125 * value
        before = prompt.pace_until
        prompt._on_message({"type": "progress", "data": {"prompt_id": "p1", "node": "3", "value": value, "max": 20}})
        if prompt.pace_until != before:
            paced.append(value)
            assert prompt.pace_until == clock[0] + comfyui.PACE_SECONDS
    assert paced == list(range(5, 16)), "15: 5 steps of 0.125 s left"
    assert prompt.pace_until < 100.0 + 0.125 * 20, "the last steps are read as they come"


def test_no_pause_while_an_interrupt_waits_or_when_another_node_begins(monkeypatch):
    prompt, clock = _stepping_run(monkeypatch)

    def step(node, value, at):
        clock[0] = at
        prompt._on_message({"type": "progress", "data": {"prompt_id": "p1", "node": node, "value": value, "max": 20}})

    for value in range(1, 6):
        step("3", value, 100.0 + 0.125 * value)
    assert prompt.pace_until > clock[0]
    step("7", 1, 101.0)  # a second sampler: its pace is not known yet
    step("7", 2, 101.125)
    assert prompt.pace_until < clock[0]
    prompt.cancelling = True
    for value in range(3, 10):
        step("7", value, 101.0 + 0.125 * value)
    assert prompt.pace_until < clock[0], "an interrupt's answer is read as it comes"


def test_a_long_sampler_is_followed_in_fewer_reads_than_it_has_steps(client, template, monkeypatch):
    """100 steps of 0.02 s: ComfyUI sends two frames a step; the worker reads them a few steps at a
    time while the sampler has more than half a second left, and the result is the same."""
    reads = []
    original = websocket.WebSocket._recv

    def counting(self, bufsize):
        reads.append(bufsize)
        return original(self, bufsize)

    monkeypatch.setattr(websocket.WebSocket, "_recv", counting)
    steps = []
    _, images = run(client, template, graph_for(template, steps=100, seed=4242),
                    on_progress=lambda step, total, percent: steps.append(step))
    assert len(images) == 1 and max(steps) == 100
    assert len(reads) < 100, f"{len(reads)} reads of the socket for 100 steps"
