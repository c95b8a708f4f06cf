"""The fair-share scheduler: the order it releases jobs in (users, weights, lanes), model
affinity with a bounded wait, and its consistency with the database (cancel, Redis losing
its data, a worker dying or draining before it claimed its job)."""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import update

from services.render.catalog import KEY_PREFIX, alive_key, publish_catalog
from services.render.models import RenderJob
from services.render.scheduler import BATCH, INTERACTIVE, Entry, FairQueue, Policy, WorkerSlots, plan
from services.render_worker import scheduler as scheduler_process
from services.render_worker.scheduler import Scheduler
from services.credits.client import CreditsClient
from shared.db import utcnow
from shared.embedded import free_port, redis_answers, redis_server_binary, redis_server_command
from shared.events import redis_client, redis_db, user_channel
from shared.tasks import make_celery
from tests.conftest import running_process
from tests.render_fixtures import BODY, MODEL, balance

OTHER = "other_model.safetensors"


@pytest.fixture
def fair(redis, unique):
    queue = FairQueue(redis, f"sched-test-{unique}")
    yield queue
    for key in redis.scan_iter(match=f"sched-test-{unique}:*"):
        redis.delete(key)


def entry(job_id: str, user: int, *, lane: str = INTERACTIVE, weight: float = 1.0,
          model: str | None = MODEL) -> Entry:
    return Entry(job_id=job_id, user_id=user, lane=lane, weight=weight, workflow="text2img", model=model,
                 needs=(model,) if model else (), images=1)


def worker(worker_id: str, free: int = 1, loaded: str | None = None, models=(MODEL, OTHER)) -> WorkerSlots:
    return WorkerSlots(worker_id, free, frozenset({"text2img"}), frozenset(models), loaded)


def release(fair: FairQueue, count: int, policy: Policy = Policy()) -> list[str]:
    """Release ``count`` jobs one slot at a time, as freed slots come one by one."""
    order = []
    for _ in range(count):
        waiting = {lane: fair.waiting(lane) for lane in (INTERACTIVE, BATCH)}
        passes = fair.passes()
        placements = plan(waiting, [worker("w")], passes, policy, time.time(), {})
        if not placements:
            break
        fair.mark_released(placements, passes, fair.vtimes())
        order += [p.entry.job_id for p in placements]
    return order


def test_a_backlog_of_one_user_does_not_hold_back_users_who_arrive_later(fair):
    for n in range(1, 9):
        fair.enqueue(entry(f"a{n}", 1))
    assert release(fair, 2) == ["a1", "a2"]
    for user, name in ((2, "b"), (3, "c")):
        for n in (1, 2):
            fair.enqueue(entry(f"{name}{n}", user))
    assert fair.position("c2", 0.2) == 5, "a3 b1 c1 a4 b2 come first"
    assert release(fair, 12) == ["a3", "b1", "c1", "a4", "b2", "c2", "a5", "a6", "a7", "a8"]


def test_a_job_new_in_line_learns_its_place_as_it_enters(fair):
    """Admission's answer (``queuePosition``) comes from the enqueue itself: the place ``position``
    reads afterwards, in either lane, and None for a job that waits already."""
    for n in range(3):
        assert fair.enqueue_placed(entry(f"i{n}", 1 + n), 0.2) == fair.position(f"i{n}", 0.2) == n
    placed = [fair.enqueue_placed(entry(f"b{n}", 9, lane=BATCH), 0.2) for n in range(3)]
    assert placed == [fair.position(f"b{n}", 0.2) for n in range(3)] == [0, 1 + 3, 2 + 3]
    assert fair.enqueue_placed(entry("i0", 1), 0.2) is None and fair.position("i0", 0.2) == 0, "kept as it was"


def test_weights_divide_the_releases_while_both_users_wait(fair):
    for n in range(8):
        fair.enqueue(entry(f"h{n}", 1, weight=3))
        fair.enqueue(entry(f"l{n}", 2, weight=1))
    first = release(fair, 8)
    assert Counter(job[0] for job in first) == {"h": 6, "l": 2}


def test_the_batch_lane_gets_its_minimum_share_and_everything_when_people_wait_for_nothing(fair):
    for n in range(20):
        fair.enqueue(entry(f"i{n:02}", 1 + n % 3))
        fair.enqueue(entry(f"b{n:02}", 9, lane=BATCH))
    first = release(fair, 10, Policy(batch_share=0.2))
    assert Counter(job[0] for job in first) == {"i": 8, "b": 2}
    assert fair.position("b05", 0.2) == 3 + 12, "batch's 4th waiting job: 3 batch and 12 interactive ahead"
    release(fair, 15, Policy(batch_share=0.2))  # the rest of the interactive lane, and some batch
    rest = release(fair, 20, Policy(batch_share=0.2))
    assert rest and all(job.startswith("b") for job in rest)


def test_an_idle_lane_banks_no_credit(fair):
    for n in range(30):
        fair.enqueue(entry(f"i{n:02}", 1))
    release(fair, 20, Policy(batch_share=0.2))  # people alone for a while
    for n in range(10):
        fair.enqueue(entry(f"b{n:02}", 9, lane=BATCH))
    assert Counter(job[0] for job in release(fair, 5, Policy(batch_share=0.2))) == {"i": 4, "b": 1}


def test_affinity_prefers_a_worker_holding_the_model_and_waits_for_it_only_so_long():
    policy = Policy(affinity_wait=5)
    now = time.time()
    busy_a, idle_b = worker("wa", free=0, loaded=MODEL), worker("wb", free=1, loaded=OTHER)
    waiting = {INTERACTIVE: [(entry("j1", 1), 1.0), (entry("j2", 2, model=OTHER), 1.0)]}
    placed = plan(waiting, [busy_a, idle_b], {}, policy, now, {})
    assert [(p.entry.job_id, p.worker) for p in placed] == [("j2", "wb")], \
        "j1 waits for the busy worker holding its model; j2 passes it to the idle worker holding its own"

    waiting = {INTERACTIVE: [(entry("j1", 1), 1.0)]}
    passed_over: dict[str, float] = {}
    assert plan(waiting, [worker("wa", 0, MODEL), worker("wb", 1, OTHER)], {}, policy, now, passed_over) == []
    assert plan(waiting, [worker("wa", 0, MODEL), worker("wb", 1, OTHER)], {}, policy, now + 4.9, passed_over) == []
    placed = plan(waiting, [worker("wa", 0, MODEL), worker("wb", 1, OTHER)], {}, policy, now + 5.1, passed_over)
    assert [(p.entry.job_id, p.worker) for p in placed] == [("j1", "wb")], \
        "after waiting its while (counted from when it was first passed over), any capable worker"

    placed = plan(waiting, [worker("wa", 1, OTHER), worker("wb", 1, MODEL)], {}, policy, now, {})
    assert [p.worker for p in placed] == ["wb"], "an idle holder first"
    placed = plan(waiting, [worker("wa", 1, MODEL)], {}, Policy(affinity_wait=0), now, {})
    assert [p.worker for p in placed] == ["wa"]


def test_jobs_spread_over_idle_gpus_before_filling_a_workers_second_slot():
    now = time.time()
    waiting = {INTERACTIVE: [(entry("j1", 1), 1.0), (entry("j2", 2), 1.0)]}
    placed = plan(waiting, [worker("wa", 2), worker("wb", 2)], {}, Policy(), now, {})
    assert sorted(p.worker for p in placed) == ["wa", "wb"]
    waiting = {INTERACTIVE: [(entry("j1", 1), 1.0)]}
    placed = plan(waiting, [worker("wa", 0, MODEL), worker("wb", 2, None)], {}, Policy(), now, {})
    assert [p.worker for p in placed] == ["wb"], "a worker that holds no model yet switches nothing"


def test_a_job_goes_only_to_workers_that_list_its_model():
    now = time.time()
    rare = entry("j1", 1, model="rare.safetensors")
    waiting = {INTERACTIVE: [(rare, 1.0)]}
    assert plan(waiting, [worker("wa", 2)], {}, Policy(), now, {}) == []
    placed = plan(waiting, [worker("wa", 2), worker("wr", 1, models=("rare.safetensors",))], {}, Policy(), now, {})
    assert [p.worker for p in placed] == ["wr"]


def test_free_slots_limit_what_is_released(fair):
    for n in range(6):
        fair.enqueue(entry(f"j{n}", n))
    waiting = {INTERACTIVE: fair.waiting(INTERACTIVE)}
    placed = plan(waiting, [worker("wa", 2, MODEL), worker("wb", 1, MODEL)], {}, Policy(), time.time(), {})
    assert Counter(p.worker for p in placed) == {"wa": 2, "wb": 1}


def test_a_pass_reads_the_lines_in_fair_order_and_only_the_entries_it_does_not_know(fair, redis):
    for name, user, lane in (("i1", 1, INTERACTIVE), ("i2", 2, INTERACTIVE), ("b1", 3, BATCH), ("i3", 1, INTERACTIVE)):
        fair.enqueue(entry(name, user, lane=lane))
    first = fair.snapshot()
    assert first.counts == {INTERACTIVE: 3, BATCH: 1}
    assert {lane: [e.job_id for e, _ in items] for lane, items in first.waiting.items()} == \
        {INTERACTIVE: ["i1", "i2", "i3"], BATCH: ["b1"]}
    assert first.waiting[INTERACTIVE] == fair.waiting(INTERACTIVE)  # the same entries and tags
    remembered = replace(entry("i2", 2), images=7)  # what the caller kept: used as it is, not read again
    known = {"i2": (remembered, first.waiting[INTERACTIVE][1][1]), "gone": (entry("gone", 9), 0.0)}
    redis.hdel(fair.entries_key, "i3")  # an id whose entry is gone is left out
    again = fair.snapshot(known=known)
    assert again.waiting[INTERACTIVE] == [first.waiting[INTERACTIVE][0], known["i2"]]
    assert again.waiting[BATCH] == first.waiting[BATCH]


def test_a_pass_takes_the_lease_and_the_nudges_and_reads_nothing_while_another_leads(fair, redis):
    fair.enqueue(entry("i1", 1))  # nudges the scheduler
    redis.set(alive_key("w-alive"), "1", ex=30)
    first = fair.lead("one", 10, values=[alive_key("w-alive"), alive_key("w-gone")])
    assert (first.lease, [e.job_id for e, _ in first.waiting[INTERACTIVE]]) == (1, ["i1"])
    assert first.values == ["1", None], "the heartbeats asked for, in order"
    assert redis.llen(fair.wake_key) == 0, "the pass took the nudge"
    assert fair.lead("other", 10) is None, "one scheduler releases at a time"
    assert fair.lead("one", 10).lease == 2, "renewed"


def test_a_pass_reads_the_line_after_redis_restarted_without_its_scripts(tmp_path):
    """A restarted Redis knows no script: the pass sends its script again and goes on."""
    port = free_port()
    command = redis_server_command(redis_server_binary(), port, tmp_path)  # its data kept (append-only file)
    url = f"redis://127.0.0.1:{port}/0"
    with running_process(command, lambda: redis_answers(url), "a private redis-server"):
        fair = FairQueue(redis_client(url), "sched-restart")
        fair.enqueue(entry("i1", 1))
        assert [e.job_id for e, _ in fair.lead("one", 10).waiting[INTERACTIVE]] == ["i1"]
    with running_process(command, lambda: redis_answers(url), "the private redis-server again"):
        assert fair.redis.script_exists(fair._read.sha) == [False]
        fair.enqueue(entry("i2", 2))
        state = fair.lead("one", 10)
        assert [e.job_id for e, _ in state.waiting[INTERACTIVE]] == ["i1", "i2"]
        assert fair.snapshot().counts[INTERACTIVE] == 2


# -- against the database and the API ------------------------------------------------------
def _admit(app, headers, **body) -> str:
    response = app.test_client().post("/api/generate", json={**BODY, **body}, headers=headers)
    assert response.status_code == 202, response.json
    return response.json["data"]["job"]["id"]


def _worker_messages(redis, queue: str, worker_id: str) -> list[str]:
    return [json.loads(raw)["headers"]["argsrepr"][2:-2] for raw in redis.lrange(f"{queue}.worker.{worker_id}", 0, -1)]


def test_cancelling_a_waiting_job_removes_it_from_the_line(app, user, live_worker, scheduler, redis, queue,
                                                           render_settings):
    user_id, headers = user
    job_id = _admit(app, headers)
    assert scheduler.fair.waiting_ids() == [job_id]
    assert app.test_client().delete(f"/api/jobs/{job_id}", headers=headers).json["data"]["status"] == "cancelled"
    assert scheduler.fair.waiting_ids() == []
    assert scheduler.run_once() == 0 and _worker_messages(redis, queue, "render@a") == []
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}


def test_after_redis_lost_the_line_it_is_rebuilt_from_queued_jobs_in_fair_order(app, user, issue_token, live_worker,
                                                                                 scheduler, redis, queue):
    heavy, light = user[1], {"Authorization": f"Bearer {issue_token(user[0] + 1, 'light')}"}
    CreditsClient(app.extensions["render"].settings.credits_url,
                  app.extensions["render"].settings.service_token).open_account(user[0] + 1)
    heavy_jobs = [_admit(app, heavy) for _ in range(3)]
    light_job = _admit(app, light)
    cancelled = _admit(app, light)
    app.test_client().delete(f"/api/jobs/{cancelled}", headers=light)
    for key in redis.scan_iter(match=f"{queue}:sched:*"):  # Redis restarted without its data
        redis.delete(key)
    with scheduler.db.transaction() as session:  # admitted a while ago (the sync leaves the newest to admission)
        session.execute(update(RenderJob).where(RenderJob.id.in_(heavy_jobs + [light_job]))
                        .values(updated_at=utcnow() - timedelta(minutes=1)))
    assert scheduler.run_once() == 2
    released = _worker_messages(redis, queue, "render@a")
    assert set(released) == {heavy_jobs[0], light_job}, "the light user's job is not behind the heavy user's backlog"
    assert set(scheduler.fair.waiting_ids()) == set(heavy_jobs[1:])
    assert scheduler.sync() == 0, "rebuilt once"


def test_a_job_released_to_a_worker_that_died_before_claiming_it_goes_to_another(app, user, live_worker, scheduler,
                                                                                redis, queue):
    job_id = _admit(app, user[1])
    assert scheduler.run_once() == 1 and _worker_messages(redis, queue, "render@a") == [job_id]
    redis.delete(alive_key("render@a"))
    publish_catalog(redis, {"workerId": "render@b", "checkpoints": [MODEL], "workflows": ["text2img"], "slots": 1})
    redis.set(alive_key("render@b"), "1", ex=30)
    scheduler.fair.fleet_changed()  # as a worker announces that it joined (its heartbeat)
    assert scheduler.run_once() == 1
    assert _worker_messages(redis, queue, "render@b") == [job_id]
    assert list(scheduler.fair.released()) == [job_id]


def test_a_sync_forgets_what_it_kept_about_workers_that_are_gone(app, user, live_worker, scheduler, redis, queue):
    """Worker ids are new on every start: the queues the scheduler declared must not pile up with restarts."""
    job_id = _admit(app, user[1])
    assert scheduler.run_once() == 1 and _worker_messages(redis, queue, "render@a") == [job_id]
    publish_catalog(redis, {"workerId": "render@b", "checkpoints": [MODEL], "workflows": ["text2img"], "slots": 1})
    redis.set(alive_key("render@b"), "1", ex=30)
    redis.delete(alive_key("render@a"), KEY_PREFIX + "render@a")  # render@a died; its catalog expired
    scheduler.fair.fleet_changed()  # as a worker announces that it joined (its heartbeat)
    assert scheduler.run_once() == 1 and _worker_messages(redis, queue, "render@b") == [job_id]
    queues = scheduler.celery.amqp.queues
    assert {f"{queue}.worker.render@a", f"{queue}.worker.render@b"} <= set(queues)
    scheduler.sync()
    assert f"{queue}.worker.render@a" not in queues and "render@a" not in scheduler.fair.last_models()
    assert f"{queue}.worker.render@b" in queues and scheduler.fair.last_models().get("render@b") == MODEL
    assert scheduler._declared == {"render@b"}


def test_on_a_redis_broker_the_queue_of_a_worker_that_is_gone_expires_as_on_rabbitmq(
        app, user, live_worker, scheduler, redis, queue, monkeypatch):
    """kombu puts a worker's unacknowledged message back into the worker's own queue (after the
    visibility timeout when it was killed), with none of the queue's ``x-expires``: in the queue of a
    past start nothing reads it, and it stayed in Redis for good. Its job is not lost (the
    scheduler or the reconciler takes it back), so the queue may go as on RabbitMQ."""
    publish_catalog(redis, {"workerId": "render@b", "checkpoints": [MODEL], "workflows": ["text2img"], "slots": 2})
    redis.set(alive_key("render@b"), "1", ex=30)
    first, second = _admit(app, user[1]), _admit(app, user[1])
    assert scheduler.run_once() == 2
    dead, live = f"{queue}.worker.render@a", f"{queue}.worker.render@b"
    assert _worker_messages(redis, queue, "render@a") == [first] and _worker_messages(redis, queue, "render@b") == [second]
    with scheduler.celery.connection_for_read() as connection:
        channel = connection.channel()
        for name in (dead, live):  # each worker takes its message and stops before acknowledging it
            assert channel.basic_get(name, no_ack=False) is not None
        channel.close()  # kombu puts both back, as it does with a killed worker's after the visibility timeout
    assert redis.ttl(dead) == redis.ttl(live) == -1, "put back with no expiry"
    redis.delete(alive_key("render@a"), KEY_PREFIX + "render@a")  # render@a is gone
    monkeypatch.setattr(scheduler_process, "WORKER_QUEUE_EXPIRES_SECONDS", 1)
    monkeypatch.setattr(scheduler_process, "GONE_QUEUES_SECONDS", 0)  # this sync walks the keys
    scheduler.sync()
    assert redis.ttl(live) == -1 and _worker_messages(redis, queue, "render@b") == [second], "a live worker's is kept"
    deadline = time.monotonic() + 30
    while redis.exists(dead) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not redis.exists(dead), "the queue of the worker that is gone expired"
    scheduler.fair.fleet_changed()
    assert scheduler.run_once() == 1, "the job whose message was there goes to the live worker"
    assert _worker_messages(redis, queue, "render@b") == [first, second]


def test_a_draining_worker_gets_no_job_and_what_it_has_not_claimed_goes_to_another(app, user, live_worker, scheduler,
                                                                                   redis, queue):
    first = _admit(app, user[1])
    assert scheduler.run_once() == 1 and _worker_messages(redis, queue, "render@a") == [first]
    publish_catalog(redis, {"workerId": "render@a", "checkpoints": [MODEL], "workflows": ["text2img"], "slots": 2,
                            "state": "draining"})
    second = _admit(app, user[1])
    publish_catalog(redis, {"workerId": "render@b", "checkpoints": [MODEL], "workflows": ["text2img"], "slots": 2})
    redis.set(alive_key("render@b"), "1", ex=30)
    scheduler.fair.fleet_changed()  # as the workers' heartbeats announce a drain and a join
    assert scheduler.run_once() == 2
    assert sorted(_worker_messages(redis, queue, "render@b")) == sorted([first, second])
    assert _worker_messages(redis, queue, "render@a") == [first], "only the message it had before draining"
    assert sorted(scheduler.fair.released()) == sorted([first, second])


def test_administrators_set_a_users_weight_for_the_jobs_they_submit_next(app_with_auth, auth_directory, user,
                                                                         issue_token, live_worker, scheduler):
    app, (user_id, headers) = app_with_auth, user
    auth_directory[1][user_id] = {"id": user_id, "username": "xiaoming", "displayName": "小明"}
    admin = {"Authorization": f"Bearer {issue_token(1, 'root', role='admin')}"}
    client = app.test_client()
    assert client.put(f"/api/admin/render/shares/{user_id}", json={"weight": 3}, headers=headers).status_code == 403
    assert client.put(f"/api/admin/render/shares/{user_id}", json={"weight": 0}, headers=admin).status_code == 422
    answer = client.put(f"/api/admin/render/shares/{user_id}", json={"weight": 3}, headers=admin)
    assert answer.status_code == 200 and answer.json["data"] == {"userId": user_id, "weight": 3.0}
    job_id = _admit(app, headers)
    assert [e.weight for e, _ in scheduler.fair.waiting(INTERACTIVE) if e.job_id == job_id] == [3.0]
    shares = client.get("/api/admin/render/shares", headers=admin).json["data"]

    def mine(rows: list[dict]) -> list[dict]:
        return [row for row in rows if row["userId"] == user_id]

    named = {"username": "xiaoming", "displayName": "小明"}
    assert mine(shares["users"]) == [{"userId": user_id, "weight": 3.0, **named}]
    assert mine(shares["waiting"]) == [{"userId": user_id, "lane": INTERACTIVE, "weight": 3.0, "waiting": 1, **named}]
    client.put(f"/api/admin/render/shares/{user_id}", json={"weight": None}, headers=admin)
    assert mine(client.get("/api/admin/render/shares", headers=admin).json["data"]["users"]) == []


def test_a_weight_for_a_user_auth_does_not_know_is_refused(app_with_auth, app, issue_token):
    admin = {"Authorization": f"Bearer {issue_token(1, 'root', role='admin')}"}
    unknown = 987_654_321
    answer = app_with_auth.test_client().put(f"/api/admin/render/shares/{unknown}", json={"weight": 2},
                                             headers=admin)
    assert answer.status_code == 404
    assert answer.json["success"] is False and answer.json["error"]["code"] == "USER_NOT_FOUND"
    shares = app_with_auth.test_client().get("/api/admin/render/shares", headers=admin).json["data"]
    assert [row for row in shares["users"] if row["userId"] == unknown] == []
    down = app.test_client().put(f"/api/admin/render/shares/{unknown}", json={"weight": 2}, headers=admin)
    assert (down.status_code, down.json["error"]["code"]) == (503, "AUTH_UNAVAILABLE"), "auth not answering"


def test_waiting_users_hear_their_place_in_the_order_the_scheduler_releases(app, user, issue_token, live_worker,
                                                                          scheduler, redis, render_settings):
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(user_channel(user[0], redis_db(redis)))
    pubsub.get_message(timeout=1)
    jobs = [_admit(app, user[1]) for _ in range(4)]
    assert scheduler.run_once() == 2, "two slots"
    heard = {}
    while (message := pubsub.get_message(timeout=0.5)) is not None:
        event = json.loads(message["data"])
        if event["type"] == "job.position":
            heard[event["data"]["jobId"]] = event["data"]["position"]
    pubsub.close()
    assert heard == {jobs[2]: 0, jobs[3]: 1}


def test_a_job_a_worker_hands_back_goes_to_another_worker_and_the_job_behind_it_to_this_one(app, user, live_worker,
                                                                                            scheduler, redis, queue):
    first, second, third = (_admit(app, user[1]) for _ in range(3))
    assert scheduler.run_once() == 2, "two slots; the third waits (the scheduler keeps its entry between passes)"
    declined = scheduler.fair.released()[first].entry
    scheduler.fair.enqueue(replace(declined, avoid=("render@a",)), front=True)  # what a draining worker does
    assert scheduler.run_once() == 1
    assert sorted(_worker_messages(redis, queue, "render@a")) == sorted([first, second, third])
    assert scheduler.fair.waiting_ids() == [first], "the handed-back job waits for another worker"
    publish_catalog(redis, {"workerId": "render@b", "checkpoints": [MODEL], "workflows": ["text2img"], "slots": 1})
    redis.set(alive_key("render@b"), "1", ex=30)
    scheduler.fair.fleet_changed()  # as a worker announces that it joined (its heartbeat)
    assert scheduler.run_once() == 1 and _worker_messages(redis, queue, "render@b") == [first]


def test_a_schedule_period_beyond_redis_socket_timeout_waits_without_errors(scheduler, caplog):
    """RENDER_SCHEDULE_SECONDS of 5 or more: one BLPOP that long would outlast redis-py's 5-s
    socket timeout and end every idle pause in a logged TimeoutError."""
    scheduler.config = replace(scheduler.config, schedule_seconds=6)
    stop = threading.Event()
    runner = threading.Thread(target=scheduler.run, args=(stop,))
    runner.start()
    try:
        time.sleep(6.5)  # one whole idle pause
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert not [record.getMessage() for record in caplog.records if record.levelname == "ERROR"]


def test_an_idle_leader_renews_its_lease_every_half_lease_and_a_job_that_comes_is_released_at_once(
        app, user, live_worker, scheduler, render_settings):
    """With nothing waiting or released a pass could only renew the lease: the leader waits for a
    nudge up to half its lease instead of RENDER_SCHEDULE_SECONDS. A standby never takes over from
    it meanwhile, and admission's nudge still has a job released without waiting for the pause."""
    assert scheduler.run_once() == 0
    assert scheduler.pause_seconds() == scheduler.lease_seconds / 2 > scheduler.config.schedule_seconds
    service = app.extensions["render"]
    celery = make_celery(render_settings, "render-test-standby")
    standby = Scheduler(service.config, service.db, service.events, celery, service.templates, "scheduler@standby")
    stop = threading.Event()
    runner = threading.Thread(target=scheduler.run, args=(stop,))
    runner.start()
    try:
        until = time.monotonic() + 1.5 * scheduler.lease_seconds
        while time.monotonic() < until:
            assert standby.run_once() is None, "the idle leader kept its lease"
            time.sleep(0.5)
        job_id = _admit(app, user[1])
        deadline = time.monotonic() + 30
        while job_id not in scheduler.fair.released():
            assert time.monotonic() < deadline, "the job was not released"
            time.sleep(0.05)
        assert scheduler.pause_seconds() == scheduler.config.schedule_seconds, "a job released: passes as before"
    finally:
        stop.set()
        runner.join(10)
        celery.close()
    assert not runner.is_alive()


def test_released_jobs_are_forgotten_once_claimed_or_over(app, user, live_worker, scheduler, redis, queue):
    first = _admit(app, user[1])
    assert scheduler.run_once() == 1 and list(scheduler.fair.released()) == [first]
    service = app.extensions["render"]
    with service.db.transaction() as session:  # its worker claimed it, ran it and finished
        session.execute(update(RenderJob).where(RenderJob.id == first).values(status="succeeded", worker="render@a"))
    second = _admit(app, user[1])
    assert scheduler.run_once() == 1, "the second job is released in the pass that forgets the first"
    assert list(scheduler.fair.released()) == [second]
    with service.db.transaction() as session:
        session.execute(update(RenderJob).where(RenderJob.id == second).values(status="running", worker="render@a"))
    assert scheduler.run_once() == 0 and scheduler.fair.released() == {}  # a pass releasing nothing forgets too


def test_a_job_deep_in_line_hears_its_place_less_often_the_further_back_it_is(scheduler, monkeypatch):
    heard = []
    monkeypatch.setattr(scheduler.events, "publish_live", lambda events: heard.extend(
        (event["jobId"], event["position"]) for _, _, event in events))
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    line = [entry(f"j{n}", n) for n in range(40)]

    def tell(released: int) -> dict[str, int]:
        heard.clear()
        scheduler.publish_positions({INTERACTIVE: line[released:]}, {INTERACTIVE: 40 - released, BATCH: 0})
        return dict(heard)

    assert tell(0) == {f"j{n}": n for n in range(40)}, "every job new in line hears its place at once"
    clock[0] += 0.5
    assert tell(1) == {}, "at most once a second"
    clock[0] += 0.5
    assert tell(2) == {f"j{n}": n - 2 for n in range(2, 13)}, "the nearest ten places hear every change"
    clock[0] += 1.0
    assert tell(3) == {f"j{n}": n - 3 for n in range(3, 24)}, "up to 20 places back: every 2 s"
    clock[0] += 1.0
    assert tell(4) == {**{f"j{n}": n - 4 for n in range(4, 15)}, **{f"j{n}": n - 4 for n in range(24, 35)}}, \
        "up to 30 places back: every 3 s"


def test_an_admission_nudges_the_scheduler_only_while_a_slot_may_be_free(app, user, scheduler, redis, queue, unique):
    for key in redis.scan_iter(match=alive_key("*")):  # the only live worker: its own, two slots free
        redis.delete(key)
    worker_id = f"render@{unique}"
    publish_catalog(redis, {"workerId": worker_id, "checkpoints": [MODEL], "samplers": ["euler"],
                            "schedulers": ["normal"], "workflows": ["text2img"], "slots": 2})
    redis.set(alive_key(worker_id), "1", ex=30)

    def nudged() -> bool:
        return redis.llen(scheduler.fair.wake_key) > 0

    def finish(*job_ids: str) -> None:
        with scheduler.db.transaction() as session:  # their worker claimed, ran and finished them
            session.execute(update(RenderJob).where(RenderJob.id.in_(job_ids)).values(status="succeeded",
                                                                                    worker=worker_id))
        scheduler.fair.wake()  # as the worker does when a job ends

    first, second = _admit(app, user[1]), _admit(app, user[1])
    assert nudged()
    assert scheduler.run_once() == 2, "two slots, both taken now"
    third = _admit(app, user[1])
    assert not nudged(), "it could not start before a slot frees"
    finish(first)
    assert nudged() and scheduler.run_once() == 1
    assert _worker_messages(redis, queue, worker_id)[0] == third
    finish(second, third)
    assert scheduler.run_once() == 0, "nothing waits; both slots free"
    _admit(app, user[1])
    assert nudged(), "a slot is free: the job starts at once"
