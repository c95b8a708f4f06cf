"""``/metrics``: every service answers it, counts requests by route rule (not raw path) and
status, sums the samples of every gunicorn worker, and a background process serves it on
``METRICS_PORT``."""
from __future__ import annotations

import os
import socket
import sys
import time

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from shared.metrics import serve_metrics
from tests.conftest import TEST_SERVICE_TOKEN, answers, running_process


def samples(text: str, name: str) -> dict[tuple, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def app_env(tmp_path, keys_dir, monkeypatch):
    env = {"APP_ENV": "test", "DATA_DIR": str(tmp_path / "data"), "SERVICE_TOKEN": TEST_SERVICE_TOKEN,
           "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem")}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    return env


def test_metrics_count_a_request_by_its_route_rule_and_status(app_env):
    from tests.shared.metrics_app import create_app

    client = create_app().test_client()
    headers = {"X-Service-Token": TEST_SERVICE_TOKEN}
    assert client.get("/internal/things/41", headers=headers).status_code == 200
    assert client.get("/internal/things/42", headers=headers).status_code == 200
    assert client.get("/internal/things/43").status_code == 403  # no service token: refused, still counted

    response = client.get("/metrics")  # open without the service token, like the probes
    assert response.status_code == 200
    counts = samples(response.get_data(as_text=True), "http_requests_total")
    rule = "/internal/things/<id:thing_id>"
    key = lambda status: (("method", "GET"), ("route", rule), ("service", "tests"), ("status", status))  # noqa: E731
    assert counts[key("200")] >= 2 and counts[key("403")] >= 1
    assert not any("41" in dict(labels)["route"] for labels in counts)


def test_metrics_token_guards_metrics(app_env, monkeypatch):
    from tests.shared.metrics_app import create_app

    monkeypatch.setenv("METRICS_TOKEN", "scrape-secret")
    client = create_app().test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and refused.json["error"]["code"] == "METRICS_TOKEN_REQUIRED"
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer scr\u00e4pe"}).status_code == 401


def test_gunicorn_metrics_add_up_every_worker(app_env, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(app_env, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    command = [sys.executable, "-m", "gunicorn", "--config", "python:deploy.gunicorn_conf", "--workers", "2",
               "--worker-class", "gthread", "--threads", "2", "--bind", f"127.0.0.1:{port}",
               "tests.shared.metrics_app:create_app()"]
    base = f"http://127.0.0.1:{port}"
    with running_process(command, answers(f"{base}/healthz"), "gunicorn", timeout=60, env=env):
        session = requests.Session()
        for n in range(1, 41):  # fresh connections spread the requests over both workers
            requests.get(f"{base}/internal/things/{n}", headers={"X-Service-Token": TEST_SERVICE_TOKEN},
                         timeout=10).raise_for_status()
        deadline = time.monotonic() + 30
        while True:
            text = session.get(f"{base}/metrics", timeout=10).text
            total = sum(value for labels, value in samples(text, "http_requests_total").items()
                        if dict(labels)["route"] == "/internal/things/<id:thing_id>")
            if total == 40 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert total == 40  # whichever worker answered the scrape, it counted both workers' requests


def test_a_background_process_serves_metrics_on_its_port():
    port = free_port()
    assert serve_metrics("test", {"METRICS_PORT": str(port), "METRICS_HOST": "127.0.0.1"}) == port
    response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200 and "python_info" in response.text
    assert serve_metrics("test", {}) is None


def test_json_logs_carry_the_request_id_and_the_job_id(app_env):
    import io
    import json
    import logging

    from shared.web import job_context, log_handler
    from tests.shared.metrics_app import create_app

    stream = io.StringIO()
    handler = log_handler("tests", stream, log_format="json")
    logger = logging.getLogger("tests.json-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        app = create_app()
        with app.test_request_context("/healthz"):
            app.preprocess_request()
            logger.info("inside a request")
        with job_context("job-42"):
            logger.info("inside a job")
        logger.info("neither")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["inside a request", "inside a job", "neither"]
    assert len(lines[0]["requestId"]) == 32 and "jobId" not in lines[0]
    assert lines[1]["jobId"] == "job-42" and "requestId" not in lines[1]
    assert lines[2]["service"] == "tests" and lines[2]["level"] == "INFO" and set(lines[2]) == {
        "time", "level", "service", "logger", "message"}
