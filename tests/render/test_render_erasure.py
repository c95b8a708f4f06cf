"""A deleted account leaves nothing in the render domain: jobs (with their prompts), outputs,
uploads, its fair-share weight and files go; waiting jobs are cancelled and refunded first; a running one is waited for."""
from __future__ import annotations

import io

import pytest
from PIL import Image
from sqlalchemy import func, select

from services.render import jobs
from services.render.erasure import ErasurePending, remove_user
from services.render.events import handler
from services.render.models import RenderJob, RenderOutput, RenderUpload, RenderUserShare
from services.render_worker.pipeline import build_context, render_job
from shared.events import USER_DELETED

from tests.render_fixtures import BODY, balance


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def rows_of(render, user_id: int) -> dict[str, int]:
    with render.db.read() as session:
        return {name: session.scalar(select(func.count()).select_from(model).where(model.user_id == user_id))
                for name, model in (("jobs", RenderJob), ("outputs", RenderOutput), ("uploads", RenderUpload),
                                    ("shares", RenderUserShare))}


def test_a_deleted_users_jobs_outputs_uploads_and_files_go_and_shared_files_stay(
        app, user, issue_token, live_worker, render_settings, render_config):
    user_id, headers = user
    render = app.extensions["render"]
    client = app.test_client()
    finished = client.post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    ctx = build_context(render_settings, render_config, "render@erasure")
    render_job(finished, ctx)
    ctx.db.dispose()
    waiting = client.post("/api/generate", json={**BODY, "seed": 7}, headers=headers).json["data"]["job"]["id"]
    assert balance(render_settings, user_id)["held"] == 30
    own_upload = render.upload(user_id, png((200, 10, 10)))
    shared_bytes = png((10, 200, 10))
    render.upload(user_id, shared_bytes)
    other = render.upload(user_id + 1, shared_bytes)  # another user uploaded the same picture
    with render.db.read() as session:
        output_keys = [key for row in session.execute(select(RenderOutput.image_key, RenderOutput.thumbnail_key)
                                                      .where(RenderOutput.job_id == finished)) for key in row]
        own_key = session.get(RenderUpload, own_upload["id"]).image_key
        shared_key = session.get(RenderUpload, other["id"]).image_key
    assert len(output_keys) == 4 and all(render.storage.exists(key) for key in output_keys + [own_key, shared_key])
    with render.db.transaction() as session:  # an administrator gave the user a weight of their own
        session.add(RenderUserShare(user_id=user_id, weight=2.0, updated_by=1))

    handler(render)({"type": USER_DELETED, "userId": str(user_id)})

    assert rows_of(render, user_id) == {"jobs": 0, "outputs": 0, "uploads": 0, "shares": 0}
    assert balance(render_settings, user_id) == {"available": 470, "held": 0}, "the waiting job was refunded"
    assert not any(render.storage.exists(key) for key in output_keys + [own_key])
    assert render.storage.exists(shared_key), "the other user's upload keeps its file"
    assert rows_of(render, user_id + 1)["uploads"] == 1
    owner_view = client.get(f"/api/jobs/{waiting}", headers=headers)
    assert owner_view.status_code == 404
    assert remove_user(render, user_id) == {"jobs": 0, "outputs": 0, "uploads": 0, "shares": 0, "files": 0}, \
        "idempotent"


def test_a_running_job_is_flagged_and_waited_for_before_its_rows_go(app, user, live_worker, render_settings):
    user_id, headers = user
    render = app.extensions["render"]
    job_id = app.test_client().post("/api/generate", json=BODY, headers=headers).json["data"]["job"]["id"]
    with render.db.transaction() as session:
        assert jobs.claim_job(session, job_id, "render@busy", lambda worker: True) is not None

    with pytest.raises(ErasurePending):
        remove_user(render, user_id)
    with render.db.read() as session:
        job = session.get(RenderJob, job_id)
        assert job.status == "running" and job.cancel_requested, "its worker is told to stop"

    with render.db.transaction() as session:  # the worker interrupts the prompt and finishes the job
        jobs.finish_job(session, job_id, "cancelled")
    render.outbox.complete(job_id)
    assert remove_user(render, user_id)["jobs"] == 1
    assert rows_of(render, user_id)["jobs"] == 0
    assert balance(render_settings, user_id) == {"available": 500, "held": 0}


def test_other_announcements_are_ignored(app, user, live_worker):
    user_id, headers = user
    app.test_client().post("/api/generate", json=BODY, headers=headers)
    handler(app.extensions["render"])({"type": "user.updated", "userId": str(user_id)})
    assert rows_of(app.extensions["render"], user_id)["jobs"] == 1
