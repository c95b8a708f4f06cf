"""Unsaved outputs are the user's generation history for ``OUTPUT_RETENTION_DAYS``; then
the rows go, and so do their files unless something else still uses them.

A saved work has its own copy of the files (the gallery copies them under ``works/``), so
an output expiring never breaks a work. Files are content-addressed, so a key may still
be used by another output (an identical image), an upload or a job's source, or, for works
saved before the gallery made copies, by a work: all are asked after the rows are gone.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from shared.db import utcnow
from shared.errors import ServiceError
from shared.storage import remove_unreferenced

from services.render import jobs
from services.render.models import RenderOutput
from services.render_worker.pipeline import RenderContext

log = logging.getLogger(__name__)

# One sweep an hour in the whole pool is plenty for a retention counted in days.
LOCK_KEY = "render:retention:lock"
LOCK_SECONDS = 3600


def sweep_expired_outputs(ctx: RenderContext, now: datetime | None = None,
                          batch: int = 500) -> int:
    """Remove outputs older than the retention and their unreferenced files; returns rows removed."""
    cutoff = (now or utcnow()) - timedelta(days=ctx.config.output_retention_days)
    with ctx.db.transaction() as session:
        expired = session.scalars(select(RenderOutput).where(RenderOutput.created_at < cutoff)
                                  .order_by(RenderOutput.created_at).limit(batch)).all()
        if not expired:
            return 0
        keys = [key for output in expired for key in (output.image_key, output.thumbnail_key)]
        session.execute(delete(RenderOutput).where(RenderOutput.id.in_([output.id for output in expired])))

    def referenced(candidates: list[str]) -> set[str]:
        with ctx.db.read() as session:
            used = jobs.keys_in_use(session, candidates)
        return used | ctx.gallery.referenced_keys(candidates)

    try:
        remove_unreferenced(ctx.storage, keys, referenced)
    except ServiceError as exc:  # the rows are gone; unreferenced files are only disk space
        log.warning("expired outputs removed but their files kept: the gallery did not answer (%s)", exc.code)
    return len(expired)


def sweep_if_due(ctx: RenderContext) -> int | None:
    """Sweep when no worker of the pool did within the last hour; None when not due."""
    if not ctx.events.redis.set(LOCK_KEY, ctx.worker_id, nx=True, ex=LOCK_SECONDS):
        return None
    removed = sweep_expired_outputs(ctx)
    if removed:
        log.info("removed %s outputs older than %s days", removed, ctx.config.output_retention_days)
    return removed
