"""Operators drive workers: SIGTERM drains (in-flight jobs finish, or go back to the queue when
the drain time is up), and an administrator drains and resumes a worker through the API."""
from __future__ import annotations

import datetime as dt
import signal
import time
import uuid

import jwt
import pytest
import requests

from .conftest import Stack, _wait

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hosts(stack: Stack) -> Stack:
    stack.start_emulator("da")
    stack.start_emulator("db")
    stack.configure("da", step_delay=0.1)
    stack.configure("db", step_delay=0.1)
    return stack


def _admin_headers(stack: Stack) -> dict[str, str]:
    now = dt.datetime.now(dt.timezone.utc)
    token = jwt.encode({"sub": "1", "username": "admin", "role": "admin", "type": "access", "jti": uuid.uuid4().hex,
                        "iat": now, "exp": now + dt.timedelta(minutes=30)},
                       stack.settings.jwt_private_key_path.read_text(), algorithm="RS256")
    return {"Authorization": f"Bearer {token}"}


def _workers(stack: Stack) -> dict[str, dict]:
    response = requests.get(stack.gateway("/api/admin/workers"), headers=_admin_headers(stack), timeout=5)
    assert response.status_code == 200, response.text
    return {stack.name_of(w["name"]): w for w in response.json()["data"]["items"]}  # by the test's names


def _exited(stack: Stack, name: str, timeout: float = 60) -> int:
    proc = stack.workers[name].proc
    _wait(lambda: proc.poll() is not None, timeout, f"worker {name} to exit")
    stack.workers.pop(name)
    return proc.returncode


def test_sigterm_lets_the_running_job_finish_and_takes_no_more(hosts: Stack):
    hosts.start_worker("d1", "da", RENDER_DRAIN_SECONDS="60")
    user = hosts.user()
    running = user.submit(steps=30)  # about 3 s
    _wait(lambda: user.job(running)["progress"] > 0, 15, "the job to make progress")
    hosts.workers["d1"].send(signal.SIGTERM)
    _wait(lambda: _workers(hosts)["d1"]["state"] == "draining", 10, "d1 to report draining")
    waiting = user.submit(steps=4)

    assert _exited(hosts, "d1") == 0
    assert user.job(running)["status"] == "succeeded" and hosts.name_of(user.job(running)["worker"]) == "d1"
    assert user.job(waiting)["status"] == "queued", "a draining worker takes no new job"
    assert _workers(hosts)["d1"]["state"] == "dead"

    hosts.start_worker("d2", "db")
    finished = user.wait(waiting, 30)
    assert finished["status"] == "succeeded" and hosts.name_of(finished["worker"]) == "d2"
    assert user.settles_at({"available": 470, "held": 0})
    hosts.stop_worker("d2")


def test_when_the_drain_time_is_up_the_job_goes_back_to_the_queue_unharmed(hosts: Stack):
    hosts.start_worker("d3", "da", RENDER_DRAIN_SECONDS="1")
    user = hosts.user()
    job_id = user.submit(steps=100, batchSize=2)  # about 10 s: longer than the drain
    _wait(lambda: user.job(job_id)["progress"] > 0, 15, "the job to make progress")
    hosts.workers["d3"].send(signal.SIGTERM)

    assert _exited(hosts, "d3") == 0
    back = user.job(job_id)
    assert back["status"] == "queued" and back["attempts"] == 0, back
    assert user.balance() == {"available": 470, "held": 30}, "the hold stays for the next worker"
    assert "handed back" in hosts.tmp.joinpath("worker-d3.log").read_text()

    hosts.configure("db", step_delay=0.01)
    hosts.start_worker("d4", "db")
    finished = user.wait(job_id, 30)
    assert finished["status"] == "succeeded" and finished["attempts"] == 1
    assert hosts.name_of(finished["worker"]) == "d4"
    assert user.settles_at({"available": 470, "held": 0}), "charged once"
    ledger = [kind for kind, *_ in user.ledger()]
    assert ledger.count("hold") == 1 and ledger.count("capture") == 1, "one settlement"
    hosts.stop_worker("d4")
    hosts.configure("db", step_delay=0.1)


def test_an_administrator_drains_and_resumes_a_worker(hosts: Stack):
    hosts.start_worker("d5", "db")
    row = _wait(lambda: _workers(hosts).get("d5"), 10, "d5 to be listed")
    assert row["state"] == "active" and row["comfyuiUrl"] == hosts.emulator_url("db")
    assert row["devices"] and row["devices"][0]["vramTotal"] > 0 and row["comfyuiVersion"]
    assert "sd15_demo.safetensors" in row["models"]["checkpoints"] and "text2img" in row["workflows"]

    admin = _admin_headers(hosts)
    assert requests.post(hosts.gateway("/api/admin/workers/nobody/drain"), headers=admin,
                         timeout=5).status_code == 404
    d5 = hosts.gateway(f"/api/admin/workers/{hosts.worker_name('d5')}")
    answer = requests.post(d5 + "/drain", headers=admin, timeout=5)
    assert answer.status_code == 200 and answer.json()["data"]["worker"]["drainRequested"]
    _wait(lambda: _workers(hosts)["d5"]["state"] == "draining", 10, "d5 to obey the drain")

    user = hosts.user()
    job_id = user.submit(steps=4)
    time.sleep(3)  # three heartbeats: a drained worker takes nothing
    assert user.job(job_id)["status"] == "queued"
    assert hosts.workers["d5"].proc.poll() is None, "a drained worker stays alive"

    assert requests.post(d5 + "/resume", headers=admin, timeout=5).status_code == 200
    finished = user.wait(job_id, 30)
    assert finished["status"] == "succeeded" and hosts.name_of(finished["worker"]) == "d5"
    row = _wait(lambda: (w := _workers(hosts)["d5"])["done"] >= 1 and w, 10, "d5's count")
    assert row["state"] == "active" and row["loadedModel"] == "sd15_demo.safetensors" and row["failed"] == 0
    hosts.stop_worker("d5")
