"""The render rules end to end: gateway + credits + real render workers + ComfyUI emulators."""
from __future__ import annotations

import base64
import io
import json
import time

import pytest
import requests
from PIL import Image

from services.render.service import CATALOG_CACHE_SECONDS

from .conftest import MODEL, SERVICE_TOKEN, Stack, _wait

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pool(stack: Stack) -> Stack:
    """Emulator "a" (every model kind) with worker w1."""
    stack.start_emulator("a")
    stack.start_worker("w1", "a")
    return stack


@pytest.fixture
def emulator(pool: Stack):
    yield lambda **update: pool.configure("a", **update)
    pool.configure("a", step_delay=0.02, preview_method="none", faults={
        "execution_error": None, "hang": False, "drop_socket_after_steps": None, "persistent": False})


def png(width: int, height: int, colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_job_streams_progress_previews_and_images_and_charges_what_it_delivered(pool: Stack, emulator):
    emulator(step_delay=0.08, preview_method="latent2rgb")
    user = pool.user()
    events = user.socket()
    prompt = 'a "quoted" {brace} ["5", 0]\nnew line }, "9": {"class_type": "X"'
    started = time.monotonic()
    response = user.generate(prompt=prompt, batchSize=2, steps=12, seed=-1)
    assert response.status_code == 202, response.text
    admitted = response.json()["data"]
    assert admitted["job"]["status"] == "queued", "admission answers before the render"
    assert admitted["queuePosition"] == 0 and admitted["estimatedStartSeconds"] is not None
    job_id = admitted["job"]["id"]
    seed = admitted["job"]["params"]["seed"]
    assert isinstance(seed, int) and seed >= 0, "the seed is resolved at admission"

    seen = events.until(job_id, timeout=30)
    duration = time.monotonic() - started
    events.close()
    # Alone in line, the job may hear its place (nobody ahead) while the scheduler has not yet
    # seen the worker's free slot; otherwise it is queued, started, and succeeds last.
    assert all(e["data"]["position"] == 0 for e in seen if e["type"] == "job.position")
    kinds = [e["type"] for e in seen if e["type"] != "job.position"]
    assert kinds[0] == "job.queued" and kinds[1] == "job.started" and kinds[-1] == "job.succeeded", kinds
    progress = [e["data"] for e in seen if e["type"] == "job.progress"]
    percents = [p["percent"] for p in progress]
    assert percents == sorted(percents) and 0 < percents[-1] < 100
    assert progress[-1]["step"] == progress[-1]["totalSteps"] == 12
    previews = [e["data"]["image"] for e in seen if e["type"] == "job.preview"]
    assert 1 <= len(previews) <= duration / 0.25 + 1, "previews are throttled to one per 250 ms"
    head, _, encoded = previews[0].partition(",")
    assert head == "data:image/webp;base64"
    preview = Image.open(io.BytesIO(base64.b64decode(encoded)))
    assert preview.format == "WEBP" and max(preview.size) <= 256, "512 px JPEG frames are downscaled"
    assert sorted(e["data"]["index"] for e in seen if e["type"] == "job.image") == [0, 1]
    assert seen[-1]["data"]["images"] == 2 and seen[-1]["data"]["charged"] == 30

    job = user.job(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1 and pool.name_of(job["worker"]) == "w1"
    assert job["comfyPromptId"] and job["progress"] == 100 and job["imagesDelivered"] == 2
    assert user.settles_at({"available": 470, "held": 0})
    assert sorted(t for t, *_ in user.ledger()) == ["capture", "hold", "signup_bonus"], "one settlement"

    record = requests.get(pool.gateway(f"/internal/outputs/{job['outputs'][0]['id']}"),
                          headers={"X-Service-Token": SERVICE_TOKEN}, timeout=5).json()["data"]
    assert record["params"]["prompt"] == prompt and record["params"]["seed"] == seed
    assert record["graph"]["6"]["inputs"]["text"] == prompt, "the prompt is a value, never graph structure"
    assert set(record["graph"]) == {"3", "4", "5", "6", "7", "8", "9"} and record["workflowVersion"] == 2
    listed = requests.get(pool.gateway(f"/internal/jobs/{job_id}/outputs"),
                          headers={"X-Service-Token": SERVICE_TOKEN}, timeout=5).json()["data"]["items"]
    assert [o["index"] for o in listed] == [0, 1]
    internal = requests.get(pool.gateway(f"/internal/jobs/{job_id}"), headers={"X-Service-Token": SERVICE_TOKEN},
                            timeout=5)
    assert internal.json()["data"] == {"id": job_id, "userId": user.id, "status": "succeeded", "settled": True,
                                       "idempotencyKey": None}
    assert requests.get(pool.gateway("/internal/jobs/nope"), headers={"X-Service-Token": SERVICE_TOKEN},
                        timeout=5).json()["error"]["code"] == "JOB_NOT_FOUND"
    assert requests.get(pool.gateway(f"/internal/jobs/{job_id}"), timeout=5).status_code == 403

    retried = requests.post(pool.gateway(f"/api/jobs/{job_id}/retry"), headers=user.headers, timeout=10)
    assert retried.status_code == 202, retried.text
    again = user.wait(retried.json()["data"]["job"]["id"])
    assert again["params"] == job["params"] and again["id"] != job_id
    image_url = job["outputs"][0]["imageUrl"]
    assert requests.get(pool.gateway(image_url.split("?")[0]), timeout=5).status_code == 404, \
        "an unsaved output is private: only its signed URL serves it"
    first = requests.get(pool.gateway(image_url), timeout=5).content
    assert Image.open(io.BytesIO(first)).size == (64, 64)
    second = requests.get(pool.gateway(again["outputs"][0]["imageUrl"]), timeout=5).content
    assert Image.open(io.BytesIO(second)).tobytes() == Image.open(io.BytesIO(first)).tobytes(), \
        "the same parameters and seed reproduce the same image (its label names the other job)"


def test_queue_limit_positions_and_cancel_of_queued_pending_and_running_jobs(pool: Stack, emulator):
    emulator(step_delay=0.15)
    user = pool.user()
    events = user.socket()
    first_two = [user.submit(steps=40), user.submit(steps=40)]  # the worker's two slots
    queued = [user.submit(steps=40), user.submit(steps=40)]
    limited = user.generate(steps=40)
    assert limited.status_code == 429 and limited.json()["error"]["code"] == "QUEUE_LIMIT"
    assert user.settles_at({"available": 500 - 4 * 15, "held": 60})

    _wait(lambda: all(user.job(job_id)["comfyPromptId"] for job_id in first_two), 10,
          "both slots to submit their prompts")
    comfy = pool.emulator_url("a")
    running_prompt = _wait(lambda: requests.get(comfy + "/queue", timeout=5).json()["queue_running"], 10,
                           "ComfyUI to run one")[0][1]
    # One runs, the other waits inside ComfyUI (the worker's threads submit them in either order).
    running, pending_in_comfyui = sorted(first_two, key=lambda j: user.job(j)["comfyPromptId"] != running_prompt)
    assert [user.job(job_id)["queuePosition"] for job_id in queued] == [0, 1]
    cancelled = user.cancel(queued[1])
    assert cancelled.status_code == 200 and cancelled.json()["data"]["status"] == "cancelled"
    assert user.cancel(queued[1]).json()["error"]["code"] == "JOB_FINISHED"

    queue = requests.get(comfy + "/queue", timeout=5).json()
    pending_prompt = user.job(pending_in_comfyui)["comfyPromptId"]
    assert [item[1] for item in queue["queue_pending"]] == [pending_prompt]
    assert user.cancel(pending_in_comfyui).status_code == 200
    assert user.wait(pending_in_comfyui, 10)["status"] == "cancelled"
    assert requests.get(comfy + f"/history/{pending_prompt}", timeout=5).json() == {}, \
        "a pending prompt is deleted from ComfyUI's queue, never run"
    running_job = user.job(running)
    assert running_job["status"] == "running", "deleting the pending prompt left the running one alone"

    assert user.cancel(running).status_code == 200
    stopped = user.wait(running, 10)
    assert stopped["status"] == "cancelled" and stopped["imagesDelivered"] == 0
    history = requests.get(comfy + f"/history/{running_job['comfyPromptId']}", timeout=5).json()
    assert history[running_job["comfyPromptId"]]["status"]["messages"][-1][0] == "execution_interrupted"

    assert user.wait(queued[0], 20)["status"] == "succeeded"
    assert user.settles_at({"available": 485, "held": 0}), "only the delivered image is paid for"
    # The place at admission (job.queued), then as it changes (job.position, from the scheduler's passes;
    # a job admitted while every slot is taken hears it at the next pass, which may release it first).
    positions = [e["data"] for e in events.seen + _drain(events) if e["type"] in ("job.queued", "job.position")]
    assert any(p["jobId"] == queued[0] and p["position"] == 0 for p in positions), \
        "waiting users hear their place in line"
    events.close()
    listed = requests.get(pool.gateway("/api/jobs?status=cancelled&pageSize=2"), headers=user.headers,
                          timeout=5).json()["data"]
    assert listed["total"] == 3 and len(listed["items"]) == 2 and listed["pageSize"] == 2


def _drain(events) -> list[dict]:
    found = []
    events.ws.settimeout(0.3)
    try:
        while True:
            found.append(json.loads(events.ws.recv()))
    except Exception:  # noqa: BLE001 - the socket timing out ends the drain
        return found


def test_idempotency_key_returns_the_same_job_and_charges_once(pool: Stack):
    user = pool.user()
    first = user.generate(key="click-1")
    second = user.generate(key="click-1")
    assert first.status_code == 202 and second.status_code == 200
    assert first.json()["data"]["job"]["id"] == second.json()["data"]["job"]["id"]
    user.wait(first.json()["data"]["job"]["id"])
    assert user.settles_at({"available": 485, "held": 0})


@pytest.mark.parametrize("body,field,code", [
    ({"prompt": "x" * 10_000}, "prompt", "VALIDATION_ERROR"),
    ({"prompt": ""}, "prompt", "VALIDATION_ERROR"),
    ({"size": "0x0"}, "size", "VALIDATION_ERROR"),
    ({"size": "7x7"}, "size", "VALIDATION_ERROR"),
    ({"size": "100000x100000"}, "size", "VALIDATION_ERROR"),
    ({"size": "abc"}, "size", "VALIDATION_ERROR"),
    ({"size": "2048x2048"}, "size", "VALIDATION_ERROR"),
    ({"batchSize": 1.5}, "batchSize", "VALIDATION_ERROR"),
    ({"batchSize": 5}, "batchSize", "VALIDATION_ERROR"),
    ({"steps": 500}, "steps", "VALIDATION_ERROR"),
    ({"cfgScale": "7"}, "cfgScale", "VALIDATION_ERROR"),
    ({"sampler": "euler_a"}, "sampler", "VALIDATION_ERROR"),
    ({"model": "missing.safetensors"}, "model", "MODEL_UNAVAILABLE"),
    ({"workflow": "nope"}, "workflow", "UNKNOWN_WORKFLOW"),
    ({"workflow": "img2img", "size": None, "sourceImage": "upload:someone-elses"}, "sourceImage", "SOURCE_NOT_FOUND"),
    ({"expectedCost": 1}, None, "PRICE_CHANGED"),
])
def test_bad_input_is_refused_with_the_field_named_and_nothing_held(pool: Stack, body, field, code):
    user = pool.user()
    response = user.generate(**body)
    assert response.status_code in (409, 422), response.text
    error = response.json()["error"]
    assert error["code"] == code
    if field:
        assert field in error["details"]
    assert user.settles_at({"available": 500, "held": 0})


def test_legacy_fields_keep_working(pool: Stack):
    user = pool.user()
    response = user.generate(size="64x64", cfgScale=7.5, clipSkip=2, frontendTaskId="task_1", expectedCost=15)
    assert response.status_code == 202, response.text
    assert user.wait(response.json()["data"]["job"]["id"])["status"] == "succeeded"


def test_uploads_feed_img2img_and_upscale_and_are_private(pool: Stack):
    owner, other = pool.user(), pool.user()
    assert owner.upload(b"not an image at all").json()["error"]["code"] == "INVALID_IMAGE"
    huge = owner.upload(b"\x89PNG" + b"0" * (10 * 1024 * 1024 + 10))
    assert huge.status_code == 413
    uploaded = owner.upload(png(96, 64))
    assert uploaded.status_code == 201, uploaded.text
    ref = uploaded.json()["data"]["upload"]["ref"]

    stolen = other.generate(workflow="img2img", sourceImage=ref, size=None)
    assert stolen.status_code == 422 and stolen.json()["error"]["code"] == "SOURCE_NOT_FOUND"

    img2img = owner.wait(owner.submit(workflow="img2img", sourceImage=ref, denoise=0.5, size=None))
    assert img2img["status"] == "succeeded", img2img["error"]
    assert (img2img["outputs"][0]["width"], img2img["outputs"][0]["height"]) == (96, 64)
    output_ref = f"output:{img2img['outputs'][0]['id']}"
    upscaled = owner.wait(owner.submit(workflow="upscale", sourceImage=output_ref, scale=2, prompt=None,
                                       model=None, size=None, steps=None))
    assert upscaled["status"] == "succeeded", upscaled["error"]
    assert (upscaled["outputs"][0]["width"], upscaled["outputs"][0]["height"]) == (192, 128)
    assert upscaled["pricePerImage"] == 10, "prices come from credits"
    record = requests.get(pool.gateway(f"/internal/outputs/{upscaled['outputs'][0]['id']}"),
                          headers={"X-Service-Token": SERVICE_TOKEN}, timeout=5).json()["data"]
    assert record["graph"]["2"]["class_type"] == "UpscaleModelLoader", "the host has an upscale model"
    assert record["graph"]["1"]["inputs"]["image"].startswith(f"aigc-job-{upscaled['id']}")
    assert owner.settles_at({"available": 500 - 15 - 10, "held": 0})


def test_models_catalog_comes_from_live_workers(pool: Stack):
    catalog = requests.get(pool.gateway("/api/models"), timeout=5).json()["data"]
    checkpoint = next(m for m in catalog["models"] if m["name"] == MODEL)
    assert checkpoint["kind"] == "checkpoints" and checkpoint["workers"] >= 1
    assert "euler" in catalog["samplers"] and "normal" in catalog["schedulers"]
    workflows = {w["name"]: w for w in catalog["workflows"]}
    assert set(workflows) == {"text2img", "img2img", "upscale", "text2img_lora", "flux_text2img"}
    assert workflows["text2img"]["pricePerImage"] == 15 and workflows["upscale"]["pricePerImage"] == 10
    assert {p["name"] for p in workflows["text2img"]["parameters"]} >= {"prompt", "model", "width", "seed"}
    worker = next(w for w in catalog["workers"] if pool.name_of(w["workerId"]) == "w1")
    assert worker["comfyuiVersion"] and worker["devices"] and worker["slots"] == 2


def test_lora_and_flux_workflows_run(pool: Stack):
    user = pool.user()
    lora = user.wait(user.submit(workflow="text2img_lora", loraStrength=0.7))
    flux = user.wait(user.submit(workflow="flux_text2img", model="flux_demo.safetensors", cfgScale=1.0))
    assert lora["status"] == flux["status"] == "succeeded", (lora["error"], flux["error"])
    assert lora["params"]["lora"] == "demo_style.safetensors"
    assert (flux["params"]["clipL"], flux["params"]["t5"]) == ("clip_l.safetensors", "t5xxl_demo.safetensors")


def test_a_worker_takes_only_workflows_its_comfyui_can_run(pool: Stack):
    pool.start_emulator("bare", "--upscale-models", "", "--loras", "", "--diffusion-models", "")
    pool.start_worker("w2", "bare")
    w2 = pool.catalog_of("w2")
    assert sorted(w2["workflows"]) == ["img2img", "text2img", "upscale"]
    pool.stop_worker("w1")
    try:
        _wait(lambda: pool.catalog_of("w1") is None, 10, "w1 to leave the catalog")
        time.sleep(2 * CATALOG_CACHE_SECONDS)  # every gateway process has reread the catalogs since
        user = pool.user()
        refused = user.generate(workflow="text2img_lora")
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "RENDER_UNAVAILABLE"
        ref = user.upload(png(40, 40)).json()["data"]["upload"]["ref"]
        upscaled = user.wait(user.submit(workflow="upscale", sourceImage=ref, scale=2, prompt=None, model=None,
                                         size=None, steps=None))
        assert upscaled["status"] == "succeeded" and pool.name_of(upscaled["worker"]) == "w2"
        assert upscaled["outputs"][0]["width"] == 80, "the model-free resize variant ran"
    finally:
        pool.start_worker("w1", "a")
