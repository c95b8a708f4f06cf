"""The walking skeleton's journey, through the real processes.

``python -m deploy.local run`` (what ``make run`` does) starts the gateway, auth,
credits, gallery, one render worker and the ComfyUI emulator against real Redis and a
real database; the test then walks the journey as a browser would, over HTTP and the
WebSocket, and finally stops the platform with Ctrl-C (SIGINT) and checks that no
process is left behind.
"""
from __future__ import annotations

import io
import json
import time
import uuid

import pytest
import requests
import websocket
from PIL import Image

from tests.platform import Platform, start_platform

pytestmark = pytest.mark.e2e

PROMPT = "a red fox in the snow"


@pytest.fixture
def platform(tmp_path_factory, settings_env, platform_database_url):
    with start_platform(tmp_path_factory, settings_env, platform_database_url, EMULATOR_STEP_DELAY="0.02") as running:
        yield running


def _register(platform: Platform, name: str) -> dict:
    response = requests.post(platform.url("/api/users/register"), timeout=10, json={
        "username": name, "email": f"{name}@example.com", "password": "correct-horse-1"})
    assert response.status_code == 201, response.text
    return response.json()["data"]


def _auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _collect_job_events(ws: websocket.WebSocket, job_id: str, timeout: float) -> list[dict]:
    events = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        event = json.loads(ws.recv())
        if event.get("data", {}).get("jobId") == job_id:
            events.append(event)
            if event["type"] in ("job.succeeded", "job.failed", "job.cancelled"):
                return events
    pytest.fail(f"job {job_id} did not finish; events so far: {[e['type'] for e in events]}")


def test_the_journey(platform: Platform):
    health = requests.get(platform.url("/api/health"), timeout=10).json()["data"]
    assert health["demoBackend"] is True
    assert health["notice"]
    page = requests.get(platform.url("/"), timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]

    suffix = uuid.uuid4().hex[:6]
    alice = _register(platform, f"alice_{suffix}")
    token = alice["accessToken"]
    credits = requests.get(platform.url("/api/users/credits"), headers=_auth(token), timeout=10).json()["data"]
    assert credits == {"available": 500, "held": 0}

    models = requests.get(platform.url("/api/models"), timeout=10).json()["data"]["models"]

    ws = websocket.create_connection(platform.url(f"/ws?token={token}").replace("http", "ws", 1), timeout=10)
    assert json.loads(ws.recv())["type"] == "ready"

    response = requests.post(platform.url("/api/generate"), headers=_auth(token), timeout=10, json={
        "prompt": PROMPT, "model": models[0]["name"], "size": "512x512", "batchSize": 2, "steps": 8})
    assert response.status_code == 202, response.text
    assert response.json()["data"]["job"]["status"] == "queued", "admission answers before the render"
    job_id = response.json()["data"]["job"]["id"]

    events = _collect_job_events(ws, job_id, timeout=90)
    ws.close()
    kinds = [event["type"] for event in events]
    assert kinds[0] == "job.queued"
    assert kinds[1] == "job.started"
    assert kinds[-1] == "job.succeeded", kinds
    progress = [event["data"] for event in events if event["type"] == "job.progress"]
    assert progress and progress[-1]["step"] == progress[-1]["totalSteps"] == 8
    assert [p["step"] for p in progress] == sorted(p["step"] for p in progress)
    images = [event["data"] for event in events if event["type"] == "job.image"]
    assert sorted(image["index"] for image in images) == [0, 1]
    assert kinds.index("job.image") > kinds.index("job.progress")

    credits = requests.get(platform.url("/api/users/credits"), headers=_auth(token), timeout=10).json()["data"]
    assert credits == {"available": 470, "held": 0}
    history = requests.get(platform.url("/api/users/credits/transactions"), headers=_auth(token),
                           timeout=10).json()["data"]["items"]
    assert sorted(entry["type"] for entry in history) == ["capture", "hold", "signup_bonus"]
    by_type = {entry["type"]: entry for entry in history}
    assert by_type["signup_bonus"]["amount"] == 500
    assert by_type["hold"]["amount"] == -30 and by_type["hold"]["heldChange"] == 30
    assert by_type["capture"]["heldChange"] == -30, "both images charged in the job's one settlement"

    job = requests.get(platform.url(f"/api/jobs/{job_id}"), headers=_auth(token), timeout=10).json()["data"]
    assert job["status"] == "succeeded" and len(job["outputs"]) == 2
    for output in job["outputs"]:
        original = requests.get(platform.url(output["imageUrl"]), timeout=10)
        assert original.status_code == 200
        image = Image.open(io.BytesIO(original.content))
        assert (image.format, image.size) == ("PNG", (512, 512))
    first, second = (Image.open(io.BytesIO(requests.get(platform.url(o["imageUrl"]), timeout=10).content)).tobytes()
                     for o in job["outputs"])
    assert first != second, "the two images of a batch must differ"

    saved = requests.post(platform.url("/api/works/save"), headers=_auth(token), timeout=10, json={
        "outputId": job["outputs"][0]["id"], "title": "Red fox", "tags": ["fox", "snow"], "isPublic": True})
    assert saved.status_code == 201, saved.text
    work = saved.json()["data"]["work"]
    assert work["tags"] == ["fox", "snow"] and work["prompt"] == PROMPT

    gallery = requests.get(platform.url("/api/works/gallery"), timeout=10).json()["data"]["items"]
    listed = next(item for item in gallery if item["id"] == work["id"])
    assert listed["title"] == "Red fox"
    thumbnail = requests.get(platform.url(listed["thumbnailUrl"]), timeout=10)
    assert thumbnail.status_code == 200
    assert Image.open(io.BytesIO(thumbnail.content)).format == "WEBP"
    # The work's download carries the AI-content labels, and the verification endpoint knows it.
    download = requests.get(platform.url(f"/api/works/{work['id']}/download"), timeout=10)
    assert download.status_code == 200 and '"Label":"1"' in Image.open(io.BytesIO(download.content)).text["AIGC"]
    verified = requests.post(platform.url("/api/works/verify-label"), files={"file": ("x.png", download.content)},
                             timeout=10).json()["data"]["verification"]
    assert verified["ours"] and verified["jobId"] == job_id and verified["work"]["id"] == work["id"]
    assert verified["aigc"]["ProduceID"] == job["outputs"][0]["id"]

    bob = _register(platform, f"bob_{suffix}")
    detail = requests.get(platform.url(f"/api/works/{work['id']}"), headers=_auth(bob["accessToken"]), timeout=10)
    assert detail.status_code == 200
    assert detail.json()["data"]["work"]["isOwner"] is False
    liked = requests.put(platform.url(f"/api/works/{work['id']}/like"), headers=_auth(bob["accessToken"]), timeout=10)
    assert liked.status_code == 200, liked.text
    assert liked.json()["data"] == {"workId": work["id"], "likes": 1, "isLiked": True}
