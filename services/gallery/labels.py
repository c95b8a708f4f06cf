"""The AI-content label as the gallery hands works out and checks files (``shared.labels``).

A download is the stored PNG with the visible label drawn on it (``CONTENT_LABEL_VISIBLE``) and
the implicit label completed with the platform as propagator (``PropagateID`` ``work-<id>``).
``verify`` answers whether an uploaded file carries our implicit label and which work it is,
naming the work only to someone who may see it.
"""
from __future__ import annotations

import io
import logging
from typing import Any

from PIL import Image
from sqlalchemy import select

from shared.db import Database
from shared.errors import ServiceError
from shared.labels import LabelConfig, download_copy, read_label
from shared.tokens import Claims
from services.gallery.models import Work
from services.gallery.rules import may_see

log = logging.getLogger(__name__)
MAX_PIXELS = 25_000_000
VERIFY_MAX_BYTES = 10 * 1024 * 1024


class PayloadTooLarge(ServiceError):
    status, code, message = 413, "PAYLOAD_TOO_LARGE", "The file is too large."


class InvalidImage(ServiceError):
    status, code, message = 422, "INVALID_IMAGE", "That file is not an image we can read."


class WorkLabels:
    def __init__(self, db: Database, config: LabelConfig) -> None:
        self.db = db
        self.config = config

    def download(self, data: bytes, work_id: int) -> bytes:
        try:
            return download_copy(data, self.config, f"work-{work_id}", self.config.visible)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            log.error("work %s: its stored file cannot be labelled (%s); handing it out as stored", work_id, exc)
            return data

    def verify(self, viewer: Claims | None, data: bytes) -> dict[str, Any]:
        """Whether ``data`` carries our label, what it says, and the work it belongs to."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                image_format, (width, height) = image.format, image.size
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            raise InvalidImage() from None
        if width * height > MAX_PIXELS:
            raise InvalidImage("The image is too large to check.")
        found = read_label(data, self.config.secret)
        answer: dict[str, Any] = {"format": image_format, "labelled": found is not None, "ours": False,
                                  "source": None, "aigc": None, "jobId": None, "generatedAt": None, "work": None}
        if found is None:
            return answer
        answer.update(ours=found.authentic, source=found.source, aigc=found.aigc)
        if not found.authentic:
            return answer  # someone's label, or ours altered: repeat it, vouch for nothing
        answer.update(jobId=found.job_id, generatedAt=found.generated_at)
        with self.db.read() as session:
            work = session.scalars(select(Work).where(Work.output_id == found.produce_id)).one_or_none()
            if work is not None and may_see(work, viewer):
                answer["work"] = {"id": work.id, "title": work.title, "public": work.listed}
        return answer
