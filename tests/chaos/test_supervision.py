"""``make run`` supervises instead of collapsing: a child that dies is restarted with a back-off
and logged, the others keep running, and Ctrl-C still stops everything. Left idle, it logs no
error."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from typing import Iterator

import pytest
import requests

from shared.config import PROJECT_ROOT
from tests.conftest import TEST_SERVICE_TOKEN
from tests.platform import Platform, start_platform

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

SUPERVISE = """
import sys
from honcho.printer import Printer
from deploy.supervisor import Supervisor
supervisor = Supervisor(Printer(sys.stdout))
supervisor.add_process("steady", "exec sleep 600")
supervisor.add_process("flaky", "echo flaky is up; exit 3")
supervisor.loop()
sys.exit(supervisor.returncode)
"""


class Output(threading.Thread):
    """Everything a process prints, collected as it comes."""

    def __init__(self, proc: subprocess.Popen) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.lines: list[str] = []
        self.start()

    def run(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [m for line in list(self.lines) if (m := re.search(pattern, line))]
            if len(found) >= count:
                return [m.group(1) if m.groups() else m.group(0) for m in found]
            time.sleep(0.05)
        pytest.fail(f"no {count}× {pattern!r} in:\n{''.join(self.lines)}")


@contextmanager
def _supervising(script: str) -> Iterator[tuple[subprocess.Popen, Output]]:
    """Run a supervisor script in its own process group; kill what is left of it afterwards."""
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = Output(proc)
    try:
        yield proc, output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        output.join(timeout=5)
        proc.stdout.close()


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_dying_child_is_restarted_with_a_growing_back_off_and_ctrl_c_stops_all():
    with _supervising(SUPERVISE) as (proc, output):
        delays = output.wait_for(r"flaky exited after [\d.]+ s; restarting it in (\d+) s", count=3)
        assert delays[:3] == ["1", "2", "4"], "a child that keeps dying waits longer each time"
        assert len(output.wait_for(r"flaky is up", count=3)) >= 3

        steady = int(output.wait_for(r"steady started \(pid=(\d+)\)")[0])
        os.killpg(steady, signal.SIGKILL)
        output.wait_for(r"steady stopped \(rc=-9\)")
        output.wait_for(r"steady exited after [\d.]+ s; restarting it in 1 s")
        restarted = int(output.wait_for(r"steady started \(pid=(\d+)\)", count=2)[1])
        assert restarted != steady and _alive(restarted)

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
    pids = [int(pid) for pid in re.findall(r"started \(pid=(\d+)\)", "".join(output.lines))]
    assert not [pid for pid in pids if _alive(pid)], "Ctrl-C leaves no child behind"
    assert "restarting" not in "".join(output.lines).split("SIGINT received")[-1], "nothing restarts after Ctrl-C"


STOP_LAST = """
import sys
from honcho.printer import Printer
from deploy.supervisor import Supervisor
supervisor = Supervisor(Printer(sys.stdout), stop_last=("backing",))
supervisor.add_process("backing", "exec sleep 600")
supervisor.add_process("app", "trap 'sleep 1; echo app done; exit 0' TERM; while true; do sleep 0.1; done")
supervisor.loop()
sys.exit(supervisor.returncode)
"""


def test_ctrl_c_stops_what_the_others_need_only_once_they_have_gone():
    with _supervising(STOP_LAST) as (proc, output):
        output.wait_for(r"backing started")
        output.wait_for(r"app started")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 130
    events = [line.split("| ", 1)[-1].strip() for line in output.lines
              if re.search(r"app done|(app|backing) stopped|sending SIGTERM to (app|backing)", line)]
    assert [re.sub(r" \(.*", "", event) for event in events] == [
        "sending SIGTERM to app", "app done", "app stopped", "sending SIGTERM to backing", "backing stopped"]


@pytest.fixture
def platform(tmp_path_factory, redis_url, keys_dir):
    env = {"APP_ENV": "test", "REDIS_URL": redis_url, "SERVICE_TOKEN": TEST_SERVICE_TOKEN,
           "JWT_PRIVATE_KEY_PATH": str(keys_dir / "jwt_private.pem"),
           "JWT_PUBLIC_KEY_PATH": str(keys_dir / "jwt_public.pem")}
    database_url = f"sqlite:///{tmp_path_factory.mktemp('supervised') / 'platform.db'}"
    with start_platform(tmp_path_factory, env, database_url, EMULATOR_STEP_DELAY="0.02") as running:
        yield running


# Longer than two of redis-py's 5-s socket timeouts and several consumer reads, scheduler
# and reconciler passes: what an idle platform would log on its own shows up within it.
IDLE_SECONDS = 12


def test_make_run_is_quiet_while_idle_then_restarts_a_killed_worker_and_keeps_serving(platform: Platform):
    started = len(platform.log())
    time.sleep(IDLE_SECONDS)
    idle = platform.log()[started:]
    assert not re.search(r"\bERROR\b|Traceback|CRITICAL", idle), f"an idle platform logged:\n{idle[-4000:]}"

    worker = int(re.findall(r"worker started \(pid=(\d+)\)", platform.log())[-1])
    os.killpg(worker, signal.SIGKILL)
    platform.wait_for(lambda: len(re.findall(r"worker started \(pid=(\d+)\)", platform.log())) == 2, 60,
                      "the worker to be started again")
    assert re.search(r"worker exited after [\d.]+ s; restarting it in 1 s", platform.log())
    assert "gateway stopped" not in platform.log(), "the other processes keep running"

    name = f"sup_{uuid.uuid4().hex[:8]}"
    registered = requests.post(platform.url("/api/users/register"), timeout=10, json={
        "username": name, "email": f"{name}@example.com", "password": "correct-horse-1"})
    assert registered.status_code == 201, registered.text
    headers = {"Authorization": f"Bearer {registered.json()['data']['accessToken']}"}
    admitted = requests.post(platform.url("/api/generate"), headers=headers, timeout=10, json={
        "prompt": "a lantern", "size": "64x64", "steps": 4})
    assert admitted.status_code == 202, admitted.text
    job_url = platform.url(f"/api/jobs/{admitted.json()['data']['job']['id']}")
    job = platform.wait_for(lambda: (job := requests.get(job_url, headers=headers, timeout=10).json()["data"])
                            ["status"] in ("succeeded", "failed") and job, 60, "the job to finish")
    assert job["status"] == "succeeded", job["error"]
