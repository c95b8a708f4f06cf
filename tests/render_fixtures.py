"""Real parts for the render domain's and the render worker's tests (a pytest plugin the root
conftest loads): a ComfyUI emulator process, a credits server, the gallery's bell."""
from __future__ import annotations

import sys
from dataclasses import asdict

import pytest
import requests
from flask import Flask, jsonify, request

from services.comfyui_emulator.config import Faults
from services.credits.client import CreditsClient
from services.render.config import RenderConfig
from shared.config import load_settings
from shared.embedded import free_port
from tests.conftest import TEST_SERVICE_TOKEN, answers, running_process, serve

MODEL = "sd15_demo.safetensors"
# A small text-to-image job: two 64×64 images in four steps.
BODY = {"prompt": "a quiet harbour", "model": MODEL, "size": "64x64", "batchSize": 2, "steps": 4}


def balance(settings, user_id: int) -> dict:
    """The user's ``{available, held}`` as credits reports it."""
    return CreditsClient(settings.credits_url, settings.service_token).open_account(user_id)


@pytest.fixture(scope="session")
def emulator_url(tmp_path_factory):
    """A real emulator process (tiny step delay), one per test session."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "services.comfyui_emulator", "--port", str(port),
               "--data-dir", str(tmp_path_factory.mktemp("comfyui")), "--step-delay", "0.02", "--load-delay", "0.01"]
    with running_process(command, answers(url + "/system_stats"), "the ComfyUI emulator"):
        yield url


@pytest.fixture
def emulator_faults(emulator_url):
    """Arm emulator faults for the next run; every fault is disarmed after the test."""

    def _arm(**faults) -> None:
        requests.post(emulator_url + "/emulator/config", json={"faults": faults}, timeout=5).raise_for_status()

    yield _arm
    requests.post(emulator_url + "/emulator/config", json={"faults": asdict(Faults())}, timeout=5).raise_for_status()


@pytest.fixture
def credits_url(settings):
    """The real credits app on a free port, sharing the test database."""
    from services.credits.app import create_app

    running = serve(create_app(settings))
    yield running.url
    running.stop()


@pytest.fixture
def notifications():
    """A stand-in for the gallery: records what its bell (``POST /internal/notifications``)
    receives, and has no works (``POST /internal/media/referenced`` finds no key in use)."""
    received: list[dict] = []
    app = Flask("gallery_notifications")

    @app.post("/internal/notifications")
    def notify():
        if request.headers.get("X-Service-Token") != TEST_SERVICE_TOKEN:
            return jsonify({"success": False, "error": {"code": "SERVICE_TOKEN_REQUIRED"}}), 403
        received.append(request.get_json())
        return jsonify({"success": True, "data": {"id": len(received)}}), 201

    @app.post("/internal/media/referenced")
    def referenced():  # no work uses any file here
        return jsonify({"success": True, "data": {"referenced": []}})

    running = serve(app)
    yield running.url, received
    running.stop()


@pytest.fixture
def render_settings(settings_env, credits_url, notifications):
    """Settings with credits and the gallery's bell pointing at the real test processes."""
    env = dict(settings_env, CREDITS_URL=credits_url, GALLERY_URL=notifications[0], JOB_DEADLINE_SECONDS="60")
    return load_settings(env)


@pytest.fixture
def render_config(emulator_url) -> RenderConfig:
    """The render domain's settings with the worker driving the test emulator."""
    return RenderConfig(comfyui_url=emulator_url)
