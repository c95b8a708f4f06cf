"""Unsaved outputs expire after the retention, with the files nothing else uses."""
from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from flask import Flask, jsonify, request
from sqlalchemy import select

from services.render.models import RenderOutput
from services.render_worker.pipeline import build_context
from services.render_worker.retention import sweep_expired_outputs
from shared.db import utcnow
from shared.storage import content_key
from tests.conftest import TEST_SERVICE_TOKEN, serve


@pytest.fixture
def gallery_keys():
    """A stand-in for the gallery's ``POST /internal/media/referenced``: ``used`` are in works."""
    used: set[str] = set()
    app = Flask("gallery_media")

    @app.post("/internal/media/referenced")
    def referenced():
        assert request.headers["X-Service-Token"] == TEST_SERVICE_TOKEN
        keys = request.get_json()["keys"]
        return jsonify({"success": True, "data": {"referenced": [key for key in keys if key in used]}})

    running = serve(app)
    yield running.url, used
    running.stop()


@pytest.fixture
def ctx(render_settings, render_config, gallery_keys):
    settings = replace(render_settings, gallery_url=gallery_keys[0])
    context = build_context(settings, replace(render_config, output_retention_days=30), "render@retention")
    yield context
    context.db.dispose()


def _output(ctx, age_days: float, content: bytes) -> RenderOutput:
    image_key = ctx.storage.put(content_key(content, "png", "images"), content)
    thumb_key = ctx.storage.put(content_key(content, "webp", "thumbs"), content)
    output = RenderOutput(id=uuid.uuid4().hex, job_id=uuid.uuid4().hex, user_id=1, index=0, image_key=image_key,
                          thumbnail_key=thumb_key, width=8, height=8, file_size=len(content), sha256="0" * 64,
                          created_at=utcnow() - timedelta(days=age_days))
    with ctx.db.transaction() as session:
        session.add(output)
    return output


def test_expired_outputs_go_with_their_files_and_recent_ones_stay(ctx, gallery_keys):
    used = gallery_keys[1]
    marker = uuid.uuid4().bytes
    old = _output(ctx, 31, b"old" + marker)
    old_in_a_work = _output(ctx, 40, b"saved" + marker)
    used.add(old_in_a_work.image_key)
    shared_content = b"shared" + marker
    old_twin, recent_twin = _output(ctx, 35, shared_content), _output(ctx, 1, shared_content)
    recent = _output(ctx, 29, b"recent" + marker)

    removed = sweep_expired_outputs(ctx, batch=10_000)

    assert removed >= 3
    with ctx.db.read() as session:
        left = set(session.scalars(select(RenderOutput.id).where(RenderOutput.id.in_(
            [o.id for o in (old, old_in_a_work, old_twin, recent_twin, recent)]))))
    assert left == {recent_twin.id, recent.id}
    assert not ctx.storage.exists(old.image_key) and not ctx.storage.exists(old.thumbnail_key)
    assert ctx.storage.exists(old_in_a_work.image_key), "a work still uses it"
    assert ctx.storage.exists(old_twin.image_key), "a recent output has the same content"
    assert ctx.storage.exists(recent.image_key)
    assert sweep_expired_outputs(ctx) == 0
