"""Erasing a deleted account from the render domain: its jobs (prompts included), outputs,
uploads, its fair-share weight, and the files nothing else uses.

Jobs still waiting are cancelled (and refunded, although credits closes the account anyway);
running ones are flagged for their workers. Rows of a job go only once it has finished and
its outbox is empty (settled and announced), so no hold is left without a job to settle it:
until then ``remove_user`` raises ``ErasurePending`` and the announcement is handled again.
"""
from __future__ import annotations

import logging

from sqlalchemy import delete, select

from services.render import cancel_signal, jobs
from services.render.models import RenderJob, RenderOutput, RenderUpload, RenderUserShare
from services.render.service import RenderService
from shared.errors import Conflict, ServiceError
from shared.events import RetryLater
from shared.storage import remove_unreferenced

log = logging.getLogger(__name__)


class ErasurePending(RetryLater):
    """Some of the user's jobs are still running or unsettled; try again a little later."""


def remove_user(render: RenderService, user_id: int) -> dict[str, int]:
    """Cancel the user's active jobs, then remove every finished job, output and upload of theirs,
    their fair-share weight and their unreferenced files; returns what was removed. Idempotent."""
    _cancel_active(render, user_id)
    with render.db.transaction() as session:
        unfinished = session.scalar(
            select(RenderJob.id).where(RenderJob.user_id == user_id)
            .where(RenderJob.status.in_(jobs.ACTIVE_STATUSES) | RenderJob.settled_at.is_(None)
                   | RenderJob.announced_at.is_(None)).limit(1))
        if unfinished is not None:
            raise ErasurePending(f"job {unfinished} of user {user_id} has not finished and settled yet")
        outputs = session.execute(select(RenderOutput.image_key, RenderOutput.thumbnail_key)
                                  .where(RenderOutput.user_id == user_id)).all()
        uploads = list(session.scalars(select(RenderUpload.image_key).where(RenderUpload.user_id == user_id)))
        sources = [key for key in session.scalars(select(RenderJob.source_key)
                                                  .where(RenderJob.user_id == user_id)) if key]
        removed = {
            "outputs": session.execute(delete(RenderOutput).where(RenderOutput.user_id == user_id)).rowcount,
            "uploads": session.execute(delete(RenderUpload).where(RenderUpload.user_id == user_id)).rowcount,
            "jobs": session.execute(delete(RenderJob).where(RenderJob.user_id == user_id)).rowcount,
            "shares": session.execute(delete(RenderUserShare).where(RenderUserShare.user_id == user_id)).rowcount,
        }
    keys = [key for row in outputs for key in row] + uploads + sources
    try:
        removed["files"] = len(remove_unreferenced(render.storage, keys, lambda found: _referenced(render, found)))
    except ServiceError as exc:  # the rows are gone; files nobody can reach are only disk space
        log.warning("user %s: render rows removed but files kept: the gallery did not answer (%s)", user_id, exc.code)
        removed["files"] = 0
    return removed


def _cancel_active(render: RenderService, user_id: int) -> None:
    with render.db.read() as session:
        active = list(session.scalars(select(RenderJob.id).where(RenderJob.user_id == user_id,
                                                                 RenderJob.status.in_(jobs.ACTIVE_STATUSES))))
    for job_id in active:
        try:
            with render.db.transaction() as session:
                outcome = jobs.request_cancel(session, job_id)
        except Conflict:  # it finished meanwhile
            continue
        if outcome == "requested":
            cancel_signal.send(render.redis, job_id)
        if outcome == "cancelled":
            render.outbox.complete(job_id)


def _referenced(render: RenderService, candidates: list[str]) -> set[str]:
    """Which of ``candidates`` another user's render rows or a work still use."""
    with render.db.read() as session:
        used = jobs.keys_in_use(session, candidates)
    return used | render.gallery.referenced_keys(candidates)
