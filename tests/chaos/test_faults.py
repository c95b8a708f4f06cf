"""One part of the platform dies while users' jobs run; afterwards no job is lost, no credit
drifts, and every user heard how each job ended (``Chaos.assert_healed``)."""
from __future__ import annotations

import signal
import time
from urllib.parse import urlparse

import pytest

from tests.chaos.conftest import EMULATORS, EVERY_BROKER, REDIS_BROKER, Chaos, Relay
from tests.conftest import AMQP_URL, BROKERS
from tests.render_e2e.conftest import _wait

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]
BATCH = {"steps": 20, "batchSize": 2}


def statuses(states: dict[str, dict]) -> set[tuple[str, str | None]]:
    return {(state["status"], state["error"]) for state in states.values()}


@EVERY_BROKER
def test_a_worker_killed_mid_batch(chaos: Chaos):
    jobs = chaos.submit(chaos.users(2), per_user=3, **BATCH)
    victim = chaos.stack.name_of(chaos.running_on(jobs)["worker"])
    chaos.stack.workers.pop(victim).kill(signal.SIGKILL)
    chaos.restart_worker(victim)

    assert statuses(chaos.assert_healed()) == {("succeeded", None)}, "its jobs ran again, elsewhere or later"


@EVERY_BROKER
def test_every_worker_dead_ends_their_jobs_with_a_refund_and_the_fleet_comes_back(chaos: Chaos):
    users = chaos.users(2)
    jobs = chaos.submit(users, per_user=3, steps=40, batchSize=2)
    chaos.running_on(jobs)
    for name in EMULATORS:
        chaos.stack.workers.pop(name).kill(signal.SIGKILL)

    ended = chaos.assert_healed()  # with no worker alive: the reconciler alone
    assert ("failed", "NO_WORKER") in statuses(ended)
    assert statuses(ended) <= {("failed", "NO_WORKER"), ("succeeded", None)}

    for name in EMULATORS:
        chaos.restart_worker(name)
    chaos.submit(users[:1], per_user=1, **BATCH)
    after = chaos.assert_healed()
    assert after[chaos.jobs[-1][1]]["status"] == "succeeded", "the fleet serves again"


@REDIS_BROKER
def test_credits_down_for_15_seconds_mid_batch_fails_no_job_and_charges_each_image_once(chaos: Chaos):
    jobs = chaos.submit(chaos.users(2), per_user=3, **BATCH)
    chaos.running_on(jobs)
    chaos.stack.stop_service("credits", signal.SIGKILL)
    time.sleep(15)
    chaos.stack.start_service("credits")

    assert statuses(chaos.assert_healed()) == {("succeeded", None)}


# Redis is the scheduler's store on either broker; without its append-only file it forgets what was
# released, while RabbitMQ still holds the messages sent before: the same jobs are sent again.
REDIS_KILLS = [pytest.param("redis", True, id="redis-with-aof")] + \
    [pytest.param(broker, False, id=f"{broker}-without-aof") for broker in BROKERS]


@pytest.mark.parametrize("broker, append_only", REDIS_KILLS, indirect=["broker"], scope="module")
def test_redis_killed_mid_batch(chaos: Chaos, append_only: bool):
    jobs = chaos.submit(chaos.users(2), per_user=3, **BATCH)
    chaos.running_on(jobs)
    chaos.stack.redis.stop()  # SIGKILL
    time.sleep(2)
    chaos.stack.redis.start(fresh=not append_only)  # without its append-only file Redis comes back empty

    assert statuses(chaos.assert_healed()) == {("succeeded", None)}, "queued jobs are sent again, none is lost"
    processes = {**chaos.stack.services, **chaos.stack.workers}
    exited = {name: process.output()[-3000:] for name, process in processes.items() if process.proc.poll() is not None}
    assert not exited, f"every process outlived Redis's death, the workers too (shared.tasks.RedisTransport): {exited}"


@EVERY_BROKER
def test_a_comfyui_dying_mid_batch_ends_its_jobs_without_waiting_for_it(chaos: Chaos):
    jobs = chaos.submit(chaos.users(2), per_user=3, **BATCH)
    chaos.running_on(jobs, worker="w2")
    proc, url = chaos.stack.emulators.pop("b")
    proc.kill(signal.SIGKILL)

    ended = chaos.assert_healed()  # while ComfyUI "b" stays dead
    assert ("failed", "COMFYUI_UNAVAILABLE") in statuses(ended)
    assert statuses(ended) <= {("failed", "COMFYUI_UNAVAILABLE"), ("succeeded", None)}
    chaos.stack.start_emulator("b", port=urlparse(url).port)
    chaos.stack.configure("b", step_delay=0.05)
    _wait(lambda: chaos.stack.catalog_of("w2"), 30, "worker w2 to offer its ComfyUI again")


@pytest.mark.parametrize("broker", [b for b in BROKERS if b == "rabbitmq"], indirect=True, scope="module")
def test_a_worker_cut_off_from_rabbitmq_mid_batch_serves_on_and_runs_each_job_once(chaos: Chaos):
    """Its connection closed, RabbitMQ puts the worker's unacknowledged messages back in its queue;
    the worker, alive all along (its heartbeat is in Redis), reconnects and reads them again (a
    job it finished meanwhile is skipped), and goes on serving. Eight cuts, as what went wrong after
    a reconnect (the consumer stalled by Celery's prefetch restore, services.render_worker.worker)
    was a race that only some reconnects lost. The acknowledgements that died with a connection, the
    reconnects and the dead connection's teardown are warnings: nothing in the worker's log may page
    an operator."""
    relay = Relay(AMQP_URL)
    for name in EMULATORS:  # one worker, so every job runs on the one cut off
        chaos.stack.stop_worker(name)
    log = chaos.stack.tmp / "worker-w1.log"
    logged_before = log.stat().st_size
    chaos.stack.start_worker("w1", EMULATORS["w1"], BROKER_URL=relay.url)
    try:
        users = chaos.users(2)
        for _ in range(8):
            chaos.running_on(chaos.submit(users, per_user=1, **BATCH), worker="w1")
            relay.cut(1)
        chaos.running_on(chaos.submit(users, per_user=1, **BATCH), worker="w1")
        assert statuses(chaos.assert_healed()) == {("succeeded", None)}
        logged = log.read_bytes()[logged_before:]
        assert b"CRITICAL" not in logged and b"ERROR" not in logged and b"DeprecationWarning" not in logged, \
            logged.decode(errors="replace")[-4000:]
    finally:
        chaos.stack.stop_worker("w1")
        relay.close()


@REDIS_BROKER
def test_a_frozen_gallery_delays_no_outcome(chaos: Chaos):
    for emulator in EMULATORS.values():  # failed jobs ring the gallery's bell
        chaos.stack.configure(emulator, faults={"execution_error": "injected", "persistent": True})
    gallery = chaos.stack.services["gallery"]
    gallery.send(signal.SIGSTOP)
    try:
        chaos.submit(chaos.users(2), per_user=2, steps=6)
        assert statuses(chaos.assert_healed()) == {("failed", "EXECUTION_ERROR")}
    finally:
        gallery.send(signal.SIGCONT)
