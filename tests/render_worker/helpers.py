"""What the render worker's tests do around a job: admit it as the gateway does, read it back."""
from __future__ import annotations

from sqlalchemy import text

from services.render import jobs
from services.render.models import RenderJob, RenderOutput
from services.render.workflows import validate_params
from services.render_worker.pipeline import RenderContext

from tests.render_fixtures import MODEL


def admit(ctx: RenderContext, user_id: int, queue: str = "render.text2img", **raw) -> str:
    """What the gateway does at admission: validate, hold, insert."""
    template = ctx.templates.get("text2img")
    params = validate_params(template, {"prompt": "a lighthouse", "model": MODEL, "width": 64, "height": 64,
                                        "steps": 5, **raw})
    job_id = jobs.new_job_id()
    hold = ctx.credits.hold(user_id, job_id, "text2img", params["batchSize"], "test")
    with ctx.db.transaction() as session:
        jobs.create_job(session.connection(), job_id=job_id, user_id=user_id, template=template, params=params,
                        price_per_image=hold["pricePerImage"], queue=queue)
    return job_id


def job_state(ctx: RenderContext, job_id: str) -> tuple[RenderJob, list[RenderOutput]]:
    with ctx.db.transaction() as session:
        job = jobs.get_job(session, job_id)
        return job, jobs.outputs_of(session, [job_id])[job_id]


def ledger(ctx: RenderContext, user_id: int) -> list[tuple[str, int, int]]:
    with ctx.db.engine.connect() as connection:
        rows = connection.execute(text("SELECT type, amount, held_change FROM credit_ledger WHERE user_id = :u "
                                       "ORDER BY id"), {"u": user_id})
        return [tuple(row) for row in rows]
