"""The rows a worker writes as a job ends: an output row is recorded once, and only while its job
runs (an image recorded after the settlement would never be charged); the outbox records its
settlement and announcement even when the reconciler recorded one of them first."""
from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from services.render import jobs

from tests.render_worker.helpers import admit, job_state


def running_job(ctx, user_id: int) -> jobs.ClaimedJob:
    job_id = admit(ctx, user_id, batchSize=2)
    with ctx.db.transaction() as session:
        return jobs.claim_job(session, job_id, "render@test", lambda worker: False)


def stored(index: int) -> jobs.OutputFile:
    return jobs.OutputFile(index=index, image_key=f"images/{uuid.uuid4().hex}.png",
                           thumbnail_key=f"thumbs/{uuid.uuid4().hex}.webp", width=64, height=64, file_size=100,
                           sha256="0" * 64, output_id=uuid.uuid4().hex)


def add(ctx, job: jobs.ClaimedJob, file: jobs.OutputFile):
    with ctx.db.transaction() as session:
        return jobs.add_output(session, job, file)


def test_an_output_row_is_recorded_once_and_counted_once(ctx, user_id):
    job = running_job(ctx, user_id)
    first = add(ctx, job, stored(0))
    repeated = add(ctx, job, replace(stored(0), output_id=uuid.uuid4().hex))  # a redelivered attempt's image 0
    second = add(ctx, job, stored(1))

    assert repeated.id == first.id and repeated.image_key == first.image_key
    row, outputs = job_state(ctx, job.id)
    assert [(output.id, output.index) for output in outputs] == [(first.id, 0), (second.id, 1)]
    assert row.images_delivered == 2 and row.last_image_at is not None and row.status == "running"


def test_the_image_that_completes_a_job_records_its_success_with_it(ctx, user_id):
    job = running_job(ctx, user_id)
    add(ctx, job, stored(0))
    with ctx.db.transaction() as session:
        last = jobs.add_output(session, job, stored(1), completes=True)
        finished = ctx.outbox.read_finished(session, job.id)

    assert (finished.status, finished.images_delivered) == ("succeeded", 2)
    row, outputs = job_state(ctx, job.id)
    assert [output.id for output in outputs][1] == last.id and row.images_delivered == 2
    assert (row.status, row.progress, row.error_code) == ("succeeded", 100, None) and row.finished_at is not None


@pytest.mark.parametrize("completes", [False, True], ids=["an-image", "the-last-image"])
def test_an_image_of_a_job_finished_meanwhile_leaves_no_row(ctx, user_id, completes):
    job = running_job(ctx, user_id)
    add(ctx, job, stored(0))
    with ctx.db.transaction() as session:  # the reconciler failed the job while image 1 was being stored
        assert jobs.finish_job(session, job.id, "failed", error_code="JOB_TIMEOUT")

    with ctx.db.transaction() as session:
        assert jobs.add_output(session, job, stored(1), completes=completes) is None
    row, outputs = job_state(ctx, job.id)
    assert [output.index for output in outputs] == [0] and row.images_delivered == 1
    assert (row.status, row.error_code) == ("failed", "JOB_TIMEOUT")


def test_the_announcement_is_recorded_when_the_reconciler_recorded_the_settlement_first(ctx, user_id, channel):
    job = running_job(ctx, user_id)
    add(ctx, job, stored(0))
    add(ctx, job, stored(1))
    with ctx.db.transaction() as session:
        assert jobs.finish_job(session, job.id, "succeeded")
        finished = ctx.outbox.read_finished(session, job.id)
    with ctx.db.transaction() as session:  # the reconciler settled it while this worker's call was on its way
        assert jobs.mark_settled(session, job.id)
    settled_at = job_state(ctx, job.id)[0].settled_at

    ctx.outbox.complete(job.id, finished)
    row, _ = job_state(ctx, job.id)
    assert row.settled_at == settled_at and row.announced_at is not None
    assert ctx.credits.open_account(user_id) == {"available": 470, "held": 0}, "the settlement moved credits once"
    assert [event["type"] for event in channel() if event["data"].get("jobId") == job.id] == ["job.succeeded"]
