"""Tables of the render domain: jobs and the images they produced, uploaded source images,
and what administrators tell about models (the registry) and prompt presets."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import UTCDateTime, new_metadata, utcnow

JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINISHED_STATUSES = ("succeeded", "failed", "cancelled")


class Base(DeclarativeBase):
    metadata = new_metadata()


class RenderJob(Base):
    __tablename__ = "render_jobs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key"),
        Index("ix_render_jobs_user_id_created_at", "user_id", "created_at"),
        Index("ix_render_jobs_status_created_at", "status", "created_at"),
        Index("ix_render_jobs_user_id_status", "user_id", "status"),
        Index("ix_render_jobs_queue_status_created_at", "queue", "status", "created_at"),
        Index("ix_render_jobs_settled_at_status", "settled_at", "status"),
        Index("ix_render_jobs_announced_at_status", "announced_at", "status"),
        Index("ix_render_jobs_user_id_workflow_created_at", "user_id", "workflow", "created_at"),
        Index("ix_render_jobs_user_id_model_created_at", "user_id", "model", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    workflow: Mapped[str] = mapped_column(String(64))
    workflow_version: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Copied out of ``params`` for the history's filters: the main model, and the prompt folded
    # for search (see ``jobs.search_text``).
    model: Mapped[str | None] = mapped_column(String(255))
    search_text: Mapped[str | None] = mapped_column(Text)
    price_per_image: Mapped[int] = mapped_column(Integer)
    queue: Mapped[str] = mapped_column(String(64), default="render")
    variant: Mapped[str | None] = mapped_column(String(64))
    graph: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source_key: Mapped[str | None] = mapped_column(String(255))
    source_ref: Mapped[str | None] = mapped_column(String(100))
    images_requested: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    comfy_prompt_id: Mapped[str | None] = mapped_column(String(64))
    worker: Mapped[str | None] = mapped_column(String(255))
    progress: Mapped[int] = mapped_column(Integer, default=0)
    images_delivered: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_class: Mapped[str | None] = mapped_column(String(16))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The fair-share scheduler's (services.render.scheduler): the lane ("interactive" for people,
    # "batch" for service accounts) and the owner's weight when the job was admitted.
    lane: Mapped[str] = mapped_column(String(16), default="interactive")
    share_weight: Mapped[float] = mapped_column(Float, default=1.0)
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The timing breakdown: queued (created_at) → picked (started_at, the current attempt) →
    # submitted to ComfyUI → first progress → last image delivered → finished → settled.
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_progress_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_image_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A finished job's outbox (services.render.outbox): when credits took the charge for the
    # delivered images and returned the rest of the hold, and when its final event went out.
    settled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    announced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RenderOutput(Base):
    __tablename__ = "render_outputs"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    index: Mapped[int] = mapped_column(Integer)
    image_key: Mapped[str] = mapped_column(String(255))
    thumbnail_key: Mapped[str] = mapped_column(String(255))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    file_size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class RenderUpload(Base):
    """An image a user uploaded as the source of image-to-image or upscale."""

    __tablename__ = "render_uploads"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, index=True)
    image_key: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(8))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    file_size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RenderModel(Base):
    """What administrators tell users about a model file: localised names and descriptions, a
    preview picture and recommended settings. Whether a model can be used is the live
    catalog's business, not this table's."""

    __tablename__ = "render_models"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)  # the file name the catalog lists
    display_names: Mapped[dict[str, str]] = mapped_column(JSON)  # {"zh", "en"}
    descriptions: Mapped[dict[str, str]] = mapped_column(JSON)  # {"zh", "en"}
    preview_key: Mapped[str | None] = mapped_column(String(255))
    recommended: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_by: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RenderPreset(Base):
    """A style preset (words added to the prompt) or a negative preset (words for the negative
    prompt), in the order ``position`` gives."""

    __tablename__ = "render_presets"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "style" or "negative"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)  # {"zh", "en"}
    text: Mapped[str] = mapped_column(String(500))


class RenderUserShare(Base):
    """An administrator's fair-share weight for one user (instead of the role's, from
    ``RENDER_SHARE_WEIGHTS``); applies to the jobs the user submits afterwards."""

    __tablename__ = "render_user_shares"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
