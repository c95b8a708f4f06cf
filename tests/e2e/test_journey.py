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
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests
import websocket
from PIL import Image

from services.render_worker.catalog import read_live_catalogs
from shared.embedded import free_port
from shared.events import redis_client

pytestmark = pytest.mark.e2e

PROMPT = "a red fox in the snow"


class Platform:
    def __init__(self, base_url: str, log_path, redis_url: str, render_queue: str) -> None:
        self.base_url = base_url
        self.log_path = log_path
        self.redis_url = redis_url
        self.render_queue = render_queue

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_for(predicate, timeout: float, what: str, platform: Platform | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tail = platform.log()[-4000:] if platform else ""
    pytest.fail(f"timed out waiting for {what}\n{tail}")


@pytest.fixture
def platform(tmp_path, settings_env):
    gateway_port = free_port()
    env = dict(
        os.environ,
        **settings_env,
        GATEWAY_PORT=str(gateway_port),
        AUTH_PORT=str(free_port()),
        CREDITS_PORT=str(free_port()),
        GALLERY_PORT=str(free_port()),
        COMFYUI_URL=f"http://127.0.0.1:{free_port()}",
        RENDER_QUEUE=f"render-e2e-{uuid.uuid4().hex[:8]}",
        EMULATOR_STEP_DELAY="0.02",
        RATE_LIMIT_REGISTER="1000/hour",
        RATE_LIMIT_LOGIN="1000/minute",
        RATE_LIMIT_GENERATE="1000/minute",
        RATE_LIMIT_GLOBAL="100000/minute",
        RATE_LIMIT_NAMESPACE=f"ratelimit-e2e-{uuid.uuid4().hex[:8]}",
    )
    log_path = tmp_path / "platform.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "deploy.local", "run"], env=env,
                                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    running = Platform(f"http://127.0.0.1:{gateway_port}", log_path, env["REDIS_URL"], env["RENDER_QUEUE"])
    try:
        _wait_for(lambda: f"Open http://127.0.0.1:{gateway_port}" in running.log() or proc.poll() is not None,
                  120, "the platform to announce its URL", running)
        assert proc.poll() is None, running.log()[-4000:]
        yield running
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("the platform did not stop within 30 s of Ctrl-C")
    pids = [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", running.log())]
    assert len(pids) >= 6, running.log()[-2000:]
    deadline = time.monotonic() + 10  # a process group's last members may take a moment to be reaped
    while (survivors := [pid for pid in pids if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not survivors, f"processes left running after Ctrl-C: {survivors}"


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


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

    # This platform's worker, not one left in the shared Redis by an earlier run.
    redis = redis_client(platform.redis_url)
    _wait_for(lambda: any(f"{platform.render_queue}.text2img" in catalog.get("queues", [])
                          for catalog in read_live_catalogs(redis)),
              60, "this platform's render worker to publish its catalog", platform)
    redis.close()
    models = requests.get(platform.url("/api/models"), timeout=10).json()["data"]["models"]

    ws = websocket.create_connection(platform.url(f"/ws?token={token}").replace("http", "ws", 1), timeout=10)
    assert json.loads(ws.recv())["type"] == "ready"

    started = time.monotonic()
    response = requests.post(platform.url("/api/generate"), headers=_auth(token), timeout=10, json={
        "prompt": PROMPT, "model": models[0]["name"], "size": "512x512", "batchSize": 2, "steps": 8})
    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 2, "admission must answer at once"
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
    assert sorted(entry["type"] for entry in history) == ["capture", "capture", "hold", "signup_bonus"]
    by_type = {entry["type"]: entry for entry in history}
    assert by_type["signup_bonus"]["amount"] == 500
    assert by_type["hold"]["amount"] == -30 and by_type["hold"]["heldChange"] == 30

    job = requests.get(platform.url(f"/api/jobs/{job_id}"), headers=_auth(token), timeout=10).json()["data"]
    assert job["status"] == "succeeded" and len(job["outputs"]) == 2
    for output in job["outputs"]:
        original = requests.get(platform.url(output["imageUrl"]), timeout=10)
        assert original.status_code == 200
        image = Image.open(io.BytesIO(original.content))
        assert (image.format, image.size) == ("PNG", (512, 512))
    first, second = (requests.get(platform.url(o["imageUrl"]), timeout=10).content for o in job["outputs"])
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

    bob = _register(platform, f"bob_{suffix}")
    detail = requests.get(platform.url(f"/api/works/{work['id']}"), headers=_auth(bob["accessToken"]), timeout=10)
    assert detail.status_code == 200
    assert detail.json()["data"]["work"]["isOwner"] is False
    liked = requests.put(platform.url(f"/api/works/{work['id']}/like"), headers=_auth(bob["accessToken"]), timeout=10)
    assert liked.status_code == 200, liked.text
    assert liked.json()["data"] == {"workId": work["id"], "likes": 1, "isLiked": True}
