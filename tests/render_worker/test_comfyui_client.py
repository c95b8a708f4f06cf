"""The ComfyUI client against the real emulator process."""
from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from services.render_worker.catalog import collect_catalog
from services.render_worker.comfyui import (ComfyUIClient, ComfyUIError, PromptInterrupted, PromptRejected,
                                            combo_choices)
from services.render_worker.workflows import build_graph, load_templates, validate_params

from .conftest import MODEL


@pytest.fixture(scope="module")
def template():
    return load_templates()["text2img"]


@pytest.fixture
def client(emulator_url):
    client = ComfyUIClient(emulator_url)
    yield client
    client.close()


def graph_for(template, **overrides):
    params = validate_params(template, {"prompt": "a red fox", "model": MODEL, "width": 64, "height": 96,
                                        "steps": 4, **overrides})
    return build_graph(template, params)


def deadline(seconds: float = 30) -> float:
    return time.monotonic() + seconds


def test_success_returns_every_png_at_the_requested_size(client, template):
    progress = []
    images = client.run(graph_for(template, batchSize=2), template.outputs, deadline=deadline(),
                        on_progress=lambda value, total: progress.append((value, total)))
    assert len(images) == 2
    for image in images:
        assert image.data.startswith(b"\x89PNG")
        assert Image.open(io.BytesIO(image.data)).size == (64, 96)
    assert progress[-1] == (4, 4) and [value for value, _ in progress] == sorted(value for value, _ in progress)


def test_identical_rerun_served_from_cache_still_completes(client, template):
    graph = graph_for(template, seed=12345)
    first = client.run(graph, template.outputs, deadline=deadline())
    again = client.run(graph, template.outputs, deadline=deadline())
    assert [image.data for image in again] == [image.data for image in first]


def test_unknown_checkpoint_is_a_user_error_naming_the_node(client, template):
    graph = graph_for(template)
    graph["4"]["inputs"]["ckpt_name"] = "missing.safetensors"
    with pytest.raises(PromptRejected) as caught:
        client.run(graph, template.outputs, deadline=deadline())
    assert caught.value.error_class == "user" and caught.value.code == "PROMPT_REJECTED"
    assert "node 4" in caught.value.message and "missing.safetensors" in caught.value.message
    assert "4" in caught.value.node_errors


def test_execution_error_is_a_system_failure_with_the_exception_message(client, template, emulator_faults):
    emulator_faults(execution_error="CUDA out of memory (injected)")
    with pytest.raises(ComfyUIError) as caught:
        client.run(graph_for(template, seed=777), template.outputs, deadline=deadline())
    assert caught.value.code == "EXECUTION_ERROR" and caught.value.error_class == "system"
    assert "CUDA out of memory (injected)" in caught.value.message


def test_cancel_interrupts_the_running_prompt(client, template):
    cancel = threading.Event()
    steps = []

    def on_progress(value, total):
        steps.append(value)
        if value >= 2:
            cancel.set()

    with pytest.raises(PromptInterrupted):
        client.run(graph_for(template, steps=100, seed=31337), template.outputs, deadline=deadline(),
                   on_progress=on_progress, should_cancel=cancel.is_set)
    assert 2 <= max(steps) < 100


def test_socket_drop_reconnects_and_completes(client, template, emulator_faults):
    emulator_faults(drop_socket_after_steps=2)
    images = client.run(graph_for(template, steps=6, seed=4242), template.outputs, deadline=deadline())
    assert len(images) == 1


def test_deadline_stops_a_hung_prompt(client, template, emulator_faults):
    emulator_faults(hang=True)
    with pytest.raises(ComfyUIError) as caught:
        client.run(graph_for(template, seed=999), template.outputs, deadline=deadline(1.5))
    assert caught.value.code == "DEADLINE_EXCEEDED"


def test_catalog_reads_both_combo_spellings(client):
    catalog = collect_catalog(client, "render@test", ["text2img"])
    assert MODEL in catalog["checkpoints"] and "euler" in catalog["samplers"] and "normal" in catalog["schedulers"]
    assert catalog["comfyuiVersion"]
    assert combo_choices(["COMBO", {"options": ["a", "b"], "multiselect": False}]) == ["a", "b"]
    assert combo_choices([["x", "y"], {"tooltip": "t"}]) == ["x", "y"]
    assert combo_choices(["INT", {"min": 1}]) == []
